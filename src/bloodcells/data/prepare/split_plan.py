"""The plan of `data split`: a unique file name for each image, its group, and the test set.

Names: <name> is the file's own name; when two files of one class share a name
(case-insensitively), each gets its path below the class folder (for a CSV, below SRC) with "/"
replaced by "__", so no file overwrites another.

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

import hashlib
import math
import os
import re
import warnings
import zlib
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np

from bloodcells.data.prepare.split_input import Item
from bloodcells.errors import DataError

MAX_FOLDS = 20  # grouped splits: the test fraction moves in steps of about 1/MAX_FOLDS
MAX_NAME_BYTES = 200  # longer flattened names are shortened with a hash (file systems: 255)


def compile_group_regex(regex: str) -> re.Pattern:
    """The group_by regex, which must compile and have a group."""
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise DataError(f"group_by '{regex}': not a valid regular expression ({exc})") from None
    if pattern.groups == 0:
        raise DataError(
            f"group_by '{regex}' has no group; put the part of the path that names the "
            r"donor, slide or patient in parentheses, e.g. '^[^/]+/([^_]+)_'"
        )
    return pattern


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
            f"group_by '{regex}' matches none of the {len(items)} paths, e.g. "
            f"{items[0].rel}; it is searched in the path relative to SRC, and its first group "
            "names the group"
        )
    if unmatched:
        raise DataError(
            f"group_by '{regex}' finds no group in {len(unmatched)} of {len(items)} paths, "
            f"e.g. {unmatched[0].rel}; every image needs a group: widen the regex"
        )
    names = {item.group for item in grouped}
    if len(names) < 2:
        raise DataError(
            f"group_by '{regex}' puts all {len(items)} images in one group ({names.pop()}); "
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


def check_both_sides(items: list[Item], test: set[int], regex: str) -> None:
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
                    f"group_by '{regex}': grouping leaves class {cls} with no {side} images "
                    f"(its {n} images are in {g} group(s)); try another 'seed' or "
                    "test_fraction, or a class needs images from more groups"
                )
