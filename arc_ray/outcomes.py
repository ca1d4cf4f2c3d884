"""Outcome constraints: bounds a study's other metrics must meet for a trial to count.

A screening study maximises AUC, but a model whose sensitivity falls below what the
clinic needs is of no use however high its AUC (Ax calls these *outcome constraints*).
``outcome_constraints: [{metric: sensitivity, op: ">=", value: 0.85}]`` in a study makes
a trial *feasible* when every constrained metric was reported, finite, and within its
bound; the study's best is then the best feasible trial everywhere it is computed.

This module holds the setting, the feasibility test of one trial's metrics, and the
probability of feasibility of a forecast (a product of normal tail probabilities, the
constrained metrics taken as independent Gaussians, as in constrained expected
improvement, Gardner et al. 2014).
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator


class OutcomeConstraint(BaseModel):
    """One bound on a reported metric: ``metric op value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str  # a metric the trainable reports (e.g. sensitivity)
    op: Literal[">=", "<="]  # the side of ``value`` the metric must stay on
    value: float  # the bound, finite

    @field_validator("metric")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("metric must name a reported metric, e.g. sensitivity")
        return v

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"value must be a finite number, got {v}")
        return v

    def satisfied(self, value: float | None) -> bool:
        """Whether a reported value meets the bound (missing or non-finite never does)."""
        if value is None or not math.isfinite(value):
            return False
        return value >= self.value if self.op == ">=" else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def is_feasible(metrics: Mapping[str, float], constraints: Sequence[OutcomeConstraint]) -> bool:
    """Whether one trial's final metrics meet every constraint (``True`` with none)."""
    return all(c.satisfied(metrics.get(c.metric)) for c in constraints)


def probability_feasible(forecasts: Mapping[str, tuple[np.ndarray, np.ndarray]],
                         constraints: Sequence[OutcomeConstraint]) -> np.ndarray | None:
    """``P(feasible) = Π Φ((mean − bound)/std)`` (``>=``; mirrored for ``<=``) per candidate.

    Args:
        forecasts: metric → ``(mean, std)`` arrays over the candidates; a constrained
            metric missing here contributes nothing (no forecast, no evidence).
        constraints: the study's outcome constraints.

    Returns:
        one probability per candidate, or ``None`` when no constraint has a forecast.
    """
    from scipy.stats import norm

    out = None
    for c in constraints:
        if c.metric not in forecasts:
            continue
        mean, std = (np.asarray(a, dtype=float) for a in forecasts[c.metric])
        z = (mean - c.value) / np.maximum(std, 1e-9)
        p = norm.cdf(z if c.op == ">=" else -z)
        out = p if out is None else out * p
    return out


__all__ = ["OutcomeConstraint", "is_feasible", "probability_feasible"]
