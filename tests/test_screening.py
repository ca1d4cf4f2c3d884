"""Screening metrics: exact operating points on a hand-made case, the bootstrap's speed and coverage."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from arc_ray import screening as s

# 10 cases, 5 positive. Sorted by probability: N N P N N P P N P P (N = 0, P = 1).
Y = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
P = np.array([0.05, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90])


def test_operating_points_by_hand():
    # Specificity >= 0.9 allows no false positive: threshold 0.8 finds 2 of 5 positives.
    assert s.sensitivity_at_specificity(Y, P, 0.90) == pytest.approx(0.4)
    assert s.sensitivity_at_specificity(Y, P, 0.95) == pytest.approx(0.4)
    # Specificity 0.8 (one false positive, 0.70) lets threshold 0.5 find 4 of 5.
    assert s.sensitivity_at_specificity(Y, P, 0.80) == pytest.approx(0.8)
    # Sensitivity >= 0.9 needs all 5 positives: threshold 0.2 clears 2 of 5 negatives.
    assert s.specificity_at_sensitivity(Y, P, 0.90) == pytest.approx(0.4)
    assert s.specificity_at_sensitivity(Y, P, 0.95) == pytest.approx(0.4)
    assert s.threshold_for_specificity(Y, P, 0.9) == pytest.approx(0.8)
    assert s.threshold_for_specificity(Y, P, 0.8) == pytest.approx(0.5)
    # Youden: threshold 0.5 → sensitivity 0.8, specificity 0.8, J = 0.6 (the maximum).
    assert s.youden_threshold(Y, P) == pytest.approx(0.5)
    assert s.confusion_at(Y, P, 0.5) == {"tp": 4, "fn": 1, "fp": 1, "tn": 4}


def test_screening_metrics_all_names_and_values():
    m = s.screening_metrics(Y, P)
    assert set(m) == set(s.SCREENING_METRICS)
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P)) == pytest.approx(0.8)
    assert (m["sensitivity"], m["specificity"], m["threshold"]) == pytest.approx((0.8, 0.8, 0.5))
    assert (m["sens_at_spec90"], m["spec_at_sens95"]) == pytest.approx((0.4, 0.4))
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    assert m["auc_ci_low"] < m["auc"] < m["auc_ci_high"]
    at = s.screening_metrics(Y, P, threshold=0.8)
    assert (at["sensitivity"], at["specificity"], at["threshold"]) == pytest.approx((0.4, 1.0, 0.8))


def test_weighted_auc_matches_sklearn_on_resamples_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.round(rng.random(120) + 0.4 * y, 1)  # many ties
    w = s.bootstrap_weights(y, 20, seed=1)
    assert (w * (y == 1)).sum(1).tolist() == [int(y.sum())] * 20  # stratified: class sizes kept
    for b, auc in enumerate(s.weighted_auc(y, p, w)):
        idx = np.repeat(np.arange(y.size), w[b])
        assert auc == pytest.approx(roc_auc_score(y[idx], p[idx]))


def test_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = rng.random(200) + 0.5 * y
    start = time.perf_counter()
    first = s.bootstrap_interval(y, p, n_resamples=1000, seed=7)
    assert time.perf_counter() - start < 0.5
    assert first == s.bootstrap_interval(y, p, n_resamples=1000, seed=7)


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_auc_about_95_percent():
    """Binormal scores: negatives N(0, 1), positives N(d, 1), so the true AUC is Φ(d/√2)."""
    d, n_each, reps = 1.0, 100, 300
    true_auc = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2024)
    y = np.r_[np.zeros(n_each, int), np.ones(n_each, int)]
    covered = 0
    for rep in range(reps):
        p = np.r_[rng.normal(0, 1, n_each), rng.normal(d, 1, n_each)]
        low, high = s.bootstrap_interval(y, p, n_resamples=1000, seed=rep)
        covered += low <= true_auc <= high
    assert 0.88 <= covered / reps <= 0.99, covered / reps


def test_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        s.screening_metrics(np.zeros(4), np.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="labels but prob has"):
        s.youden_threshold(Y, P[:3])
    with pytest.raises(ValueError, match="specificity must be"):
        s.threshold_for_specificity(Y, P, 1.5)
