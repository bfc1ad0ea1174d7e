"""Flat class folders, or a folder and a CSV of labels, into the lab's layout: a train/test
split that is stratified by class, optionally grouped (by donor, slide, patient), reproducible,
and written as one unit with a manifest. SRC is only ever read.

Input, one of:
- flat class folders, SRC/<class>/<image>; images may also sit in sub-folders of a class folder
  (SRC/<class>/<slide>/<image>). Hidden files and folders are ignored; other files are skipped
  and counted, never silently.
- a folder and a CSV (`labels`) with a `path` and a `label` column (also accepted: file,
  filename or image for the path, class for the label; without such a header row the first two
  columns are path and label). A relative path is relative to SRC, not to the CSV's folder.

Output, DEST:
- DEST/train/<class>/<name> and DEST/test/<class>/<name>. <name> is the file's own name; when
  two files of one class share a name (case-insensitively), each gets its path below the class
  folder (for a CSV, below SRC) with "/" replaced by "__", so no file overwrites another.
- DEST/manifest.csv: file (relative to DEST), class, split, group, source (relative to SRC).
- DEST/split.json: the settings and the counts, to redo or audit the split.
It is written into a hidden sibling folder that is renamed to DEST when complete: a failed or
interrupted split leaves no DEST (a killed process may leave the hidden `.DEST.split-*` folder).

How the test images are drawn (the same seed always gives the same split):
- Without groups, per class: the class's files sorted by path are shuffled by a generator
  seeded with (seed, class name) and round(f·n) of them, at least 1 and at most n-1, go to
  test. Every class has train and test images and its test share is as close to f as its size
  allows. (sklearn's train_test_split(stratify=...) rounds over all classes at once and can
  leave a small class with no test image, so it is not used here.)
- With groups: sklearn's StratifiedGroupKFold(k, shuffle=True, random_state=seed) cuts the
  groups into k = min(20, number of groups) folds whose class mix is as even as whole groups
  allow; m = round(f·k) of them (1 <= m <= k-1, picked with the seed) are the test set. The test
  fraction is therefore a multiple of about 1/k and only as close to f as the group sizes allow;
  the fraction reached is reported and written in split.json.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import warnings
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bloodcells.data.folders import IMAGE_SUFFIXES, SPLITS
from bloodcells.errors import DataError, DataWarning
from bloodcells.files import check_output_folder

MANIFEST = "manifest.csv"
SETTINGS = "split.json"
MANIFEST_COLUMNS = ("file", "class", "split", "group", "source")
MAX_FOLDS = 20  # grouped splits: the test fraction moves in steps of about 1/MAX_FOLDS
MAX_SEED = 2**32 - 1  # what sklearn's random_state takes
MAX_NAME_BYTES = 200  # longer flattened names are shortened with a hash (file systems: 255)
MAX_LABEL_CHARS = 200
PATH_COLUMNS = ("path", "file", "filename", "image")
LABEL_COLUMNS = ("label", "class")
SRC_SHAPES = "expected flat class folders SRC/<class>/<image>, or --labels labels.csv"
# A hardlink that the file system refuses: another device, no hardlinks, too many links.
LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
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


@dataclass
class SplitResult:
    """What `split_folder` wrote."""

    dest: Path
    counts: dict[str, dict[str, int]]  # split -> class -> images
    groups: dict[str, int]  # split -> number of groups (empty without --group-by)
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
    _check_classes(items, labels or src)
    if overwrite and dest.exists():
        _check_sources_outside(items, dest)
    items = unique_names(items)
    if pattern is not None:
        items = assign_groups(items, pattern, group_by)
    test = choose_test(items, test_fraction, seed)
    if pattern is not None:
        _check_both_sides(items, test, group_by)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    placed = _write(items, test, dest, link, _settings(src, labels, group_by, seed, test_fraction))
    counts = {s: Counter() for s in SPLITS}
    groups = {s: set() for s in SPLITS}
    for i, item in enumerate(items):
        split = "test" if i in test else "train"
        counts[split][item.label] += 1
        groups[split].add(item.group)
    return SplitResult(
        dest=dest,
        counts={s: dict(sorted(c.items())) for s, c in counts.items()},
        groups={s: len(g) for s, g in groups.items()} if pattern is not None else {},
        test_fraction=len(test) / len(items),
        files=placed,
        notes=notes,
    )


# ---- checks on the options and the destination -------------------------------------------


def _check_fraction(test_fraction: float) -> None:
    if not (isinstance(test_fraction, int | float) and 0 < test_fraction < 1):
        raise DataError(
            f"--test-fraction {test_fraction}: must be between 0 and 1 (e.g. 0.2 for 20% test)"
        )


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise DataError(f"--seed {seed}: must be 0 to {MAX_SEED}")


def compile_group_regex(regex: str) -> re.Pattern:
    """The --group-by regex, which must compile and have a group."""
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise DataError(f"--group-by {regex!r}: not a valid regular expression ({exc})") from None
    if pattern.groups == 0:
        raise DataError(
            f"--group-by {regex!r} has no group; put the part of the path that names the "
            r"donor, slide or patient in parentheses, e.g. '^[^/]+/([^_]+)_'"
        )
    return pattern


def _check_dest(src: Path, dest: Path, labels: Path | None, overwrite: bool) -> None:
    """DEST must be new (or, with --overwrite, an earlier split) and apart from SRC."""
    real_src, real_dest = Path(os.path.realpath(src)), Path(os.path.realpath(dest))
    if real_dest == real_src or real_src in real_dest.parents:
        raise DataError(
            f"{dest}: is inside SRC {src}, which is never written to; choose a DEST outside it"
        )
    if real_dest in real_src.parents:
        raise DataError(f"{dest}: holds SRC {src}; choose a DEST outside it")
    if labels is not None and real_dest in Path(os.path.realpath(labels)).parents:
        raise DataError(f"{dest}: holds the labels CSV {labels}; choose a DEST outside it")
    if dest.is_symlink():
        raise DataError(f"{dest}: exists (a link); choose a new DEST")
    if dest.exists():
        if not dest.is_dir():
            raise DataError(f"{dest}: exists and is not a folder; choose a new DEST")
        if not overwrite:
            raise DataError(f"{dest}: exists; choose a new DEST, or add --overwrite to replace it")
        if any(dest.iterdir()) and not (dest / MANIFEST).is_file():
            raise DataError(
                f"{dest}: exists and was not made by bloodcells data split (no {MANIFEST}); "
                "--overwrite only replaces an earlier split: remove it yourself or choose a new "
                "DEST"
            )
    check_output_folder(dest.parent)


def _check_sources_outside(items: list[Item], dest: Path) -> None:
    """With --overwrite, no image may be read from the DEST that is about to be replaced."""
    real_dest = os.path.realpath(dest) + os.sep
    inside = [it for it in items if os.path.realpath(it.source).startswith(real_dest)]
    if inside:
        raise DataError(
            f"{inside[0].source}: is inside DEST {dest} ({len(inside)} such file(s)), which "
            "--overwrite would replace; choose another DEST"
        )


# ---- reading SRC -------------------------------------------------------------------------


def scan_class_folders(src: Path) -> tuple[list[Item], list[str]]:
    """The images of SRC/<class>/..., and notes on what was skipped."""
    _check_src_folder(src)
    subdirs = sorted(d for d in src.iterdir() if d.is_dir() and not _hidden(d.name))
    splits = [d.name for d in subdirs if d.name.lower() in ("train", "test", "val", "valid")]
    if splits and any(
        e.is_dir() and not _hidden(e.name) for d in subdirs if d.name in splits for e in d.iterdir()
    ):
        raise DataError(
            f"{src}: is already split ({', '.join(splits)} hold class folders), the lab's layout; "
            "use it as it is (bloodcells data info / data check), or give the folder of flat "
            "class folders as SRC"
        )
    loose = [f for f in src.iterdir() if _is_image(f)]
    if not subdirs:
        if loose:
            raise DataError(
                f"{src}: images but no class folders; put each class in SRC/<class>/, or list "
                "path,label in a CSV and add --labels labels.csv"
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
                f"{src}: is a CSV file; give the image folder as SRC and the CSV as --labels"
            )
        raise DataError(f"{src}: not a folder; {SRC_SHAPES}")


def _walk(folder: Path, skipped: list[Path]) -> list[Path]:
    """Image files below `folder`, sorted; hidden entries ignored, links to folders not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            if _hidden(name):
                continue
            path = Path(dirpath, name)
            (found if _is_image(path) else skipped).append(path)
    return sorted(found)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path.name) and path.is_file()


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini")


