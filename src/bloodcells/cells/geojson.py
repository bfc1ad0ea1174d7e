"""The cells of one image as GeoJSON that QuPath imports as detections (File > Import objects).

QuPath (0.4 and later; qupath-core's PathObjectTypeAdapters and GsonTools) reads a
FeatureCollection whose features carry, under `properties`:
- `objectType`: "detection" makes a detection object (not an annotation, QuPath's default);
- `name`: the object's name;
- `classification`: `{"name": ..., "color": [r, g, b]}`, read only when both keys are there;
- `measurements`: an object of name -> number (numbers only).
A feature's `id`, when it is a UUID, becomes the object's id. Other properties are kept in the
file for other readers and ignored by QuPath. Coordinates are pixels of the full image, origin
at the top-left corner of its top-left pixel: a box x0 <= x < x1 spans x0 to x1.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import uuid
from collections.abc import Sequence

from bloodcells.cells.cell import Cell
from bloodcells.errors import DataError

# The five white cell types in the colours a haematology atlas tends to use; other classes
# get a colour of their own from their name (the same name, the same colour, every run).
CLASS_COLOURS = {
    "neutrophil": (31, 119, 180),
    "lymphocyte": (44, 160, 44),
    "monocyte": (148, 103, 189),
    "eosinophil": (214, 39, 40),
    "basophil": (140, 86, 75),
}
# Ids are UUIDs made from the image name and the cell number, so a second export of the same
# cells gives the same ids (QuPath reads ids since 0.4).
ID_NAMESPACE = uuid.UUID("7d3b1f8e-5a61-4f0e-9b8c-2f4a1c6e9d30")


def class_colour(name: str) -> list[int]:
    """The RGB colour of a class: a fixed one for the white cell types, else one from its name."""
    known = CLASS_COLOURS.get(name.lower())
    if known is not None:
        return list(known)
    hue = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:2])
    r, g, b = colorsys.hsv_to_rgb(hue / 65536, 0.65, 0.85)
    return [round(255 * r), round(255 * g), round(255 * b)]


def cells_geojson(
    cells: Sequence[Cell],
    image_name: str,
    classes: Sequence[str | None] | None = None,
    probabilities: Sequence[float | None] | None = None,
) -> dict:
    """A GeoJSON FeatureCollection of `cells` (numbered from 1, in order) for QuPath.

    `classes` and `probabilities`, when given, hold one entry per cell (None: not known): the
    class becomes the detection's classification, the probability a measurement.
    """
    classes = _per_cell(classes, cells, "classes")
    probabilities = _per_cell(probabilities, cells, "probabilities")
    features = [
        _feature(number, cell, image_name, cls, p)
        for number, (cell, cls, p) in enumerate(zip(cells, classes, probabilities, strict=True), 1)
    ]
    return {"type": "FeatureCollection", "features": features}


def box_ring(cell: Cell) -> list[list[int]]:
    """The box's closed ring of corners: first point repeated last, counter-clockwise in
    the numbers (GeoJSON's right-hand rule for an exterior ring)."""
    x0, y0, x1, y1 = cell.x0, cell.y0, cell.x1, cell.y1
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(number: int, cell: Cell, image_name: str, cls: str | None, p: float | None) -> dict:
    measurements: dict[str, float] = {
        "Cell number": number,
        "Centroid X px": round(cell.cx, 2),
        "Centroid Y px": round(cell.cy, 2),
        "Cell area px": cell.cell_area,
        "Nucleus area px": cell.nucleus_area,
        "Cell diameter px": round(cell.diameter, 2),
        "Touches border": int(cell.touches_border),
    }
    properties: dict = {"objectType": "detection", "name": f"cell {number}"}
    if cls is not None:
        properties["classification"] = {"name": str(cls), "color": class_colour(str(cls))}
    if p is not None:
        if not (isinstance(p, int | float) and math.isfinite(p)):
            raise DataError(f"probabilities must be numbers, not {p!r}")
        measurements["Probability"] = round(float(p), 6)
    properties["measurements"] = measurements
    properties["image"] = image_name
    properties["stain"] = cell.stain
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(ID_NAMESPACE, f"{image_name}\0{number}")),
        "geometry": {"type": "Polygon", "coordinates": [box_ring(cell)]},
        "properties": properties,
    }


def _per_cell(values: Sequence | None, cells: Sequence[Cell], name: str) -> list:
    if values is None:
        return [None] * len(cells)
    if isinstance(values, str) or len(values) != len(cells):
        raise DataError(f"{name} must hold one entry per cell ({len(cells)}), not {values!r:.80}")
    return list(values)
