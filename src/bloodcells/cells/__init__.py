"""Find the white cells in whole smear fields and cut one canonical crop per cell."""

from bloodcells.cells.cell import Cell, Stain
from bloodcells.cells.crops import CropPolicy, crop_cell, estimate_scale, scale_from_pixel_size
from bloodcells.cells.find import MAX_PIXELS, cell_labels, detect_stain, find_cells, load_field

__all__ = [
    "MAX_PIXELS",
    "Cell",
    "CropPolicy",
    "Stain",
    "cell_labels",
    "crop_cell",
    "detect_stain",
    "estimate_scale",
    "find_cells",
    "load_field",
    "scale_from_pixel_size",
]
