"""The differential count: predictions tallied per class, with intervals, raw and adjusted.

Which images are counted: every readable image that is not flagged unlike-training, that is
`ok` and `unsure` rows. Unsure images are counted in their predicted class (and how many of
each class's count are unsure is reported), because the adjustment's confusion matrix was
measured on every dev image, sure or not; leaving them out would bias the count towards the
classes the model finds easy. Unreadable and unlike-training images are not counted: there is
no prediction for the first, and no reason to trust one for the second; both are reported.

Raw count: the share of counted images predicted as each class, with a 95% Wilson interval,
which covers only the sampling of these images, not the classifier's errors.
Adjusted count: adjusted classify-and-count (stats.adjusted_count) with the run's dev-set
confusion matrix and a 95% bootstrap interval over both the sample and the dev matrix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bloodcells.stats.intervals import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    adjusted_count,
    wilson_interval,
)

STATUSES = ("ok", "unsure", "unreadable", "unlike-training")
COUNTED = ("ok", "unsure")


@dataclass
class Tally:
    """Running totals of prediction rows, added chunk by chunk (memory does not grow)."""

    classes: list[str]
    predicted: dict[str, int] = field(default_factory=dict)  # counted images per class
    unsure: dict[str, int] = field(default_factory=dict)  # of which unsure
    statuses: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.classes:
            self.predicted.setdefault(name, 0)
            self.unsure.setdefault(name, 0)
        for status in STATUSES:
            self.statuses.setdefault(status, 0)

    @property
    def images(self) -> int:
        return sum(self.statuses.values())

    @property
    def counted(self) -> int:
        return sum(self.predicted.values())

    def add(self, rows: Iterable[Mapping]) -> Tally:
        for row in rows:
            status = row["status"]
            self.statuses[status] += 1
            if status in COUNTED:
                self.predicted[row["predicted"]] += 1
                if status == "unsure":
                    self.unsure[row["predicted"]] += 1
        return self


@dataclass
class ClassCount:
    """One class of the differential count; shares and bounds are percentages."""

    name: str
    count: int
    unsure: int
    percent: float | None
    low: float | None
    high: float | None
    adjusted: float | None = None
    adjusted_low: float | None = None
    adjusted_high: float | None = None


@dataclass
class DifferentialCount:
    """The count per class, the statuses, and how it was made (see the module doc)."""

    classes: list[ClassCount]
    statuses: dict[str, int]
    settings: dict
    adjusted_note: str  # why there is no adjusted count, or how it was made

    @property
    def images(self) -> int:
        return sum(self.statuses.values())

    @property
    def counted(self) -> int:
        return sum(c.count for c in self.classes)

    @property
    def unlike_training_fraction(self) -> float | None:
        """The share of readable images flagged unlike-training."""
        readable = self.images - self.statuses["unreadable"]
        return self.statuses["unlike-training"] / readable if readable else None

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "counted": self.counted,
            "statuses": dict(self.statuses),
            "unlike_training_fraction": self.unlike_training_fraction,
            "classes": {
                c.name: {
                    "count": c.count,
                    "unsure": c.unsure,
                    "percent": c.percent,
                    "low": c.low,
                    "high": c.high,
                    "adjusted_percent": c.adjusted,
                    "adjusted_low": c.adjusted_low,
                    "adjusted_high": c.adjusted_high,
                }
                for c in self.classes
            },
            "method": {
                "counted": "ok and unsure images; unreadable and unlike-training are not",
                "interval": f"{100 * CONFIDENCE:g}% Wilson score interval of each share",
                "adjusted": self.adjusted_note,
            },
            "settings": self.settings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def differential_count(
    tally: Tally,
    confusion: list[list[int]] | None,
    settings: dict | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> DifferentialCount:
    """The differential count of `tally`; adjusted with `confusion` (dev set) when given."""
    n = tally.counted
    rows = []
    for name in tally.classes:
        k = tally.predicted[name]
        interval = wilson_interval(k, n)
        rows.append(
            ClassCount(
                name,
                k,
                tally.unsure[name],
                100 * k / n if n else None,
                100 * interval[0] if interval else None,
                100 * interval[1] if interval else None,
            )
        )
    note = _adjust(rows, confusion, n_resamples, seed)
    return DifferentialCount(rows, dict(tally.statuses), dict(settings or {}), note)


def _adjust(rows: list[ClassCount], confusion, n_resamples: int, seed: int) -> str:
    """Fill in the adjusted shares of `rows`; return how they were made, or why not."""
    if not any(r.count for r in rows):
        return "no adjusted count: no images were counted"
    if confusion is None:
        return "no adjusted count: the model has no dev-set confusion matrix"
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.shape != (len(rows), len(rows)):
        return "no adjusted count: the dev confusion matrix does not match the classes"
    result = adjusted_count(
        np.array([r.count for r in rows]), confusion, n_resamples, CONFIDENCE, seed
    )
    for i, row in enumerate(rows):
        row.adjusted = 100 * float(result.shares[i])
        row.adjusted_low = 100 * float(result.low[i])
        row.adjusted_high = 100 * float(result.high[i])
    missing = [r.name for r, size in zip(rows, confusion.sum(axis=1), strict=True) if not size]
    gap = f"; classes with no dev images cannot be adjusted for: {missing}" if missing else ""
    return (
        "adjusted classify-and-count (Forman 2008) with the dev confusion matrix "
        f"({int(confusion.sum())} images); {100 * CONFIDENCE:g}% percentile bootstrap over "
        f"the sample and the dev matrix, {n_resamples} resamples, seed {seed}{gap}"
    )
