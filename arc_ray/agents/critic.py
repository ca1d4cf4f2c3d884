"""The critic: scores every proposal with the world model and votes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

from arc_ray.agents.base import Agent, AgentContext, risk_cap, world_model_for
from arc_ray.historian.schema import EXPERIMENT_ID, METRIC_PREFIX
from arc_ray.outcomes import probability_feasible
from arc_ray.records import Prediction, Proposal, Vote
from arc_ray.space import flatten_config
from arc_ray.study import StudyConfig

if TYPE_CHECKING:
    from arc_ray.world_model import WorldModel

logger = logging.getLogger(__name__)

REFIT_GROWTH = 0.05  # refit the world model once the history has grown by this share
LARGE_HISTORY = 300  # past this many trials, one optimizer start fits the GP well enough



def fit_constraint_models(ctx: AgentContext, seed: int = 0) -> dict[str, "WorldModel"]:
    """One cheap GP per constrained metric, fitted like the study metric's (no restarts).

    A metric no trial reported yet, or too few to fit, gets no model: its constraint
    then adds no evidence to P(feasible) instead of a made-up prior.
    """
    from arc_ray.world_model import WorldModel

    models: dict[str, WorldModel] = {}
    for c in ctx.study.outcome_constraints:
        if c.metric in models or METRIC_PREFIX + c.metric not in ctx.trials.column_names:
            continue
        wm = WorldModel(seed=seed, n_restarts=0).fit(ctx.trials, ctx.study.search_space, c.metric,
                                                     1.0 if c.op == ">=" else -1.0,
                                                     baseline_config=ctx.study.baseline)
        if not wm.is_prior:
            models[c.metric] = wm
    return models


class Critic(Agent):
    """Forecasts each proposal with the world model (fitted on the trials table once per
    history version) and votes.

    * :meth:`assess` returns a :class:`Prediction` per proposal: predicted mean ± std,
      expected improvement over the best, failure probability. The collective attaches
      them to the proposals before the vote, so every voter and the supervisor see them.
    * With outcome constraints, expected improvement is multiplied by the probability
      that every constraint holds (each constrained metric forecast by its own GP:
      :func:`fit_constraint_models`), and the rationale cites ``P(feasible)``.
    * :meth:`vote` ranks the batch by expected improvement (which trades the predicted
      mean against its uncertainty; in benchmarks it chose better than an upper
      confidence bound in explore cycles) and scores
      ``(1 - P(fail)) × (0.25 + 0.75 × rank percentile)``. It rejects a proposal
      whose failure probability is above the risk cap (``supervisor.max_failure_probability``,
      or the history's failure rate plus a margin when that is higher: see
      :func:`~arc_ray.agents.base.risk_cap`), with the numbers in its rationale.
    """

    name = "critic"

    def __init__(self, study: StudyConfig, name: str | None = None) -> None:
        super().__init__(study, name)
        self._model: WorldModel | None = None
        self._fitted_on: tuple[int, str | None] = (0, None)  # rows, first experiment id
        self._constraint_models: dict[str, WorldModel] = {}  # constrained metric → its forecast

    def model(self, ctx: AgentContext) -> "WorldModel":
        """The world model, refitted when the history has grown by :data:`REFIT_GROWTH`.

        A fit costs about half a second at a thousand trials and a few trials more
        change little, so a large history is refitted every few cycles; a small one
        (under 20 trials) every cycle. The incumbent used for expected improvement is
        always the current best (:meth:`_predict`), never the one at fit time.
        """
        t = ctx.trials
        n = t.num_rows
        first = str(t.column(EXPERIMENT_ID)[0]) if n and EXPERIMENT_ID in t.column_names else None
        rows, was_first = self._fitted_on
        stale = (self._model is None or first != was_first or n < rows
                 or n - rows >= max(1.0, REFIT_GROWTH * rows))
        if stale:
            restarts = 0 if n > LARGE_HISTORY else 2
            self._model = world_model_for(ctx, seed=self.study.seed, n_restarts=restarts)
            self._constraint_models = fit_constraint_models(ctx, seed=self.study.seed)
            self._fitted_on = (n, first)
        assert self._model is not None
        return self._model

    def _predict(self, proposals: list[Proposal], ctx: AgentContext) -> tuple[list[Prediction], list[dict]]:
        wm = self.model(ctx)
        configs = self._configs(proposals, ctx)
        preds = wm.predict(configs)
        best = ctx.summary.best_value
        if best is not None and not wm.is_prior:
            ei = wm.expected_improvement(configs, best=best)
            preds = [p.model_copy(update={"expected_improvement": float(e)}) for p, e in zip(preds, ei)]
        forecasts = {m: cm.predict_mean_std(configs) for m, cm in self._constraint_models.items()}
        feasible = probability_feasible(forecasts, self.study.outcome_constraints)
        if feasible is not None:  # constrained EI: improvement only counts where the bounds hold
            preds = [p.model_copy(update={"feasibility": float(f),
                                          "expected_improvement": (p.expected_improvement or 0.0) * float(f)})
                     for p, f in zip(preds, feasible)]
        return preds, configs

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
        return self._predict(proposals, ctx)[0]

    def vote(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        if not proposals:
            return []
        preds, _ = self._predict(proposals, ctx)
        acq = np.array([p.expected_improvement or 0.0 for p in preds])
        pct = (rankdata(acq) - 1) / max(len(acq) - 1, 1) if len(acq) > 1 else np.ones(1)
        cap = risk_cap(self.study, ctx.history())
        metric = self.study.metric
        votes = []
        for p, pred, q in zip(proposals, preds, pct):
            risk = pred.failure_probability or 0.0
            score = float((1.0 - risk) * (0.25 + 0.75 * q))
            approve = risk <= cap
            why = (f"predicted {metric} {pred.mean:.4g} ± {pred.std:.2g}, EI {pred.expected_improvement or 0:.3g}, "
                   f"P(fail) {risk:.2f}; EI ranks {len(acq) - int(round(q * (len(acq) - 1)))} "
                   f"of {len(acq)}" + (" (prior: too little data to fit)" if pred.is_prior else "")
                   + (f"; P(feasible)={pred.feasibility:.2f}" if pred.feasibility is not None else ""))
            if not approve:
                why = f"reject: P(fail) {risk:.2f} is above the risk cap {cap:.2f}; " + why
            votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=approve,
                              score=float(np.clip(score, 0.0, 1.0)), rationale=why))
        return votes
