"""An executor for cheap objectives: ``objective(config) -> metrics``, called in the driver.

Benchmark functions and toy studies cost microseconds per evaluation; a Ray Tune trial
costs about a second of scheduling. :class:`InProcessExecutor` has the surface of
:class:`arc_ray.executor.TrainingExecutor` (``submit_batch``, ``status``,
``wait_for_completion``, ``collect_results``, ``cancel``, ``resume``, ``shutdown``) but
calls the study's ``trainable`` — a plain function of the nested config returning a
mapping of metric name to number — one trial at a time in a background thread of the
driver. The orchestrator picks it when the study says ``executor: inprocess``.

A trial fails when the function raises (``TrainingOutOfMemoryError``/``MemoryError`` →
``oom``, ``TrainingDivergedError``/``FloatingPointError`` → ``diverged``,
``TimeoutError`` → ``timeout``, anything else → ``crash``), returns something that is
not a mapping, or returns the study metric missing (``crash``) or not finite
(``diverged``). ``trial_timeout_s`` is not enforced: a Python call cannot be stopped
from outside, and the functions this executor is for return at once.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from arc_ray._tune_trial import classify_error
from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import (
    ConfigValidationError,
    TrainingExecutionError,
    Violation,
)
from arc_ray.executor import Job
from arc_ray.records import Decision, ErrorClass, JobStatus, Proposal, TrialResult
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


class InProcessExecutor:
    """Runs trials as calls of a plain function in the driver (see the module docstring).

    Args:
        study: the study; ``study.trainable`` names the objective unless ``trainable`` is given.
        trainable: the objective to call instead of importing ``study.trainable``.

    Raises:
        ConfigValidationError: the objective cannot be imported or is not callable.

    Thread safety: every public method may be called from any thread.
    """

    def __init__(self, study: StudyConfig, trainable: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None) -> None:
        self.study = study
        self.objective = trainable if trainable is not None else study.load_trainable()
        if not callable(self.objective):
            raise ConfigValidationError([Violation("trainable", study.trainable, "is not callable")])
        self._gen = ExperimentConfigGenerator(study)
        self._jobs: dict[str, Job] = {}
        self._meta: dict[str, Decision | Proposal] = {}
        self._results: dict[str, TrialResult] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ submit

    def submit_batch(self, items: Iterable[Decision | Proposal], cycle_id: int) -> list[Job]:
        """Queue every item; returns at once. An id already submitted is not run twice.

        Raises:
            ConfigValidationError: an item is not a runnable Decision or a valid Proposal;
                nothing of the batch is queued.
        """
        prepared = [self._prepare(item, cycle_id) for item in items]
        return [self._enqueue(job, meta) for job, meta in prepared]

    def submit_job(self, item: Decision | Proposal, cycle_id: int) -> Job:
        """Queue one item (see :meth:`submit_batch`)."""
        return self.submit_batch([item], cycle_id)[0]

    def _prepare(self, item: Any, cycle_id: int) -> tuple[Job, Decision | Proposal]:
        if isinstance(item, Decision):
            if not item.outcome.runs() or item.config is None:
                raise ConfigValidationError([Violation(
                    "decision", item.experiment_id,
                    f"only approved or repaired decisions with a config run (this one is {item.outcome.value})")])
            config = dict(item.config)
            resources = item.resources or (item.proposal.resources if item.proposal else None)
        elif isinstance(item, Proposal):
            config = self._gen.generate_config(item.experiment_id, item)
            resources = item.resources
        else:
            raise ConfigValidationError([Violation("item", type(item).__name__,
                                                   "expected an approved Decision or a Proposal")])
        config.setdefault("experiment_id", item.experiment_id)
        job = Job(experiment_id=item.experiment_id, cycle_id=cycle_id, config=config,
                  resources=resources or self.study.resources)
        return job, item

    def _enqueue(self, job: Job, meta: Decision | Proposal) -> Job:
        with self._cond:
            if self._closed:
                raise TrainingExecutionError("the executor is shut down", experiment_id=job.experiment_id)
            known = self._jobs.get(job.experiment_id)
            if known is not None:
                return known.model_copy()
            job.status = JobStatus.QUEUED
            self._jobs[job.experiment_id] = job
            self._meta[job.experiment_id] = meta
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="arc-inprocess", daemon=True)
                self._worker.start()
        self._queue.put(job.experiment_id)
        return job.model_copy()

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
            result = self._run(job)
            with self._cond:
                self._results[eid] = result
                job.status = result.status
                self._cond.notify_all()

    def _run(self, job: Job) -> TrialResult:
        meta = self._meta.get(job.experiment_id)
        proposal = meta.proposal if isinstance(meta, Decision) else meta
        extra: dict[str, Any] = {}
        if proposal is not None:
            extra = dict(proposer=proposal.proposer, proposal_type=proposal.type, risk_level=proposal.risk_level)
        started = time.time()
        t0 = time.perf_counter()
        status, metrics, err_class, err_msg = JobStatus.COMPLETED, {}, None, None
        try:
            out = self.objective(dict(job.config))
            if not isinstance(out, Mapping):
                raise TrainingExecutionError(f"the objective returned {type(out).__name__}, not a mapping of metrics")
            metrics = {k: float(v) for k, v in out.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            value = metrics.get(self.study.metric)
            if value is None:
                status, err_class = JobStatus.FAILED, ErrorClass.CRASH
                err_msg = f"the objective did not return the study metric {self.study.metric!r}"
            elif not math.isfinite(value):
                status, err_class = JobStatus.FAILED, ErrorClass.DIVERGED
                err_msg = f"the study metric {self.study.metric!r} is {value}"
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

    def status(self, experiment_id: str) -> JobStatus:
        """Where a trial is.

        Raises:
            TrainingExecutionError: the id was never submitted.
        """
        with self._cond:
            return self._job(experiment_id).status

    def _job(self, experiment_id: str) -> Job:
        job = self._jobs.get(experiment_id)
        if job is None:
            raise TrainingExecutionError(f"unknown experiment {experiment_id!r}: it was never submitted",
                                         experiment_id=experiment_id)
        return job

    def wait_for_completion(self, experiment_ids: Iterable[str], timeout: float | None = None) -> dict[str, JobStatus]:
        """Wait until every trial is terminal or ``timeout`` seconds pass; returns each status.

        Raises:
            TrainingExecutionError: an id was never submitted.
        """
        ids = list(experiment_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            for eid in ids:
                self._job(eid)
            while not all(self._jobs[e].status.is_terminal() for e in ids):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return {e: self._jobs[e].status for e in ids}

    def collect_results(self, experiment_id: str) -> TrialResult:
        """The trial's result; for a trial still queued or running, its status so far."""
        with self._cond:
            job = self._job(experiment_id)
            result = self._results.get(experiment_id)
            if result is not None:
                return result
            return TrialResult(experiment_id=experiment_id, cycle_id=job.cycle_id, status=job.status,
                               config=job.config, resources=job.resources)

    def cancel(self, experiment_ids: Iterable[str], reason: str = "cancelled") -> list[str]:
        """Cancel queued trials (a running call cannot be stopped); returns the ids cancelled."""
        done = []
        with self._cond:
            for eid in experiment_ids:
                job = self._jobs.get(eid)
                if job is not None and job.status in (JobStatus.PENDING, JobStatus.QUEUED):
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
            return [j.model_copy() for j in self._jobs.values() if cycle_id is None or j.cycle_id == cycle_id]

    def resume(self, cycle_id: int) -> list[Job]:
        """The jobs of ``cycle_id`` this executor still holds. Nothing in-process survives
        the driver, so after a restart this is empty and the orchestrator resubmits."""
        with self._cond:
            return [j.model_copy() for j in self._jobs.values() if j.cycle_id == cycle_id]

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Cancel what is queued and stop the worker thread (after the running call)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self.cancel(list(self._jobs))
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=timeout)


__all__ = ["InProcessExecutor"]
