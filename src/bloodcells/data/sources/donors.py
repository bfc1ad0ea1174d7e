"""Which whole donors go to test when BBBC045 is imported: the ones named, or the ones chosen.

A donor's montages always land on one side of the split. For a fraction, the donor subset whose
per-class test share is closest to it (every class on both sides) is chosen; the seed picks
among the subsets within SLACK of the best.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from bloodcells.data.sources.montages import Montage
from bloodcells.errors import DataError

EXHAUSTIVE_DONORS = 16  # up to 2**16 donor subsets are all scored; beyond, a seeded sample
SLACK = 0.02  # the seed picks among splits whose score is within this of the best


def parse_donors(text: str) -> tuple[str, ...]:
    """'A, B' -> ('A', 'B'); bounded so that a pasted file is an error, not a plan."""
    if len(text) > 4096:
        raise DataError("test_donors is longer than 4096 characters")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise DataError("test_donors names no donor; give names separated by commas")
    return names


def check_named_donors(montages: list[Montage], names: tuple[str, ...]) -> set[str]:
    """The named test donors, checked against the folders: they exist, every class is tested."""
    donors = sorted({m.donor for m in montages})
    by_folder = {m.folder: m.donor for m in montages}
    test = set()
    for name in names:
        if name not in donors and name not in by_folder:
            shown = ", ".join(donors[:20]) + (", ..." if len(donors) > 20 else "")
            raise DataError(f"test_donors: no donor {name!r} with montages; donors: {shown}")
        test.add(by_folder.get(name, name))
    if len(test) == len(donors):
        raise DataError("test_donors names every donor; leave at least one for training")
    have = defaultdict(set)
    for m in montages:
        have[m.cls].add(m.donor)
    for cls, holders in sorted(have.items()):
        if not holders & test:
            raise DataError(
                f"class {cls} would have no test images: no test donor has {cls} montages; "
                f"choose among {', '.join(sorted(holders))}"
            )
        if not holders - test:
            raise DataError(
                f"class {cls} would have no training images: only the test donors have it"
            )
    return test


def montage_counts(montages: list[Montage]) -> dict[str, Counter]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for m in montages:
        counts[m.donor][m.cls] += 1
    return dict(counts)


def cell_counts(rows: list[dict]) -> dict[str, Counter]:
    cells: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        cells[r["donor"]][r["class"]] += 1
    return dict(cells)


def choose_test_donors(cells: dict[str, Counter], fraction: float, seed: int = 0) -> set[str]:
    """Whole donors for the test split: every class on both sides, each class's test share as
    close to `fraction` as the donors allow (mean absolute difference over classes); the seed
    picks among the subsets within SLACK of the best."""
    donors = sorted(cells)
    classes = sorted({c for counter in cells.values() for c in counter})
    counts = np.array([[cells[d][c] for c in classes] for d in donors], dtype=np.float64)
    totals = counts.sum(axis=0)
    n = len(donors)
    if n < 2:
        raise DataError(f"only one donor ({donors[0]}) has cells; holding out donors needs two")
    rng = np.random.default_rng(seed)
    if n <= EXHAUSTIVE_DONORS:
        masks = (np.arange(1, 2**n - 1)[:, None] >> np.arange(n)) & 1
    else:
        masks = np.unique(rng.random((1 << EXHAUSTIVE_DONORS, n)) < fraction, axis=0)
    masks = masks.astype(bool)
    test = masks.astype(np.float64) @ counts
    valid = (test > 0).all(axis=1) & (test < totals).all(axis=1)
    if not valid.any():
        single = [c for c, k in zip(classes, (counts > 0).sum(axis=0), strict=True) if k < 2]
        why = f"class {single[0]} has cells from one donor only" if single else "no subset fits"
        raise DataError(
            f"no choice of whole donors puts every class in both train and test ({why}); "
            "name the test donors with test_donors, or import more donors"
        )
    score = np.abs(test / totals - fraction).mean(axis=1)
    best = score[valid].min()
    near = np.flatnonzero(valid & (score <= best + SLACK))
    pick = masks[rng.choice(near)]
    return {d for d, chosen in zip(donors, pick, strict=True) if chosen}


def check_counts(cells: dict[str, Counter], test: set[str]) -> dict[str, dict[str, int]]:
    """Cells per split and class; every class must have cells on both sides."""
    counts = {"train": Counter(), "test": Counter()}
    for donor, counter in cells.items():
        counts["test" if donor in test else "train"].update(counter)
    for cls in sorted(set(counts["train"]) | set(counts["test"])):
        for split in ("test", "train"):
            if not counts[split][cls]:
                which = ", ".join(sorted(test)) if split == "test" else "the other donors"
                raise DataError(
                    f"class {cls} would have no {split} images: its montages from {which} hold "
                    f"no cells (only empty tiles); choose other test_donors"
                )
    return {s: dict(sorted(c.items())) for s, c in counts.items()}
