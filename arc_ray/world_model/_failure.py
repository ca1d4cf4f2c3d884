"""The world model's failure-risk estimate: how likely a config is to crash before it runs.

A kernel-weighted Beta–Bernoulli estimate over the completed and failed trials::

    p(x) = (a + Σᵢ wᵢ(x)·failedᵢ) / (a + b + Σᵢ wᵢ(x)),   wᵢ(x) = exp(-½ Σₚ dₚ(x, xᵢ)² / hₚ²)

The prior ``Beta(a, b)`` has the history's overall failure rate, itself shrunk towards
1/4 (one failure in four pseudo-trials), and the weight of ``prior_strength`` trials. So
with few failures the estimate stays near the base rate, far from every past trial it
returns the base rate, and close to past failures it climbs towards 1.

Once at least two trials failed and two did not, the prior's mean is no longer one rate
but a *trend*: an L2-regularised logistic regression of failure (scikit-learn's
``LogisticRegression`` with its defaults, on standardised columns) on the parameters the
bandwidth search found relevant. Failure regions are
mostly monotone in their parameters — memory grows with batch, image size, width and
model; divergence with the learning rate and depth — so the trend extends a boundary the
trials have drawn into regions no trial has reached, where the kernel alone returns the
base rate. Where failures follow no direction the regularised slope stays near zero and
the trend is the base rate again.

Each parameter has its own bandwidth ``hₚ`` (a one-hot group shares one), picked from a
short grid, infinity included ("irrelevant to failure"), by coordinate ascent on the
leave-one-out log-likelihood: failures usually hinge on one or two parameters (a
learning rate too high with a deep model), and an isotropic kernel would dilute them
with every other parameter's distance.

Chosen over scikit-learn's ``GaussianProcessClassifier`` because that cannot be fitted
on a single class (no failures yet, or only failures) and has no notion of a prior
failure rate to shrink towards when there are two failures in forty trials.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

# Failure-rate prior before any trial: one failure in four pseudo-trials.
BASE_FAILURES, BASE_TRIALS = 1.0, 4.0
# Per-parameter bandwidths tried, in unit-cube distance; inf = the parameter is ignored.
BANDWIDTHS = (0.05, 0.1, 0.2, 0.35, 0.6, np.inf)
DEFAULT_BANDWIDTH = 0.2
# Bandwidth search looks at the most recent trials only: it costs n² per grid point.
TUNE_SIZE = 400
SWEEPS = 2
TREND_MIN_EACH = 2  # failed and not-failed trials each before the prior follows a trend
TREND_CLIP = 0.01  # the trend's prior mean stays within [TREND_CLIP, 1 - TREND_CLIP]


class FailureEstimate:
    """Probability of failure over the encoded search space.

    Args:
        groups: ``(first column, width)`` per parameter of the encoding.
        distance_scale: per-column factor applied before distances (one-hot columns
            scaled so that another choice is as far as the ends of a numeric range).
        prior_strength: the prior's weight, in trials.
    """

    def __init__(self, groups: list[tuple[int, int]], distance_scale: np.ndarray,
                 prior_strength: float = 2.0) -> None:
        self.groups = groups
        self.distance_scale = distance_scale
        self.prior_strength = prior_strength
        self.X = np.empty((0, len(distance_scale)))
        self.failed = np.empty(0)
        rate = BASE_FAILURES / BASE_TRIALS
        self.prior = (prior_strength * rate, prior_strength * (1 - rate))
        self.bandwidths = np.full(len(groups), DEFAULT_BANDWIDTH)
        self.trend: Pipeline | None = None
        self._trend_cols = np.ones(len(distance_scale), dtype=bool)

    @property
    def base_rate(self) -> float:
        """The failure probability far from every trial."""
        a, b = self.prior
        return a / (a + b)

    def fit(self, X: np.ndarray, failed: np.ndarray) -> FailureEstimate:
        """Fit on encoded configs ``X`` (n, columns) and ``failed`` (n,) in {0, 1}, most recent last."""
        self.X = X * self.distance_scale
        self.failed = failed.astype(float)
        n_failed = float(self.failed.sum())
        rate = (n_failed + BASE_FAILURES) / (len(self.failed) + BASE_TRIALS)
        self.prior = (self.prior_strength * rate, self.prior_strength * (1 - rate))
        self.bandwidths = np.full(len(self.groups), DEFAULT_BANDWIDTH)
        if len(self.failed) >= 5 and 0 < n_failed < len(self.failed):
            self._tune(self.X[-TUNE_SIZE:], self.failed[-TUNE_SIZE:])
        self.trend, self._trend_cols = None, self._relevant_columns()
        if min(n_failed, len(self.failed) - n_failed) >= TREND_MIN_EACH and self._trend_cols.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.trend = make_pipeline(StandardScaler(), LogisticRegression()).fit(
                    self.X[:, self._trend_cols], self.failed)
        logger.debug("failure estimate: %d trials, %d failed, base rate %.3f, bandwidths %s",
                     len(self.failed), int(n_failed), rate, np.round(self.bandwidths, 2).tolist())
        return self

    def _group_sq_dists(self, A: np.ndarray, B: np.ndarray) -> list[np.ndarray]:
        return [_sq_dists(A[:, s:s + w], B[:, s:s + w]) for s, w in self.groups]

    def _column_inverse_bandwidths(self) -> np.ndarray:
        """Each column's 1 / bandwidth of its parameter (0: the parameter is ignored)."""
        inv = np.zeros(len(self.distance_scale))
        for (start, width), h in zip(self.groups, self.bandwidths):
            if np.isfinite(h):
                inv[start:start + width] = 1.0 / h
        return inv

    def _relevant_columns(self) -> np.ndarray:
        """The columns of the parameters the bandwidth search kept (finite bandwidth)."""
        return self._column_inverse_bandwidths() > 0

    def _prior_mean(self, scaled: np.ndarray) -> np.ndarray:
        """The prior's failure rate at configs already multiplied by ``distance_scale``."""
        a, b = self.prior
        if self.trend is None:
            return np.full(len(scaled), a / (a + b))
        q = self.trend.predict_proba(scaled[:, self._trend_cols])[:, 1]
        return np.clip(q, TREND_CLIP, 1 - TREND_CLIP)

    def _tune(self, X: np.ndarray, failed: np.ndarray) -> None:
        parts = self._group_sq_dists(X, X)
        inv = 1.0 / self.bandwidths**2
        total = sum(p * i for p, i in zip(parts, inv))
        best = self._loo_loglik(total, failed)
        for _ in range(SWEEPS):
            changed = False
            for g, part in enumerate(parts):
                rest = total - part * inv[g]
                for h in BANDWIDTHS:
                    cand_inv = 0.0 if np.isinf(h) else 1.0 / h**2
                    score = self._loo_loglik(rest + part * cand_inv, failed)
                    if score > best + 1e-9:
                        best, inv[g], changed = score, cand_inv, True
                total = rest + part * inv[g]
            if not changed:
                break
        with np.errstate(divide="ignore"):
            self.bandwidths = np.where(inv > 0, 1.0 / np.sqrt(np.maximum(inv, 1e-300)), np.inf)

    def _loo_loglik(self, d2: np.ndarray, failed: np.ndarray) -> float:
        a, b = self.prior
        w = np.exp(-0.5 * d2)
        np.fill_diagonal(w, 0.0)
        p = np.clip((a + w @ failed) / (a + b + w.sum(axis=1)), 1e-9, 1 - 1e-9)
        return float(np.sum(failed * np.log(p) + (1 - failed) * np.log(1 - p)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Failure probability in [0, 1] for encoded configs ``X``."""
        a, b = self.prior
        if len(self.failed) == 0 or len(X) == 0:
            return np.full(len(X), a / (a + b))
        scaled = X * self.distance_scale
        # Σₚ dₚ²/hₚ² is one distance once each column is divided by its group's bandwidth.
        inv = self._column_inverse_bandwidths()
        cols = inv > 0
        w = np.exp(-0.5 * _sq_dists((scaled * inv)[:, cols], (self.X * inv)[:, cols]))
        s = self.prior_strength
        return np.clip((s * self._prior_mean(scaled) + w @ self.failed) / (s + w.sum(axis=1)), 0.0, 1.0)


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


__all__ = ["FailureEstimate"]
