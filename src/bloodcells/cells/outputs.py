"""`find-cells`: every white cell of whole smear fields, written into one output folder.

OUT holds:
- cells.csv: a row per cell: image, cell (its number in the image, from 1), the box
  (x0, y0, x1, y1, end exclusive), centre, nucleus and cell areas in pixels, touches_border,
  stain, and crop (the crop's path relative to OUT);
- crops/<image stem>_<cell>.png: one square crop per cell, all cut at ONE scale for the whole
  input (the pixel size, when given, else the median cell diameter over every image), because
  a cell's size is a class cue: a scale per image or per cell would erase it;
- manifest.json: the crop policy, the scale and how it was set, stain counts, the images with
  no cell and the unreadable ones (listed, never an error), counts, versions;
- with an overlay drawer: overlays/<image stem>.png, the field with its cells drawn;
- with geojson: cells.geojson (one image) or geojson/<image stem>.geojson (several; QuPath
  imports objects per image): detections QuPath imports (see cells.geojson).
Stems are made unique (`x`, `x-2`) when two images share one.

Two passes: the first finds every cell (kept in memory: they are small) and so the scale, the
second reads each image again and cuts its crops. OUT is filled in a hidden sibling folder that
is renamed to OUT at the end: a failed run leaves no OUT, or the earlier one. Ctrl-C or SIGTERM
instead puts what is done in place: cells.partial.csv holds a row per cell of every image
searched so far (crop empty where it was not cut yet) and manifest.json says "interrupted".
OUT is locked while it is written; an existing OUT is replaced only with overwrite, and only
when it is an earlier find-cells output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
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
    unique_stems,
)
from bloodcells.cells.find import load_field
from bloodcells.cells.geojson import cells_geojson
from bloodcells.data.inputs import find_images
from bloodcells.errors import BloodcellsError, DataError
from bloodcells.utils.files import (
    check_output_folder,
    check_replaceable,
    staged_folder,
    write_atomic,
    write_json,
)
from bloodcells.utils.locks import LOCK_FILE, folder_lock
from bloodcells.utils.signals import cleanup_on_sigterm

CSV_COLUMNS = (
    "image",
    "cell",
    "x0",
    "y0",
    "x1",
    "y1",
    "cx",
    "cy",
    "nucleus_area",
    "cell_area",
    "touches_border",
    "stain",
    "crop",
)
CELLS_CSV = "cells.csv"
PARTIAL_CSV = "cells.partial.csv"
MANIFEST = "manifest.json"
MADE_BY = "bloodcells find-cells"

# progress(stage, done, total): stage is "finding cells" (pass 1) or "cutting crops" (pass 2)
Progress = Callable[[str, int, int], None]
# draws a field's cells: bloodcells.viz.overlay.draw_cells (the viz layer sits above this one)
OverlayDrawer = Callable[[np.ndarray, Sequence[Cell]], Image.Image]


@dataclass
class FindResult:
    """What find_cells_in_files wrote, and what it found."""

    out: Path
    images: int  # image files found in the input
    searched: int  # images pass 1 went through (all of them unless interrupted)
    cells: int
    touching_border: int
    crops: int
    no_cell: list[str]
    unreadable: list[tuple[str, str]]  # (image, reason)
    scale: float | None  # px: the median cell's diameter; None when no cell was found
    scale_source: str  # "median of N cells", "pixel size 0.1 µm", or why there is none
    stains: dict[str, int]  # images per stain used
    skipped: dict[str, int] = field(default_factory=dict)  # other files, by suffix
    complete: bool = True
    seconds: float = 0.0

    @property
    def csv(self) -> Path:
        return self.out / (CELLS_CSV if self.complete else PARTIAL_CSV)


class FindInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during find_cells_in_files; `result` says what OUT holds (None:
    nothing was done, nothing written). `code` is the exit code: 130, or 143 for SIGTERM."""

    def __init__(self, result: FindResult | None, code: int) -> None:
        super().__init__("interrupted")
        self.result, self.code = result, code


