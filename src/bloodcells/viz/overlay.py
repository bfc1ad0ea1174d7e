"""A field with its cells drawn on it: each cell's box and number (or a label such as
"1 neutrophil 0.93"); cells the image's edge cuts in another colour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bloodcells.cells.cell import Cell
from bloodcells.cells.find import to_uint8
from bloodcells.errors import DataError

INSIDE = (0, 230, 64)  # green: seen whole
CUT = (255, 150, 0)  # orange: the image's edge cuts the cell
TEXT = (255, 255, 255)
TEXT_BACK = (0, 0, 0)


def draw_cells(
    image: np.ndarray | Image.Image,
    cells: Sequence[Cell],
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """An RGB copy of `image` with each cell's box and its label (default: its number from 1)."""
    if labels is not None and (isinstance(labels, str) or len(labels) != len(cells)):
        raise DataError(f"labels must hold one entry per cell ({len(cells)})")
    pixels = to_uint8(np.asarray(image))
    canvas = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    h, w = pixels.shape[:2]
    line = max(1, round(min(h, w) / 180))
    font = ImageFont.load_default(size=max(10, round(min(h, w) / 28)))
    for number, cell in enumerate(cells, 1):
        colour = CUT if cell.touches_border else INSIDE
        box = (cell.x0, cell.y0, max(cell.x0, cell.x1 - 1), max(cell.y0, cell.y1 - 1))
        draw.rectangle(box, outline=colour, width=line)
        text = str(number) if labels is None else str(labels[number - 1])
        _label(draw, text.replace("\n", " "), cell, font, colour, (w, h))
    return canvas


def _label(draw: ImageDraw.ImageDraw, text: str, cell: Cell, font, colour, size) -> None:
    """`text` on a dark tab at the box's top-left corner: above the box, or inside it when
    the box touches the top; kept within the image."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 4
    x = min(max(0, cell.x0), max(0, size[0] - tw))
    y = cell.y0 - th if cell.y0 - th >= 0 else cell.y0
    y = min(y, max(0, size[1] - th))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=TEXT_BACK, outline=colour)
    draw.text((x + 2 - left, y + 2 - top), text, fill=TEXT, font=font)
