"""Synthetic stained smear fields for the cell finder's tests, with their truth.

Colours are the medians measured on pbc-wbc fields (background, red cells, nuclei); sizes are
pbc-wbc's pixels (red cells ~75 px across, white cells ~100 px, nuclei over 2,000 px²), so the
detector's defaults apply. Nothing here is a real cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage as ndi
from torchvision.ops import box_iou

BACKGROUND = (253.0, 228.0, 201.0)
RED_CELL = (205.0, 167.0, 168.0)
PALLOR = (232.0, 200.0, 190.0)
NUCLEUS = (95.0, 45.0, 140.0)
CYTOPLASM = (205.0, 178.0, 205.0)  # pale lilac
PLATELET = (120.0, 60.0, 150.0)


@dataclass
class Smear:
    """An RGB float canvas being drawn, and the boxes (x0, y0, x1, y1) of its white cells."""

    height: int
    width: int
    seed: int = 0
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.pixels = np.empty((self.height, self.width, 3), np.float32)
        self.pixels[:] = BACKGROUND
        self.yy, self.xx = np.mgrid[: self.height, : self.width]

    def disc(self, cy: float, cx: float, r: float, colour: tuple[float, float, float]) -> None:
        self.pixels[(self.yy - cy) ** 2 + (self.xx - cx) ** 2 <= r * r] = colour

    def red_cell(self, cy: float, cx: float, r: float = 36) -> None:
        self.disc(cy, cx, r, RED_CELL)
        self.disc(cy, cx, r * 0.45, PALLOR)

    def platelet(self, cy: float, cx: float, r: float = 4) -> None:
        self.disc(cy, cx, r, PLATELET)

    def white_cell(self, cy: float, cx: float, r: float = 50, lobes: int = 1) -> None:
        """A lilac cytoplasm disc with one round nucleus or `lobes` separate lobes."""
        self.disc(cy, cx, r, CYTOPLASM)
        if lobes == 1:
            self.disc(cy, cx, r * 0.6, NUCLEUS)
        else:
            for k in range(lobes):
                angle = 2 * np.pi * k / lobes + 0.3
                self.disc(
                    cy + 0.45 * r * np.sin(angle), cx + 0.45 * r * np.cos(angle), r * 0.34, NUCLEUS
                )
        y0, x0 = max(0, int(np.floor(cy - r))), max(0, int(np.floor(cx - r)))
        y1 = min(self.height, int(np.ceil(cy + r)) + 1)
        x1 = min(self.width, int(np.ceil(cx + r)) + 1)
        self.boxes.append((x0, y0, x1, y1))

    def red_cells(self, n: int, r: float = 36) -> None:
        """n red cells at random places that leave the white cells' boxes free."""
        placed = 0
        for _ in range(50 * n):
            if placed == n:
                break
            cy = self.rng.uniform(0, self.height)
            cx = self.rng.uniform(0, self.width)
            if all(
                cx + r < b[0] - 4 or cx - r > b[2] + 4 or cy + r < b[1] - 4 or cy - r > b[3] + 4
                for b in self.boxes
            ):
                self.red_cell(cy, cx, r)
                placed += 1

    def image(self) -> np.ndarray:
        """The field as uint8 RGB: lightly blurred (optics) and noisy (the camera)."""
        out = ndi.gaussian_filter(self.pixels, (1.0, 1.0, 0))
        out += self.rng.normal(0, 2.0, out.shape)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (torchvision's box_iou)."""
    return float(
        box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    )


def four_cells(seed: int = 0) -> Smear:
    """A 480×560 field: two round and two lobed white cells, red cells and platelets."""
    smear = Smear(480, 560, seed)
    smear.white_cell(110, 120)
    smear.white_cell(120, 420, lobes=3)
    smear.white_cell(350, 140, lobes=3)
    smear.white_cell(360, 430, r=55)
    smear.red_cells(10)
    for cy, cx in ((240, 280), (30, 270), (450, 300)):
        smear.platelet(cy, cx)
    return smear