def find_cells_in_files(
    files: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    stain: str = "auto",
    policy: CropPolicy | None = None,
    pixel_size: float | None = None,
    overlay: OverlayDrawer | None = None,
    geojson: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> FindResult:
    """Find every white cell in `files` (image files, folders, glob patterns) into `out`.

    See the module's docstring for what `out` holds. `pixel_size` (µm per pixel) sets the
    scale; without it the scale is the median cell diameter of the whole input. Everything is
    checked before any work: bad input is a one-line BloodcellsError.
    """
    policy = CropPolicy() if policy is None else policy
    check_options(stain, policy, pixel_size)
    out = Path(out)
    _check_out(out, overwrite)
    found = find_images([files] if isinstance(files, str | os.PathLike) else files)
    paths = _outside(found.files, out)
    fields = [FieldCells(p, s) for p, s in zip(paths, unique_stems(paths), strict=True)]
    run = _Run(out, fields, stain, policy, pixel_size, overlay, geojson, progress)
    run.skipped = dict(found.skipped)
    if len(paths) < len(found.files):
        run.skipped["(inside OUT)"] = len(found.files) - len(paths)
    run.inputs = [str(f) for f in ([files] if isinstance(files, str | os.PathLike) else files)]
    return _write(run, out, overwrite)


# ---- checks before any work ----------------------------------------------------------------


def _check_out(out: Path, overwrite: bool) -> None:
    """OUT must be new, or (with overwrite) an earlier find-cells output nobody writes now."""
    if out.is_dir() and not out.is_symlink() and (out / LOCK_FILE).exists():
        with folder_lock(out, "output folder"):  # a RunError while another writes it
            pass
    check_replaceable(out, overwrite, name="OUT", made_by=MADE_BY, marker=MANIFEST, ours=_is_ours)
    check_output_folder(out)


def _is_ours(out: Path) -> bool:
    """OUT is empty (but for a lock file) or holds a find-cells manifest."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return isinstance(manifest, dict) and manifest.get("made_by") == MADE_BY
    except (OSError, ValueError):
        return all(entry.name == LOCK_FILE for entry in out.iterdir())


def _outside(files: list[str], out: Path) -> list[str]:
    """`files` less those inside OUT (an earlier run's crops are not new fields)."""
    inside = os.path.realpath(out) + os.sep
    kept = [f for f in files if not os.path.realpath(f).startswith(inside)]
    if not kept:
        raise DataError(f"no images outside OUT {out}: the input holds only OUT's own files")
    return kept


# ---- the run -------------------------------------------------------------------------------


@dataclass
class _Run:
    out: Path
    fields: list[FieldCells]
    stain: str
    policy: CropPolicy
    pixel_size: float | None
    overlay: OverlayDrawer | None
    geojson: bool
    progress: Progress | None
    inputs: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    searched: int = 0
    scale: float | None = None
    scale_source: str = "not set: interrupted before every image was searched"
    start: float = field(default_factory=time.perf_counter)

    def tick(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


def _write(run: _Run, out: Path, overwrite: bool) -> FindResult:
    """Claim and lock OUT, fill a staging folder, and put it in place (see the module doc)."""
    made = _claim(out)
    placed = False
    stop: BaseException | None = None
    try:
        with folder_lock(out, "output folder"):
            if not overwrite and not _is_ours(out):
                raise DataError(f"{out}: appeared while starting; choose a new OUT")
            with cleanup_on_sigterm(), staged_folder(out, replace=True) as stage:
                try:
                    _search_and_cut(run, stage)
                except (KeyboardInterrupt, SystemExit) as exc:
                    if not run.searched:
                        raise
                    stop = exc
                    _write_tables(run, stage, complete=False)
            placed = True
    except (KeyboardInterrupt, SystemExit) as exc:
        raise FindInterrupted(None, _exit_code(exc)) from None
    finally:
        if not placed:
            _unclaim(out, made)
    result = _result(run, complete=stop is None)
    if stop is not None:
        raise FindInterrupted(result, _exit_code(stop))
    return result


def _exit_code(exc: BaseException) -> int:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and code > 128 else 130


def _claim(out: Path) -> list[Path]:
    """mkdir OUT (and its missing parents) so that it can be locked; the folders made. A
    FileExistsError becomes the DataError of an OUT that another command just made."""
    missing = [p for p in (out, *out.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(exist_ok=folder != out)
        except FileExistsError:
            raise DataError(
                f"{out}: exists (made just now by another command); choose a new OUT"
            ) from None
    return missing


def _unclaim(out: Path, made: list[Path]) -> None:
    """Remove the OUT this run made (holding only its lock file) and the parents it made."""
    if not made:
        return
    try:
        if all(entry.name == LOCK_FILE for entry in out.iterdir()):
            shutil.rmtree(out)
    except OSError:
        return
    for folder in made[1:]:
        try:
            folder.rmdir()
        except OSError:
            return


def _search_and_cut(run: _Run, stage: Path) -> None:
    """Pass 1 (find), the scale, pass 2 (cut, draw, GeoJSON), then cells.csv and the manifest."""
    fields = run.fields
    run.tick("finding cells", 0, len(fields))
    with closing(ordered(search_field, fields, run.stain)) as searched:
        for done, result in enumerate(searched, 1):
            fields[done - 1] = result
            run.searched = done
            run.tick("finding cells", done, len(fields))
    run.scale, run.scale_source = set_scale([c for f in fields for c in f.cells], run.pixel_size)
    if run.scale is not None:
        check_scale(run.scale, run.policy)
    (stage / "crops").mkdir()
    if run.overlay is not None:
        (stage / "overlays").mkdir()
    several = len(fields) > 1
    if run.geojson and several:
        (stage / "geojson").mkdir()
    todo = [f for f in fields if f.error is None and (f.cells or run.overlay is not None)]
    run.tick("cutting crops", 0, len(todo))
    with closing(ordered(_cut, todo, run, stage)) as cut:
        for done, _ in enumerate(cut, 1):
            run.tick("cutting crops", done, len(todo))
    if run.geojson:
        for f in fields:
            if f.error is None:
                name = "cells.geojson" if not several else f"geojson/{f.stem}.geojson"
                doc = cells_geojson(f.cells, os.path.basename(f.path))
                write_atomic(stage / name, json.dumps(doc, indent=1) + "\n")
    _write_tables(run, stage, complete=True)


def _cut(item: FieldCells, run: _Run, stage: Path) -> None:
    """Pass 2 for one image: its crops, and its overlay. An image that cannot be read again
    (changed since pass 1) becomes unreadable."""
    try:
        pixels = load_field(item.path)
    except BloodcellsError as exc:
        item.error, item.cells = f"{exc} (changed while find-cells ran)", []
        return
    crops = []
    if item.cells and run.scale is not None:
        for number, cell in enumerate(item.cells, 1):
            name = f"crops/{item.stem}_{number}.png"
            Image.fromarray(crop_cell(pixels, cell, run.policy, run.scale)).save(stage / name)
            crops.append(name)
    if run.overlay is not None:
        # zlib level 1: a third of the default's time for a fifth more bytes
        drawn = run.overlay(pixels, item.cells)
        drawn.save(stage / "overlays" / f"{item.stem}.png", compress_level=1)
    item.crops = crops


# ---- the tables ----------------------------------------------------------------------------


def _write_tables(run: _Run, stage: Path, complete: bool) -> None:
    """cells.csv (or, interrupted, cells.partial.csv) and manifest.json, the manifest last."""
    searched = run.fields[: run.searched]
    write_atomic(stage / (CELLS_CSV if complete else PARTIAL_CSV), csv_bytes(_rows(searched)))
    write_json(stage / MANIFEST, _manifest(run, complete))


def _rows(fields: Iterable[FieldCells]) -> Iterator[list]:
    yield list(CSV_COLUMNS)
    for f in fields:
        for number, c in enumerate(f.cells, 1):
            crop = f.crops[number - 1] if number <= len(f.crops) else ""
            yield [
                f.path, number, c.x0, c.y0, c.x1, c.y1, f"{c.cx:.1f}", f"{c.cy:.1f}",
                c.nucleus_area, c.cell_area, "true" if c.touches_border else "false", c.stain,
                crop,
            ]  # fmt: skip


def csv_bytes(rows: Iterable[Sequence]) -> bytes:
    """Rows as CSV bytes; a file name that is not valid UTF-8 is written as its own bytes."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode("utf-8", "surrogateescape")


def _result(run: _Run, complete: bool) -> FindResult:
    searched = run.fields[: run.searched]
    cells = [c for f in searched for c in f.cells]
    return FindResult(
        out=run.out,
        images=len(run.fields),
        searched=run.searched,
        cells=len(cells),
        touching_border=sum(c.touches_border for c in cells),
        crops=sum(len(f.crops) for f in run.fields),
        no_cell=[f.path for f in searched if f.error is None and not f.cells],
        unreadable=[(f.path, f.error) for f in searched if f.error is not None],
        scale=run.scale,
        scale_source=run.scale_source,
        stains=dict(sorted(Counter(f.stain for f in searched if f.stain).items())),
        skipped=run.skipped,
        complete=complete,
        seconds=time.perf_counter() - run.start,
    )


def _manifest(run: _Run, complete: bool) -> dict:
    from bloodcells._version import versions

    result = _result(run, complete)
    several = len(run.fields) > 1
    return {
        "made_by": MADE_BY,
        "status": "complete" if complete else "interrupted",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": run.inputs,
        "stain": run.stain,
        "crop_policy": run.policy.to_dict(),
        "scale": {"pixels": run.scale, "how": run.scale_source, "pixel_size_um": run.pixel_size},
        "counts": {
            "images": result.images,
            "images_searched": result.searched,
            "cells": result.cells,
            "cells_touching_border": result.touching_border,
            "images_with_no_cell": len(result.no_cell),
            "unreadable_images": len(result.unreadable),
            "files_skipped": sum(run.skipped.values()),
        },
        "stains": result.stains,
        "images_with_no_cell": result.no_cell,
        "unreadable": [{"image": p, "reason": r} for p, r in result.unreadable],
        "skipped": run.skipped,
        "outputs": {
            "cells": CELLS_CSV if complete else PARTIAL_CSV,
            "crops": "crops/",
            "overlays": "overlays/" if run.overlay is not None else None,
            "geojson": (None if not run.geojson else "geojson/" if several else "cells.geojson"),
        },
        "seconds": round(result.seconds, 2),
        "versions": versions(),
    }
