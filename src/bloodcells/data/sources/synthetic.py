"""SYNTHETIC demo data: the built-in demo set of procedural cells, written and cached.

The lab classifies BBBC045 brightfield patches, which we cannot ship. The demo set holds
stand-in patches for the same five classes, drawn by `synthetic_cells` from hand-set
distributions; nothing in it is measured from real cells: use it to exercise the pipeline,
never to draw conclusions. Every class and split is drawn from its own seeded stream, so a
seed always gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bloodcells.data.cache import cache_home
from bloodcells.data.folders import SPLITS
from bloodcells.data.sources.synthetic_cells import CLASSES, REFERENCE_SIZE, render_cells
from bloodcells.errors import DataError
from bloodcells.utils.files import staged_folder

SYNTHETIC_NOTICE: str = "SYNTHETIC demo data (bloodcells procedural cells), not real blood cells"
DEMO_VERSION = 1  # bump when the generator changes, so the cached demo set is made anew
MAX_PER_CLASS = 100_000  # 500,000 PNGs in all; more is a typo, not a demo set


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of a generated demo set."""

    per_class: int = 400
    test_per_class: int = 100
    seed: int = 0
    size: int = 32

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("per_class", self.per_class, 1, MAX_PER_CLASS),
            ("test_per_class", self.test_per_class, 1, MAX_PER_CLASS),
            ("seed", self.seed, 0, 2**32 - 1),
            ("size", self.size, 8, 256),
        ):
            if not low <= value <= high:
                raise DataError(f"'{name}' must be between {low} and {high}, not {value}")


def generate(config: SynthConfig) -> dict[str, dict[str, np.ndarray]]:
    """Generate split -> class -> uint8 patches, each class and split from its own stream."""
    counts = {"train": config.per_class, "test": config.test_per_class}
    split_seeds = np.random.SeedSequence(config.seed).spawn(len(SPLITS))
    data: dict[str, dict[str, np.ndarray]] = {}
    for split, split_seed in zip(SPLITS, split_seeds, strict=True):
        class_seeds = split_seed.spawn(len(CLASSES))
        data[split] = {
            cls: render_cells(cls, counts[split], np.random.default_rng(seed), config.size)
            for cls, seed in zip(CLASSES, class_seeds, strict=True)
        }
    return data


def _readme_text(config: SynthConfig) -> str:
    """The README.txt that labels a written demo set as synthetic."""
    settings = "\n".join(f"  {key} = {value}" for key, value in asdict(config).items())
    return (
        f"{SYNTHETIC_NOTICE}.\n\n"
        "Made by bloodcells (bloodcells.synthetic.write_demo_set): procedurally drawn\n"
        "brightfield-like white-blood-cell patches standing in for BBBC045, which is not\n"
        "shipped. Do not draw any biological or clinical conclusion from it.\n\n"
        f"Settings:\n{settings}\n\n"
        f"Layout: train/<class>/*.png and test/<class>/*.png, 8-bit grayscale,\n"
        f"classes: {', '.join(CLASSES)}.\n"
    )


def _write_pngs(root: Path, data: dict[str, dict[str, np.ndarray]]) -> None:
    """Write every patch as root/<split>/<class>/<class>_NNNNN.png."""
    for split, classes in data.items():
        for cls, patches in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, patch in enumerate(patches):
                Image.fromarray(patch).save(folder / f"{cls}_{i:05d}.png")


def _check_free(dest: Path) -> None:
    """Refuse a dest that already holds something."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"refusing to write the demo set: {dest} exists and is not an empty folder")


def write_demo_set(dest: Path | str, config: SynthConfig = SynthConfig()) -> Path:
    """Write the synthetic demo set under dest (which must be absent or empty); return dest."""
    dest = Path(dest)
    _check_free(dest)
    with staged_folder(dest) as staging:
        _write_pngs(staging, generate(config))
        (staging / "README.txt").write_text(_readme_text(config), encoding="utf-8")
        _check_free(dest)
        if dest.exists():
            dest.rmdir()  # empty: checked just now, and rmdir refuses anything else
    return dest


def ensure_demo_set(demo: SynthConfig, say: Callable[[str], None] = print) -> Path:
    """The synthetic demo set in the cache folder, generated on first use."""
    name = f"demo-v{DEMO_VERSION}-{demo.per_class}-{demo.test_per_class}-seed{demo.seed}"
    root = cache_home() / (name if demo.size == REFERENCE_SIZE else f"{name}-size{demo.size}")
    if not (root / "train").is_dir():
        say(f"generating the synthetic demo set into {root} (once)")
        write_demo_set(root, demo)
    return root


__all__ = [
    "CLASSES",
    "SYNTHETIC_NOTICE",
    "SynthConfig",
    "ensure_demo_set",
    "generate",
    "render_cells",
    "write_demo_set",
]
