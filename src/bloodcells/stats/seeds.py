"""The statistics of a comparison: small pure functions over one value per seed.

For each group (a variant): n seeds, the mean, the standard deviation and a 95% Student t
interval over the seeds, mean ± t(0.975, n−1)·sd/√n (`summarize`), from MIN_SEEDS seeds on:
two seeds give an interval too wide to mean anything, or, when they happen to agree, one of
zero width that claims a certainty they do not have. For a variant against the
baseline: the paired difference over the seeds both ran, with its own t interval, and the
p-value of the paired t-test, scipy.stats.ttest_rel (`paired_difference`).

The verdict follows the issue's rule: "better" (or "worse") only when the variant's interval
does not overlap the baseline's (`verdict`). That rule is conservative: two 95% intervals can
overlap while the difference is clear; the paired interval is the sharper test.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
MIN_SEEDS = 3  # the fewest seeds that get an interval, a p-value and a verdict
TOO_FEW = "too few seeds"
INTERVAL = "Student t over seeds: mean ± t(0.975, n−1) · sd / √n"
TEST = "paired t-test over the seeds both ran (scipy.stats.ttest_rel, two-sided)"
RULE = (
    "better/worse only when the variant's 95% interval does not overlap the baseline's; "
    f"the paired Δ interval is the sharper test; below {MIN_SEEDS} seeds no interval, no verdict"
)


@dataclass(frozen=True)
class Summary:
    """n values: their mean, standard deviation (n−1; None for n < 2) and t interval (None
    for n < MIN_SEEDS)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sd and the `confidence` Student t interval of `values` (one per seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal values, up to rounding (0.9-0.8 vs 0.8-0.7)
        sd = 0.0
    if n < MIN_SEEDS:
        return Summary(n, mean, sd, None, None)
    if sd == 0:
        return Summary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Summary(n, mean, sd, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    """Variant minus baseline over the seeds both ran: mean, sd, t interval and p."""

    seeds: tuple[int, ...]
    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    p: float | None  # paired t-test, two-sided; None below MIN_SEEDS or with equal differences


def paired_difference(
    variant: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> Paired:
    """Paired differences (seed by seed) of `variant` against `baseline`."""
    seeds = tuple(sorted(set(variant) & set(baseline)))
    if not seeds:
        return Paired((), 0, None, None, None, None, None)
    a = [variant[s] for s in seeds]
    b = [baseline[s] for s in seeds]
    s = summarize([x - y for x, y in zip(a, b, strict=True)], confidence)
    p = None
    if len(seeds) >= MIN_SEEDS and s.sd:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(a, b).pvalue)
        p = p if math.isfinite(p) else None
    return Paired(seeds, len(seeds), s.mean, s.sd, s.low, s.high, p)


def verdict(variant: Summary, baseline: Summary) -> str:
    """'better' / 'worse' when the intervals do not overlap, else 'no clear difference';
    'too few seeds' when either group has fewer than MIN_SEEDS (no interval)."""
    if min(variant.n, baseline.n) < MIN_SEEDS:
        return TOO_FEW
    if variant.low > baseline.high:
        return "better"
    if variant.high < baseline.low:
        return "worse"
    return "no clear difference"
