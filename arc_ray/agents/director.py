"""The director: picks the cycle's mode (explore / exploit / recover) and splits the proposal quota."""

from __future__ import annotations

import logging
import math
from typing import Collection, Mapping

import numpy as np

from arc_ray.agents._history import nearest_distance
from arc_ray.agents.base import Agent, AgentContext, risk_cap
from arc_ray.agents.explorer import novelty_score
from arc_ray.agents.surrogate import declared_baseline, rich_history, startup_size
from arc_ray.records import HistorySummary, Proposal, Strategy, StrategyMode, Vote
from arc_ray.space import flatten_config
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

# How each mode shares the proposals among the built-in proposers (renormalised over the
# enabled ones). Explore leans on space filling; exploit on the model-based optimiser;
# recover on the recovery proposer, which only works in that mode. The surrogate (the
# world model's own acquisition) shares the model-based part with the Bayesian proposer.
MODE_MIX: dict[StrategyMode, dict[str, float]] = {
    StrategyMode.EXPLORE: {"bayesian": 0.35, "surrogate": 0.3, "explorer": 0.2, "architect": 0.15,
                           "recovery": 0.0},
    StrategyMode.EXPLOIT: {"bayesian": 0.35, "surrogate": 0.45, "explorer": 0.05, "architect": 0.15,
                           "recovery": 0.0},
    StrategyMode.RECOVER: {"bayesian": 0.2, "surrogate": 0.2, "explorer": 0.1, "architect": 0.0,
                           "recovery": 0.5},
}
# Once the history holds RICH_HISTORY completed trials per searched parameter (defined
# with the surrogate, which then also polishes the best trial), the world model is fitted
# on enough data that its own acquisition (the surrogate) earns more of every mode's
# proposals: its weight in the table above is multiplied by RICH_SURROGATE.
# (At 100 evaluations Optuna's GPSampler, all model, out-converged the collective on
# smooth problems; the early cycles keep the mix that measured best at 20 and 40.)
RICH_SURROGATE = 3.0
BEHIND_BASELINE = 0.9  # an explore vote's cap while the baseline, proposed, has not run
_OTHER_WEIGHT = 0.2  # share weight of a registered proposer the table above does not name


