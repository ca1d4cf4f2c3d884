"""The Bayesian optimiser: an Optuna study held in memory, warm-started from the whole history.

Each cycle the proposer adds the trials it has not seen yet (completed ones with their
value, failed ones as FAIL) to an in-memory Optuna study whose distributions come from
the search space, then asks for a batch of ``quota`` configs in one ask loop. The
sampler is TPE (multivariate, constant liar: the trials asked earlier in the batch are
pending and count as bad, which keeps the batch diverse) or Optuna's GP sampler (which
conditions on pending trials itself), by ``proposers.sampler``. Asked trials are told
FAIL right after the batch so they never linger as pending: their real outcome comes
back through the history.
"""

from __future__ import annotations

import logging

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from arc_ray.agents._history import rms_distance
from arc_ray.agents.base import AgentContext, Proposer
from arc_ray.agents.registry import register_proposer
from arc_ray.records import Proposal, ProposalType, StrategyMode
from arc_ray.space import ParamSpec, SearchSpace, flatten_config
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def distribution_for(spec: ParamSpec) -> BaseDistribution:
    """The Optuna distribution of one search-space parameter (bool → categorical)."""
    if spec.type == "float":
        return FloatDistribution(float(spec.low), float(spec.high), log=spec.log)  # type: ignore[arg-type]
    if spec.type == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log)  # type: ignore[arg-type]
    if spec.type == "bool":
        return CategoricalDistribution([False, True])
    return CategoricalDistribution(list(spec.choices or []))


def distributions_for(space: SearchSpace, names: list[str]) -> dict[str, BaseDistribution]:
    return {n: distribution_for(space[n]) for n in names}


EXPLOIT_EI_CANDIDATES = 96  # TPE candidates per sample in exploit cycles (Optuna's default: 24)


def make_sampler(kind: str, seed: int, startup_trials: int, greedy: bool = False) -> optuna.samplers.BaseSampler:
    """TPE (multivariate, constant liar) or GP, seeded. ``greedy``: TPE weighs more
    candidates per sample, so it lands closer to where good trials concentrate."""
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                      constant_liar=True, n_ei_candidates=EXPLOIT_EI_CANDIDATES if greedy else 24)


