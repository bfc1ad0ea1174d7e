"""Intervals and the adjusted count: against scipy, known values and simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from bloodcells.stats.intervals import (
    adjusted_count,
    adjusted_proportions,
    bootstrap_interval,
    confusion_rates,
    wilson_interval,
    z_value,
)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (57, 200), (1, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_known_value_and_edges():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81 of 263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_wilson_interval_covers_about_95_percent():
    rng = np.random.default_rng(1)
    n, p = 120, 0.07
    hits = [wilson_interval(int(k), n) for k in rng.binomial(n, p, size=2000)]
    coverage = np.mean([low <= p <= high for low, high in hits])
    assert 0.92 <= coverage <= 0.98


def test_bootstrap_interval_of_a_mean_is_about_the_t_interval():
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, size=400)
    low, high = bootstrap_interval(values, np.mean, n_resamples=2000, seed=3)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, abs=0.05)
    assert high == pytest.approx(values.mean() + half, abs=0.05)
    again = bootstrap_interval(values, np.mean, n_resamples=2000, seed=3)
    assert (again[0], again[1]) == (low, high)  # seeded: the same numbers every time


CONFUSION_RATES = np.array([[0.80, 0.15, 0.05], [0.10, 0.75, 0.15], [0.05, 0.20, 0.75]])


def test_adjustment_inverts_a_known_confusion_exactly():
    truth = np.array([0.8, 0.15, 0.05])
    observed = CONFUSION_RATES.T @ truth  # what a classifier with these rates reports
    assert not np.allclose(observed, truth)
    assert adjusted_proportions(observed, CONFUSION_RATES * 200) == pytest.approx(truth, abs=1e-6)


def test_adjustment_stays_on_the_simplex():
    # observed shares that no true mix can produce (more class 0 than its tpr allows)
    shares = adjusted_proportions(np.array([95, 5, 0]), CONFUSION_RATES * 100)
    assert shares.min() >= 0 and shares.sum() == pytest.approx(1)
    assert shares[0] == pytest.approx(1, abs=0.05)


def test_two_classes_is_forman_formula():
    tpr, fpr, q = 0.9, 0.2, 0.41
    confusion = np.array([[100 - 90, 90], [80, 20]])[:, ::-1]  # rows true 1/0, cols pred 1/0
    shares = adjusted_proportions(np.array([q, 1 - q]), confusion)
    assert shares[0] == pytest.approx((q - fpr) / (tpr - fpr), abs=1e-6)


def test_a_class_without_dev_images_gets_a_zero_row():
    rates = confusion_rates([[8, 2], [0, 0]])
    assert rates.tolist() == [[0.8, 0.2], [0.0, 0.0]]


def test_adjusted_bootstrap_covers_the_truth_roughly_95_percent():
    """Simulate dev matrices and samples from known rates; count how often the CI holds."""
    rng = np.random.default_rng(7)
    truth = np.array([0.6, 0.3, 0.1])
    dev_per_class, sample_size, trials = 150, 400, 80
    covered = []
    for t in range(trials):
        dev = np.stack([rng.multinomial(dev_per_class, row) for row in CONFUSION_RATES])
        labels = rng.choice(3, size=sample_size, p=truth)
        predicted = np.array([rng.choice(3, p=CONFUSION_RATES[y]) for y in labels])
        counts = np.bincount(predicted, minlength=3)
        result = adjusted_count(counts, dev, n_resamples=300, seed=t)
        covered.append((result.low <= truth) & (truth <= result.high))
    coverage = np.mean(covered, axis=0)
    assert all(coverage >= 0.85), coverage  # ~0.95 expected; percentile CIs run a bit short


def test_adjusted_interval_is_wider_with_a_smaller_dev_set():
    counts = np.array([300, 70, 30])
    big = adjusted_count(counts, np.round(CONFUSION_RATES * 1000).astype(int), 400, seed=0)
    small = adjusted_count(counts, np.round(CONFUSION_RATES * 20).astype(int), 400, seed=0)
    assert np.all(small.high - small.low > big.high - big.low)