def read_labels(src: Path, labels: Path) -> tuple[list[Item], list[str]]:
    """The images a CSV of path,label lists; relative paths are read from SRC."""
    _check_src_folder(src)
    if not labels.exists():
        raise DataError(f"{labels}: no such file; --labels takes a CSV of path,label")
    if not labels.is_file():
        raise DataError(f"{labels}: not a file; --labels takes a CSV of path,label")
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


def _check_classes(items: list[Item], where: Path) -> None:
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


def unique_names(items: list[Item]) -> list[Item]:
    """Each item with a file name that is unique (case-insensitively) in its class folder."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_class[item.label].append(i)
    named = list(items)
    for indices in by_class.values():
        base = Counter(_visible(items[i].source.name).casefold() for i in indices)
        taken: set[str] = set()
        for i in sorted(indices, key=lambda i: items[i].within):
            item = items[i]
            name = _visible(item.source.name)
            if base[name.casefold()] > 1:
                name = _flatten(item.within)
            name = _shorten(name, item.within)
            stem, suffix = os.path.splitext(name)
            n = 1
            while name.casefold() in taken:
                n += 1
                name = f"{stem}-{n}{suffix}"
            taken.add(name.casefold())
            named[i] = replace(item, name=name)
    return named


def _visible(name: str) -> str:
    return "_" + name[1:] if name.startswith(".") else name


def _flatten(within: str) -> str:
    parts = [p for p in within.split("/") if p not in ("", ".")]
    return _visible("__".join(parts))


def _shorten(name: str, within: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, suffix = os.path.splitext(name)
    digest = hashlib.sha1(within.encode()).hexdigest()[:12]
    return f"{stem.encode()[:100].decode(errors='ignore')}-{digest}{suffix}"


# ---- grouping and drawing the test set -----------------------------------------------------


def assign_groups(items: list[Item], pattern: re.Pattern, regex: str) -> list[Item]:
    """Each item with its group: the regex's first group, searched in the item's path."""
    grouped, unmatched = [], []
    for item in items:
        match = pattern.search(item.rel)
        group = match.group(1) if match else None
        if not group:
            unmatched.append(item)
        grouped.append(replace(item, group=group or ""))
    if len(unmatched) == len(items):
        raise DataError(
            f"--group-by {regex!r} matches none of the {len(items)} paths, e.g. "
            f"{items[0].rel}; it is searched in the path relative to SRC, and its first group "
            "names the group"
        )
    if unmatched:
        raise DataError(
            f"--group-by {regex!r} finds no group in {len(unmatched)} of {len(items)} paths, "
            f"e.g. {unmatched[0].rel}; every image needs a group: widen the regex"
        )
    names = {item.group for item in grouped}
    if len(names) < 2:
        raise DataError(
            f"--group-by {regex!r} puts all {len(items)} images in one group ({names.pop()}); "
            "a grouped split needs at least two groups"
        )
    return grouped


def choose_test(items: list[Item], test_fraction: float, seed: int) -> set[int]:
    """The indices of the test images: per class, or by whole groups when items have groups."""
    order = sorted(range(len(items)), key=lambda i: (items[i].label, items[i].rel))
    if items[0].group:
        return _grouped_test(items, order, test_fraction, seed)
    test: set[int] = set()
    by_class: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_class[items[i].label].append(i)
    for cls, indices in by_class.items():
        n = len(indices)
        n_test = min(max(math.floor(test_fraction * n + 0.5), 1), n - 1)
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode())])
        test.update(indices[j] for j in rng.permutation(n)[:n_test])
    return test


def _grouped_test(items: list[Item], order: list[int], test_fraction: float, seed: int) -> set[int]:
    from sklearn.model_selection import StratifiedGroupKFold

    classes = sorted({it.label for it in items})
    y = np.array([classes.index(items[i].label) for i in order])
    groups = np.array([items[i].group for i in order])
    k = min(MAX_FOLDS, len(set(groups.tolist())))
    m = min(max(math.floor(test_fraction * k + 0.5), 1), k - 1)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        tests = [test for _, test in folds.split(np.zeros(len(order)), y, groups)]
    picked = np.random.default_rng(seed).choice(k, size=m, replace=False)
    return {order[j] for f in sorted(picked.tolist()) for j in tests[f]}


def _check_both_sides(items: list[Item], test: set[int], regex: str) -> None:
    """A grouped split must leave every class with train and test images."""
    per_class: dict[str, Counter] = defaultdict(Counter)
    groups: dict[str, set] = defaultdict(set)
    for i, item in enumerate(items):
        per_class[item.label]["test" if i in test else "train"] += 1
        groups[item.label].add(item.group)
    for cls in sorted(per_class):
        for side in ("test", "train"):
            if not per_class[cls][side]:
                n, g = sum(per_class[cls].values()), len(groups[cls])
                raise DataError(
                    f"--group-by {regex!r}: grouping leaves class {cls} with no {side} images "
                    f"(its {n} images are in {g} group(s)); try another --seed or "
                    "--test-fraction, or a class needs images from more groups"
                )


# ---- writing DEST ------------------------------------------------------------------------


def _settings(src, labels, group_by, seed, test_fraction) -> dict:
    from bloodcells.version import __version__

    return {
        "src": os.path.abspath(src),
        "labels": None if labels is None else os.path.abspath(labels),
        "test_fraction": test_fraction,
        "group_by": group_by,
        "seed": seed,
        "bloodcells": __version__,
    }


def _write(
    items: list[Item], test: set[int], dest: Path, link: bool, settings: dict
) -> dict[str, int]:
    """Place every image and the manifest in a hidden sibling folder, then rename it to DEST."""
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{dest.name}.split-new-{os.getpid()}"
    old = parent / f".{dest.name}.split-old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    placed: Counter = Counter()
    rows = []
    try:
        made: set[Path] = set()
        for i, item in enumerate(items):
            split = "test" if i in test else "train"
            folder = tmp / split / item.label
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            placed[_place(item.source, folder / item.name, link)] += 1
            rows.append(
                (f"{split}/{item.label}/{item.name}", item.label, split, item.group, item.rel)
            )
        rows.sort(key=lambda r: (SPLITS.index(r[2]), r[1], r[0]))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        (tmp / MANIFEST).write_text(buffer.getvalue(), encoding="utf-8")
        counts = {s: dict(sorted(Counter(r[1] for r in rows if r[2] == s).items())) for s in SPLITS}
        settings = {
            **settings,
            "test_fraction_reached": round(len(test) / len(items), 6),
            "files": dict(sorted(placed.items())),
            "counts": counts,
        }
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dict(sorted(placed.items()))


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


def read_manifest(dest: str | Path) -> list[dict[str, str]]:
    """The rows of DEST/manifest.csv as dicts (file, class, split, group, source)."""
    with open(Path(dest) / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


__all__ = [
    "MANIFEST",
    "SETTINGS",
    "Item",
    "SplitResult",
    "read_manifest",
    "split_folder",
]