@register_proposer("bayesian")
class BayesianProposer(Proposer):
    """Model-based proposals from Optuna (TPE or GP), warm-started from every trial run.

    Votes on others' proposals with a TPE-style density ratio: how much more the
    proposal lies among the top quarter of completed trials than among the rest.
    """

    name = "bayesian"
    proposal_type = ProposalType.HYPERPARAMETER_TUNING

    def __init__(self, study: StudyConfig, name: str | None = None) -> None:
        super().__init__(study, name)
        self._optuna: optuna.Study | None = None
        self._names: list[str] = []
        self._seen: set[str] = set()
        self._running: dict[str, int] = {}  # in-flight experiment id → its RUNNING Optuna trial

    # -------------------------------------------------------------- propose

    def _sync(self, ctx: AgentContext) -> tuple[int, int]:
        """Add unseen history rows to the Optuna study; rebuild it when the history changed shape."""
        view = ctx.history()
        names = self.searched(ctx)
        ids = set(view.ids)
        if self._optuna is None or names != self._names or not self._seen <= ids:
            # told sign × metric, so the study maximises whatever the metric's direction
            self._optuna = optuna.create_study(direction="maximize")
            self._names, self._seen, self._running = names, set(), {}
        dists = distributions_for(self.study.search_space, names)
        signed = view.signed_values()
        new = []
        for i, eid in enumerate(view.ids):
            if eid in self._seen:
                continue
            running = view.status[i] == "RUNNING"  # in flight (rolling decisions)
            if view.completed[i]:
                state, value = TrialState.COMPLETE, float(signed[i])
            elif view.failed[i]:
                state, value = TrialState.FAIL, None
            else:  # running, or cancelled / completed without the metric (no evidence)
                state, value = (TrialState.RUNNING if running else None), None
            if eid in self._running:
                if not running:  # it ended: tell Optuna how (no evidence reads as a failure)
                    self._optuna.tell(self._running.pop(eid), value, state=state or TrialState.FAIL)
                    self._seen.add(eid)
                continue
            if state is None:
                self._seen.add(eid)
                continue
            flat = view.flat_config(i)
            params = {n: flat[n] for n in names}
            try:
                new.append(create_trial(params=params, distributions=dists, value=value, state=state,
                                        user_attrs={"experiment_id": eid}))
            except ValueError as exc:  # a value outside the space (the space was narrowed)
                logger.debug("skipping %s for the optimiser: %s", eid, exc)
            if not running:
                self._seen.add(eid)
        if new:
            self._optuna.add_trials(new)
            # constant liar: TPE keeps new samples away from trials still in flight
            for t in self._optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                eid = t.user_attrs.get("experiment_id")
                if eid is not None:
                    self._running.setdefault(eid, t.number)
        return int(view.n_completed), int(view.n_failed)

    def propose(self, ctx: AgentContext) -> list[Proposal]:
        n = ctx.quota
        if n <= 0:
            return []
        n_done, n_failed = self._sync(ctx)
        assert self._optuna is not None
        settings = self.study.proposers
        # A fresh sampler seeded by (study seed, cycle) makes a cycle's batch reproducible.
        greedy = ctx.strategy is not None and ctx.strategy.mode == StrategyMode.EXPLOIT
        self._optuna.sampler = make_sampler(settings.sampler, self.study.seed * 100_003 + ctx.cycle_id,
                                            settings.startup_trials, greedy=greedy)
        dists = distributions_for(self.study.search_space, self._names)
        modelled = n_done >= settings.startup_trials
        how = ("TPE (multivariate, constant liar)" if settings.sampler == "tpe" else "GP") if modelled \
            else f"random start-up ({n_done} of {settings.startup_trials} completed trials)"
        proposals, asked, seen = [], [], set()
        for attempt in range(4 * n):
            if len(proposals) >= n:
                break
            trial = self._optuna.ask(dists)
            asked.append(trial)
            # forbidden regions (declared or learned) are left by the smallest move
            params, notes = self.admissible(dict(trial.params), ctx)
            if params is None:
                continue
            key = tuple(repr(params[k]) for k in self._names)
            if key in seen:
                continue
            seen.add(key)
            k = len(proposals) + 1
            proposals.append(self.proposal_of(ctx, k, params, notes, (
                f"{how} sample {k} of {n}, warm-started from {n_done} completed and {n_failed} failed trials")))
        for trial in asked:
            self._optuna.tell(trial, state=TrialState.FAIL)
        return proposals

    # ----------------------------------------------------------------- vote

    def goodness(self, proposals: list[Proposal], ctx: AgentContext) -> list[tuple[float, str] | None]:
        view = ctx.history()
        if view.n_completed < 4:
            return [None] * len(proposals)
        top = view.top_indices(0.25, minimum=2)
        rest = np.setdiff1d(np.flatnonzero(view.completed | view.failed), top)
        if len(rest) == 0:
            return [None] * len(proposals)
        points = np.array([view.unit(flatten_config(p.changes)) for p in proposals])
        h = 0.15  # kernel width in RMS unit-cube distance: about a sixth of the range per axis
        good = np.exp(-0.5 * (rms_distance(points, view.X[top]) / h) ** 2).mean(axis=1)
        bad = np.exp(-0.5 * (rms_distance(points, view.X[rest]) / h) ** 2).mean(axis=1)
        out: list[tuple[float, str] | None] = []
        for g, b in zip(good, bad):
            score = float((g + 1e-12) / (g + b + 2e-12))
            out.append((score, f"density ratio l/g = {(g + 1e-12) / (b + 1e-12):.2f} "
                               f"({len(top)} top trials vs {len(rest)} others)"))
        return out

