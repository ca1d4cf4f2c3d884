"""The critic: scores every proposal with the world model and votes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

from arc_ray.agents.base import Agent, AgentContext, risk_cap, world_model_for
from arc_ray.records import Prediction, Proposal, StrategyMode, Vote
from arc_ray.study import StudyConfig, flatten_config

if TYPE_CHECKING:
    from arc_ray.world_model import WorldModel

logger = logging.getLogger(__name__)

UCB_BETA = 2.0  # explore cycles rank by mean + 2 std


class Critic(Agent):
    """Forecasts each proposal with the world model (fitted on the trials table once per
    history version) and votes.

    * :meth:`assess` returns a :class:`Prediction` per proposal: predicted mean ± std,
      expected improvement over the best, failure probability. The collective attaches
      them to the proposals before the vote, so every voter and the supervisor see them.
    * :meth:`vote` ranks the batch by an acquisition that follows the cycle's mode
      (explore: upper confidence bound; exploit and recover: expected improvement), and
      scores ``(1 - P(fail)) × (0.25 + 0.75 × rank percentile)``. It rejects a proposal
      whose failure probability is above the risk cap (``supervisor.max_failure_probability``,
      or the history's failure rate plus a margin when that is higher: see
      :func:`~arc_ray.agents.base.risk_cap`), with the numbers in its rationale.
    """

    name = "critic"

    def __init__(self, study: StudyConfig, name: str | None = None) -> None:
        super().__init__(study, name)
        self._model: WorldModel | None = None
        self._key: tuple[Any, ...] | None = None

    def model(self, ctx: AgentContext) -> "WorldModel":
        """The world model for this history (refitted only when the history changed)."""
        t = ctx.trials
        ids = t.column("experiment_id").to_pylist()[-8:] if "experiment_id" in t.column_names else []
        key = (t.num_rows, tuple(ids), ctx.summary.best_value)
        if self._model is None or key != self._key:
            self._model = world_model_for(ctx, seed=self.study.seed)
            self._key = key
        return self._model

    def _configs(self, proposals: list[Proposal], ctx: AgentContext) -> list[dict[str, Any]]:
        base = ctx.history().baseline_flat
        space = self.study.search_space
        out = []
        for p in proposals:
            flat = {**base, **flatten_config(p.changes)}
            out.append({k: v for k, v in flat.items() if k in space})
        return out

    def assess(self, proposals: list[Proposal], ctx: AgentContext) -> list[Prediction]:
        """The world model's forecast for each proposal."""
        if not proposals:
            return []
        return self.model(ctx).predict(self._configs(proposals, ctx))

    def vote(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        if not proposals:
            return []
        wm = self.model(ctx)
        configs = self._configs(proposals, ctx)
        preds = wm.predict(configs)
        mode = ctx.strategy.mode if ctx.strategy else StrategyMode.EXPLORE
        if mode == StrategyMode.EXPLORE:
            acq, acq_name = wm.upper_confidence_bound(configs, beta=UCB_BETA), "UCB"
        else:
            acq, acq_name = np.array([p.expected_improvement or 0.0 for p in preds]), "EI"
        pct = (rankdata(acq) - 1) / max(len(acq) - 1, 1) if len(acq) > 1 else np.ones(1)
        cap = risk_cap(self.study, ctx.history())
        metric = self.study.metric
        votes = []
        for p, pred, a, q in zip(proposals, preds, acq, pct):
            risk = pred.failure_probability or 0.0
            score = float((1.0 - risk) * (0.25 + 0.75 * q))
            approve = risk <= cap
            why = (f"predicted {metric} {pred.mean:.4g} ± {pred.std:.2g}, EI {pred.expected_improvement or 0:.3g}, "
                   f"P(fail) {risk:.2f}; {acq_name} {a:.4g} ranks {len(acq) - int(round(q * (len(acq) - 1)))} "
                   f"of {len(acq)}" + (" (prior: too little data to fit)" if pred.is_prior else ""))
            if not approve:
                why = f"reject: P(fail) {risk:.2f} is above the risk cap {cap:.2f}; " + why
            votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=approve,
                              score=float(np.clip(score, 0.0, 1.0)), rationale=why))
        return votes
