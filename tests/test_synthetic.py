"""The synthetic demo set: deterministic, shaped right, classes that differ, safe to write."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image

from bloodcells.data.sources.synthetic import (
    CLASSES,
    SYNTHETIC_NOTICE,
    SynthConfig,
    generate,
    render_cells,
    write_demo_set,
)
from bloodcells.errors import DataError

SMALL = SynthConfig(per_class=6, test_per_class=3, seed=0)
N_STATS = 200  # cells per class for the class-difference statistics
DARK = 0.7  # nucleus pixels: smoothed value below this fraction of the background level
BRIGHT = 1.1  # granule pixels: above this fraction of the background level


def background(image: np.ndarray) -> float:
    """Median of the 2-pixel frame, which is cell-free background."""
    frame = np.concatenate([image[:2].ravel(), image[-2:].ravel()])
    frame = np.concatenate([frame, image[:, :2].ravel(), image[:, -2:].ravel()])
    return float(np.median(frame))


def smooth3(image: np.ndarray) -> np.ndarray:
    """3x3 mean filter, so shot noise does not split or speckle the dark nucleus."""
    padded = np.pad(image.astype(float), 1, mode="edge")
    h, w = image.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def dark_mask(image: np.ndarray) -> np.ndarray:
    """Pixels dark enough to be nucleus."""
    return smooth3(image) < DARK * background(image)


def count_components(mask: np.ndarray, min_pixels: int = 2) -> int:
    """Number of 4-connected regions of at least min_pixels pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), 0
        while queue:
            y, x = queue.popleft()
            pixels += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                if inside and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        count += pixels >= min_pixels
    return count


