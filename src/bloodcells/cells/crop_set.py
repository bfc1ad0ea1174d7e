"""`data crop-cells`: a labelled folder of whole fields into the same layout of canonical crops.

SRC is flat class folders (SRC/<class>/..., searched recursively, as `data split` reads them)
or the lab's layout (SRC/train/<class>/* and SRC/test/<class>/*, the files of each class folder,
as training reads them). Each field is labelled with its folder's class, so it gives ONE crop:
the white cell found nearest the field's centre. The other cells of a field are not of known
class: they are listed in DEST/manifest.csv, never cropped; so are the fields where no cell was
found and the unreadable ones. All crops are cut at one scale, that of the whole SRC (the
median diameter of the kept cells, or the pixel size), because a cell's size is a class cue.

DEST gets:
- the crops, DEST/<class>/<name>.png or DEST/<split>/<class>/<name>.png (a field's path below
  its class folder, as .png; `x-2.png` when two fields would share a name);
- manifest.csv: a row per kept crop, other cell, field with no cell and unreadable field;
- crops.json: the crop policy, the scale and how it was set, the counts, the versions, so a
  run trained on DEST can record how its crops were made.
DEST is written into a hidden sibling folder renamed at the end: complete or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from bloodcells.cells.cell import Cell
from bloodcells.cells.crops import CropPolicy, crop_cell
from bloodcells.cells.fields import (
    FieldCells,
    check_options,
    check_scale,
    ordered,
    search_field,
    set_scale,
)
from bloodcells.cells.find import load_field
from bloodcells.cells.outputs import Progress
from bloodcells.data.folders import IMAGE_SUFFIXES, SPLITS, is_hidden
from bloodcells.data.prepare.manifest import CROP_RECORD
from bloodcells.errors import BloodcellsError, DataError
from bloodcells.utils.files import (
    check_apart,
    check_output_folder,
    check_replaceable,
    staged_folder,
    write_atomic,
    write_json,
)
from bloodcells.utils.signals import cleanup_on_sigterm

CROPS_JSON = CROP_RECORD
MANIFEST = "manifest.csv"
MADE_BY = "bloodcells data crop-cells"
MANIFEST_COLUMNS = (
    "file",
    "source",
    "split",
    "class",
    "status",
    "cell",
    "x0",
    "y0",
    "x1",
    "y1",
    "cx",
    "cy",
    "cell_area",
    "touches_border",
    "reason",
)
# a row's status: the crop of the field's class; another cell (class unknown); none found
KEPT, OTHER, NO_CELL, UNREADABLE = "kept", "other cell", "no cell", "unreadable"


@dataclass
class Field:
    """One labelled field of SRC and where its crop goes."""

    path: Path
    rel: str  # relative to SRC, "/" separators
    within: str  # relative to its class folder
    split: str  # "" in flat class folders
    label: str
    crop: str = ""  # its crop's path relative to its class folder in DEST
    found: FieldCells | None = None
    kept: int | None = None  # index of the kept cell in found.cells


@dataclass
class CropSetResult:
    """What crop_cell_set wrote."""

    dest: Path
    layout: str  # "flat" or "lab"
    fields: int
    kept: int
    other_cells: int
    no_cell: int
    unreadable: int
    counts: dict[str, dict[str, int]]  # split ("" when flat) -> class -> crops
    scale: float | None
    scale_source: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def crop_cell_set(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    policy: CropPolicy | None = None,
    stain: str = "auto",
    pixel_size: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> CropSetResult:
    """A crop per labelled field of SRC into DEST, in SRC's layout (see the module doc).

    Everything is checked before anything is written; bad input is a one-line DataError.
    """
    start = time.perf_counter()
    policy = CropPolicy() if policy is None else policy
    check_options(stain, policy, pixel_size)
    src, dest = Path(src).expanduser(), Path(dest).expanduser()
    _check_dest(src, dest, overwrite)
    layout, fields, notes = scan_fields(src)
    _name_crops(fields)
    if progress is not None:
        progress("finding cells", 0, len(fields))
    with closing(ordered(search_field, [FieldCells(str(f.path), "") for f in fields], stain)) as it:
        for done, (item, found) in enumerate(zip(fields, it, strict=False), 1):
            item.found = found
            item.kept = nearest_centre(found)
            if progress is not None:
                progress("finding cells", done, len(fields))
    kept = [f.found.cells[f.kept] for f in fields if f.kept is not None]
    scale, how = set_scale(kept, pixel_size)
    if scale is None:
        raise DataError(f"{src}: no white cell found in any of its {len(fields):,} fields")
    check_scale(scale, policy)
    settings = {
        "made_by": MADE_BY,
        "src": os.path.abspath(src),
        "layout": layout,
        "stain": stain,
        "crop_policy": policy.to_dict(),
        "scale": {"pixels": scale, "how": how, "pixel_size_um": pixel_size},
    }
    with cleanup_on_sigterm(), staged_folder(dest, replace=overwrite) as stage:
        todo = [f for f in fields if f.kept is not None]
        if progress is not None:
            progress("cutting crops", 0, len(todo))
        with closing(ordered(_cut, todo, policy, scale, stage)) as cut:
            for done, _ in enumerate(cut, 1):
                if progress is not None:
                    progress("cutting crops", done, len(todo))
        rows = manifest_rows(fields)
        _write_manifest(stage, rows)
        result = _result(dest, layout, fields, scale, how, notes, start)
        write_json(stage / CROPS_JSON, {**settings, **_summary(result), "versions": _versions()})
    return result


def read_crop_record(root: str | Path) -> dict | None:
    """ROOT's crop record (crops.json) if ROOT is a crop set, as it or data split left it."""
    try:
        record = json.loads((Path(root) / CROPS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("made_by") == MADE_BY else None


def nearest_centre(found: FieldCells) -> int | None:
    """The index of the cell nearest the field's centre (None when there is no cell)."""
    if not found.cells or found.shape is None:
        return None
    h, w = found.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    return min(range(len(found.cells)), key=lambda i: _distance(found.cells[i], cx, cy))


def _distance(cell: Cell, cx: float, cy: float) -> float:
    return math.hypot(cell.cx - cx, cell.cy - cy)


# ---- SRC -----------------------------------------------------------------------------------


def scan_fields(src: Path) -> tuple[str, list[Field], list[str]]:
    """SRC's layout ("flat" or "lab"), its labelled fields and notes on what was skipped."""
    if not src.exists():
        raise DataError(f"{src}: no such folder; expected SRC/<class>/* or SRC/train/<class>/*")
    if not src.is_dir():
        raise DataError(f"{src}: not a folder; expected SRC/<class>/* or SRC/train/<class>/*")
    splits = [s for s in SPLITS if (src / s).is_dir() and _subdirs(src / s)]
    notes: list[str] = []
    skipped: Counter = Counter()
    fields: list[Field] = []
    if splits:
        layout = "lab"
        for split in splits:
            for folder in _subdirs(src / split):
                fields += _class_fields(src, folder, split, False, skipped)
    else:
        layout = "flat"
        classes = _subdirs(src)
        if not classes:
            raise DataError(
                f"{src}: no class folders; expected SRC/<class>/* or SRC/train/<class>/*"
            )
        for folder in classes:
            fields += _class_fields(src, folder, "", True, skipped)
    loose = [e for e in src.iterdir() if _is_image_name(e.name) and not e.is_dir()]
    if loose:
        notes.append(
            f"{len(loose)} image(s) directly in {src} skipped: they are in no class folder"
        )
    if skipped:
        kinds = ", ".join(f"{k} {n}" for k, n in skipped.most_common())
        notes.append(f"{sum(skipped.values())} file(s) skipped, not images or not read ({kinds})")
    if not fields:
        raise DataError(f"{src}: no images in its class folders")
    return layout, fields, notes


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not is_hidden(d.name))


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not is_hidden(name)


def _class_fields(
    src: Path, folder: Path, split: str, recursive: bool, skipped: Counter
) -> list[Field]:
    """The fields of one class folder: its image files (below it, when `recursive`). A broken
    link or a named pipe with an image name is a field, which load_field will call unreadable."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        if not recursive:
            skipped.update("(sub-folder)" for d in dirnames if not is_hidden(d))
            dirnames.clear()
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            if not _is_image_name(name):
                skipped[os.path.splitext(name)[1].lower() or "(none)"] += 1
                continue
            path = Path(dirpath, name)
            rel, within = path.relative_to(src).as_posix(), path.relative_to(folder).as_posix()
            found.append(Field(path, rel, within, split, folder.name))
    return found


def _name_crops(fields: list[Field]) -> None:
    """Each field's crop path: its path below its class folder as .png, made unique (ignoring
    case) within the class folder."""
    taken: set[tuple[str, str, str]] = set()
    for f in fields:
        base = PurePosixPath(f.within).with_suffix("")
        name, n = f"{base}.png", 1
        while (f.split, f.label, name.lower()) in taken:
            n += 1
            name = f"{base}-{n}.png"
        taken.add((f.split, f.label, name.lower()))
        f.crop = name


def _check_dest(src: Path, dest: Path, overwrite: bool) -> None:
    """DEST must be new (or, with overwrite, an earlier crop set) and apart from SRC."""
    check_apart(src, dest)
    check_replaceable(
        dest, overwrite, name="DEST", made_by=MADE_BY, marker=CROPS_JSON, ours=_is_crop_set
    )
    check_output_folder(dest)


def _is_crop_set(folder: Path) -> bool:
    try:
        settings = json.loads((folder / CROPS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and settings.get("made_by") == MADE_BY


# ---- DEST ----------------------------------------------------------------------------------


def _target(f: Field) -> str:
    return f"{f.split}/{f.label}/{f.crop}" if f.split else f"{f.label}/{f.crop}"


def _cut(f: Field, policy: CropPolicy, scale: float, stage: Path) -> None:
    """The kept cell of one field, cut and saved; a field that cannot be read again (changed
    since it was searched) becomes unreadable."""
    try:
        pixels = load_field(f.path)
    except BloodcellsError as exc:
        f.found.error, f.found.cells, f.kept = f"{exc} (changed while crop-cells ran)", [], None
        return
    target = stage / _target(f)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop_cell(pixels, f.found.cells[f.kept], policy, scale)).save(target)


def manifest_rows(fields: Sequence[Field]) -> list[dict]:
    """A row per kept crop, other cell, field with no cell and unreadable field, in SRC order."""
    rows = []
    for f in fields:
        base = {"source": f.rel, "split": f.split, "class": f.label}
        found = f.found
        if found is None or found.error is not None:
            reason = "not searched" if found is None else found.error
            rows.append({**base, "status": UNREADABLE, "reason": reason})
        elif not found.cells:
            rows.append({**base, "status": NO_CELL, "reason": "no white cell found"})
        for number, cell in enumerate(found.cells if found else [], 1):
            if number - 1 == f.kept:
                row = {**base, "file": _target(f), "status": KEPT}
            else:
                row = {**base, "status": OTHER, "reason": "not the cell nearest the centre"}
            rows.append({**row, **_box(number, cell)})
    return rows


def _box(number: int, cell: Cell) -> dict:
    return {
        "cell": number,
        "x0": cell.x0,
        "y0": cell.y0,
        "x1": cell.x1,
        "y1": cell.y1,
        "cx": f"{cell.cx:.1f}",
        "cy": f"{cell.cy:.1f}",
        "cell_area": cell.cell_area,
        "touches_border": "true" if cell.touches_border else "false",
    }


def _write_manifest(folder: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(folder / MANIFEST, text.getvalue().encode("utf-8", "surrogateescape"))


def _result(dest, layout, fields, scale, how, notes, start) -> CropSetResult:
    counts: dict[str, Counter] = {}
    for f in fields:
        if f.kept is not None:
            counts.setdefault(f.split, Counter())[f.label] += 1
    searched = [f.found for f in fields if f.found is not None]
    return CropSetResult(
        dest=dest,
        layout=layout,
        fields=len(fields),
        kept=sum(f.kept is not None for f in fields),
        other_cells=sum(len(s.cells) - 1 for s in searched if s.error is None and s.cells),
        no_cell=sum(s.error is None and not s.cells for s in searched),
        unreadable=sum(s.error is not None for s in searched),
        counts={s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
        scale=scale,
        scale_source=how,
        notes=notes,
        seconds=time.perf_counter() - start,
    )


def _summary(result: CropSetResult) -> dict:
    return {
        "counts": {
            "fields": result.fields,
            "crops": result.kept,
            "other_cells": result.other_cells,
            "fields_with_no_cell": result.no_cell,
            "unreadable_fields": result.unreadable,
            "per_class": result.counts,
        },
        "notes": result.notes,
    }


def _versions() -> dict:
    from bloodcells._version import versions

    return versions()
