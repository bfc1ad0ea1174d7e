"""Timing helpers: alternated repetitions, paired ratios and how noisy they were."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass


def load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def alternate(jobs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list]:
    """Run every job once per round, in order on even rounds and reversed on odd ones, so
    that a slow spell of the machine hits every job alike; each job's results in order."""
    results: dict[str, list] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(jobs[name]())
    return results


@dataclass
class Ratio:
    """A speed ratio from paired rounds: baseline seconds / candidate seconds."""

    ratios: list[float]

    @classmethod
    def paired(cls, baseline: list[float], candidate: list[float]) -> Ratio:
        return cls([b / c for b, c in zip(baseline, candidate, strict=True)])

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> str:
        """The rounds' range, e.g. "2.1-2.6" (one round: "1 round")."""
        if len(self.ratios) < 2:
            return "1 round"
        return f"{min(self.ratios):.2f}-{max(self.ratios):.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def noise(values: list[float]) -> float:
    """(max - min) / median of repeated timings: 0 on a quiet machine."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0
