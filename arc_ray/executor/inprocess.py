"""An executor for cheap objectives: ``objective(config) -> metrics``, called in the driver.

Benchmark functions and toy studies cost microseconds per evaluation; a Ray Tune trial
costs about a second of scheduling. :class:`InProcessExecutor` implements the same
:class:`~arc_ray.executor.base.Executor` contract as
:class:`~arc_ray.executor.TrainingExecutor` but calls the study's ``trainable`` — a plain function of the nested config returning a
mapping of metric name to number — one trial at a time in a background thread of the
driver; it may also return a bare number, the study metric. The function receives the
study's keys only. The orchestrator picks it when the study says ``executor: inprocess``.

A trial fails when the function raises (``TrainingOutOfMemoryError``/``MemoryError`` →
``oom``, ``TrainingDivergedError``/``FloatingPointError`` → ``diverged``,
``TimeoutError`` → ``timeout``, anything else → ``crash``; see
:func:`~arc_ray.executor.base.classify_error`), returns something that is not a mapping,
or returns the study metric missing (``crash``) or not finite (``diverged``).
``trial_timeout_s`` is not enforced and a running call is not cancelled: a Python call
cannot be stopped from outside, and the functions this executor is for return at once.
Nothing is kept on disk, so there are no checkpoints to prune and nothing to resume
after the driver exits.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from arc_ray.errors import ConfigValidationError, TrainingExecutionError, Violation
from arc_ray.executor.base import Executor, Job, check_cycle_id, classify_error, missing_metric, prepare_batch
from arc_ray.records import Decision, ErrorClass, JobStatus, TrialResult

if TYPE_CHECKING:
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


class InProcessExecutor(Executor):
    """Runs trials as calls of a plain function in the driver (see the module docstring).

    Args:
        study: the study; ``study.trainable`` names the objective unless ``trainable`` is given.
        trainable: the objective to call instead of importing ``study.trainable``.

    Raises:
        ConfigValidationError: the objective cannot be imported or is not callable.

    Thread safety: every public method may be called from any thread. The contract
    (who calls what, when) is :class:`~arc_ray.executor.base.Executor`'s.
    """

    def __init__(self, study: "StudyConfig",
                 trainable: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None) -> None:
        super().__init__(study)
        self.objective = trainable if trainable is not None else study.load_trainable()
        if not callable(self.objective):
            raise ConfigValidationError([Violation("trainable", study.trainable, "is not callable")])
        self._jobs: dict[str, Job] = {}
        self._meta: dict[str, dict[str, Any]] = {}  # proposer, proposal_type, risk_level
        self._results: dict[str, TrialResult] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ submit

    def submit_batch(self, decisions: Sequence[Decision], cycle_id: int) -> list[Job]:
        """Queue every decision; returns at once (see :meth:`Executor.submit_batch`).

        Raises:
            ConfigValidationError: a decision is not runnable (see
                :func:`~arc_ray.executor.base.prepare_batch`); nothing of the batch is queued.
            TrainingExecutionError: the executor was shut down.
        """
        cycle_id = check_cycle_id(cycle_id)
        with self._cond:
            if self._closed:
                raise TrainingExecutionError("the executor is shut down")
            held = {eid: job.cycle_id for eid, job in self._jobs.items()}
            prepared = prepare_batch(list(decisions), cycle_id, held, self.study.resources)
            out = []
            for p in prepared:
                if not p.held:
                    self._jobs[p.experiment_id] = Job(experiment_id=p.experiment_id, cycle_id=cycle_id,
                                                      config=p.config, resources=p.resources,
                                                      status=JobStatus.QUEUED, proposer=p.meta.get("proposer"))
                    self._meta[p.experiment_id] = p.meta
                    self._queue.put(p.experiment_id)
                out.append(self._jobs[p.experiment_id].model_copy(deep=True))
            if self._worker is None and any(not p.held for p in prepared):
                self._worker = threading.Thread(target=self._work, name="arc-inprocess", daemon=True)
                self._worker.start()
            self._cond.notify_all()
            return out

    # ----------------------------------------------------------------- running

    def _work(self) -> None:
        while True:
            eid = self._queue.get()
            if eid is None:
                return
            with self._cond:
                job = self._jobs.get(eid)
                if job is None or job.status != JobStatus.QUEUED:
                    continue  # cancelled while queued
                job.status = JobStatus.RUNNING
                self._cond.notify_all()
            result = self._run(job)
            with self._cond:
                self._results[eid] = result
                job.status = result.status
                self._cond.notify_all()

    def _run(self, job: Job) -> TrialResult:
        extra = self._meta.get(job.experiment_id, {})
        started = time.time()
        t0 = time.perf_counter()
        status, metrics, err_class, err_msg = JobStatus.COMPLETED, {}, None, None
        try:
            # the objective sees the study's keys only: the experiment id is the executor's
            config = {k: v for k, v in job.config.items() if k != "experiment_id" or k in self.study.baseline}
            out = self.objective(config)
            if isinstance(out, (int, float)) and not isinstance(out, bool):
                out = {self.study.metric: out}  # a bare number is the study metric, as in Optuna
            if not isinstance(out, Mapping):
                raise TrainingExecutionError(f"the objective returned {type(out).__name__}, not a mapping "
                                             "of metrics or a number")
            metrics = {k: float(v) for k, v in out.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            problem = missing_metric(out, out, self.study.metric)
            if problem is not None:
                status, err_class, err_msg = JobStatus.FAILED, ErrorClass.NO_METRIC, problem
                logger.warning("trial %s failed (no_metric): %s", job.experiment_id, problem)
        except Exception as exc:
            status, err_class, err_msg = JobStatus.FAILED, classify_error(exc), f"{type(exc).__name__}: {exc}"
            logger.info("trial %s failed (%s): %s", job.experiment_id, err_class.value, err_msg)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        return TrialResult(experiment_id=job.experiment_id, cycle_id=job.cycle_id, status=status,
                           config=job.config, metrics=finite, best_metrics=finite,
                           duration_s=time.perf_counter() - t0, error_class=err_class,
                           error_message=err_msg, resources=job.resources, iterations=1,
                           started_at=started, ended_at=time.time(), **extra)

    # ------------------------------------------------------------------ status

    def poll(self, experiment_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Each trial's status now (see :meth:`Executor.poll`).

        Raises:
            TrainingExecutionError: an id was never submitted.
        """
        with self._cond:
            return {eid: self._job(eid).status for eid in experiment_ids}

    def _job(self, experiment_id: str) -> Job:
        job = self._jobs.get(experiment_id)
        if job is None:
            raise TrainingExecutionError(f"unknown experiment {experiment_id!r}: it was never submitted",
                                         experiment_id=experiment_id)
        return job

    def collect_results(self, experiment_id: str) -> TrialResult:
        """The trial's result; for a trial still queued or running, its status so far."""
        with self._cond:
            job = self._job(experiment_id)
            result = self._results.get(experiment_id)
            if result is not None:
                return result.model_copy(deep=True)
            return TrialResult(experiment_id=experiment_id, cycle_id=job.cycle_id, status=job.status,
                               config=job.config, resources=job.resources)

    def cancel(self, experiment_ids: Iterable[str], reason: str = "cancelled") -> list[str]:
        """Cancel queued trials; a running call cannot be stopped and ends as it ends.

        Returns:
            the ids cancelled, in the order given.

        Raises:
            TrainingExecutionError: an id was never submitted.
        """
        done = []
        with self._cond:
            for eid in experiment_ids:
                job = self._job(eid)
                if job.status in (JobStatus.PENDING, JobStatus.QUEUED):
                    job.status = JobStatus.CANCELLED
                    self._results[eid] = TrialResult(experiment_id=eid, cycle_id=job.cycle_id,
                                                     status=JobStatus.CANCELLED, config=job.config,
                                                     error_message=f"{reason} before it ran",
                                                     resources=job.resources)
                    done.append(eid)
            self._cond.notify_all()
        return done

    def jobs(self, cycle_id: int | None = None) -> list[Job]:
        """Snapshots of the submitted jobs (of one cycle, or all)."""
        with self._cond:
            return [j.model_copy(deep=True) for j in self._jobs.values()
                    if cycle_id is None or j.cycle_id == cycle_id]

    def resume(self, cycle_id: int) -> list[Job]:
        """The jobs of ``cycle_id`` this executor still holds.

        Nothing in-process survives the driver, so after a restart this is empty and the
        orchestrator submits the cycle's decided experiments again.
        """
        return self.jobs(check_cycle_id(cycle_id))

    def prune_checkpoints(self, cycle_id: int, keep: int = 1) -> int:
        """Nothing to prune: an in-process trial keeps no checkpoints. Returns ``0``.

        Raises:
            ConfigValidationError: ``cycle_id`` or ``keep`` is out of range (as for every executor).
        """
        check_cycle_id(cycle_id)
        if keep < 1:
            raise ConfigValidationError([Violation("keep", keep, "must be >= 1")])
        return 0

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel what is queued and stop the worker thread (after the running call).

        Args:
            timeout: seconds to wait for the running call; ``None``: 30.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self.cancel(list(self._jobs), reason="the executor was shut down")
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=30.0 if timeout is None else timeout)


__all__ = ["InProcessExecutor"]
