"""One research cycle, the autonomous loop, and resume after a crash.

The orchestrator is the one place where ARC's plain classes become a running system:
it connects to Ray (or starts it in-process), makes the agents and the historian
named Ray actors in the study's namespace (``arc-<study>``: the dashboard shows
``director``, ``critic``, ``supervisor``, ``historian`` and each proposer by name),
picks the executor (``study.executor``: ``tune`` → Ray Tune trials, ``inprocess`` →
a plain objective in the driver), and runs the ten steps of a cycle (``DESIGN.md``)::

    historian.summary → Collective.decide (director, proposers, vote, supervisor)
    → historian.log_decisions → executor.submit_batch → wait / collect
    → historian.integrate → historian.log_cycle → telemetry

**Resume.** The history is the state. A cycle whose decisions are logged but that has
no row in the ``cycles`` table is *pending*: the next run (or ``arc cycle``) does not
propose again; it asks the executor to restore that cycle's Tune experiment from disk
(finished trials are not rerun), submits the decided experiments that never started,
integrates only results the history lacks (integration is idempotent besides), and
then logs the cycle. Killing the driver before the decisions are logged loses only
the decision work; the same cycle id is decided again. So a driver killed at any
point loses no result and counts none twice.

Run: ``arc run configs/fundus-cpu.yaml --cycles 3`` (see :mod:`arc_ray.cli`), or
``Orchestrator(StudyConfig.from_yaml(path)).run(max_cycles=3)``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from arc_ray.actors import in_driver_agents, ray_initialized, start_actors
from arc_ray.cluster import connect
from arc_ray.feasibility import check_cluster_fits, cluster_started_here, cluster_totals, veto_unrunnable
from arc_ray.historian.schema import BEST_VALUE, CYCLE_ID, MODE, OFFLINE
from arc_ray.records import (CycleEvent, CycleReport, Decision, HistorySummary, JobStatus, RunReport, StopReason,
                             TrialResult, count_outcomes, count_statuses)
from arc_ray.stopping import check_cycle_failures, check_idle_cycles, check_stop, recover_cycles_without_improvement
from arc_ray.storage import atomic_write_text, read_text

if TYPE_CHECKING:
    from arc_ray.executor import Executor
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ orchestrator


class Orchestrator:
    """Runs a study's cycles: agents and historian as named Ray actors, trials via the executor.

    Args:
        study: the study.
        offline_mode: decide and log decisions only; execute nothing (a dry run of the
            agents).
        address: the Ray cluster (``HOST:PORT``, ``auto``, ``ray://...``); default
            ``RAY_ADDRESS``, else a local Ray started in this process. Ignored when Ray
            is already initialised.
        trainable: the trainable object itself, for one defined where it cannot be
            imported by name (a script's ``__main__``); default: ``study.load_trainable()``.
        on_event: called with a :class:`CycleEvent` at each step of a cycle (progress
            displays, tests that stop a driver at a given step).
        poll_interval_s: how often trial states are polled while a cycle runs.
        dashboard: start the Ray dashboard when Ray is started here.
        executor: an executor to use instead of the one ``study.executor`` names.
        in_driver: run the agents and the historian as plain objects in this process,
            without Ray. Default: when the study's executor is ``inprocess`` and no cluster
            is named (``address``, ``RAY_ADDRESS``) or already connected — a cheap
            objective then costs no Ray start and no actor calls. Decisions and history
            are the same as with actors.

    Raises:
        StudyLockedError: another live driver holds the study (:mod:`arc_ray.lease`).
        ConfigValidationError: the trainable cannot be imported or is not callable
            (checked before Ray starts), or a trial's resources exceed a cluster this
            driver started.
        ClusterConnectionError: Ray cannot be reached.
        HistoryError: the study's storage cannot be written.

    The driver owns the executor (Tune runs in a background thread of this process);
    the agents and the historian live in actors that die with the driver's job, and a
    restarted driver gets or recreates them by name (``get_if_exists``). The driver
    holds the study's lease (:attr:`lease`) from construction until :meth:`shutdown`
    (or its death); call :meth:`shutdown` when done.
    """

    def __init__(self, study: "StudyConfig", offline_mode: bool = False, address: str | None = None,
                 *, trainable: Callable[..., Any] | None = None,
                 on_event: Callable[[CycleEvent], None] | None = None,
                 poll_interval_s: float = 0.5, dashboard: bool = True,
                 executor: "Executor | None" = None, in_driver: bool | None = None) -> None:
        self.study = study
        self.offline_mode = offline_mode
        self.namespace = f"arc-{study.name}"
        self.on_event = on_event
        self.poll_interval_s = poll_interval_s
        self.trainable = trainable
        self._executor = executor  # made on first use: an offline study never needs one
        # the driver writes there too (Tune runs, strategies): fail before Ray starts
        from arc_ray.historian import ParquetStore
        from arc_ray.lease import StudyLease

        ParquetStore(study.study_dir).check_writable()
        # one driver per study, before anything is decided or Ray is started
        self.lease = StudyLease(study.study_dir, study.name).acquire()
        try:
            if trainable is None and executor is None and not offline_mode:
                study.load_trainable()  # feasibility first: exit 2 before Ray starts
            if in_driver is None:
                in_driver = (study.executor == "inprocess" and not address and not os.environ.get("RAY_ADDRESS")
                             and not ray_initialized())
            self.in_driver = in_driver
            if in_driver:
                self.cluster: dict[str, Any] = {}
                self.agents = in_driver_agents(study)
            else:
                self.cluster = connect(address, namespace=self.namespace, dashboard=dashboard)
                if not offline_mode:
                    check_cluster_fits(study)
                    if study.scheduling == "rolling":
                        self.executor.warm_up()  # the trial workers start while the agents do
                self.agents = start_actors(study, self.namespace)
        except BaseException:
            self.shutdown()  # no agents yet: releases the lease and stops a warm stream
            raise
        self.historian = self.agents.pop("historian")
        from arc_ray.agents import Collective

        self.collective = Collective(study, self.agents)
        self.telemetry = self._make_telemetry()
        self.timings: dict[str, float] = {}  # seconds per step of the last cycle
        self._best: tuple[float | None, str | None] = (None, None)
        self._history_counts: dict[str, int] = {}  # trials in the history by status, for telemetry

    # ------------------------------------------------------------- set-up

    @property
    def executor(self) -> "Executor":
        """The trial executor ``study.executor`` names (made on first use)."""
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def _make_executor(self) -> "Executor":
        from arc_ray.executor import InProcessExecutor, TrainingExecutor

        if self.study.executor == "inprocess":
            return InProcessExecutor(self.study, trainable=self.trainable)
        return TrainingExecutor(self.study, trainable=self.trainable,
                                streaming=self.study.scheduling == "rolling")

    def _make_telemetry(self) -> Any | None:
        if self.in_driver:  # Ray's metrics need a Ray node to export them
            return None
        try:
            from arc_ray.telemetry import Telemetry

            return Telemetry(self.study.name, metric=self.study.metric)
        except Exception as exc:  # metrics are a view; a study runs without them
            logger.warning("telemetry disabled: %s", exc)
            return None

    def shutdown(self, kill_actors: bool = False, cancel_trials: bool = True) -> None:
        """Stop the executor; with ``kill_actors``, also the agent and historian actors.

        Args:
            kill_actors: kill the agent and historian actors (they otherwise live as long
                as the driver's job).
            cancel_trials: cancel unfinished trials (they are stored as CANCELLED when
                their cycle is integrated). Pass ``False`` when interrupted: the trials
                are left unfinished on disk and the next run resumes them.
        """
        try:
            if self._executor is not None and cancel_trials:
                self._executor.shutdown()
        finally:
            try:
                if kill_actors and not self.in_driver:
                    import ray

                    for handle in [self.historian, *self.agents.values()]:
                        try:
                            ray.kill(handle, no_restart=True)
                        except Exception as exc:
                            logger.debug("could not kill actor: %s", exc)
            finally:
                self.lease.release()

    # ------------------------------------------------------------- state

    def _emit(self, cycle_id: int, phase: str, counts: Mapping[str, int] | None = None,
              message: str = "") -> None:
        if self.on_event is not None:
            self.on_event(CycleEvent(cycle_id=cycle_id, phase=phase, counts=dict(counts or {}),
                                     best_value=self._best[0], best_experiment_id=self._best[1],
                                     message=message))

    def _get(self, call: Any) -> Any:
        if self.in_driver:  # the call already ran (see arc_ray.actors.InDriver)
            return call
        import ray

        return ray.get(call)

    def pending_cycle(self) -> int | None:
        """The oldest cycle whose decisions are logged but which is not finished, if any."""
        return self._get(self.historian.pending_cycle.remote())

    def next_cycle_id(self) -> int:
        """The id the next new cycle gets: one past every cycle the history mentions (first: 1)."""
        return self._get(self.historian.next_cycle_id.remote())

    # strategy of a decided cycle, kept beside the history so a resumed cycle logs its mode
    def _strategy_path(self, cycle_id: int) -> str:
        from arc_ray.study import join_storage

        return join_storage(self.study.study_dir, "strategies", f"cycle_{cycle_id:04d}.json")

    def _save_strategy(self, cycle_id: int, strategy: Any) -> None:
        if strategy is None:
            return
        atomic_write_text(self._strategy_path(cycle_id), strategy.model_dump_json())

    def _load_strategy(self, cycle_id: int) -> Any:
        from arc_ray.records import Strategy

        text = read_text(self._strategy_path(cycle_id))
        return Strategy.model_validate_json(text) if text else None

    # ------------------------------------------------------------- a cycle

    def run_research_cycle(self, cycle_id: int | None = None, *, slots: int | None = None,
                           pending: list[Any] | None = None) -> CycleReport:
        """Steps 1–7: summarise, decide (director, proposers, vote, supervisor), log decisions.

        In offline mode the cycle ends here and is logged as an offline cycle: the
        approved proposals are recorded and nothing runs.

        Args:
            cycle_id: default :meth:`next_cycle_id`.
            slots: run at most this many (a rolling round fills only the free trial
                slots); the lower-ranked approvals beyond it are vetoed by ``scheduler``.
            pending: the in-flight trials (executor :class:`~arc_ray.executor.Job`
                objects) of earlier rounds: the agents see them as RUNNING rows of the
                trials table (the supervisor refuses duplicates of them) and they count
                against ``budget.max_trials``.
        """
        t0 = time.perf_counter()
        cycle_id = self.next_cycle_id() if cycle_id is None else cycle_id
        self._emit(cycle_id, "deciding")
        summary = self._get(self.historian.summary.remote())
        trials = self._get(self.historian.trials_table.remote())
        self._note_history(summary)
        t1 = time.perf_counter()
        if pending:
            from arc_ray.rolling import with_pending

            trials, summary = with_pending(trials, summary, pending)
        decided = self.collective.decide(cycle_id, summary, trials)
        decisions = list(decided.decisions)  # the supervisor already capped them to budget.max_trials
        if slots is not None:
            from arc_ray.rolling import limit_to_slots, proposer_counts

            decisions = limit_to_slots(decisions, slots, decided.strategy.quotas, proposer_counts(trials))
        t2 = time.perf_counter()
        self._emit(cycle_id, "decided", message=count_outcomes(decisions))
        self._save_strategy(cycle_id, decided.strategy)
        self._get(self.historian.log_decisions.remote(decisions))
        t3 = time.perf_counter()
        self.timings = {"summary": t1 - t0, "decide": t2 - t1, "log_decisions": t3 - t2,
                        **{f"decide.{k}": v for k, v in getattr(decided, "timings", {}).items()}}
        self._emit(cycle_id, "logged", message=count_outcomes(decisions))
        report = CycleReport(study=self.study.name, cycle_id=cycle_id, strategy=decided.strategy,
                             decisions=decisions, decision_time_s=t3 - t0, offline=self.offline_mode,
                             best_value=summary.best_value, best_experiment_id=summary.best_experiment_id)
        if self.offline_mode:
            report.duration_s = time.perf_counter() - t0
            self._get(self.historian.log_cycle.remote(report))
            self._record_telemetry(report)
            self._emit(cycle_id, "finished", message="offline: decisions logged, nothing run")
        return report

    def run_autonomous_cycle(self, cycle_id: int | None = None, wait_for_completion: bool = True,
                             timeout: float | None = None) -> CycleReport:
        """One whole cycle (the ten steps), or the rest of a pending one.

        Args:
            cycle_id: default: the pending cycle if there is one, else :meth:`next_cycle_id`.
            wait_for_completion: wait for the trials, integrate and log the cycle; with
                ``False`` return once the trials are submitted (finish later with
                :meth:`collect_and_integrate_results` and another call).
            timeout: seconds to wait for the trials; those still running are cancelled.

        Raises:
            ArcError: ``cycle_id`` is not the pending cycle while one is pending.
        """
        from arc_ray.errors import ArcError

        t0 = time.perf_counter()
        pending = self.pending_cycle()
        if pending is not None:
            if cycle_id is not None and cycle_id != pending:
                raise ArcError(f"cycle {pending} was decided but not finished; "
                               f"resume it before starting cycle {cycle_id}")
            return self._resume(pending, wait_for_completion, timeout)
        report = self.run_research_cycle(cycle_id)
        if self.offline_mode:
            return report
        runnable = [d for d in report.decisions if d.outcome.runs()]
        ts = time.perf_counter()
        if runnable:
            self.executor.submit_batch(runnable, report.cycle_id)
        self.timings["submit"] = time.perf_counter() - ts
        self._emit(report.cycle_id, "submitted", {"total": len(runnable), "queued": len(runnable)})
        if not wait_for_completion:
            return report
        return self._finish(report, [d.experiment_id for d in runnable], set(), t0, timeout)

    def _resume(self, cycle_id: int, wait: bool, timeout: float | None) -> CycleReport:
        t0 = time.perf_counter()
        integrated = self._get(self.historian.integrated_ids.remote())
        decisions = self._revalidated_decisions(cycle_id, integrated)
        runnable = [d for d in decisions if d.outcome.runs()]
        missing = [d for d in runnable if d.experiment_id not in integrated]
        done_before = {d.experiment_id for d in runnable} - {d.experiment_id for d in missing}
        self._note_history(self._get(self.historian.summary.remote()))
        self._emit(cycle_id, "resuming", {"total": len(runnable), "done": len(done_before)},
                   message=f"cycle {cycle_id} was interrupted: {len(done_before)} of {len(runnable)} "
                           "results already stored")
        logger.info("resuming cycle %d: %d decided to run, %d already integrated",
                    cycle_id, len(runnable), len(done_before))
        if missing and not self.offline_mode:
            jobs = self.executor.resume(cycle_id)
            known = {j.experiment_id for j in jobs}
            unstarted = [d for d in missing if d.experiment_id not in known]
            if unstarted:  # killed before Tune saved its experiment: start them now
                self.executor.submit_batch(unstarted, cycle_id)
            logger.info("cycle %d: %d trials restored from the Tune experiment, %d submitted afresh",
                        cycle_id, len(known & {d.experiment_id for d in missing}), len(unstarted))
        report = CycleReport(study=self.study.name, cycle_id=cycle_id,
                             strategy=self._load_strategy(cycle_id), decisions=decisions,
                             resumed=True, offline=self.offline_mode)
        if not wait:
            return report
        return self._finish(report, [d.experiment_id for d in missing], done_before, t0, timeout)

    def _revalidated_decisions(self, cycle_id: int, integrated: set[str]) -> list[Decision]:
        """A pending cycle's (or rolling round's) decisions, each one that can no longer run
        (resources the cluster lacks, a config outside the edited space) superseded by a
        logged veto with its reason, so that a resumed study is never stuck on it."""
        decisions = self._get(self.historian.decisions_for_cycle.remote(cycle_id))
        if self.offline_mode:
            return decisions
        totals = cluster_totals() if cluster_started_here() else None
        vetoed = veto_unrunnable([d for d in decisions if d.outcome.runs() and d.experiment_id not in integrated],
                                 self.study, totals)
        if not vetoed:
            return decisions
        self._get(self.historian.supersede_decisions.remote(vetoed))
        return self._get(self.historian.decisions_for_cycle.remote(cycle_id))

    def _finish(self, report: CycleReport, ids: list[str], done_before: set[str], t0: float,
                timeout: float | None) -> CycleReport:
        """Steps 8–10: wait for ``ids``, integrate their results, log the cycle, telemetry."""
        cid = report.cycle_id
        tw = time.perf_counter()
        results = self._wait_and_collect(cid, ids, timeout) if ids else []
        results = self._annotate(results, report.decisions)
        self.timings["execute"] = time.perf_counter() - tw
        self._emit(cid, "integrating", count_statuses(r.status for r in results))
        ti = time.perf_counter()
        integration = (self._get(self.historian.integrate_experiment_results.remote(results, cid))
                       if results else None)
        self._emit(cid, "integrated", count_statuses(r.status for r in results))
        summary = self._get(self.historian.summary.remote())
        earlier = []
        if done_before:
            earlier = [r for r in self._get(self.historian.results_of_cycle.remote(cid))
                       if r.experiment_id in done_before]
        report.results = earlier + results
        report.integration = integration
        stop = self._log_cycle(report, summary, t0)
        self.timings["integrate_and_log"] = time.perf_counter() - ti
        self._emit(cid, "finished", count_statuses(r.status for r in report.results),
                   message=stop[1] if stop else "")
        return report

    def _log_cycle(self, report: CycleReport, summary: HistorySummary, t0: float,
                   rules: "StudyConfig | None" = None) -> tuple[StopReason, str] | None:
        """Store a finished cycle (or rolling round) with the stop rule that holds after it,
        then prune checkpoints and record telemetry. Returns that stop rule, if any."""
        cid = report.cycle_id
        report.best_value, report.best_experiment_id = summary.best_value, summary.best_experiment_id
        self._note_history(summary)
        rows = [r for r in self._get(self.historian.cycle_rows.remote()) if r[CYCLE_ID] != cid]
        rows.append({CYCLE_ID: cid, MODE: report.strategy.mode.value if report.strategy else None,
                     BEST_VALUE: summary.best_value, OFFLINE: False})
        stop = check_stop(rules or self.study, summary, rows)
        report.stop_reason = stop[0].value if stop else None
        report.duration_s = time.perf_counter() - t0
        self._get(self.historian.log_cycle.remote(report))
        self._prune_checkpoints(cid)
        self._record_telemetry(report)
        return stop

    def _prune_checkpoints(self, cycle_id: int) -> None:
        """Once a cycle is stored, only the ``checkpoints.keep_top`` best trials of stored cycles keep a model."""
        keep = self.study.checkpoints.keep_top
        if keep is None or self._executor is None:
            return
        try:
            stored = self._get(self.historian.cycle_ids.remote())["done"] | {cycle_id}
            best = self._get(self.historian.top_experiment_ids.remote(keep))
            self._executor.prune_to_best(stored, best)
        except Exception as exc:  # disk housekeeping never fails a cycle
            logger.warning("cycle %d: could not prune checkpoints: %s", cycle_id, exc)

    @staticmethod
    def _annotate(results: list[TrialResult], decisions: list[Decision]) -> list[TrialResult]:
        """Carry proposer, proposal type and risk from the decision onto each result."""
        by_id = {d.experiment_id: d for d in decisions}
        out = []
        for r in results:
            p = by_id[r.experiment_id].proposal if r.experiment_id in by_id else None
            if p is not None and r.proposer is None:
                r = r.model_copy(update={"proposer": p.proposer, "proposal_type": p.type,
                                         "risk_level": p.risk_level})
            out.append(r)
        return out

    def _note_history(self, summary: HistorySummary) -> None:
        self._best = (summary.best_value, summary.best_experiment_id)
        other = summary.n_trials - summary.n_completed - summary.n_failed
        self._history_counts = {"COMPLETED": summary.n_completed, "FAILED": summary.n_failed,
                                "CANCELLED": other}

    def _record_telemetry(self, report: CycleReport) -> None:
        if self.telemetry is None:
            return
        try:
            self.telemetry.record_cycle(report)
            if not report.offline:
                self.telemetry.set_trials_by_status(self._history_counts)
        except Exception as exc:  # a metrics hiccup must not fail a cycle
            logger.warning("telemetry: %s", exc)

    # ------------------------------------------------------------- trials

    def wait_for_training_completion(self, experiment_ids: list[str], timeout: float | None = None,
                                     cycle_id: int | None = None,
                                     on_terminal: Callable[[str, JobStatus], None] | None = None,
                                     ) -> dict[str, JobStatus]:
        """Wait until every trial is finished (or ``timeout``: the rest are cancelled).

        The one wait / timeout loop of a study: it polls the executor (never blocking in
        it), sleeps up to ``poll_interval_s`` between polls (woken early when a job
        changes), and at the timeout cancels what is still open, then gives the
        cancellation 30 s to land. Emits ``progress`` events when the counts change and
        calls ``on_terminal`` once per trial as it finishes.

        Returns:
            the final status of each experiment.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        statuses: dict[str, JobStatus] = {}
        reported: set[str] = set()
        last_counts: dict[str, int] = {}
        cancelled = False
        while True:
            left = [i for i in experiment_ids if not statuses.get(i, JobStatus.PENDING).is_terminal()]
            if left:
                statuses.update(self.executor.poll(left))
            for i in experiment_ids:
                st = statuses.get(i)
                if st is not None and st.is_terminal() and i not in reported:
                    reported.add(i)
                    if on_terminal is not None:
                        on_terminal(i, st)
            counts = count_statuses(statuses.get(i, JobStatus.PENDING) for i in experiment_ids)
            if counts != last_counts:
                last_counts = counts
                if self.telemetry is not None:
                    by_status = dict(self._history_counts)
                    for i in experiment_ids:
                        st = statuses.get(i, JobStatus.PENDING).value
                        by_status[st] = by_status.get(st, 0) + 1
                    self.telemetry.set_trials_by_status(by_status)
                self._emit(cycle_id if cycle_id is not None else -1, "progress", counts)
            if len(reported) == len(experiment_ids):
                return {i: statuses[i] for i in experiment_ids}
            if deadline is not None and time.monotonic() >= deadline:
                if cancelled:  # cancellation asked and given a grace period: stop waiting
                    return {i: statuses.get(i, JobStatus.CANCELLED) for i in experiment_ids}
                logger.warning("timeout after %.0f s: cancelling %d trials", timeout, len(left))
                self.executor.cancel([i for i in experiment_ids if i not in reported])
                cancelled, deadline = True, time.monotonic() + 30
                continue  # poll at once: a cancelled trial is CANCELLED now
            step = self.poll_interval_s
            if deadline is not None:
                step = max(min(step, deadline - time.monotonic()), 0.0)
            self.executor.wait_for_change(step)

    def _wait_and_collect(self, cycle_id: int, ids: list[str], timeout: float | None) -> list[TrialResult]:
        results: dict[str, TrialResult] = {}

        def collect(experiment_id: str, status: JobStatus) -> None:
            r = self.executor.collect_results(experiment_id)
            results[experiment_id] = r
            value = r.metric(self.study.metric) if r.status == JobStatus.COMPLETED else None
            if value is not None and (self._best[0] is None or self.study.better(value, self._best[0])):
                self._best = (value, experiment_id)

        self.wait_for_training_completion(ids, timeout, cycle_id=cycle_id, on_terminal=collect)
        for i in ids:  # anything left unfinished after cancellation is collected as it stands
            if i not in results:
                results[i] = self._timed_out(self.executor.collect_results(i), timeout)
        return [results[i] for i in ids]

    @staticmethod
    def _timed_out(result: TrialResult, timeout: float | None) -> TrialResult:
        """A trial still running after the timeout and the cancellation's grace period (an
        in-process call cannot be stopped) is stored as a ``timeout`` failure, so the
        cycle completes."""
        from arc_ray.records import ErrorClass

        if result.status.is_terminal():
            return result
        logger.warning("trial %s still %s after the cycle's timeout: stored as a timeout failure",
                       result.experiment_id, result.status.value)
        return result.model_copy(update={
            "status": JobStatus.FAILED, "error_class": ErrorClass.TIMEOUT,
            "error_message": f"still {result.status.value.lower()} when the cycle's timeout "
                             f"({timeout or 0:g} s) ended; the call could not be stopped"})

    def collect_and_integrate_results(self, experiment_ids: list[str], cycle_id: int) -> Any:
        """Collect finished trials' results and store them (idempotent per experiment)."""
        decisions = self._get(self.historian.decisions_for_cycle.remote(cycle_id))
        results = self._annotate([self.executor.collect_results(i) for i in experiment_ids], decisions)
        return self._get(self.historian.integrate_experiment_results.remote(results, cycle_id))

    # ------------------------------------------------------------- the loop

    def run(self, max_cycles: int | None = None) -> RunReport:
        """The autonomous loop: cycles until the target, a budget, or ``max_cycles``.

        A pending cycle (interrupted earlier) is finished first and counts as one of
        ``max_cycles`` (default: until another reason; 1 in offline mode). Stops, and says
        why (:class:`StopReason`), on the rules of :mod:`arc_ray.stopping` (target, budgets,
        opt-in early stopping, every trial of a cycle failing with one error) or after
        ``max_cycles``. With ``study.scheduling == "rolling"`` the loop is
        :class:`arc_ray.rolling.RollingLoop`: a round (a cycle) whenever trial slots free up.
        """
        if self.study.scheduling == "rolling" and not self.offline_mode:
            from arc_ray.rolling import RollingLoop

            return RollingLoop(self).run(max_cycles)
        t0 = time.perf_counter()
        if self.offline_mode and max_cycles is None:
            max_cycles = 1  # offline cycles change nothing the stop rules look at
        reports: list[CycleReport] = []
        stop: tuple[StopReason, str] | None = None
        while True:
            if self.pending_cycle() is None:
                stop = self._stop_now()
                if stop is not None:
                    break
            if max_cycles is not None and len(reports) >= max_cycles:
                stop = (StopReason.MAX_CYCLES, f"did the {max_cycles} cycle(s) asked for")
                break
            reports.append(self.run_autonomous_cycle())
            stop = check_cycle_failures(reports[-1].results) or check_idle_cycles(reports)
            if stop is not None:
                break
        summary = self._get(self.historian.summary.remote())
        n_cycles = len(self._get(self.historian.cycle_ids.remote())["done"])
        logger.info("stopping: %s", stop[1])
        return RunReport(study=self.study.name, cycles=reports, stop_reason=stop[0], stop_message=stop[1],
                         best_value=summary.best_value, best_experiment_id=summary.best_experiment_id,
                         best_config=summary.best_config, n_trials=summary.n_trials, n_cycles=n_cycles,
                         duration_s=time.perf_counter() - t0, history_dir=self.study.study_dir)

    def _stop_now(self) -> tuple[StopReason, str] | None:
        summary = self._get(self.historian.summary.remote())
        return check_stop(self.study, summary, self._get(self.historian.cycle_rows.remote()))


__all__ = [
    "CycleEvent",
    "Orchestrator",
    "RunReport",
    "StopReason",
    "check_stop",
    "recover_cycles_without_improvement",
]
