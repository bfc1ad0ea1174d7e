"""Copies in a dataset: the same file bytes, the same decoded pixels, near copies across splits.

Every image file is read once (`file_infos`: its sha256 and its size in pixels, which
`check` also reports on), then matched:
- exact duplicates: files with the same bytes (sha256), within a split and across train/test
  (a test image that is also a training image is a leak);
- same pixels: files whose bytes differ but whose decoded 32×32 pixels are identical (the same
  image saved twice, other metadata);
- near copies across splits: for every test image the most similar training image by the
  cosine similarity of the two 32×32 standardized images (the lab's per-image standardization,
  so the cosine is the Pearson correlation of their pixels), computed as one matrix multiply
  per block of test images. At or above `threshold` a test image counts as a near copy of a
  training image. On the real PBC patches (pbc32) distinct cells reach at most about 0.95
  (median best match 0.86; the one pair above, 0.993, is one monocyte photographed twice,
  test/MO_415531 and train/MO_231316), while a copy with Gaussian pixel noise of σ=5 (of 255)
  stays above 0.99 and σ=10 near 0.97-0.99; a copy shifted by one pixel falls to about 0.9 and
  is not caught.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from bloodcells.data.dataset import Splits, standardize, to_unit
from bloodcells.data.folders import DECODE_ERRORS, SPLITS, scan_split
from bloodcells.errors import DataError
from bloodcells.utils.devices import decode_workers

BLOCK = 1024  # test images per matrix multiply
MAX_LISTED = 1000  # entries per list in the report (counts are always complete)


@dataclass
class FileInfo:
    path: str  # relative to ROOT, "/" separators
    split: str
    cls: str
    sha256: str  # "" when the file cannot be read
    size: str  # "WxH" of the file, "" when unreadable


# ---- files: bytes and sizes ----------------------------------------------------------------


def file_infos(root: Path) -> list[FileInfo]:
    """Every image file of both splits: its hash and its size, read in a few threads."""
    entries = [(s, path, cls) for s in SPLITS for path, cls in scan_split(root / s)[1]]

    def read(entry: tuple[str, Path, str]) -> FileInfo:
        split, path, cls = entry
        try:
            data = path.read_bytes()
        except OSError:  # load_dataset has listed it as a problem already
            return FileInfo(rel(root, path), split, cls, "", "")
        try:
            with Image.open(io.BytesIO(data)) as im:
                size = f"{im.width}x{im.height}"
        except DECODE_ERRORS:
            size = ""
        return FileInfo(rel(root, path), split, cls, hashlib.sha256(data).hexdigest(), size)

    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        return list(pool.map(read, entries))


def rel(root: Path, path: str | Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def dataset_rows(root: Path, splits: Splits, split: str, files: list[FileInfo]) -> list[int]:
    """For each image of a split's Dataset, the index of its FileInfo in `files`.

    Matched by split/class/file name, which is unique under ROOT (however ROOT is spelled).
    """
    by_tail = {tuple(f.path.split("/")[-3:]): i for i, f in enumerate(files)}
    rows = []
    for path in getattr(splits, split).paths:
        row = by_tail.get(Path(path).parts[-3:])
        if row is None:
            raise DataError(f"{path}: in the dataset cache but not under {root}; run again")
        rows.append(row)
    return rows


def by_key(files: list[FileInfo], key) -> dict[str, list[FileInfo]]:
    groups: dict[str, list[FileInfo]] = defaultdict(list)
    for f in files:
        if key(f):
            groups[key(f)].append(f)
    return groups


def duplicates(
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
        **listed(found, "groups"),
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


def listed(entries: list, name: str = "items") -> dict:
    return {name: entries[:MAX_LISTED], "truncated": len(entries) > MAX_LISTED}


# ---- decoded images: same pixels, near copies ------------------------------------------------


def same_pixels(
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
    return duplicates(groups, copied)


def _unit_vectors(images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Standardized images as rows of length 1 (a constant image stays a zero row)."""
    x = standardize(to_unit(images.to(device))).flatten(1)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def near_duplicates(
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
        **listed(pairs, "pairs"),
    }
