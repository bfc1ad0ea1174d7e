"""SRC read for `data split`: which images it holds and the class of each. Only ever read.

SRC is one of:
- flat class folders, SRC/<class>/<image>; images may also sit in sub-folders of a class folder
  (SRC/<class>/<slide>/<image>). Hidden files and folders are ignored; other files are skipped
  and counted, never silently.
- a folder and a CSV (`labels`) with a `path` and a `label` column (also accepted: file,
  filename or image for the path, class for the label; without such a header row the first two
  columns are path and label). A relative path is relative to SRC, not to the CSV's folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bloodcells.data.folders import IMAGE_SUFFIXES, is_hidden, is_image_file
from bloodcells.errors import DataError

MAX_LABEL_CHARS = 200
PATH_COLUMNS = ("path", "file", "filename", "image")
LABEL_COLUMNS = ("label", "class")
SRC_SHAPES = "expected flat class folders SRC/<class>/<image>, or labels='labels.csv'"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Item:
    """One image to place: where it is read from, its path as the regex sees it, its class."""

    source: Path
    rel: str  # relative to SRC with "/" separators (for a CSV: the path as written)
    label: str
    within: str  # its path below the class folder (for a CSV: rel), for unique names
    name: str = ""  # its file name in DEST/<split>/<label>/
    group: str = ""


def scan_class_folders(src: Path) -> tuple[list[Item], list[str]]:
    """The images of SRC/<class>/..., and notes on what was skipped."""
    _check_src_folder(src)
    subdirs = sorted(d for d in src.iterdir() if d.is_dir() and not is_hidden(d.name))
    splits = [d.name for d in subdirs if d.name.lower() in ("train", "test", "val", "valid")]
    if splits and any(
        e.is_dir() and not is_hidden(e.name)
        for d in subdirs
        if d.name in splits
        for e in d.iterdir()
    ):
        raise DataError(
            f"{src}: is already split ({', '.join(splits)} hold class folders), the lab's layout; "
            "use it as it is (bloodcells data info / data check), or give the folder of flat "
            "class folders as SRC"
        )
    loose = [f for f in src.iterdir() if is_image_file(f)]
    if not subdirs:
        if loose:
            raise DataError(
                f"{src}: images but no class folders; put each class in SRC/<class>/, or list "
                "path,label in a CSV and add labels='labels.csv'"
            )
        raise DataError(f"{src}: no class folders; {SRC_SHAPES}")
    items: list[Item] = []
    skipped: list[Path] = []
    for folder in subdirs:
        cls = folder.name
        for path in _walk(folder, skipped):
            within = path.relative_to(folder).as_posix()
            items.append(Item(path, f"{cls}/{within}", cls, within))
    notes = []
    if loose:
        notes.append(
            f"{loose[0]}: skipped with {len(loose) - 1} other image(s) directly in SRC, "
            "which are in no class folder"
        )
    if skipped:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        notes.append(
            f"{skipped[0]}: skipped with {len(skipped) - 1} other file(s) that are not images "
            f"({kinds}) or are broken links"
        )
    if not items:
        raise DataError(f"{src}: no images in its class folders; {SRC_SHAPES}")
    return items, notes


def _check_src_folder(src: Path) -> None:
    if not src.exists():
        raise DataError(f"{src}: no such folder; {SRC_SHAPES}")
    if not src.is_dir():
        if src.suffix.lower() == ".csv":
            raise DataError(
                f"{src}: is a CSV file; give the image folder as SRC and the CSV as 'labels'"
            )
        raise DataError(f"{src}: not a folder; {SRC_SHAPES}")


def _walk(folder: Path, skipped: list[Path]) -> list[Path]:
    """Image files below `folder`, sorted; hidden entries ignored, links to folders not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if is_hidden(name):
                continue
            path = Path(dirpath, name)
            (found if is_image_file(path) else skipped).append(path)
    return sorted(found)


def read_labels(src: Path, labels: Path) -> tuple[list[Item], list[str]]:
    """The images a CSV of path,label lists; relative paths are read from SRC."""
    _check_src_folder(src)
    if not labels.exists():
        raise DataError(f"{labels}: no such file; 'labels' takes a CSV of path,label")
    if not labels.is_file():
        raise DataError(f"{labels}: not a file; 'labels' takes a CSV of path,label")
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{labels}: not UTF-8 text; save the CSV as UTF-8") from None
    try:
        rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1) if any(r)]
    except csv.Error as exc:
        raise DataError(f"{labels}: not a readable CSV ({exc})") from None
    if not rows:
        raise DataError(f"{labels}: empty; expected rows of path,label")
    header = [c.strip().lower() for c in rows[0][1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if path_col is not None and label_col is not None:
        rows = rows[1:]
    else:
        path_col, label_col = 0, 1
    items, missing, not_images, seen = [], [], [], {}
    for number, row in rows:
        if len(row) <= max(path_col, label_col):
            raise DataError(f"{labels}: row {number} has {len(row)} column(s); expected path,label")
        written, label = row[path_col].strip(), row[label_col].strip()
        if not written:
            raise DataError(f"{labels}: row {number} has no path")
        _check_label(label, f"{labels}: row {number}")
        source = Path(written) if Path(written).is_absolute() else src / written
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            not_images.append((number, written))
        elif not source.is_file():
            missing.append((number, written))
        key = os.path.normcase(os.path.realpath(source))
        if key in seen:
            raise DataError(
                f"{labels}: row {number} lists {written} again (first in row {seen[key]}); "
                "give each image one row"
            )
        seen[key] = number
        rel = Path(os.path.normpath(written)).as_posix()
        items.append(Item(source, rel, label, rel))
    if not_images:
        number, written = not_images[0]
        raise DataError(
            f"{labels}: {len(not_images)} of {len(rows)} paths are not image files, first "
            f"{written} (row {number}); supported: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    if missing:
        number, written = missing[0]
        raise DataError(
            f"{labels}: {len(missing)} of {len(rows)} paths do not exist, first {written} "
            f"(row {number}); relative paths are read from SRC {src}"
        )
    if not items:
        raise DataError(f"{labels}: no rows after the header; expected rows of path,label")
    return items, []


def _check_label(label: str, where: str) -> None:
    """A label becomes a folder name: it must be one visible, ordinary name."""
    if not label:
        raise DataError(f"{where} has no label")
    bad = (
        label in (".", "..")
        or label.startswith(".")
        or "/" in label
        or "\\" in label
        or _CONTROL.search(label)
        or len(label) > MAX_LABEL_CHARS
    )
    if bad:
        raise DataError(
            f"{where}: label {label!r} cannot be a class folder name; use a visible name without "
            f"/ or \\, not starting with '.', at most {MAX_LABEL_CHARS} characters"
        )


def check_classes(items: list[Item], where: Path) -> None:
    """At least two classes, each with two images (one for train, one for test)."""
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    folded: dict[str, str] = {}
    for cls in sorted(by_class):
        if cls.casefold() in folded:
            raise DataError(
                f"{where}: classes {folded[cls.casefold()]!r} and {cls!r} differ only in case and "
                "would share a folder on some systems; rename one"
            )
        folded[cls.casefold()] = cls
    if len(by_class) < 2:
        raise DataError(
            f"{where}: a classifier needs at least two classes; found only {next(iter(by_class))}"
        )
    for cls, members in sorted(by_class.items()):
        if len(members) < 2:
            raise DataError(
                f"{members[0].source}: the only image of class {cls}; a class needs at least 2 "
                "(one for train, one for test): add images or remove the class"
            )
