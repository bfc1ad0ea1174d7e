"""Flat class folders, or a folder and a CSV of labels, into the lab's layout: a train/test
split that is stratified by class, optionally grouped (by donor, slide, patient), reproducible,
and written as one unit with a manifest. SRC is only ever read.

What SRC may hold is read by `split_input`; the file names, groups and test set are drawn by
`split_plan` (the same seed always gives the same split). This module checks the options and
DEST, and writes DEST:
- DEST/train/<class>/<name> and DEST/test/<class>/<name>, copied or linked from SRC.
- DEST/manifest.csv: file (relative to DEST), class, split, group, source (relative to SRC).
- DEST/split.json: the settings and the counts, to redo or audit the split.
It is written into a hidden sibling folder that is renamed to DEST when complete: a failed or
interrupted split leaves no DEST (a killed process leaves the hidden `.DEST.partial-*`
folder, which the next split to DEST removes).
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bloodcells.data.folders import SPLITS
from bloodcells.data.prepare.manifest import CROP_RECORD, MANIFEST, read_manifest, write_manifest
from bloodcells.data.prepare.split_input import Item, check_classes, read_labels, scan_class_folders
from bloodcells.data.prepare.split_plan import (
    assign_groups,
    check_both_sides,
    choose_test,
    compile_group_regex,
    unique_names,
)
from bloodcells.errors import DataError, DataWarning, os_reason
from bloodcells.utils.files import (
    check_apart,
    check_output_folder,
    check_replaceable,
    staged_folder,
    write_json,
)

SETTINGS = "split.json"
MANIFEST_COLUMNS = ("file", "class", "split", "group", "source")
MAX_SEED = 2**32 - 1  # what sklearn's random_state takes
# A hardlink that the file system refuses: another device, no hardlinks, too many links.
LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
DISK_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}


@dataclass
class SplitResult:
    """What `split_folder` wrote."""

    dest: Path
    counts: dict[str, dict[str, int]]  # split -> class -> images
    groups: dict[str, int]  # split -> number of groups (empty without group_by)
    test_fraction: float  # reached
    files: dict[str, int]  # copy / hardlink / symlink -> count
    notes: list[str] = field(default_factory=list)  # skipped files, said once each


def split_folder(
    src: str | Path,
    dest: str | Path,
    test_fraction: float = 0.2,
    group_by: str | None = None,
    labels: str | Path | None = None,
    link: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> SplitResult:
    """Write SRC's images into DEST in the lab's layout (see the module's docstring).

    Everything is checked before anything is written; bad input is a one-line DataError.
    """
    src, dest = Path(src).expanduser(), Path(dest).expanduser()
    labels = None if labels is None else Path(labels).expanduser()
    _check_fraction(test_fraction)
    _check_seed(seed)
    pattern = compile_group_regex(group_by) if group_by is not None else None
    _check_dest(src, dest, labels, overwrite)
    items, notes = read_labels(src, labels) if labels else scan_class_folders(src)
    check_classes(items, labels or src)
    if overwrite and dest.exists():
        _check_sources_outside(items, dest)
    items = unique_names(items)
    if pattern is not None:
        items = assign_groups(items, pattern, group_by)
    test = choose_test(items, test_fraction, seed)
    if pattern is not None:
        check_both_sides(items, test, group_by)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    sides = ["test" if i in test else "train" for i in range(len(items))]
    reached = len(test) / len(items)
    settings = _settings(src, labels, group_by, seed, test_fraction)
    settings["test_fraction_reached"] = round(reached, 6)
    placed = _write(items, sides, dest, link, overwrite, settings, src / CROP_RECORD)
    groups = {
        s: {it.group for it, side in zip(items, sides, strict=True) if side == s} for s in SPLITS
    }
    return SplitResult(
        dest=dest,
        counts=_counts(items, sides),
        groups={s: len(g) for s, g in groups.items()} if pattern is not None else {},
        test_fraction=reached,
        files=placed,
        notes=notes,
    )


# ---- checks on the options and the destination -------------------------------------------


def _check_fraction(test_fraction: float) -> None:
    if not (isinstance(test_fraction, int | float) and 0 < test_fraction < 1):
        raise DataError(
            f"test_fraction={test_fraction}: must be between 0 and 1 (e.g. 0.2 for 20% test)"
        )


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise DataError(f"seed={seed}: must be 0 to {MAX_SEED}")


def _check_dest(src: Path, dest: Path, labels: Path | None, overwrite: bool) -> None:
    """DEST must be new (or, with overwrite, an earlier split) and apart from SRC."""
    check_apart(src, dest)
    real_dest = Path(os.path.realpath(dest))
    if labels is not None and real_dest in Path(os.path.realpath(labels)).parents:
        raise DataError(f"{dest}: holds the labels CSV {labels}; choose a DEST outside it")
    check_replaceable(
        dest,
        overwrite,
        name="DEST",
        made_by="bloodcells data split",
        marker=MANIFEST,
        ours=lambda folder: (folder / MANIFEST).is_file(),
    )
    check_output_folder(dest.parent)


def _check_sources_outside(items: list[Item], dest: Path) -> None:
    """With overwrite, no image may be read from the DEST that is about to be replaced."""
    real_dest = os.path.realpath(dest) + os.sep
    inside = [it for it in items if os.path.realpath(it.source).startswith(real_dest)]
    if inside:
        raise DataError(
            f"{inside[0].source}: is inside DEST {dest} ({len(inside)} such file(s)), which "
            "overwrite=True would replace; choose another DEST"
        )


# ---- writing DEST ------------------------------------------------------------------------


def _settings(src, labels, group_by, seed, test_fraction) -> dict:
    from bloodcells._version import __version__

    return {
        "src": os.path.abspath(src),
        "labels": None if labels is None else os.path.abspath(labels),
        "test_fraction": test_fraction,
        "group_by": group_by,
        "seed": seed,
        "bloodcells": __version__,
    }


def _write(
    items: list[Item],
    sides: list[str],
    dest: Path,
    link: bool,
    overwrite: bool,
    settings: dict,
    crop_record: Path,
) -> dict[str, int]:
    """The images, the manifest and the settings into DEST as one unit; how files were placed.
    SRC's crop record (a crop set's crops.json), if there is one, goes along unchanged.

    A full disk is a DataError that names DEST (the copy's own error names the source file).
    """
    try:
        with staged_folder(dest, replace=overwrite) as staging:
            placed = _place_all(items, sides, staging, link)
            write_manifest(staging, MANIFEST_COLUMNS, _manifest_rows(items, sides))
            counts = _counts(items, sides)
            write_json(staging / SETTINGS, {**settings, "files": placed, "counts": counts})
            if crop_record.is_file():
                shutil.copyfile(crop_record, staging / CROP_RECORD)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise DataError(
            f"{dest}: cannot be written, {os_reason(exc)} ({DISK_FULL[exc.errno]}); free some "
            "space or choose a DEST on another disk"
        ) from None
    return placed


def _place_all(items: list[Item], sides: list[str], staging: Path, link: bool) -> dict[str, int]:
    """Every image into staging/<split>/<class>/<name>; how many were copied or linked."""
    placed: Counter = Counter()
    made: set[Path] = set()
    for item, side in zip(items, sides, strict=True):
        folder = staging / side / item.label
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        placed[_place(item.source, folder / item.name, link)] += 1
    return dict(sorted(placed.items()))


def _counts(items: list[Item], sides: list[str]) -> dict[str, dict[str, int]]:
    """Images per split and class."""
    counts = {s: Counter() for s in SPLITS}
    for item, side in zip(items, sides, strict=True):
        counts[side][item.label] += 1
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


def _manifest_rows(items: list[Item], sides: list[str]) -> list[dict[str, str]]:
    """A manifest row per image, train before test, then by class and file."""
    rows = [
        {
            "file": f"{side}/{item.label}/{item.name}",
            "class": item.label,
            "split": side,
            "group": item.group,
            "source": item.rel,
        }
        for item, side in zip(items, sides, strict=True)
    ]
    return sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["class"], r["file"]))


def _place(source: Path, target: Path, link: bool) -> str:
    """Copy `source` to `target`, or hardlink it (a symlink where a hardlink cannot be made)."""
    if not link:
        shutil.copy2(source, target)
        return "copy"
    try:
        os.link(source, target)
        return "hardlink"
    except OSError as exc:
        if exc.errno not in LINK_FALLBACK:
            raise
    os.symlink(os.path.realpath(source), target)
    return "symlink"


__all__ = [
    "MANIFEST",
    "SETTINGS",
    "Item",
    "SplitResult",
    "read_manifest",
    "split_folder",
]