def elongation(mask: np.ndarray) -> float:
    """Ratio of the larger to the smaller second moment of a mask (1 for a disc)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 4:
        return 1.0
    low, high = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(float)))
    return float(high / max(low, 1e-6))


def granule_fraction(image: np.ndarray) -> float:
    """Fraction of bright pixels within 5 px of the nucleus centre."""
    dark = dark_mask(image)
    if not dark.any():
        return 0.0
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    near = (yy - yy[dark].mean()) ** 2 + (xx - xx[dark].mean()) ** 2 < 5**2
    return float((image[near] > BRIGHT * background(image)).mean())


def foreground_area(image: np.ndarray) -> int:
    """Pixels that differ from the background by more than 8 %: the whole cell, halo included."""
    b = background(image)
    return int((np.abs(image.astype(float) - b) > 0.08 * b).sum())


@pytest.fixture(scope="module")
def cells() -> dict[str, np.ndarray]:
    """N_STATS cells per class, one fixed stream per class."""
    return {
        cls: render_cells(cls, N_STATS, np.random.default_rng([7, k]))
        for k, cls in enumerate(CLASSES)
    }


def per_cell(stat, images: np.ndarray) -> np.ndarray:
    """stat applied to every image."""
    return np.array([stat(image) for image in images], dtype=float)


def test_classes_and_notice() -> None:
    assert CLASSES == ("B", "T", "eosinophil", "monocyte", "neutrophil")
    assert "SYNTHETIC" in SYNTHETIC_NOTICE
    assert "\n" not in SYNTHETIC_NOTICE


def test_render_shape_dtype_and_size() -> None:
    for size in (32, 64):
        patches = render_cells("monocyte", 3, np.random.default_rng(0), size=size)
        assert patches.shape == (3, size, size)
        assert patches.dtype == np.uint8
        assert patches.std() > 5  # a cell, not a blank patch


def test_render_rejects_unknown_class() -> None:
    with pytest.raises(DataError, match="basophil"):
        render_cells("basophil", 1, np.random.default_rng(0))


def test_same_seed_same_images_and_other_seed_differs() -> None:
    first, again = generate(SMALL), generate(SMALL)
    other = generate(SynthConfig(per_class=6, test_per_class=3, seed=1))
    for split in ("train", "test"):
        for cls in CLASSES:
            np.testing.assert_array_equal(first[split][cls], again[split][cls])
            assert not np.array_equal(first[split][cls], other[split][cls])


def test_generate_layout_and_independent_splits() -> None:
    data = generate(SMALL)
    assert set(data) == {"train", "test"}
    for split, count in (("train", SMALL.per_class), ("test", SMALL.test_per_class)):
        assert tuple(data[split]) == CLASSES
        for patches in data[split].values():
            assert patches.shape == (count, 32, 32)
            assert patches.dtype == np.uint8
    # the test split is not a prefix of the training stream
    assert not np.array_equal(data["train"]["T"][:3], data["test"]["T"])


def test_monocyte_nucleus_larger_than_t(cells) -> None:
    mono = per_cell(lambda im: dark_mask(im).sum(), cells["monocyte"]).mean()
    t_cell = per_cell(lambda im: dark_mask(im).sum(), cells["T"]).mean()
    assert mono > 1.4 * t_cell


def test_b_cells_larger_than_t_cells(cells) -> None:
    assert (
        per_cell(foreground_area, cells["B"]).mean()
        > 1.2 * per_cell(foreground_area, cells["T"]).mean()
    )


def test_neutrophil_nucleus_splits_into_more_parts_than_t(cells) -> None:
    neutrophil = per_cell(lambda im: count_components(dark_mask(im)), cells["neutrophil"])
    t_cell = per_cell(lambda im: count_components(dark_mask(im)), cells["T"])
    assert neutrophil.mean() > t_cell.mean() + 0.3


@pytest.mark.parametrize("cls", ["eosinophil", "monocyte", "neutrophil"])
def test_non_round_nuclei_are_elongated(cells, cls) -> None:
    t_cell = np.median(per_cell(lambda im: elongation(dark_mask(im)), cells["T"]))
    other = np.median(per_cell(lambda im: elongation(dark_mask(im)), cells[cls]))
    assert other > 1.6 * t_cell


def test_eosinophil_granules_brighter_than_neutrophil(cells) -> None:
    eosinophil = per_cell(granule_fraction, cells["eosinophil"]).mean()
    neutrophil = per_cell(granule_fraction, cells["neutrophil"]).mean()
    assert eosinophil > 0.01
    assert eosinophil > 4 * neutrophil


def test_write_demo_set_layout(tmp_path) -> None:
    dest = write_demo_set(tmp_path / "demo", SMALL)
    assert dest == tmp_path / "demo"
    assert sorted(p.name for p in dest.iterdir()) == ["README.txt", "test", "train"]
    for split, count in (("train", SMALL.per_class), ("test", SMALL.test_per_class)):
        assert sorted(p.name for p in (dest / split).iterdir()) == sorted(CLASSES)
        for cls in CLASSES:
            files = sorted((dest / split / cls).glob("*.png"))
            assert [f.name for f in files] == [f"{cls}_{i:05d}.png" for i in range(count)]
    with Image.open(dest / "train" / "neutrophil" / "neutrophil_00000.png") as image:
        assert image.mode == "L"
        assert image.size == (32, 32)
        pixels = np.asarray(image)
    np.testing.assert_array_equal(pixels, generate(SMALL)["train"]["neutrophil"][0])
    readme = (dest / "README.txt").read_text(encoding="utf-8")
    assert "synthetic" in readme.lower()
    assert "bloodcells" in readme
    assert "per_class = 6" in readme
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left behind


def test_write_demo_set_into_empty_folder(tmp_path) -> None:
    (tmp_path / "demo").mkdir()
    write_demo_set(tmp_path / "demo", SMALL)
    assert (tmp_path / "demo" / "README.txt").is_file()


def test_write_demo_set_refuses_non_empty_dest(tmp_path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match="mine"):
        write_demo_set(dest, SMALL)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    import bloodcells.data.sources.synthetic as synthetic

    def write_then_fail(root, data) -> None:
        (root / "train").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_pngs", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_demo_set(tmp_path / "demo", SMALL)
    assert list(tmp_path.iterdir()) == []
