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
        for cls in ("a", "b"):  # a classifier needs two classes
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (45, 37, 3), dtype=np.uint8)).save(
                tmp_path / split / cls / "x.png"
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
        folder, other = tmp_path / split / "mixed", tmp_path / split / "more"
        folder.mkdir(parents=True)
        other.mkdir()
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / "a.jpg")
        Image.fromarray(rng.integers(0, 255, (17, 33), dtype=np.uint8)).save(folder / "b.bmp")
        deep = rng.integers(0, 65535, (31, 29), dtype=np.uint16)
        Image.fromarray(deep).save(other / "c.tif")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(other / "d.PNG")
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
    import bloodcells.data.folders as data

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


def test_hidden_files_and_files_outside_class_folders_are_ignored_silently(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    for folder in (tmp_path / "train", tmp_path / "train" / "disc"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "train" / "notes.txt").write_text("counted by hand")
    (tmp_path / "train" / "disc" / "._disc_000.png").write_bytes(b"\0\5\26\7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_dataset(tmp_path)
    assert len(splits.train) == 9 and not splits.problems


def test_bad_transform_is_an_input_error():
    with pytest.raises(DataError, match="channels must be 1"):
        Transform(channels=2)


def assert_labels_match_folders(dataset):
    for path, label in zip(dataset.paths, dataset.labels.tolist(), strict=True):
        assert os.path.basename(os.path.dirname(path)) == dataset.classes[label], path


@pytest.mark.parametrize("with_images", [True, False], ids=["with-images", "empty"])
def test_cache_labels_follow_a_class_folder_added_later(tmp_path, with_images):
    write_layout(tmp_path, per_class=(3, 3))
    load_dataset(tmp_path)  # fills the cache with labels for bar, disc, square
    new = tmp_path / "train" / "aaa"  # sorts first: every old label index shifts by one
    new.mkdir()
    if with_images:
        for f in sorted((tmp_path / "train" / "disc").glob("*.png")):
            (new / f.name).write_bytes(f.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        splits = load_dataset(tmp_path)
    assert splits.classes == ["aaa", "bar", "disc", "square"]
    assert_labels_match_folders(splits.train)
    assert_labels_match_folders(splits.test)


def test_a_cache_file_for_other_classes_is_not_trusted(tmp_path, monkeypatch):
    import bloodcells.data.folders as data

    write_layout(tmp_path, per_class=(3, 3))
    load_dataset(tmp_path)
    monkeypatch.setattr(data, "cache_key", lambda *args, **kwargs: "same-key-for-everything")
    load_dataset(tmp_path)
    (tmp_path / "train" / "aaa").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        splits = load_dataset(tmp_path)
    assert_labels_match_folders(splits.test)


@pytest.mark.parametrize("how", ["missing", "empty", "unreadable"])
def test_a_train_class_without_test_images_is_a_problem(tmp_path, how):
    write_layout(tmp_path, per_class=(3, 3))
    folder = tmp_path / "test" / "square"
    for f in folder.glob("*.png"):
        if how == "unreadable":
            f.write_bytes(b"not an image")
        else:
            f.unlink()
    if how == "missing":
        folder.rmdir()
    with pytest.warns(DataWarning) as caught:
        splits = load_dataset(tmp_path)
    expected = f"{tmp_path / 'test'}: no images of class square (it is in train)"
    assert expected in [str(w.message) for w in caught]
    assert any("no images of class square" in p for p in splits.summary()["problems"])
    assert len(splits.test) == 6


def test_a_train_split_with_no_readable_images_is_an_error(tmp_path):
    write_layout(tmp_path, per_class=(2, 2))
    for f in (tmp_path / "train").rglob("*.png"):
        f.write_bytes(b"not an image")
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"train: no readable images"):
        load_dataset(tmp_path)


def test_a_test_split_with_no_images_is_an_error(tmp_path):
    write_layout(tmp_path, per_class=(2, 2))
    for f in (tmp_path / "test").rglob("*.png"):
        f.unlink()
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"test: no readable images"):
        load_dataset(tmp_path)


def test_a_decompression_bomb_is_skipped_and_listed(tmp_path, monkeypatch):
    write_layout(tmp_path, per_class=(3, 3))
    bomb = tmp_path / "train" / "disc" / "bomb.png"
    Image.new("1", (200, 200)).save(bomb)  # 40,000 pixels: over twice the lowered limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.warns(DataWarning, match=r"bomb.png: skipped, cannot be read as an image"):
        splits = load_dataset(tmp_path)
    assert len(splits.train) == 9 and str(bomb) not in splits.train.paths
    assert Image.MAX_IMAGE_PIXELS == 10_000  # PIL's guard stays on


def test_an_image_over_the_pixel_limit_pil_only_warns_about_is_skipped_by_name(
    tmp_path, monkeypatch
):
    from bloodcells.data.inputs import load_image

    write_layout(tmp_path, per_class=(3, 3))
    big = tmp_path / "train" / "disc" / "big.png"
    Image.new("P", (120, 120)).save(big)  # 14,400 pixels: over the lowered limit, under twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset(tmp_path)
    assert [w.category for w in caught] == [DataWarning]  # not PIL's nameless warning
    assert str(caught[0].message).startswith(f"{big}: skipped, cannot be read as an image")
    assert "exceeds limit of 10000 pixels" in str(caught[0].message)
    assert len(splits.train) == 9 and str(big) not in splits.train.paths
    assert "exceeds limit of 10000 pixels" in load_image(str(big), Transform())  # predict's


@pytest.mark.parametrize("size", [3, 513, 100_000])
def test_image_size_is_bounded(size):
    with pytest.raises(DataError, match=r"size must be 4 to 512 pixels"):
        Transform(size=size)


def test_too_little_memory_is_an_error_before_decoding(easy_root, monkeypatch):
    import bloodcells.data.folders as data

    monkeypatch.setattr(data, "available_memory", lambda: 10_000_000)
    monkeypatch.setattr(data, "decode_files", lambda *a, **k: pytest.fail("decoded anyway"))
    expected = r"needs about [\d.]+ GB of memory .* only 0.01 GB is available; use a smaller"
    with pytest.raises(DataError, match=expected):
        load_dataset(easy_root, Transform(size=512, channels=3))


def test_memory_check_is_skipped_when_memory_is_unknown(monkeypatch):
    import bloodcells.data.folders as data

    monkeypatch.setattr(data, "available_memory", lambda: None)
    data.check_memory(10**9, Transform(size=512, channels=3))
    monkeypatch.setattr(data, "available_memory", lambda: 10**15)
    data.check_memory(1000, Transform(size=512, channels=3))


def test_available_memory_is_a_positive_number_here():
    from bloodcells.data.folders import available_memory

    memory = available_memory()
    assert memory is None or memory > 0


def test_unsupported_files_in_class_folders_are_listed(tmp_path):
    write_layout(tmp_path, per_class=(3, 3))
    disc = tmp_path / "train" / "disc"
    Image.open(disc / "disc_000.png").save(disc / "moving.gif")
    (disc / "notes.txt").write_text("counted by hand")
    with pytest.warns(DataWarning) as caught:
        splits = load_dataset(tmp_path)
    messages = [str(w.message) for w in caught]
    assert f"{disc / 'moving.gif'}: skipped, not a supported image type (.gif); supported: " in (
        " ".join(messages)
    )
    assert any(str(disc / "notes.txt") in m and "(.txt)" in m for m in messages)
    assert ".bmp, .jpeg, .jpg, .png, .tif, .tiff" in messages[0]
    assert len(splits.train) == 9 and len(splits.problems) == 2


def test_one_class_is_not_a_classifier(tmp_path):
    write_layout(tmp_path, classes=("disc",), per_class=(3, 3))
    with pytest.raises(DataError, match=r"at least two classes; found only disc in .*train"):
        load_dataset(tmp_path)


def test_one_class_with_images_among_empty_folders_is_not_a_classifier(tmp_path):
    write_layout(tmp_path, classes=("disc",), per_class=(3, 3))
    (tmp_path / "train" / "square").mkdir()
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"found only disc"):
        load_dataset(tmp_path)


def test_decoding_reports_progress_to_a_callback_and_a_cache_hit_does_not(tmp_path):
    write_layout(tmp_path, per_class=(3, 2))
    calls = []
    load_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 9) for i in range(10)] + [(i, 6) for i in range(7)]
    calls.clear()
    load_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == []


def test_a_slow_cold_decode_writes_nothing_to_stderr(tmp_path, monkeypatch, capfd):
    """The data layer draws no progress bar of its own (rich's wrote an empty line)."""
    import bloodcells.data.folders as data

    monkeypatch.setattr(data, "PROGRESS_AFTER_S", 0.0, raising=False)  # as if decoding were slow
    write_layout(tmp_path, per_class=(3, 2))
    load_dataset(tmp_path, progress=lambda done, total: None)
    load_dataset(tmp_path, Transform(channels=3))
    assert capfd.readouterr().err == ""
