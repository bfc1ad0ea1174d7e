"""Shared fixtures: image folders the tests make themselves, and a private dataset cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcells.data import load_dataset
from bloodcells.runs import start_training
from bloodcells.training.loop import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own dataset cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BLOODCELLS_CACHE", str(cache))
    return cache


def easy_image(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A noisy gray patch whose class shows as a bright disc (0), dark square (1) or bar (2)."""
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(120, 20, (size, size))
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    r = size // 5
    if cls == 0:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 90
    elif cls == 1:
        image[(abs(yy - cy) < r) & (abs(xx - cx) < r)] -= 90
    else:
        image[:, abs(np.arange(size) - cx) < 2] += 90
    return np.clip(image, 0, 255).astype(np.uint8)


def write_layout(
    root: Path,
    classes: tuple[str, ...] = ("disc", "square", "bar"),
    per_class: tuple[int, int] = (40, 12),
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write ROOT/train/<class>/*.png and ROOT/test/<class>/*.png of easy_image patches."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(easy_image(k % 3, rng, size)).save(folder / f"{cls}_{i:03d}.png")
    return root


@pytest.fixture
def easy_root(tmp_path) -> Path:
    """A small, easy three-class dataset in the lab's layout."""
    return write_layout(tmp_path / "easy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The advanced CNN trained for two epochs on the easy disc / square / bar images."""
    root = write_layout(tmp_path_factory.mktemp("data") / "easy")
    splits = load_dataset(root, cache=False)
    config = TrainConfig(model="advanced", epochs=2, image_size=32, lr=1e-3)
    return start_training(splits, config, out=tmp_path_factory.mktemp("runs")), splits


@pytest.fixture
def pbc32() -> Path:
    """The real PBC patches from ../shared/data, or a skip when they are absent."""
    root = SHARED_DATA / "pbc32"
    if not root.is_dir():
        pytest.skip("../shared/data/pbc32 is not here (real data lives outside the project)")
    return root


@pytest.fixture
def pbc_wbc() -> Path:
    """The real PBC smear fields (class folders of 360×363 JPEGs), or a skip when absent."""
    root = SHARED_DATA / "pbc-wbc" / "all"
    if not root.is_dir():
        pytest.skip("../shared/data/pbc-wbc is not here (real data lives outside the project)")
    return root
