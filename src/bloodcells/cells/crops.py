"""The canonical crop: a square around each cell, scaled by the sample's median cell size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

from bloodcells.cells.cell import Cell
from bloodcells.cells.find import to_uint8
from bloodcells.errors import DataError

PADDINGS = ("reflect", "background")
# A white cell is 10-15 µm across on a blood smear (neutrophils 12-15, small lymphocytes 7-10,
# monocytes 15-20; Bain, "Blood Cells: A Practical Guide", ch. 3): 12 µm is the typical one.
WHITE_CELL_UM = 12.0


@dataclass(frozen=True)
class CropPolicy:
    """How a cell becomes a crop: output side, the share of it the median cell fills, padding."""

    size: int = 64
    cell_fraction: float = 0.5
    padding: str = "reflect"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 4 <= self.size <= 4096:
            raise DataError(f"size must be an integer from 4 to 4096, not {self.size!r}")
        if not 0.05 <= float(self.cell_fraction) <= 1.0:
            raise DataError(f"cell_fraction must be between 0.05 and 1, not {self.cell_fraction!r}")
        if self.padding not in PADDINGS:
            raise DataError(f"padding must be one of {', '.join(PADDINGS)}, not {self.padding!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CropPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DataError(f"crop policy has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def estimate_scale(cells: Sequence[Cell]) -> float:
    """The median cell diameter (px) of a set's cells: the sample's magnification."""
    sizes = [c.diameter for c in cells if not c.touches_border]
    if not sizes:
        sizes = [c.diameter for c in cells]
    if not sizes:
        raise DataError("cells is empty: there is no cell to estimate the scale from")
    return float(np.median(sizes))


def scale_from_pixel_size(pixel_size_um: float) -> float:
    """The typical white cell's diameter in pixels at `pixel_size_um` micrometres per pixel."""
    if (
        not (isinstance(pixel_size_um, int | float) and math.isfinite(pixel_size_um))
        or pixel_size_um <= 0
    ):
        raise DataError(f"pixel_size_um must be a positive number, not {pixel_size_um!r}")
    return WHITE_CELL_UM / float(pixel_size_um)


def background_colour(image: np.ndarray) -> np.ndarray:
    """The median of the image's border pixels, per channel."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(border, axis=0).astype(np.uint8)


def crop_cell(image: np.ndarray, cell: Cell, policy: CropPolicy, scale: float) -> np.ndarray:
    """A policy.size square centred on the cell, side scale / cell_fraction source pixels."""
    if not (math.isfinite(scale) and scale > 0):
        raise DataError(f"scale must be a positive number of pixels, not {scale!r}")
    pixels = to_uint8(image)
    h, w = pixels.shape[:2]
    side = max(1, round(scale / policy.cell_fraction))
    x0 = round(cell.cx - side / 2)
    y0 = round(cell.cy - side / 2)
    x1, y1 = x0 + side, y0 + side
    pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)))
    window = pixels[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if any(p for pair in pad for p in pair):
        window = _pad(pixels, window, pad, policy.padding)
    out = Image.fromarray(window).resize(
        (policy.size, policy.size), Image.Resampling.LANCZOS, reducing_gap=None
    )
    return np.asarray(out)


def _pad(pixels: np.ndarray, window: np.ndarray, pad: tuple, padding: str) -> np.ndarray:
    """The window grown by pad ((top, bottom), (left, right)): mirrored, or background colour."""
    if padding == "background" or min(window.shape[:2]) < 2:
        spec = pad if window.ndim == 2 else (*pad, (0, 0))
        out = np.pad(window, spec)
        inner = np.zeros(out.shape[:2], bool)
        inner[pad[0][0] : pad[0][0] + window.shape[0], pad[1][0] : pad[1][0] + window.shape[1]] = 1
        out[~inner] = background_colour(pixels)
        return out
    # numpy mirrors at most size - 1 pixels at a time: a crop far past a small image repeats
    while any(p for pair in pad for p in pair):
        step = tuple(
            (min(before, size - 1), min(after, size - 1))
            for (before, after), size in zip(pad, window.shape[:2], strict=True)
        )
        window = np.pad(window, step if window.ndim == 2 else (*step, (0, 0)), mode="reflect")
        pad = tuple((a - s0, b - s1) for (a, b), (s0, s1) in zip(pad, step, strict=True))
    return window
