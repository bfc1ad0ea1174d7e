"""Reading image folders: formats, the transform, the cache, and every kind of bad input."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from conftest import write_layout
from PIL import Image

from bloodcells.data import Transform, cache_dir, load_dataset, standardize
from bloodcells.errors import DataError, DataWarning


def test_classes_are_sorted_folder_names_with_one_mapping(easy_root):
    splits = load_dataset(easy_root)
    assert splits.classes == ["bar", "disc", "square"]
    assert splits.test.classes == splits.classes
    summary = splits.summary()
    assert summary["class_to_idx"] == {"bar": 0, "disc": 1, "square": 2}
    assert summary["counts"]["train"] == {"bar": 40, "disc": 40, "square": 40}
    assert summary["counts"]["test"] == {"bar": 12, "disc": 12, "square": 12}
    # the label of each image is its folder's index
    for path, label in zip(splits.test.paths, splits.test.labels.tolist(), strict=True):
        assert os.path.basename(os.path.dirname(path)) == splits.classes[label]


def test_images_are_decoded_once_into_a_uint8_tensor(easy_root):
    splits = load_dataset(easy_root, Transform(size=32, channels=1))
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.images.shape == (120, 1, 32, 32)
    rgb = load_dataset(easy_root, Transform(size=24, channels=3))
    assert rgb.train.images.shape == (120, 3, 24, 24)


def test_standardization_gives_each_image_mean_0_std_1(easy_root):
    x = load_dataset(easy_root).train.standardized()
    assert x.dtype == torch.float32
    means = x.mean(dim=(1, 2, 3))
    stds = x.std(dim=(1, 2, 3))
    assert torch.allclose(means, torch.zeros_like(means), atol=1e-5)
    assert torch.allclose(stds, torch.ones_like(stds), atol=1e-3)


def test_standardize_matches_the_labs_samplewise_transform():
    x = torch.rand(4, 3, 8, 8)
    lab = torch.stack([(img - img.mean()) / (img.std() + 1e-6) for img in x])
    assert torch.allclose(standardize(x), lab, atol=1e-6)


def test_matches_the_labs_pil_transform_pixel_for_pixel(tmp_path):
    """Grayscale, then bilinear resize, then /255: as torchvision's Grayscale/Resize/ToTensor."""
    from torchvision import transforms

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (45, 37, 3), dtype=np.uint8)).save(
            tmp_path / split / "a" / "x.png"
        )
    lab = transforms.Compose(
        [transforms.Grayscale(), transforms.Resize((32, 32)), transforms.ToTensor()]
    )
    expected = lab(Image.open(tmp_path / "train" / "a" / "x.png"))
    ours = load_dataset(tmp_path).train.images[0].float() / 255
    assert torch.allclose(ours, expected, atol=1e-6)


def test_reads_jpeg_bmp_and_16_bit_tiff_gray_and_rgb_of_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        folder = tmp_path / split / "mixed"
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / "a.jpg")
        Image.fromarray(rng.integers(0, 255, (17, 33), dtype=np.uint8)).save(folder / "b.bmp")
        deep = rng.integers(0, 65535, (31, 29), dtype=np.uint16)
        Image.fromarray(deep).save(folder / "c.tif")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "d.PNG")
    splits = load_dataset(tmp_path, Transform(32, 1))
    assert len(splits.train) == 4 and not splits.problems
    assert splits.train.images.shape == (4, 1, 32, 32)
    # a 16-bit image keeps its precision: stored as float in [0, 1], not squashed to uint8
    assert splits.train.images.dtype == torch.float16
    unit = splits.train.images.float()
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    modes = " ".join(splits.summary()["sources"]["train"])
    assert "I;16" in modes and "RGB" in modes
    rgb = load_dataset(tmp_path, Transform(32, 3))
    assert rgb.train.images.shape == (4, 3, 32, 32)


def test_second_load_comes_from_the_cache(easy_root, monkeypatch):
    load_dataset(easy_root)
    assert list(cache_dir().glob("*.pt"))
    import bloodcells.data as data

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite an unchanged folder")

    monkeypatch.setattr(data, "decode_files", no_decoding)
    again = load_dataset(easy_root)
    assert len(again.train) == 120


def test_cache_is_invalidated_when_a_file_changes(easy_root):
    first = load_dataset(easy_root)
    target = easy_root / "train" / "bar" / "bar_000.png"
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse file systems
    second = load_dataset(easy_root)
    index = second.train.paths.index(str(target))
    assert torch.all(second.train.images[index] == 7)
    assert not torch.equal(first.train.images, second.train.images)


def test_missing_root_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such folder; expected ROOT/train/<class>"):
        load_dataset(tmp_path / "nowhere")


def test_missing_split_is_named(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    for f in (tmp_path / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((tmp_path / "test").iterdir()):
        d.rmdir()
    (tmp_path / "test").rmdir()
    with pytest.raises(DataError, match=r"test: missing split folder"):
        load_dataset(tmp_path)


def test_folder_without_a_split_says_how_to_split_it(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / cls / "x.png")
    with pytest.raises(DataError, match=r"no train/test split; move each class's images into"):
        load_dataset(tmp_path)


def test_a_class_in_test_that_train_lacks_is_an_error(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    extra = tmp_path / "test" / "platelet"
    extra.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(extra / "p.png")
    with pytest.raises(DataError, match=r"platelet are not in"):
        load_dataset(tmp_path)


def test_empty_class_folder_is_a_warning(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    (tmp_path / "train" / "empty").mkdir()
    with pytest.warns(DataWarning, match="empty class folder"):
        splits = load_dataset(tmp_path)
    assert "empty" in splits.classes
    assert splits.train.class_counts()["empty"] == 0
    assert any("empty class folder" in p for p in splits.summary()["problems"])


def test_corrupt_image_is_skipped_and_listed_by_path(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    bad = tmp_path / "train" / "disc" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    truncated = tmp_path / "train" / "bar" / "cut.jpg"
    ok = tmp_path / "train" / "bar" / "bar_000.png"
    Image.open(ok).convert("RGB").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.warns(DataWarning) as caught:
        splits = load_dataset(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert str(bad) in messages and str(truncated) in messages
    assert len(splits.train) == 9
    assert str(bad) not in splits.train.paths
    assert sum("skipped" in p for p in splits.summary()["problems"]) == 2
    # the cached copy remembers what was skipped
    with pytest.warns(DataWarning, match="broken.png"):
        load_dataset(tmp_path)


def test_non_image_files_are_ignored_silently(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    for folder in (tmp_path / "train", tmp_path / "train" / "disc"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (folder / "notes.txt").write_text("counted by hand")
    (tmp_path / "train" / "disc" / "._disc_000.png").write_bytes(b"\0\5\26\7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_dataset(tmp_path)
    assert len(splits.train) == 9 and not splits.problems


def test_bad_transform_is_an_input_error():
    with pytest.raises(DataError, match="channels must be 1"):
        Transform(channels=2)
