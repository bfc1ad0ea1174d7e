"""A white cell found in an image: its box, its centre, its areas, whether the border cuts it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Stain = Literal["giemsa", "brightfield"]


@dataclass(frozen=True)
class Cell:
    """One white cell, in the source image's pixels.

    The box is the whole cell (nucleus and cytoplasm) as a person would draw it: columns
    x0 <= x < x1, rows y0 <= y < y1. (cx, cy) is the cell's centre (the centroid of its
    mask). Areas are in pixels. `touches_border` says the image's edge cuts the cell.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    cx: float
    cy: float
    nucleus_area: int
    cell_area: int
    touches_border: bool
    stain: Stain

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def diameter(self) -> float:
        """The diameter of a disc of the cell's area: its size, whatever its shape."""
        return 2.0 * (self.cell_area / 3.141592653589793) ** 0.5

    def to_dict(self) -> dict:
        return asdict(self)
