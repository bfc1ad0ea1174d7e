"""What can silently inflate a dataset's accuracy: found and reported, nothing changed.

`check_dataset(root)` reads a dataset in the lab's layout and reports:
- exact duplicates: files with the same bytes (sha256), within a split and across train/test
  (a test image that is also a training image is a leak); also files whose bytes differ but
  whose decoded 32×32 pixels are identical (the same image saved twice, other metadata);
- near-duplicates across splits: for every test image the most similar training image by the
  cosine similarity of the two 32×32 standardized images (the lab's per-image standardization,
  so the cosine is the Pearson correlation of their pixels), computed as one matrix multiply
  per block of test images. At or above `threshold` (default 0.98) a test image counts as a
  near copy of a training image. On the real PBC patches (pbc32) distinct cells reach at most
  about 0.95 (median best match 0.86; the one pair above, 0.993, is one monocyte photographed
  twice, test/MO_415531 and train/MO_231316), while a copy with Gaussian pixel noise of σ=5 (of 255)
  stays above 0.99 and σ=10 near 0.97-0.99; a copy shifted by one pixel falls to about 0.9 and
  is not caught;
- degenerate images: constant, almost constant (pixel std below 2 of 255), mostly black or
  mostly white (90% of the 32×32 pixels at most 16 or at least 239), or smaller than 16 px on
  a side in the file;
- class imbalance: images per class and split, and the accuracy of always answering the
  largest training class, which a model has to beat (balanced accuracy: 1 / classes);
- odd image sizes: file sizes other than the most common one, with their classes (a size that
  goes with a class is a shortcut a model can learn);
- problems: files that could not be read, skipped files, empty classes (as load_dataset and
  `data info` report them).

Everything is computed from the file bytes and the decoded 32×32 tensors of `load_dataset`
(cached after the first run), so a few thousand images take seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from bloodcells.data.dataset import Splits, Transform, standardize, to_unit
from bloodcells.data.folders import DECODE_ERRORS, SPLITS, load_dataset, scan_split
from bloodcells.errors import DataError

DEFAULT_THRESHOLD = 0.98
CHECK_SIZE = 32  # the lab's patch size: near-duplicates and degenerate images are judged here
MIN_SIDE = 16  # px: a smaller file is "tiny"
LOW_STD = 2 / 255  # an almost constant image
DARK, BRIGHT, MOSTLY = 16 / 255, 239 / 255, 0.9  # mostly black / white: 90% of its pixels
BLOCK = 1024  # test images per matrix multiply
MAX_LISTED = 1000  # entries per list in the report (counts are always complete)
IMBALANCE_RATIO = 1.5  # largest / smallest training class above this is reported
FORMAT = 1  # the JSON report's format; bumped when keys change meaning


@dataclass
class FileInfo:
    path: str  # relative to ROOT, "/" separators
    split: str
    cls: str
    sha256: str  # "" when the file cannot be read
    size: str  # "WxH" of the file, "" when unreadable


@dataclass
class CheckReport:
    """The findings of `check_dataset`; `as_dict()` is the --json output (stable keys)."""

    root: str
    threshold: float
    channels: int
    images: dict[str, int]  # split -> readable images
    counts: dict[str, dict[str, int]]  # split -> class -> images
    imbalance: dict
    exact_duplicates: dict
    same_pixels: dict
    near_duplicates: dict
    degenerate: dict
    sizes: dict
    problems: dict  # unreadable or skipped files, empty classes: what load_dataset reports
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @property
    def leaked_test_images(self) -> int:
        """Test images that are in train as a file, as pixels, or as a near copy."""
        return (
            self.exact_duplicates["test_images_in_train"]
            + self.same_pixels["test_images_in_train"]
            + self.near_duplicates["test_images_in_train"]
        )


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise DataError(f"--threshold {threshold}: must be above 0 and at most 1 (default 0.98)")


def check_dataset(
    root: str | Path,
    threshold: float = DEFAULT_THRESHOLD,
    channels: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CheckReport:
    """Report duplicates, leaks, degenerate images, imbalance and odd sizes of ROOT."""
    start = time.perf_counter()
    check_threshold(threshold)
    root = Path(root).expanduser()
    splits = load_dataset(root, Transform(CHECK_SIZE, channels), progress=progress)
    files = _file_infos(root)
    index = {s: _dataset_rows(root, splits, s, files) for s in SPLITS}
    exact, copied = _duplicates(_by_key(files, lambda f: f.sha256))
    pixels, same = _same_pixels(splits, index, files, frozenset(copied))
    near = _near_duplicates(splits, index, files, threshold, device, copied | same)
    counts = {s: getattr(splits, s).class_counts() for s in SPLITS}
    problems = splits.problems
    report = CheckReport(
        root=str(root),
        threshold=threshold,
        channels=channels,
        images={s: len(getattr(splits, s)) for s in SPLITS},
        counts=counts,
        imbalance=_imbalance(counts),
        exact_duplicates=exact,
        same_pixels=pixels,
        near_duplicates=near,
        degenerate=_degenerate(splits, index, files),
        sizes=_sizes(files),
        problems=_listed([{"path": _rel(root, p.path), "problem": p.message} for p in problems]),
    )
    report.findings = findings(report)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


# ---- files: bytes and sizes ----------------------------------------------------------------


def _file_infos(root: Path) -> list[FileInfo]:
    """Every image file of both splits: its hash and its size, read in a few threads."""
    listed = [(s, path, cls) for s in SPLITS for path, cls in scan_split(root / s)[1]]

    def read(entry: tuple[str, Path, str]) -> FileInfo:
        split, path, cls = entry
        try:
            data = path.read_bytes()
        except OSError:  # load_dataset has listed it as a problem already
            return FileInfo(_rel(root, path), split, cls, "", "")
        try:
            with Image.open(io.BytesIO(data)) as im:
                size = f"{im.width}x{im.height}"
        except DECODE_ERRORS:
            size = ""
        return FileInfo(_rel(root, path), split, cls, hashlib.sha256(data).hexdigest(), size)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(read, listed))


def _rel(root: Path, path: str | Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def _dataset_rows(root: Path, splits: Splits, split: str, files: list[FileInfo]) -> list[int]:
    """For each image of a split's Dataset, the index of its FileInfo in `files`.

    Matched by split/class/file name, which is unique under ROOT: a cached Dataset keeps the
    spelling of ROOT of the run that cached it.
    """
    by_tail = {tuple(f.path.split("/")[-3:]): i for i, f in enumerate(files)}
    rows = []
    for path in getattr(splits, split).paths:
        row = by_tail.get(Path(path).parts[-3:])
        if row is None:
            raise DataError(f"{path}: in the dataset cache but not under {root}; run again")
        rows.append(row)
    return rows


def _by_key(files: list[FileInfo], key) -> dict[str, list[FileInfo]]:
    groups: dict[str, list[FileInfo]] = defaultdict(list)
    for f in files:
        if key(f):
            groups[key(f)].append(f)
    return groups


def _duplicates(
    groups: dict[str, list[FileInfo]], counted: frozenset[str] = frozenset()
) -> tuple[dict, set[str]]:
    """Groups of two or more files with one key; across splits, and within train or test.

    Returns the report and the test files of the groups across splits; `test_images_in_train`
    counts those, except `counted` (which another report counts already).
    """
    found = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        splits_in = {f.split for f in members}
        kind = "across" if len(splits_in) == 2 else f"within_{splits_in.pop()}"
        found.append(
            {
                "key": key,
                "kind": kind,
                "classes_differ": len({f.cls for f in members}) > 1,
                "files": [{"path": f.path, "split": f.split, "class": f.cls} for f in members],
            }
        )
    order = {"across": 0, "within_test": 1, "within_train": 2}
    found.sort(key=lambda g: (order[g["kind"]], -len(g["files"]), g["files"][0]["path"]))
    leaked = _test_files_across(found)
    kinds = Counter(g["kind"] for g in found)
    return {
        "groups_across": kinds["across"],
        "groups_within_train": kinds["within_train"],
        "groups_within_test": kinds["within_test"],
        "groups_with_two_classes": sum(g["classes_differ"] for g in found),
        "test_images_in_train": len(leaked - counted),
        **_listed(found, "groups"),
    }, leaked


def _test_files_across(groups: list[dict]) -> set[str]:
    """The test files of the groups that span train and test."""
    return {
        f["path"]
        for g in groups
        if g["kind"] == "across"
        for f in g["files"]
        if f["split"] == "test"
    }


def _listed(entries: list, name: str = "items") -> dict:
    return {name: entries[:MAX_LISTED], "truncated": len(entries) > MAX_LISTED}


# ---- decoded images: same pixels, near copies, degenerate images -----------------------------


def _same_pixels(
    splits: Splits, index: dict[str, list[int]], files: list[FileInfo], copied: frozenset[str]
) -> tuple[dict, set[str]]:
    """Files whose bytes differ but whose decoded 32×32 images are identical."""
    keyed: dict[str, list[FileInfo]] = defaultdict(list)
    for split in SPLITS:
        images = getattr(splits, split).images.contiguous().numpy()
        for row, image in zip(index[split], images, strict=True):
            keyed[hashlib.sha256(image.tobytes()).hexdigest()].append(files[row])
    # a group whose files are all byte-identical is an exact duplicate, reported there
    groups = {k: g for k, g in keyed.items() if len({f.sha256 for f in g}) > 1}
    return _duplicates(groups, copied)


def _unit_vectors(images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Standardized images as rows of length 1 (a constant image stays a zero row)."""
    x = standardize(to_unit(images.to(device))).flatten(1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _near_duplicates(
    splits: Splits,
    index: dict[str, list[int]],
    files: list[FileInfo],
    threshold: float,
    device: str | torch.device,
    copied: set[str],
) -> dict:
    """For each test image its most similar training image; those at `threshold` or above.

    Test images already reported as exact or same-pixel copies of a training image are not
    counted again.
    """
    train = _unit_vectors(splits.train.images, device)
    test_images = splits.test.images
    pairs, best = [], []
    for start in range(0, len(test_images), BLOCK):
        sims = _unit_vectors(test_images[start : start + BLOCK], device) @ train.T
        top, arg = sims.max(dim=1)
        above = (sims >= threshold).sum(dim=1)
        best.append(top.cpu())
        for j in torch.nonzero(top >= threshold).flatten().tolist():
            test_f = files[index["test"][start + j]]
            if test_f.path in copied:
                continue
            train_f = files[index["train"][int(arg[j])]]
            pairs.append(
                {
                    "test": test_f.path,
                    "train": train_f.path,
                    "similarity": round(float(top[j]), 4),
                    "test_class": test_f.cls,
                    "train_class": train_f.cls,
                    "train_images_above": int(above[j]),
                }
            )
    pairs.sort(key=lambda p: (-p["similarity"], p["test"]))
    best = torch.cat(best) if best else torch.zeros(0)
    quantiles = {}
    if len(best):
        q = torch.quantile(best.float(), torch.tensor([0.5, 0.99, 1.0])).tolist()
        quantiles = {"median": round(q[0], 4), "p99": round(q[1], 4), "max": round(q[2], 4)}
    return {
        "threshold": threshold,
        "test_images_in_train": len(pairs),
        "with_other_class": sum(p["test_class"] != p["train_class"] for p in pairs),
        "best_match": quantiles,  # of every test image's most similar training image
        **_listed(pairs, "pairs"),
    }


def _degenerate(splits: Splits, index: dict[str, list[int]], files: list[FileInfo]) -> dict:
    """Constant, almost constant, mostly black or white (at 32×32) and tiny images."""
    reasons: dict[int, list[str]] = defaultdict(list)  # FileInfo index -> reasons
    for split in SPLITS:
        x = to_unit(getattr(splits, split).images).flatten(1)
        if not len(x):
            continue
        low, high, std = x.amin(dim=1), x.amax(dim=1), x.std(dim=1)
        dark = (x <= DARK).float().mean(dim=1)
        bright = (x >= BRIGHT).float().mean(dim=1)
        flagged = (high == low) | (std < LOW_STD) | (dark >= MOSTLY) | (bright >= MOSTLY)
        for i in torch.nonzero(flagged).flatten().tolist():
            row = index[split][i]
            if high[i] == low[i]:
                reasons[row].append(f"constant (every pixel {round(float(low[i]) * 255)})")
                continue
            if std[i] < LOW_STD:
                reasons[row].append(f"almost constant (pixel std {float(std[i]) * 255:.2f})")
            if dark[i] >= MOSTLY:
                reasons[row].append(f"mostly black ({float(dark[i]):.0%} of pixels)")
            if bright[i] >= MOSTLY:
                reasons[row].append(f"mostly white ({float(bright[i]):.0%} of pixels)")
    for row, f in enumerate(files):
        if f.size and min(int(v) for v in f.size.split("x")) < MIN_SIDE:
            reasons[row].append(f"tiny ({f.size}, under {MIN_SIDE} px a side)")
    items = [
        {
            "path": files[row].path,
            "split": files[row].split,
            "class": files[row].cls,
            "reasons": found,
        }
        for row, found in sorted(reasons.items(), key=lambda e: files[e[0]].path)
    ]
    return {
        "count": len(items),
        "constant": sum(any(r.startswith("constant") for r in i["reasons"]) for i in items),
        "tiny": sum(any(r.startswith("tiny") for r in i["reasons"]) for i in items),
        **_listed(items),
    }


# ---- counts and sizes -----------------------------------------------------------------------


def _imbalance(counts: dict[str, dict[str, int]]) -> dict:
    """The accuracy of always answering the largest training class, on test."""
    train, test = counts["train"], counts["test"]
    majority = max(sorted(train), key=lambda c: train[c])  # the first of equals, by name
    present = [n for n in train.values() if n]
    n_test = sum(test.values())
    return {
        "majority_class": majority,
        "majority_baseline": round(test[majority] / n_test, 4) if n_test else 0.0,
        "balanced_baseline": round(1 / len(train), 4),
        "ratio": round(max(present) / min(present), 3),
        "test_share": {
            c: round(test[c] / (train[c] + test[c]), 4) if train[c] + test[c] else 0.0
            for c in train
        },
    }


def _sizes(files: list[FileInfo]) -> dict:
    """The most common file size, and every other size with its classes and an example."""
    by_size: dict[str, list[FileInfo]] = _by_key(files, lambda f: f.size)
    counts = {size: len(members) for size, members in by_size.items()}
    if not counts:
        return {"most_common": "", "counts": {}, "odd_images": 0, "odd": []}
    common = max(sorted(counts), key=lambda s: counts[s])
    odd = []
    for size, n in sorted(counts.items(), key=lambda e: (-e[1], e[0])):
        if size == common:
            continue
        members = by_size[size]
        odd.append(
            {
                "size": size,
                "count": n,
                "by_class": dict(sorted(Counter(f.cls for f in members).items())),
                "by_split": {s: sum(f.split == s for f in members) for s in SPLITS},
                "example": members[0].path,
            }
        )
    return {
        "most_common": common,
        "counts": dict(sorted(counts.items(), key=lambda e: (-e[1], e[0]))),
        "odd_images": sum(e["count"] for e in odd),
        "odd": odd[:MAX_LISTED],
    }


# ---- the summary ---------------------------------------------------------------------------


def findings(report: CheckReport) -> list[str]:
    """One line per thing worth knowing, most serious first; empty when nothing was found."""
    lines = []
    n_test = report.images["test"]
    exact, pixels, near = report.exact_duplicates, report.same_pixels, report.near_duplicates
    if exact["test_images_in_train"]:
        lines.append(
            f"leak: {exact['test_images_in_train']} of {n_test} test image(s) are byte-identical "
            "to training images"
        )
    if pixels["test_images_in_train"]:
        lines.append(
            f"leak: {pixels['test_images_in_train']} test image(s) have the same pixels as "
            "training images (other file bytes)"
        )
    if near["test_images_in_train"]:
        lines.append(
            f"leak: {near['test_images_in_train']} test image(s) have a near copy in train "
            f"(cosine >= {report.threshold:g} at 32×32)"
        )
    two_classes = exact["groups_with_two_classes"] + pixels["groups_with_two_classes"]
    if two_classes:
        lines.append(f"labels: {two_classes} duplicate group(s) carry two different classes")
    within = sum(r[f"groups_within_{s}"] for r in (exact, pixels) for s in SPLITS)
    if within:
        lines.append(f"duplicates: {within} group(s) of identical images within a split")
    degenerate = report.degenerate
    if degenerate["count"]:
        lines.append(
            f"degenerate: {degenerate['count']} image(s) constant, almost constant, mostly "
            f"black or white, or tiny ({degenerate['constant']} constant, "
            f"{degenerate['tiny']} tiny)"
        )
    imbalance = report.imbalance
    if imbalance["ratio"] > IMBALANCE_RATIO:
        lines.append(
            f"imbalance: the largest training class is {imbalance['ratio']:g}× the smallest; "
            f"always answering {imbalance['majority_class']} scores "
            f"{imbalance['majority_baseline']:.3f} on test, the accuracy to beat (or use "
            "balanced accuracy)"
        )
    sizes = report.sizes
    if sizes["odd_images"]:
        lines.append(
            f"sizes: {sizes['odd_images']} image(s) differ from the most common size "
            f"{sizes['most_common']}"
        )
    if report.problems["items"]:
        lines.append(
            f"problems: {len(report.problems['items'])} file(s) or folder(s) skipped or unreadable"
        )
    return lines


def worth_checking(summary: dict) -> list[str]:
    """Why `data check` is worth running on a dataset, from `Splits.summary()` alone (cheap).

    Duplicates and leaks cannot be seen without reading every file, so a check is always
    worth it once; these are the signs that make it more so.
    """
    reasons = []
    train = summary["counts"]["train"]
    present = [n for n in train.values() if n]
    if present and max(present) > IMBALANCE_RATIO * min(present):
        reasons.append(f"classes unbalanced ({max(present) / min(present):.1f}×)")
    sizes = {k.split(" ")[-1] for s in summary["sources"].values() for k in s}
    if len(sizes) > 1:
        reasons.append(f"{len(sizes)} image sizes")
    if summary["problems"]:
        reasons.append(f"{len(summary['problems'])} problem(s)")
    return reasons


def check_hint(summary: dict) -> str:
    """The line `data info` prints: that leaks are not checked there, and why to check."""
    import shlex

    reasons = worth_checking(summary)
    why = f" ({', '.join(reasons)})" if reasons else ""
    command = f"bloodcells data check {shlex.quote(summary['root'])}"
    return f"duplicates and train/test leaks are not checked here{why}: run {command}"
