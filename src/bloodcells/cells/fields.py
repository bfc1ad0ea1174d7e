"""A set of fields searched for cells: what find-cells, crop-cells and predict --find-cells share.

Pass 1 searches every field (search_field, in threads by `ordered`); the set's scale comes from
all the cells found (set_scale), never from one cell; file-name stems are made unique.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bloodcells.cells.cell import Cell
from bloodcells.cells.crops import CropPolicy, estimate_scale, scale_from_pixel_size
from bloodcells.cells.find import STAINS, detect_stain, find_cells, load_field
from bloodcells.errors import BloodcellsError, DataError
from bloodcells.utils.devices import decode_workers

PIXEL_SIZE_RANGE = (0.01, 100.0)  # µm per pixel: from beyond any light microscope to 1 px/cell
MAX_CROP_SIDE = 16_384  # source pixels a crop may span: past it, a scale is surely wrong
MAX_STEM_BYTES = 150  # leaves room for "_<cell>.png" under common 255-byte name limits
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class FieldCells:
    """One image: what pass 1 found in it (or why it could not be read), its outputs' stem."""

    path: str
    stem: str
    cells: list[Cell] = field(default_factory=list)
    stain: str | None = None
    error: str | None = None
    shape: tuple[int, int] | None = None  # (height, width) once read
    crops: list[str] = field(default_factory=list)  # relative to OUT, once pass 2 cut them


def check_options(stain: str, policy: CropPolicy, pixel_size: float | None) -> None:
    """stain one of STAINS, policy a CropPolicy, pixel_size None or in PIXEL_SIZE_RANGE."""
    if stain not in STAINS:
        raise DataError(f"stain must be one of {', '.join(STAINS)}, not {stain!r}")
    if not isinstance(policy, CropPolicy):
        raise DataError(f"policy must be a CropPolicy, not {type(policy).__name__}")
    if pixel_size is None:
        return
    low, high = PIXEL_SIZE_RANGE
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, int | float):
        raise DataError(f"pixel_size must be a number of µm per pixel, not {pixel_size!r}")
    if not low <= pixel_size <= high:
        raise DataError(
            f"pixel_size must be {low:g} to {high:g} µm per pixel, not {pixel_size!r} "
            "(a 100x oil objective gives about 0.1)"
        )
    check_scale(scale_from_pixel_size(pixel_size), policy)


def unique_stems(paths: Sequence[str]) -> list[str]:
    """A file-name stem per path, unique ignoring case: `x`, then `x-2` for a second x.png;
    control characters become `_`, long names are cut."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        base = _CONTROL.sub("_", Path(path).stem) or "image"
        raw = base.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_STEM_BYTES:
            base = raw[:MAX_STEM_BYTES].decode("utf-8", "ignore")
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def search_field(item: FieldCells, stain: str) -> FieldCells:
    """Pass 1 for one image: `item` with its cells, stain and shape, or why it cannot be read."""
    try:
        pixels = load_field(item.path)
        used = detect_stain(pixels) if stain == "auto" else stain
        cells = find_cells(pixels, used)
    except (BloodcellsError, ValueError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return FieldCells(item.path, item.stem, error=reason)
    return FieldCells(item.path, item.stem, cells, used, shape=pixels.shape[:2])


def ordered(work: Callable, items: Sequence, *args) -> Iterator:
    """work(item, *args) for each item in threads, yielded in order; a few ahead at most, and
    the rest cancelled when the consumer stops (Ctrl-C)."""
    workers = decode_workers()
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: list[Future] = []
    source = iter(items)
    try:
        for item in source:
            pending.append(pool.submit(work, item, *args))
            if len(pending) > 2 * workers:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def set_scale(cells: Sequence[Cell], pixel_size: float | None) -> tuple[float | None, str]:
    """The scale of a set of cells (px across the median cell) and how it was set: from the
    pixel size when given, else the median diameter of `cells` (None when there is none)."""
    if pixel_size is not None:
        return scale_from_pixel_size(pixel_size), f"pixel size {pixel_size:g} µm"
    if not cells:
        return None, "none: no cell was found (no crops cut)"
    whole = [c for c in cells if not c.touches_border]
    return estimate_scale(cells), f"median of {len(whole or cells):,} cells"


def check_scale(scale: float, policy: CropPolicy) -> None:
    """A DataError when crops at `scale` would span more than MAX_CROP_SIDE source pixels."""
    side = scale / policy.cell_fraction
    if side > MAX_CROP_SIDE:
        raise DataError(
            f"crops would span {side:,.0f} source pixels (a cell {scale:,.0f} pixels across, "
            f"cell_fraction={policy.cell_fraction:g}); check pixel_size or the images"
        )