def split_quota(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` proposals by ``weights`` (ties → name order)."""
    positive = {k: w for k, w in weights.items() if w > 0}
    if total <= 0 or not positive:
        return {k: 0 for k in weights}
    s = sum(positive.values())
    exact = {k: total * w / s for k, w in positive.items()}
    quotas = {k: int(math.floor(v)) for k, v in exact.items()}
    left = total - sum(quotas.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[:left]:
        quotas[k] += 1
    return {k: quotas.get(k, 0) for k in weights}


class Director(Agent):
    """Plans each cycle from the historian's summary and votes for proposals that fit the plan.

    Rules, first match wins (gains are ``study.director`` settings,
    :meth:`~arc_ray.study.DirectorSettings.gains`: by default any new best is a gain):

    1. fewer than ``explore_cycles`` cycles so far, or no history → explore;
    2. only failures so far → recover (safer settings, baseline restarts);
    3. stagnating (historian) → recover, unless the last
       ``budget.max_recover_cycles_without_improvement`` cycles already were recover
       cycles, then explore;
    4. the last cycle improved the best (by at least the exploit gain, if one is set) → exploit;
    5. the study declared its baseline (not the space's middle) and fewer trials completed
       than the world model needs (two per searched parameter) → exploit: around a
       user's start, the best config's neighbourhood is all there is to go on;
    6. otherwise explore.

    With ``scheduling: rolling`` a round holds about one trial, so "the last cycle" in
    rule 4 is the last ``budget.trials_per_cycle`` results, and rule 3 counts that many
    recover rounds as one recover cycle.

    Quotas follow :data:`MODE_MIX`; with a rich history
    (:func:`~arc_ray.agents.surrogate.rich_history`: ``RICH_HISTORY`` completed trials per
    searched parameter), the surrogate's weight grows :data:`RICH_SURROGATE`-fold.

    Args:
        study: the study.
        name: its name in the collective.
        applicable: the enabled proposers that have something to propose in the study
            (``arc_ray.agents.registry.applicable``); the others get no quota. None:
            every enabled proposer.
    """

    name = "director"

    def __init__(self, study: StudyConfig, name: str | None = None,
                 applicable: Collection[str] | None = None) -> None:
        super().__init__(study, name)
        self.applicable = set(study.proposers.enabled if applicable is None else applicable)

    def plan(self, summary: HistorySummary, cycle_id: int | None = None) -> Strategy:
        """The strategy for the next cycle, with the reason in words and per-proposer quotas."""
        s = self.study.director
        stagnation_gain, exploit_gain = s.gains(summary.metric_spread)
        unit = "" if s.stagnation_threshold is not None else f" ({s.stagnation_share:g} of the spread)"
        no_gain = (f"no gain ≥ {stagnation_gain:.3g}{unit}" if stagnation_gain > 0
                   else "no new best")
        done = summary.n_cycles
        searched = self.study.searched_names
        if done < s.explore_cycles or summary.n_trials == 0:
            mode = StrategyMode.EXPLORE
            reason = (f"cycle {done + 1} of the first {s.explore_cycles} exploration cycles"
                      if summary.n_trials else "no history yet: map the space first")
        elif summary.n_completed == 0:
            mode = StrategyMode.RECOVER
            reason = f"all {summary.n_failed} trials so far failed: try safer settings and the baseline"
        elif summary.stagnating:
            limit = self.study.budget.max_recover_cycles_without_improvement
            # a rolling round holds about one trial: trials_per_cycle rounds make a cycle
            rounds = limit * (self.study.budget.trials_per_cycle if self.study.scheduling == "rolling" else 1)
            recent = summary.modes[-rounds:]
            if len(recent) >= rounds and all(m == StrategyMode.RECOVER.value for m in recent):
                mode = StrategyMode.EXPLORE
                reason = (f"stagnating, and {limit} recover cycles in a row did not help: "
                          "explore elsewhere")
            else:
                mode = StrategyMode.RECOVER
                reason = (f"stagnating: {no_gain} in {summary.metric} over "
                          f"{summary.experiments_since_improvement} experiments; recover from the best")
        elif summary.recent_improvement is not None and summary.recent_improvement > 0 \
                and summary.recent_improvement >= exploit_gain:
            mode = StrategyMode.EXPLOIT
            last = ("the last cycle" if self.study.scheduling != "rolling"
                    else f"the last {self.study.budget.trials_per_cycle} results")
            reason = (f"{last} improved {summary.metric} by {summary.recent_improvement:.4g}"
                      + (f" (≥ {exploit_gain:.3g})" if exploit_gain > 0 else "")
                      + ": exploit around the best")
        elif summary.n_completed < startup_size(len(searched)) and declared_baseline(self.study, searched):
            mode = StrategyMode.EXPLOIT
            reason = (f"{summary.n_completed} completed trials, fewer than the "
                      f"{startup_size(len(searched))} the world model needs in {len(searched)} searched "
                      "parameters, and the study declared its baseline: exploit around the best")
        else:
            mode = StrategyMode.EXPLORE
            gain = "none" if summary.recent_improvement is None else f"{summary.recent_improvement:.4g}"
            reason = (f"recent gain {gain} is below the exploit threshold {exploit_gain:.3g}: explore"
                      if exploit_gain > 0 else "the last cycle found no new best: explore")
        quotas = self.quotas(mode, summary.n_completed)
        logger.info("cycle plan: %s (%s) quotas=%s", mode.value, reason, quotas)
        return Strategy(mode=mode, reason=reason, quotas=quotas, cycle_id=cycle_id)

    def quotas(self, mode: StrategyMode, n_completed: int = 0) -> dict[str, int]:
        """How many proposals each enabled proposer makes in ``mode`` with ``n_completed``
        completed trials (with a rich history, :func:`~arc_ray.agents.surrogate.rich_history`,
        the surrogate's weight is multiplied by :data:`RICH_SURROGATE`)."""
        mix = dict(MODE_MIX[mode])
        if rich_history(n_completed, len(self.study.searched_names)) and "surrogate" in mix:
            mix["surrogate"] *= RICH_SURROGATE
        enabled = self.study.proposers.enabled
        useful = self.applicable
        weights = {n: mix.get(n, _OTHER_WEIGHT) if n in useful else 0.0 for n in enabled}
        if not any(w > 0 for w in weights.values()):  # e.g. only "recovery" enabled, explore mode
            weights = {n: 1.0 if n in useful else 0.0 for n in enabled}
        return split_quota(self.study.proposers.proposals_per_cycle, weights)

    def vote(self, proposals: list[Proposal], ctx: AgentContext) -> list[Vote]:
        """Approve proposals that fit the cycle's mode.

        explore: novelty (distance to anything already run), and while the study's
        baseline has not run, a proposal of it first (score 1; the others at most
        :data:`BEHIND_BASELINE`): the first cycle measures the reference; exploit: the critic's
        predicted mean relative to the best (closeness to the best config when there
        is no prediction); recover: low predicted failure risk (distance from failures).
        """
        if not proposals:
            return []
        view = ctx.history()
        mode = ctx.strategy.mode if ctx.strategy else StrategyMode.EXPLORE
        points = np.array([view.unit(flatten_config(p.changes)) for p in proposals])
        votes = []
        md = max(self.study.proposers.min_distance, 1e-6)
        if mode == StrategyMode.EXPLORE:
            # the baseline, while it has not run, first: the reference every result is compared with
            tol = self.study.supervisor.same_config_distance
            is_base = nearest_distance(points, view.unit(view.baseline_flat)[None, :]) <= tol \
                if not view.baseline_ran(tol) else None
            for k, (p, d) in enumerate(zip(proposals, nearest_distance(points, view.X))):
                score = novelty_score(float(d), md)
                shown = "nothing run yet" if not np.isfinite(d) else f"distance {d:.3f} to the nearest run config"
                why = f"explore: {shown}"
                if is_base is not None and is_base.any():
                    if is_base[k]:
                        score, why = 1.0, "explore: the study's baseline, not run yet: the reference run"
                    else:
                        score = min(score, BEHIND_BASELINE)
                votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=score >= 0.5,
                                  score=score, rationale=why))
        elif mode == StrategyMode.EXPLOIT:
            best = view.best_index()
            for p, x in zip(proposals, points):
                pred = p.predicted
                if pred is not None and not pred.is_prior and ctx.summary.best_value is not None:
                    gap = ctx.study.sign * (pred.mean - ctx.summary.best_value)
                    z = gap / max(pred.std, 1e-9)
                    score = float(0.5 * (1 + math.erf(z / math.sqrt(2))))  # P(beats best) under the model
                    why = f"exploit: P(beats best {ctx.summary.best_value:.4g}) ≈ {score:.2f}"
                    score = max(score, 0.3)  # a long shot is still a fair exploit candidate
                    approve = True
                elif best is not None:
                    d = float(np.sqrt(np.mean((x - view.X[best]) ** 2))) if len(x) else 0.0
                    score = float(max(0.0, 1.0 - 2.0 * d))
                    why = f"exploit: distance {d:.3f} to the best config"
                    approve = score >= 0.5
                else:
                    score, why, approve = 0.5, "exploit: no best yet", True
                votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=approve,
                                  score=score, rationale=why))
        else:  # recover
            cap = risk_cap(self.study, view)
            failed = view.X[view.failed] if view.n else view.X
            d_fail = nearest_distance(points, failed)
            for p, d in zip(proposals, d_fail):
                pred = p.predicted
                if pred is not None and pred.failure_probability is not None:
                    score = float(np.clip(0.5 + cap - pred.failure_probability, 0.0, 1.0))
                    why = f"recover: predicted P(fail) {pred.failure_probability:.2f} (cap {cap:.2f})"
                else:
                    score = 1.0 if not np.isfinite(d) else float(min(1.0, d / (4 * md)))
                    why = "recover: no failure seen" if not np.isfinite(d) else f"recover: {d:.3f} from the nearest failure"
                votes.append(Vote(agent=self.name, experiment_id=p.experiment_id, approve=score >= 0.5,
                                  score=score, rationale=why))
        return votes

