"""The supervisor: final oversight of what the vote approved — veto, repair or approve."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from arc_ray.agents._constraints import BATCH_LEAVES, smaller_values
from arc_ray.agents._history import HistoryView, nearest_distance, rms_distance
from arc_ray.agents.base import AgentContext, risk_cap
from arc_ray.agents.voting import Ballot
from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import ConfigValidationError
from arc_ray.records import Decision, Resources
from arc_ray.space import flatten_config
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

OOM_NEIGHBOURHOOD = 0.2  # RMS unit-cube radius in which past failures explain a predicted one


class Supervisor:
    """Walks the vote's ranking, best first, and decides each proposal:

    1. **rules** — the merged config must pass the config generator (search space, split
       rule, the trainable's ``Config``, declared and learned constraints). A breach of
       a constraint on ``batch_size`` (e.g. a learned OOM bound on batch × image size) is
       **repaired** with the largest smaller batch that passes; any other breach is vetoed.
    2. **risk** — a predicted failure probability above the risk cap
       (``supervisor.max_failure_probability``, or the history's failure rate plus a
       margin when higher: :func:`~arc_ray.agents.base.risk_cap`) is vetoed, unless the failures near it were out-of-memory errors: then it is
       **repaired** with a smaller batch, or more GPU per trial when the study has GPUs.
    3. **duplicates** — a config within ``supervisor.duplicate_tolerance`` (RMS unit-cube
       distance over the searched parameters) of one already run, or of one approved
       earlier in this cycle, is vetoed.
    4. **budget** — at most ``budget.trials_per_cycle`` run per cycle and no more than
       ``budget.max_trials`` per study (this is the one place that caps trials to the
       study's budget; the loop also stops once it is spent); the GPU-hours of a trial
       are estimated from past durations (median) × its GPUs, and a trial that would pass
       ``budget.gpu_hours_per_cycle`` or ``budget.max_gpu_hours`` is vetoed.

    Approved and repaired proposals get a :class:`Decision` carrying the validated config
    (written to ``<study>/experiments/<id>/config.{yaml,json}``, so what runs is on disk
    before it runs) and the resources per trial. Every other proposal gets a ``vetoed``
    decision with the reason.
    """

    name = "supervisor"

    def __init__(self, study: StudyConfig, name: str | None = None) -> None:
        self.study = study
        if name is not None:
            self.name = name

    def served_study(self) -> str:
        """The study this supervisor serves, as JSON (see :meth:`Agent.served_study`)."""
        return self.study.model_dump_json()

    def __repr__(self) -> str:
        return f"Supervisor(name={self.name!r}, study={self.study.name!r})"

    # ------------------------------------------------------------------ budget

    def trial_cap(self, ctx: AgentContext) -> tuple[int, str]:
        """How many trials may run this cycle, and the binding limit in words."""
        b = self.study.budget
        limits = [(b.trials_per_cycle, f"budget.trials_per_cycle={b.trials_per_cycle}")]
        if b.max_trials is not None:
            left = max(b.max_trials - ctx.summary.n_trials, 0)
            limits.append((left, f"budget.max_trials={b.max_trials} with {ctx.summary.n_trials} run"))
        return min(limits)

    def trial_hours(self, view: HistoryView, ctx: AgentContext) -> float | None:
        """Estimated wall hours of one trial: the median past duration (None when unknown)."""
        d = view.duration_s[np.isfinite(view.duration_s)] if view.n else np.empty(0)
        if len(d):
            return float(np.median(d)) / 3600.0
        if ctx.summary.mean_trial_duration_s is not None:
            return ctx.summary.mean_trial_duration_s / 3600.0
        return None

    # ------------------------------------------------------------------ review

    def review(self, ranked: list[Ballot], ctx: AgentContext) -> list[Decision]:
        """Decide every ballot of the ranking (best first). See the class docstring."""
        gen = ctx.config_generator()
        view = ctx.history()
        s = self.study.supervisor
        cap, cap_why = self.trial_cap(ctx)
        max_risk = risk_cap(self.study, view)
        hours = self.trial_hours(view, ctx)
        b = self.study.budget
        study_left = None if b.max_gpu_hours is None else b.max_gpu_hours - ctx.summary.gpu_hours_used
        cycle_gpu_h = 0.0
        taken: list[tuple[str, np.ndarray]] = []
        decisions: list[Decision] = []
        for ballot in ranked:
            p = ballot.proposal
            common: dict[str, Any] = dict(cycle_id=ctx.cycle_id, decided_by=self.name, votes=ballot.votes,
                                          weighted_score=ballot.weighted_score, rank=ballot.rank)

            def veto(reason: str) -> None:
                decisions.append(Decision.vetoed(p, reason=reason, **common))

            if len(taken) >= cap:
                veto(f"over budget: {len(taken)} trials already approved this cycle ({cap_why})")
                continue
            changes = flatten_config(p.changes)
            repair: dict[str, Any] = {}
            notes: list[str] = []
            resources = p.resources or self.study.resources
            if resources.gpu > s.max_gpu_per_trial:
                repair["resources.gpu"] = s.max_gpu_per_trial
                notes.append(f"GPU per trial {resources.gpu:g} → {s.max_gpu_per_trial:g} (supervisor cap)")
                resources = Resources(cpu=resources.cpu, gpu=s.max_gpu_per_trial)
            # 1. rules
            try:
                config = gen.validate(changes)
            except ConfigValidationError as exc:
                fixed = self._smaller_batch_until_valid(changes, gen)
                if fixed is None:
                    veto("breaks the study's rules: " + "; ".join(str(v) for v in exc.violations))
                    continue
                changes, config, note = fixed
                repair.update({k: changes[k] for k in changes if k.rpartition(".")[2] in BATCH_LEAVES})
                notes.append(f"{note} to satisfy: {exc.violations[0].rule}")
            flat = flatten_config(config)
            x = view.unit(flat)
            # 2. risk
            risk = p.predicted.failure_probability if p.predicted else None
            if risk is not None and risk > max_risk:
                cls = self._failure_class_near(x, view)
                if cls != "oom":
                    veto(f"predicted P(fail) {risk:.2f} is above the risk cap {max_risk:.2f}"
                         + (f" (nearby failures: {cls})" if cls else ""))
                    continue
                fixed = self._smaller_batch_until_valid(changes, gen)
                if fixed is not None:
                    changes, config, note = fixed
                    repair.update({k: changes[k] for k in changes if k.rpartition(".")[2] in BATCH_LEAVES})
                    notes.append(f"predicted OOM (P(fail) {risk:.2f}, nearby failures are OOM): {note}")
                elif self.study.resources.gpu > 0 and resources.gpu < s.max_gpu_per_trial:
                    gpu = min(max(2 * resources.gpu, resources.gpu + 1), s.max_gpu_per_trial)
                    notes.append(f"predicted OOM (P(fail) {risk:.2f}, nearby failures are OOM): "
                                 f"GPU per trial {resources.gpu:g} → {gpu:g}")
                    resources = Resources(cpu=resources.cpu, gpu=gpu)
                    repair["resources.gpu"] = gpu
                else:
                    veto(f"predicted OOM (P(fail) {risk:.2f}) and no smaller batch or more GPU to repair it")
                    continue
                flat = flatten_config(config)
                x = view.unit(flat)
            # 3. duplicates
            if view.n:
                d = rms_distance(x[None, :], view.X)[0]
                j = int(np.argmin(d))
                if d[j] <= s.duplicate_tolerance:
                    veto(f"duplicate of {view.ids[j]}, already run (distance {d[j]:.2g} ≤ {s.duplicate_tolerance:g})")
                    continue
            if taken:
                d = nearest_distance(x[None, :], np.array([t[1] for t in taken]))[0]
                if d <= s.duplicate_tolerance:
                    other = min(taken, key=lambda t: float(np.sqrt(np.mean((t[1] - x) ** 2))))[0]
                    veto(f"duplicate of {other}, approved earlier this cycle (distance {d:.2g})")
                    continue
            # 4. GPU budget
            gpu_h = None if hours is None else hours * resources.gpu
            if gpu_h is not None and gpu_h > 0:
                if b.gpu_hours_per_cycle is not None and cycle_gpu_h + gpu_h > b.gpu_hours_per_cycle:
                    veto(f"over budget: would bring this cycle to {cycle_gpu_h + gpu_h:.2f} GPU-h "
                         f"(budget.gpu_hours_per_cycle={b.gpu_hours_per_cycle:g}; ~{gpu_h:.2f} GPU-h per trial)")
                    continue
                if study_left is not None and cycle_gpu_h + gpu_h > study_left:
                    veto(f"over budget: ~{gpu_h:.2f} GPU-h would pass the study's remaining "
                         f"{max(study_left - cycle_gpu_h, 0):.2f} (budget.max_gpu_hours={b.max_gpu_hours:g})")
                    continue
            # approve (the config on disk is what runs; it was validated above)
            final = {**config, "experiment_id": p.experiment_id}
            try:
                gen.write_config(p.experiment_id, final)
            except (ConfigValidationError, OSError) as exc:
                veto(f"could not write the config: {exc}")
                continue
            cycle_gpu_h += gpu_h or 0.0
            taken.append((p.experiment_id, x))
            cost = "unknown GPU-h (no duration yet)" if gpu_h is None else f"~{gpu_h:.2f} GPU-h"
            risk_txt = "no risk forecast" if risk is None else f"P(fail) {risk:.2f}"
            feasibility = p.predicted.feasibility if p.predicted else None
            if feasibility is not None:  # the outcome constraints, as the critic forecast them
                risk_txt += f", P(feasible)={feasibility:.2f}"
            reason = (f"rank {ballot.rank}: {ballot.summary()}; {risk_txt}; {cost}"
                      + (f"; repaired: {'; '.join(notes)}" if notes else ""))
            if repair or notes:
                decisions.append(Decision.repaired(p, reason=reason, config=final, repair=repair,
                                                   resources=resources, **common))
            else:
                decisions.append(Decision.approved(p, reason=reason, config=final, resources=resources,
                                                   **common))
        return decisions

    # ------------------------------------------------------------------ repairs

    def _batch_param(self) -> str | None:
        return next((n for n in self.study.searched_names if n.rpartition(".")[2] in BATCH_LEAVES), None)

    def _smaller_batch_until_valid(self, changes: dict[str, Any], gen: ExperimentConfigGenerator
                                   ) -> tuple[dict[str, Any], dict[str, Any], str] | None:
        """The changes with the largest smaller batch size that validates, or None.

        Used when the config is invalid, and when it is valid but predicted to run out
        of memory: either way the next smaller batch is what is tried.
        """
        name = self._batch_param()
        if name is None:
            return None
        current = gen.merge(changes).get(name)
        for smaller in smaller_values(self.study.search_space[name], current):
            trial = {**changes, name: smaller}
            try:
                config = gen.validate(trial)
            except ConfigValidationError:
                continue
            return trial, config, f"{name} {current} → {smaller}"
        return None

    @staticmethod
    def _failure_class_near(x: np.ndarray, view: HistoryView) -> str | None:
        """The most common error class among failures within :data:`OOM_NEIGHBOURHOOD` of ``x``."""
        idx = np.flatnonzero(view.failed)
        if len(idx) == 0:
            return None
        d = rms_distance(x[None, :], view.X[idx])[0]
        near = [view.error_class[i] for i, di in zip(idx, d) if di <= OOM_NEIGHBOURHOOD and view.error_class[i]]
        if not near:
            return None
        return Counter(near).most_common(1)[0][0]
