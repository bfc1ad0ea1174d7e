"""Intervals and corrected counts: Wilson intervals, the bootstrap, adjusted classify-and-count.

Everything here is plain numbers in, plain numbers out (numpy and scipy): no models, no files.

Adjusted classify-and-count (Forman 2008, "Quantifying counts and costs via classification").
A classifier's raw share of images predicted as class j is biased towards its training mix: it
is q_j = sum_i P(pred = j | true = i) p_i, where p is the sample's true class mix and
P(pred | true) is estimated by the row-normalised dev-set confusion matrix M. The adjusted
estimate solves q = M^T p for p on the probability simplex (p >= 0, sum p = 1): non-negative
least squares on M^T p = q with the row sum(p) = 1 appended at a large weight, then rescaled
to sum to one. With two classes this is Forman's (q - fpr) / (tpr - fpr), clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from scipy.stats import norm

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
SUM_TO_ONE_WEIGHT = 1e3  # weight of the sum(p) = 1 row in the least-squares system


def z_value(confidence: float = CONFIDENCE) -> float:
    """The standard normal quantile of a two-sided `confidence` interval (1.96 for 95%)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


def wilson_interval(
    successes: int, n: int, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion `successes`/`n` (None when n is 0).

    Unlike the normal-approximation interval it stays inside [0, 1] and is not degenerate at 0
    or n successes; it agrees with scipy.stats.binomtest(...).proportion_ci("wilson").
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return None
    z = z_value(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def percentile_interval(
    samples: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap percentile interval of `samples` (resamples along axis 0)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.asarray(samples, dtype=float), [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float | np.ndarray] = np.mean,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of `statistic` over the rows of `values` (seeded)."""
    values = np.asarray(values)
    if len(values) == 0:
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_resamples, len(values)))
    samples = np.array([statistic(values[p]) for p in picks])
    return percentile_interval(samples, confidence)


def confusion_rates(confusion: np.ndarray) -> np.ndarray:
    """P(predicted = j | true = i): the confusion matrix with each row divided by its sum.

    A class with no dev images gets an all-zero row: nothing is known about how it is
    predicted, so the adjustment cannot see it (its adjusted share comes out 0).
    """
    confusion = np.asarray(confusion, dtype=float)
    return confusion / confusion.sum(axis=1, keepdims=True).clip(min=1)


def adjusted_proportions(predicted: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """The sample's class mix corrected for the classifier's errors (see the module doc).

    `predicted`: how many sample images were predicted as each class (or their shares);
    `confusion`: the dev-set confusion matrix, rows true, columns predicted (counts or rates).
    Returns shares that are >= 0 and sum to 1.
    """
    predicted = np.asarray(predicted, dtype=float)
    total = predicted.sum()
    if total <= 0:
        raise ValueError("no predictions to adjust")
    rates = confusion_rates(confusion)
    k = len(predicted)
    if rates.shape != (k, k):
        raise ValueError(f"confusion matrix {rates.shape} does not match {k} classes")
    system = np.vstack([rates.T, np.full((1, k), SUM_TO_ONE_WEIGHT)])
    target = np.append(predicted / total, SUM_TO_ONE_WEIGHT)
    shares, _ = nnls(system, target)
    s = shares.sum()
    return shares / s if s > 0 else np.full(k, 1 / k)


@dataclass(frozen=True)
class AdjustedCount:
    """Adjusted shares per class with bootstrap interval bounds (all as fractions)."""

    shares: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_resamples: int
    confidence: float


def adjusted_count(
    predicted: np.ndarray,
    confusion: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> AdjustedCount:
    """Adjusted classify-and-count with a bootstrap interval that includes both sources of
    uncertainty: each resample redraws the sample's predicted counts (multinomial with the
    observed shares) and every dev confusion row (multinomial with that row's shares and
    size), then solves the adjustment again.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    confusion = np.asarray(confusion, dtype=np.int64)
    n = int(predicted.sum())
    shares = adjusted_proportions(predicted, confusion)
    rng = np.random.default_rng(seed)
    sample_draws = rng.multinomial(n, predicted / n, size=n_resamples)
    rows = confusion.sum(axis=1)
    row_draws = [
        rng.multinomial(int(size), row / size, size=n_resamples)
        if size
        else np.zeros((n_resamples, len(row)), dtype=np.int64)
        for row, size in zip(confusion, rows, strict=True)
    ]
    resampled = np.array(
        [
            adjusted_proportions(sample_draws[b], np.stack([r[b] for r in row_draws]))
            for b in range(n_resamples)
        ]
    )
    low, high = percentile_interval(resampled, confidence)
    return AdjustedCount(shares, low, high, n_resamples, confidence)
