"""Screening metrics of a binary classifier's probabilities, in one place.

A screening model is judged at operating points, not only by its AUC: how many cases it
finds when it may raise few false alarms (sensitivity at 90 % / 95 % specificity), how
many healthy eyes it clears when it may miss few cases (specificity at 90 % / 95 %
sensitivity), how uncertain the AUC is (a 95 % bootstrap interval) and whether its
probabilities mean what they say (Brier score). The trainable reports all of them every
epoch (:func:`screening_metrics`), and the export and its model card reuse the same
functions on validation and test predictions, so a number means the same thing
everywhere.

Operating points and the ROC come from scikit-learn (``roc_curve``, ``roc_auc_score``,
``brier_score_loss``); a case is called positive when its probability is ``>=`` the
threshold, as in ``roc_curve``. The bootstrap is stratified (positives and negatives are
resampled separately, so every resample has both classes, as pROC does by default) and
vectorised: all resamples are drawn at once as count matrices and each resample's AUC is
the Mann-Whitney statistic over tied score levels, so 1,000 resamples of a few hundred
cases take milliseconds.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

#: Every metric :func:`screening_metrics` returns; any of them can be a study's metric.
SCREENING_METRICS = ("auc", "auc_ci_low", "auc_ci_high", "sensitivity", "specificity", "threshold",
                     "sens_at_spec90", "sens_at_spec95", "spec_at_sens90", "spec_at_sens95", "brier")

_MAX_CELLS = 4_000_000  # resamples × cases held at once by the bootstrap (bounds its memory)


def _arrays(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} labels but prob has {p.size} values")
    if not set(np.unique(y).tolist()) == {0, 1}:
        raise ValueError("screening metrics need both classes (labels 0 and 1) among the cases")
    return y, np.nan_to_num(p, nan=0.5, posinf=1.0, neginf=0.0)


def _roc(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    return roc_curve(y, p, drop_intermediate=False)


def youden_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The threshold that maximises Youden's J (sensitivity + specificity - 1).

    Returns:
        a probability in [0, 1]; cases with ``prob >= threshold`` are called positive.
    """
    y, p = _arrays(y_true, prob)
    fpr, tpr, thresholds = _roc(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def threshold_for_specificity(y_true: np.ndarray, prob: np.ndarray, specificity: float) -> float:
    """The lowest threshold whose specificity is at least ``specificity`` (the most sensitive one).

    Args:
        y_true: labels 0/1.
        prob: predicted probabilities of class 1.
        specificity: the target, in (0, 1].

    Returns:
        a probability in [0, 1] (``1.0`` when only "call nobody positive" reaches the target).
    """
    if not 0 < specificity <= 1:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    y, p = _arrays(y_true, prob)
    fpr, _, thresholds = _roc(y, p)
    ok = np.flatnonzero(1 - fpr >= specificity - 1e-12)
    return float(min(thresholds[ok[-1]], 1.0))  # thresholds fall as fpr rises: the last one is lowest


def sensitivity_at_specificity(y_true: np.ndarray, prob: np.ndarray, specificity: float) -> float:
    """The highest sensitivity any threshold reaches while specificity stays ``>= specificity``."""
    fpr, tpr, _ = _roc(*_arrays(y_true, prob))
    return _sens_at_spec(fpr, tpr, specificity)


def specificity_at_sensitivity(y_true: np.ndarray, prob: np.ndarray, sensitivity: float) -> float:
    """The highest specificity any threshold reaches while sensitivity stays ``>= sensitivity``."""
    fpr, tpr, _ = _roc(*_arrays(y_true, prob))
    return _spec_at_sens(fpr, tpr, sensitivity)


def _sens_at_spec(fpr: np.ndarray, tpr: np.ndarray, specificity: float) -> float:
    return float(tpr[1 - fpr >= specificity - 1e-12].max())


def _spec_at_sens(fpr: np.ndarray, tpr: np.ndarray, sensitivity: float) -> float:
    return float((1 - fpr[tpr >= sensitivity - 1e-12]).max())


def confusion_at(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, int]:
    """True/false positives/negatives when ``prob >= threshold`` is called positive."""
    y, p = _arrays(y_true, prob)
    pred = p >= threshold
    return {"tp": int((pred & (y == 1)).sum()), "fn": int((~pred & (y == 1)).sum()),
            "fp": int((pred & (y == 0)).sum()), "tn": int((~pred & (y == 0)).sum())}


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_weights(y_true: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Stratified bootstrap resamples as counts: ``W[b, i]`` = how often case ``i`` is drawn in resample ``b``.

    Positives and negatives are drawn separately, each as many as there are, so every
    resample keeps the class balance (and both classes).

    Returns:
        an int64 array ``n_resamples × n``.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    rng = np.random.default_rng(seed)
    offsets = np.arange(n_resamples)[:, None] * y.size  # resample b's cases live at b*n + i
    flat = []
    for cls in (0, 1):
        members = np.flatnonzero(y == cls)
        if members.size:
            flat.append((offsets + members[rng.integers(0, members.size, size=(n_resamples, members.size))]).ravel())
    counts = np.bincount(np.concatenate(flat), minlength=n_resamples * y.size) if flat else np.zeros(0, np.int64)
    return counts.reshape(n_resamples, y.size)


def weighted_auc(y_true: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ROC AUC of each row of case weights (ties count one half), vectorised over rows.

    Args:
        y_true: labels 0/1, ``n``.
        prob: scores, ``n``.
        weights: ``B × n`` non-negative case weights (bootstrap counts, or ones).

    Returns:
        ``B`` AUCs (NaN for a row without positive or negative weight).
    """
    y, p = np.asarray(y_true).astype(np.int64).ravel(), np.asarray(prob, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    y, p = y[order], p[order]
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    # Each case's tie group [start, end) among the sorted scores.
    new_level = np.r_[True, p[1:] != p[:-1]]
    start = np.maximum.accumulate(np.where(new_level, np.arange(p.size), 0))
    end = np.r_[start[1:][new_level[1:]], p.size][np.cumsum(new_level) - 1]
    # Negative weight up to each position (a zero column first): below the tie group, and within it.
    cum_neg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w * (y == 0), axis=1)], axis=1)
    below = cum_neg[:, start]
    tied = cum_neg[:, end] - below
    pos = w * (y == 1)
    wins = (pos * (below + 0.5 * tied)).sum(axis=1)
    total = pos.sum(axis=1) * (w * (y == 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / total, np.nan)


def bootstrap_interval(y_true: np.ndarray, prob: np.ndarray,
                       statistic: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = weighted_auc,
                       *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of a weighted statistic (default: the AUC).

    Args:
        y_true: labels 0/1.
        prob: predicted probabilities of class 1.
        statistic: ``(y, prob, weights B×n) -> B values``, e.g. :func:`weighted_auc`.
        n_resamples: bootstrap resamples (seeded, stratified).
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``.
    """
    y, p = _arrays(y_true, prob)
    order = np.argsort(p, kind="stable")  # sorted once, so the statistic's own sort finds it sorted
    y, p = y[order], p[order]
    weights = bootstrap_weights(y, n_resamples, seed)
    chunk = max(1, _MAX_CELLS // max(1, y.size))
    values = np.concatenate([statistic(y, p, weights[i:i + chunk]) for i in range(0, n_resamples, chunk)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def weighted_sensitivity(threshold: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A bootstrap statistic: sensitivity at a fixed threshold."""
    def stat(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
        hit = (y == 1) & (p >= threshold)
        return (w * hit).sum(1) / np.maximum((w * (y == 1)).sum(1), 1e-12)
    return stat


def weighted_specificity(threshold: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A bootstrap statistic: specificity at a fixed threshold."""
    def stat(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
        cleared = (y == 0) & (p < threshold)
        return (w * cleared).sum(1) / np.maximum((w * (y == 0)).sum(1), 1e-12)
    return stat


def weighted_brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A bootstrap statistic: the Brier score (mean squared error of the probabilities)."""
    return (w * (p - y) ** 2).sum(1) / w.sum(1)


# ----------------------------------------------------------------------------- all at once
def screening_metrics(y_true: np.ndarray, prob: np.ndarray, *, threshold: float | None = None,
                      n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every metric in :data:`SCREENING_METRICS` for one set of predictions.

    Args:
        y_true: labels 0/1 (both classes present).
        prob: predicted probabilities of class 1 (NaN/inf are scored as 0.5/1/0).
        threshold: the operating threshold for ``sensitivity``/``specificity``; default:
            Youden's J on these predictions.
        n_resamples: bootstrap resamples of the AUC interval.
        seed: seed of the bootstrap.

    Returns:
        ``auc``, its 95 % interval ``auc_ci_low``/``auc_ci_high``, ``sensitivity`` and
        ``specificity`` at ``threshold`` (also returned), ``sens_at_spec90/95``,
        ``spec_at_sens90/95`` and ``brier``.
    """
    from sklearn.metrics import auc as area, brier_score_loss

    y, p = _arrays(y_true, prob)
    fpr, tpr, thresholds = _roc(y, p)  # once: every operating point reads the same curve
    if threshold is None:
        threshold = float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))  # Youden's J
    c = confusion_at(y, p, threshold)
    low, high = bootstrap_interval(y, p, n_resamples=n_resamples, seed=seed)
    return {
        "auc": float(area(fpr, tpr)), "auc_ci_low": low, "auc_ci_high": high,
        "sensitivity": c["tp"] / (c["tp"] + c["fn"]), "specificity": c["tn"] / (c["tn"] + c["fp"]),
        "threshold": float(threshold),
        "sens_at_spec90": _sens_at_spec(fpr, tpr, 0.90), "sens_at_spec95": _sens_at_spec(fpr, tpr, 0.95),
        "spec_at_sens90": _spec_at_sens(fpr, tpr, 0.90), "spec_at_sens95": _spec_at_sens(fpr, tpr, 0.95),
        "brier": float(brier_score_loss(y, np.clip(p, 0.0, 1.0))),
    }


__all__ = [
    "SCREENING_METRICS",
    "bootstrap_interval",
    "bootstrap_weights",
    "confusion_at",
    "screening_metrics",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
    "threshold_for_specificity",
    "weighted_auc",
    "weighted_brier",
    "weighted_sensitivity",
    "weighted_specificity",
    "youden_threshold",
]
