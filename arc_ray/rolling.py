"""Rolling decisions: a trial slot that frees up is filled at once, not at a cycle barrier.

In ``scheduling: batch`` a cycle decides a batch and waits for its slowest trial
before the next cycle decides; trial lengths differ (a larger model, more epochs,
early stopping), so slots stand idle. In ``scheduling: rolling`` (this module),
whenever some of the study's ``max_concurrent_trials`` slots are free, the collective
decides a small *round* for just those slots while the other trials run on:

- a round is a cycle in the history: its own ``cycle_id``, the director's mode and
  its decisions, logged before its trials start (each trial row's ``cycle_id`` says
  which round decided it);
- the agents see the in-flight trials as RUNNING rows of the trials table, so the
  supervisor refuses duplicates of them, and they count against ``budget.max_trials``
  (:func:`with_pending`); the free slots go to the approvals of the proposers furthest
  below their share of the director's mix, the others are vetoed (:func:`limit_to_slots`);
- each result is stored the moment its trial ends (integration is idempotent per
  experiment), and a round's ``cycles`` row is logged when its last trial is stored;
- the stop rules (target, budgets, stagnation) are checked before every round, i.e.
  after every result, with the trials in flight counted against ``budget.max_trials``;
  once one holds, no round is decided and the trials in flight finish (nothing started
  is thrown away). ``budget.max_cycles`` and ``--cycles`` count rounds; the stagnation
  rule counts ``trials_per_cycle`` recover rounds as one recover cycle.

**Resume** is the batch one, for several rounds at once: every round whose decisions
are logged but that has no ``cycles`` row is pending; its decisions that can no longer
run (resources the cluster lacks, a config outside an edited space) are vetoed with
their reason, as in a batch resume; the executor restores each
(finished trials are read back, not rerun; those never started are submitted), the
results the history lacks are stored, and no pending round is decided again.

Run: set ``scheduling: rolling`` in the study YAML; ``arc run`` and
:meth:`arc_ray.orchestrator.Orchestrator.run` then use :class:`RollingLoop`.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from arc_ray.records import (CycleReport, Decision, DecisionOutcome, JobStatus, RunReport, StopReason,
                             TrialResult, count_statuses)
from arc_ray.stopping import check_idle_cycles, check_stop

if TYPE_CHECKING:
    import pyarrow as pa

    from arc_ray.executor import Job
    from arc_ray.orchestrator import Orchestrator
    from arc_ray.records import HistorySummary

logger = logging.getLogger(__name__)

# Decided experiments wait for a slot only where a decision is long enough against a
# trial to idle slots noticeably: below this share of a trial, a round is decided after
# the result that freed its slot, with that result known.
AHEAD_IDLE_SHARE = 0.01


def _proposer(d: Decision) -> str:
    return d.proposal.proposer if d.proposal is not None else "unknown"


def limit_to_slots(decisions: list[Decision], slots: int, quotas: Mapping[str, int] | None = None,
                   ran: Mapping[str, int] | None = None) -> list[Decision]:
    """Keep ``slots`` of the round's runnable decisions; veto the others (``scheduler``).

    Which ones: each slot goes to the proposer furthest below its share of the trials
    (its share of the round's ``quotas``, against ``ran``: the trials each proposer has
    run so far, in flight included), the best ranked of its decisions; ties and no
    quotas → rank order. A batch cycle runs most of its proposals, so its trials
    follow the director's mix; a round of one slot would otherwise run only the
    critic's favourite (measured: the surrogate's picks, which maximise the critic's own
    acquisition, took 2 of 3 slots and search quality dropped).

    Args:
        decisions: the round's decisions, best ranked first.
        slots: free trial slots.
        quotas: proposer → proposals asked of it this round (the director's mix).
        ran: proposer → trials run so far.

    Returns:
        the decisions in their order, those not kept turned into vetoes by ``scheduler``.
    """
    runnable = [d for d in decisions if d.outcome.runs()]
    shares = {p: q for p, q in (quotas or {}).items() if q > 0}
    total = sum(shares.values())
    counts = dict(ran or {})
    n = sum(counts.values())
    kept: set[str] = set()
    for _ in range(min(slots, len(runnable))):
        def deficit(d: Decision) -> float:
            p = _proposer(d)
            return shares.get(p, 0) / total * (n + 1) - counts.get(p, 0) if total else 0.0

        left = [d for d in runnable if d.experiment_id not in kept]
        best = max(deficit(d) for d in left)
        pick = next(d for d in left if deficit(d) >= best - 1e-9)  # the best ranked of them
        kept.add(pick.experiment_id)
        counts[_proposer(pick)] = counts.get(_proposer(pick), 0) + 1
        n += 1
    return [d if not d.outcome.runs() or d.experiment_id in kept else d.model_copy(update={
        "outcome": DecisionOutcome.VETOED, "decided_by": "scheduler",
        "reason": f"no free trial slot in this rolling round of {slots} (was: {d.reason})"}) for d in decisions]


def proposer_counts(trials: "pa.Table") -> dict[str, int]:
    """Trials per proposer in a trials table (rows without a proposer are not counted)."""
    from collections import Counter

    from arc_ray.historian.schema import PROPOSER

    if PROPOSER not in trials.column_names:
        return {}
    return dict(Counter(p for p in trials.column(PROPOSER).to_pylist() if p))


def with_pending(trials: "pa.Table", summary: "HistorySummary",
                 pending: Sequence["Job"]) -> tuple["pa.Table", "HistorySummary"]:
    """The trials table and summary as the agents should see them while trials are in flight.

    Each in-flight job becomes a row with status ``RUNNING`` and its config (agents
    count only COMPLETED / FAILED rows as evidence; the supervisor's duplicate check
    covers every row), and ``summary.n_trials`` counts them, so that the trial budget
    is not overspent by rounds decided while others run.
    """
    import pyarrow as pa

    from arc_ray.historian.schema import trials_to_table

    rows = [TrialResult(experiment_id=j.experiment_id, cycle_id=j.cycle_id, status=JobStatus.RUNNING,
                        config=j.config, resources=j.resources, proposer=j.proposer) for j in pending]
    summary = summary.model_copy(update={"n_trials": summary.n_trials + len(rows)})
    extra = trials_to_table(rows)
    if trials.num_rows == 0 and not trials.column_names:
        return extra, summary
    try:
        return pa.concat_tables([trials, extra], promote_options="permissive"), summary
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a column typed differently: agents go without
        logger.warning("in-flight trials not shown to the agents: %s", exc)
        return trials, summary


@dataclass
class _Round:
    """A decision round in flight: its report and which of its trials are stored."""

    report: CycleReport
    ids: list[str]  # its runnable experiments
    stored: set[str] = field(default_factory=set)
    results: dict[str, TrialResult] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)


class RollingLoop:
    """The autonomous loop with rolling decisions, over an :class:`Orchestrator`'s parts.

    Args:
        orch: the orchestrator whose historian, collective, executor, events and
            telemetry this loop uses.
        ahead: the most experiments decided beyond the free slots, waiting in the
            executor's queue (default: the number of slots; 0 decides strictly after
            each result, at the cost of an idle slot during every decision). When a
            trial ends, a waiting one starts at once and the next round is decided while
            the slots stay busy. How many wait is sized to what the agents' decision
            time needs: decision seconds × trials ending per second (median decision of
            the last rounds, mean trial length of this run), plus one for ends that
            come close together, at least 1 — or none once decisions take under
            :data:`AHEAD_IDLE_SHARE` of a trial (minutes-long GPU trials): then a slot
            idles for the decision, under 1% of its time, and the round knows the
            result that freed it. A waiting experiment was decided without the results
            that arrived while it waited (in bench_search's virtual-time slots, deciding
            one round ahead cost search quality).

    ``max_cycles`` of :meth:`run` counts decision rounds (pending rounds finished on
    resume included), as a batch run counts cycles.
    """

    def __init__(self, orch: "Orchestrator", ahead: int | None = None) -> None:
        self.orch = orch
        self.study = orch.study
        self.slots = orch.study.max_concurrent_trials
        self.max_ahead = self.slots if ahead is None else ahead
        self.trial_seconds: list[float] = []  # lengths of this run's finished trials
        # A round holds about one trial where a batch cycle holds trials_per_cycle, so the
        # stagnation rule counts trials_per_cycle recover rounds for one recover cycle.
        b = orch.study.budget
        self.rules = orch.study.model_copy(update={"budget": b.model_copy(update={
            "max_recover_cycles_without_improvement": b.max_recover_cycles_without_improvement * b.trials_per_cycle})})
        self.rounds: dict[int, _Round] = {}
        self.inflight: dict[str, int] = {}  # experiment id → the round that decided it
        self.reports: list[CycleReport] = []
        self.decision_times: list[float] = []  # seconds from a round's start to its trials' submission
        self.n_done = 0
        self.n_failed = 0

    def _get(self, call: Any) -> Any:
        return self.orch._get(call)

    # ------------------------------------------------------------- the loop

    def run(self, max_cycles: int | None = None) -> RunReport:
        """Decide rounds as slots free up until a stop rule holds or ``max_cycles`` rounds.

        Returns:
            the run's report; ``cycles`` holds one report per round, in the order they ended.
        """
        t0 = time.perf_counter()
        if not self.orch.offline_mode:
            self.orch.executor.warm_up()  # Tune starts while the first round is decided
        started = self._resume_pending()
        stop: tuple[StopReason, str] | None = None
        while True:
            self._collect_finished()
            free = self.slots + self.ahead() - len(self.inflight)
            if stop is None and free > 0:
                stop = self._stop_now()
                if stop is None and max_cycles is not None and started >= max_cycles:
                    stop = (StopReason.MAX_CYCLES, f"did the {max_cycles} cycle(s) asked for")
                if stop is None:
                    started += 1
                    if not self._decide_round(free):
                        if self.inflight:
                            self._wait_for_a_result()  # nothing new to run: decide again after a result
                        else:  # nothing runs and nothing will end: rounds in a row that run nothing stop
                            stop = check_idle_cycles(self.reports)
                    continue
            if not self.inflight:
                break
            self.orch.executor.wait_for_change(self.orch.poll_interval_s)
        assert stop is not None
        summary = self._get(self.orch.historian.summary.remote())
        n_cycles = len(self._get(self.orch.historian.cycle_ids.remote())["done"])
        logger.info("stopping: %s", stop[1])
        return RunReport(study=self.study.name, cycles=self.reports, stop_reason=stop[0], stop_message=stop[1],
                         best_value=summary.best_value, best_experiment_id=summary.best_experiment_id,
                         best_config=summary.best_config, n_trials=summary.n_trials, n_cycles=n_cycles,
                         duration_s=time.perf_counter() - t0, history_dir=self.study.study_dir)

    def ahead(self) -> int:
        """How many decided experiments should wait for a slot (see the class docstring)."""
        if self.max_ahead <= 1 or not self.decision_times or not self.trial_seconds:
            return min(self.max_ahead, 1)
        decide = statistics.median(self.decision_times[-5:])
        trial = statistics.fmean(self.trial_seconds[-20:])
        if decide < AHEAD_IDLE_SHARE * trial:
            return 0  # waiting for the result costs a slot under 1% of its time: decide with it
        per_second = self.slots / max(trial, 1e-3)
        # one more than the trials expected to end during a decision: ends come in bursts
        return max(1, min(self.max_ahead, math.ceil(decide * per_second) + 1))

    def _stop_now(self) -> tuple[StopReason, str] | None:
        """The stop rules, with the trials in flight counted against ``budget.max_trials``."""
        summary = self._get(self.orch.historian.summary.remote())
        if self.inflight:
            summary = summary.model_copy(update={"n_trials": summary.n_trials + len(self.inflight)})
        return check_stop(self.rules, summary, self._get(self.orch.historian.cycle_rows.remote()))

    def _wait_for_a_result(self) -> None:
        n = len(self.inflight)
        while self.inflight and len(self.inflight) == n:
            self.orch.executor.wait_for_change(self.orch.poll_interval_s)
            self._collect_finished()

    # ------------------------------------------------------------- a round

    def _decide_round(self, free: int) -> int:
        """Decide, log and submit a round for ``free`` slots; returns how many trials it started."""
        orch = self.orch
        t0 = time.perf_counter()
        pending = orch.executor.jobs() if self.inflight else []
        pending = [j for j in pending if j.experiment_id in self.inflight]
        report = orch.run_research_cycle(slots=free, pending=pending)
        runnable = [d for d in report.decisions if d.outcome.runs()]
        if runnable:
            orch.executor.submit_batch(runnable, report.cycle_id)
        self.decision_times.append(time.perf_counter() - t0)
        rnd = _Round(report=report, ids=[d.experiment_id for d in runnable], t0=t0)
        self.rounds[report.cycle_id] = rnd
        for eid in rnd.ids:
            self.inflight[eid] = report.cycle_id
        orch._emit(report.cycle_id, "submitted", {"total": len(runnable), "queued": len(runnable)},
                   message=f"{len(runnable)} trial(s) for {free} free slot(s)")
        if not runnable:
            self._finish_round(report.cycle_id)
        self._progress(report.cycle_id)
        return len(runnable)

    def _slot_counts(self) -> dict[str, int]:
        """This run's trials by progress bucket, with the slots busy / free and rounds open."""
        busy = min(len(self.inflight), self.slots)
        return {"total": len(self.inflight) + self.n_done + self.n_failed,
                "queued": max(len(self.inflight) - self.slots, 0), "running": busy,
                "done": self.n_done, "failed": self.n_failed, "slots_busy": busy,
                "slots_free": self.slots - busy, "rounds_open": len(self.rounds)}

    def _progress(self, cycle_id: int) -> None:
        counts = self._slot_counts()
        if self.orch.telemetry is not None:
            try:
                self.orch.telemetry.set_slots(counts["slots_busy"], self.slots)
            except Exception as exc:  # a metrics hiccup must not fail a round
                logger.warning("telemetry: %s", exc)
        self.orch._emit(cycle_id, "progress", counts)

    def _collect_finished(self) -> None:
        """Store each finished trial's result now; log a round once its last trial is stored."""
        if not self.inflight:
            return
        orch = self.orch
        statuses = orch.executor.poll(list(self.inflight))
        for eid, status in statuses.items():
            if not status.is_terminal():
                continue
            cid = self.inflight.pop(eid)
            rnd = self.rounds[cid]
            result = orch._annotate([orch.executor.collect_results(eid)], rnd.report.decisions)[0]
            orch._emit(cid, "integrating", count_statuses([result.status]), message=f"{eid}: {status.value}")
            self._get(orch.historian.integrate_experiment_results.remote([result], cid))
            rnd.results[eid] = result
            if result.duration_s:
                self.trial_seconds.append(result.duration_s)
            rnd.stored.add(eid)
            value = result.metric(self.study.metric) if result.status == JobStatus.COMPLETED else None
            best = orch._best[0]
            if value is not None and (best is None or self.study.better(value, best)):
                orch._best = (value, eid)
            if result.status == JobStatus.COMPLETED:
                self.n_done += 1
            else:
                self.n_failed += 1
            orch._emit(cid, "integrated", count_statuses([result.status]), message=f"{eid} stored")
            if rnd.stored >= set(rnd.ids):
                self._finish_round(cid)
            self._progress(cid)

    def _finish_round(self, cycle_id: int) -> None:
        """Log the round as a cycle (its results are all stored), then telemetry and events."""
        orch = self.orch
        rnd = self.rounds.pop(cycle_id)
        report = rnd.report
        summary = self._get(orch.historian.summary.remote())
        earlier = [r for r in self._get(orch.historian.results_of_cycle.remote(cycle_id))
                   if r.experiment_id not in rnd.results] if len(rnd.results) < len(rnd.ids) else []
        report.results = earlier + [rnd.results[i] for i in rnd.ids if i in rnd.results]
        stop = orch._log_cycle(report, summary, rnd.t0, rules=self.rules)
        self.reports.append(report)
        orch._emit(cycle_id, "finished", count_statuses(r.status for r in report.results),
                   message=stop[1] if stop else "")

    # ------------------------------------------------------------- resume

    def _resume_pending(self) -> int:
        """Pick up every round decided but not logged; returns how many there were."""
        orch = self.orch
        ids = self._get(orch.historian.cycle_ids.remote())
        pending = sorted(ids["decided"] - ids["done"])
        if not pending:
            return 0
        integrated = self._get(orch.historian.integrated_ids.remote())
        orch._note_history(self._get(orch.historian.summary.remote()))
        for cid in pending:
            decisions = orch._revalidated_decisions(cid, integrated)
            runnable = [d for d in decisions if d.outcome.runs()]
            missing = [d for d in runnable if d.experiment_id not in integrated]
            orch._emit(cid, "resuming", {"total": len(runnable), "done": len(runnable) - len(missing)},
                       message=f"round {cid} was interrupted: {len(runnable) - len(missing)} of "
                               f"{len(runnable)} results already stored")
            if missing:
                known = {j.experiment_id for j in orch.executor.resume(cid)}
                unstarted = [d for d in missing if d.experiment_id not in known]
                if unstarted:  # killed before its trials were handed to the executor
                    orch.executor.submit_batch(unstarted, cid)
            report = CycleReport(study=self.study.name, cycle_id=cid, strategy=orch._load_strategy(cid),
                                 decisions=decisions, resumed=True)
            rnd = _Round(report=report, ids=[d.experiment_id for d in runnable],
                         stored={d.experiment_id for d in runnable} - {d.experiment_id for d in missing})
            self.rounds[cid] = rnd
            for d in missing:
                self.inflight[d.experiment_id] = cid
            if not missing:
                self._finish_round(cid)
        logger.info("resumed %d pending round(s): %s", len(pending), pending)
        return len(pending)


__all__ = ["RollingLoop", "limit_to_slots", "proposer_counts", "with_pending"]
