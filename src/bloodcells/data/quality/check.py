"""What can silently inflate a dataset's accuracy: found and reported, nothing changed.

`check_dataset(root)` reads a dataset in the lab's layout and reports:
- exact duplicates, same pixels and near copies across train/test (see `duplicates`); the
  default threshold for a near copy is 0.98;
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
(cached after the first run), so a few thousand images take seconds. `findings` sums the report
up in a line per thing worth knowing; printing it is the CLI's job.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bloodcells.data.dataset import Splits, Transform, to_unit
from bloodcells.data.folders import SPLITS, ProgressCallback, load_dataset
from bloodcells.data.quality.duplicates import (
    MAX_LISTED,
    FileInfo,
    by_key,
    dataset_rows,
    duplicates,
    file_infos,
    listed,
    near_duplicates,
    rel,
    same_pixels,
)
from bloodcells.errors import DataError

DEFAULT_THRESHOLD = 0.98
CHECK_SIZE = 32  # the lab's patch size: near-duplicates and degenerate images are judged here
MIN_SIDE = 16  # px: a smaller file is "tiny"
LOW_STD = 2 / 255  # an almost constant image
DARK, BRIGHT, MOSTLY = 16 / 255, 239 / 255, 0.9  # mostly black / white: 90% of its pixels
IMBALANCE_RATIO = 1.5  # largest / smallest training class above this is reported
FORMAT = 1  # the JSON report's format; bumped when keys change meaning


@dataclass
class CheckReport:
    """The findings of `check_dataset`; `as_dict()` is the JSON output (stable keys)."""

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
        raise DataError(f"threshold={threshold}: must be above 0 and at most 1 (default 0.98)")


def check_dataset(
    root: str | Path,
    threshold: float = DEFAULT_THRESHOLD,
    channels: int = 1,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
) -> CheckReport:
    """Report duplicates, leaks, degenerate images, imbalance and odd sizes of ROOT.

    `progress(done, total)` hears about the decoding, as in `load_dataset`."""
    start = time.perf_counter()
    check_threshold(threshold)
    given = Path(root).expanduser()
    splits = load_dataset(given, Transform(CHECK_SIZE, channels), progress=progress)
    root = splits.root  # resolved, as the paths of the dataset and its problems are
    files = file_infos(root)
    index = {s: dataset_rows(root, splits, s, files) for s in SPLITS}
    exact, copied = duplicates(by_key(files, lambda f: f.sha256))
    pixels, same = same_pixels(splits, index, files, frozenset(copied))
    near = near_duplicates(splits, index, files, threshold, device, copied | same)
    counts = {s: getattr(splits, s).class_counts() for s in SPLITS}
    problems = splits.problems
    report = CheckReport(
        root=str(given),
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
        problems=listed([{"path": rel(root, p.path), "problem": p.message} for p in problems]),
    )
    report.findings = findings(report)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


# ---- degenerate images ------------------------------------------------------------------------


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
        **listed(items),
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
    by_size: dict[str, list[FileInfo]] = by_key(files, lambda f: f.size)
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
