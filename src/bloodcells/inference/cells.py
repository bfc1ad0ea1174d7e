"""predict --find-cells: the white cells of whole fields, each cut as training cut its crops.

A run trained on a crop set (`bloodcells data crop-cells`) records the set's crop policy:
crop size and the share of the crop the median cell fills. Predict cuts the cells of the new
images with that policy, at the scale of the new images themselves: the median cell diameter of
the whole input (or the pixel size the user gives), never one scale per cell, because a cell's
size is a class cue and the magnification belongs to the sample, not to the cell. A run trained
on other patches gets the default policy at its own image size.

Two passes over the files: the first finds every cell (and so the input's scale), the second
crops and predicts, a field at a time. One row per cell; an unreadable field gets one
`unreadable` row; a field with no cell, none.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bloodcells.cells.crops import CropPolicy, crop_cell
from bloodcells.cells.fields import (
    FieldCells,
    check_options,
    ordered,
    search_field,
    set_scale,
    unique_stems,
)
from bloodcells.cells.find import load_field
from bloodcells.cells.geojson import cells_geojson
from bloodcells.data.inputs import in_memory
from bloodcells.errors import BloodcellsError
from bloodcells.inference.count import COUNTED
from bloodcells.inference.predictor import Predictor
from bloodcells.utils.files import staged_folder, write_json

CELL_COLUMNS = ("image", "cell", "x0", "y0", "x1", "y1")
CELL_KEY = "_cell"  # a row's Cell, beside its columns
BOX = CELL_COLUMNS[2:]


@dataclass(frozen=True)
class CellCropping:
    """How predict finds and cuts cells: the stain, the crop policy, the scale's source."""

    policy: CropPolicy
    stain: str = "auto"
    pixel_size: float | None = None  # µm per pixel; None: the input's median cell diameter

    @classmethod
    def of(cls, predictor: Predictor, stain: str = "auto", pixel_size: float | None = None):
        """The cropping of the crops `predictor`'s model was trained on, or, for a model
        trained on other patches, the default policy at the model's image size."""
        policy = predictor.crop_policy or CropPolicy(size=predictor.transform.size)
        check_options(stain, policy, pixel_size)
        return cls(policy, stain, pixel_size)


def cell_columns(predictor: Predictor) -> list[str]:
    """image, cell, the box, then a prediction row's columns after its path."""
    return [*CELL_COLUMNS, *predictor.columns[1:]]


def cell_chunks(
    predictor: Predictor,
    files: Sequence[str],
    cropping: CellCropping,
    on_found: Callable[[int, int], None] | None = None,
) -> Iterator[list[dict]]:
    """The rows of each field in `files`, one chunk per field (see the module doc)."""
    found = []
    items = [FieldCells(path, "") for path in files]
    with closing(ordered(search_field, items, cropping.stain)) as searched:
        for done, item in enumerate(searched, 1):
            found.append(item)
            if on_found is not None:
                on_found(done, len(files))
    every = [cell for item in found for cell in item.cells]
    scale, _ = set_scale(every, cropping.pixel_size)
    for item in found:
        if item.error is not None:
            yield [_unreadable(predictor, item.path)]
        elif item.cells and scale is not None:
            yield _field_rows(predictor, item.path, item.cells, cropping.policy, scale)


def image_counts(rows: Sequence[Mapping], classes: Sequence[str]) -> list[dict]:
    """Per field: its cells, those counted (ok or unsure), and the counted cells per class."""
    counts: dict[str, dict] = {}
    for row in rows:
        if row["status"] == "unreadable":
            continue
        entry = counts.setdefault(
            row["image"],
            {"image": row["image"], "cells": 0, "counted": 0} | dict.fromkeys(classes, 0),
        )
        entry["cells"] += 1
        if row["status"] in COUNTED:
            entry["counted"] += 1
            entry[row["predicted"]] += 1
    return list(counts.values())


def image_counts_csv(rows: Sequence[Mapping], classes: Sequence[str]) -> str:
    """image_counts as CSV text: image, cells, counted, then one column per class."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["image", "cells", "counted", *classes], lineterminator="\n")
    writer.writeheader()
    writer.writerows(image_counts(rows, classes))
    return buffer.getvalue()


def write_geojson(folder: Path, rows: Sequence[Mapping], overwrite: bool = False) -> int:
    """One QuPath FeatureCollection per field with cells (`<field stem>.geojson`) into
    `folder`, written as one unit: each cell a detection of its predicted class, with its
    probability. The number of files written."""
    by_field: dict[str, list[Mapping]] = {}
    for row in rows:
        if CELL_KEY in row:
            by_field.setdefault(row["image"], []).append(row)
    with staged_folder(folder, replace=overwrite) as stage:
        for stem, (image, cells) in zip(
            unique_stems(list(by_field)), by_field.items(), strict=True
        ):
            collection = cells_geojson(
                [r[CELL_KEY] for r in cells],
                Path(image).name,
                [r["predicted"] for r in cells],
                [r["probability"] for r in cells],
            )
            write_json(stage / f"{stem}.geojson", collection)
    return len(by_field)


def _field_rows(
    predictor: Predictor, path: str, cells: list, policy: CropPolicy, scale: float
) -> list[dict]:
    """Crop every cell of one field (read again), predict the crops, one row per cell."""
    try:
        field = load_field(path)
    except (BloodcellsError, OSError):  # changed or gone since the first pass
        return [_unreadable(predictor, path)]
    crops = [Image.fromarray(crop_cell(field, cell, policy, scale)) for cell in cells]
    images, _ = in_memory(crops, predictor.transform)
    names = [f"{path}#{k}" for k in range(1, len(cells) + 1)]
    rows = predictor.rows(images, names)
    return [
        {"image": path, "cell": k, **{b: getattr(cell, b) for b in BOX}}
        | {c: v for c, v in row.items() if c != "path"}
        | {CELL_KEY: cell}  # not a column: for the GeoJSON
        for k, (cell, row) in enumerate(zip(cells, rows, strict=True), 1)
    ]


def _unreadable(predictor: Predictor, path: str) -> dict:
    row = predictor.unreadable_row(path)
    del row["path"]
    return dict.fromkeys(CELL_COLUMNS) | {"image": path} | row
