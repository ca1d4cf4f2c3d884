"""The driver side of one ARC Tune experiment: Tune hooks, job transitions, watchdog.

A :class:`TuneRun` is one Tune experiment (one per cycle, plus one per later batch of the
same cycle). Ray Tune drives it through two hooks that live in the experiment's pickled
state, :class:`ArcCallback` (a ``ray.tune.Callback``: trial start / result / complete /
error / recover) and :class:`ArcScheduler` (a ``TrialScheduler`` around FIFO or ASHA:
trial added, per-result decisions, and once per controller step the watchdog). Both hold
only a token and look their :class:`TuneRun` up in a process registry, so the same
objects work again after ``Tuner.restore`` in a new driver process.

Every job state change happens under the executor's condition (``cond``) and wakes its
waiters. A job's terminal state is final: it is written once as a JSON
:class:`~arc_ray.records.TrialResult` under ``<experiment>/arc/results/`` (the sidecar that
lets a restarted driver know, without Tune, what already finished) and nothing Tune
reports later changes it. Cancellation and timeouts therefore mark the job first and
then make Tune agree: a pending trial is stopped with ``stop_trial``, a running one has
its actor killed (its ``max_failures`` set to 0 first, so Tune does not retry it).

Threads: Tune calls the hooks on the thread that runs ``Tuner.fit()``; the executor's
methods run on the caller's thread. Ray calls (``ray.kill``) are made outside the lock.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any, Callable

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, TBXLoggerCallback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from arc_ray.executor._tune_jobs import JobState, RunStore, result_metrics
from arc_ray.executor._tune_trial import (
    ERROR_CLASS_KEY,
    ERROR_MESSAGE_KEY,
    ERROR_TYPE_KEY,
    WARM_KEY,
    experiment_id_of,
    is_warm,
)
from arc_ray.executor.base import classify_error, missing_metric
from arc_ray.records import ErrorClass, JobStatus

logger = logging.getLogger(__name__)

#: Seconds a trial told to stop at a report may take to stop before its actor is killed.
GRACEFUL_STOP_S = 5.0


# -------------------------------------------------------------------------- the run


class TuneRun:
    """One Tune experiment of a cycle, as the executor and Tune's hooks see it.

    Args:
        token: the key the experiment's pickled hooks find this object by.
        cycle_id: the cycle.
        name: the experiment's folder name (``cycle_NNNN`` or ``cycle_NNNN-K``).
        uri: the experiment folder (local path or URI).
        jobs: this run's jobs by experiment id (shared with the executor).
        cond: the executor's condition; every change happens under it and notifies it.
        metric, sign: the study's metric and direction (``StudyConfig.sign``), for the best epoch.
        timeout_s: the per-trial wall-clock limit, or ``None``.
    """

    def __init__(self, token: str, cycle_id: int, name: str, uri: str, jobs: dict[str, JobState],
                 cond: threading.Condition, metric: str, sign: float, timeout_s: float | None) -> None:
        self.token, self.cycle_id, self.name, self.uri = token, cycle_id, name, uri
        self.store = RunStore(uri)
        self.jobs = jobs
        self.cond = cond
        self.metric, self.sign, self.timeout_s = metric, sign, timeout_s
        self.thread: threading.Thread | None = None
        self.fit_error: str | None = None
        self._killed: set[str] = set()
        self._graceful: dict[str, float] = {}

    # ---------------------------------------------------------------- helpers

    def _job(self, trial: Trial) -> JobState | None:
        eid = experiment_id_of(trial)
        return self.jobs.get(eid) if eid else None

    def _better(self, a: float, b: float) -> bool:
        return self.sign * a > self.sign * b

    def _absorb(self, job: JobState, result: dict[str, Any]) -> None:
        """Take in one Tune result: the wrapper's failure report, or the trainable's metrics."""
        if ERROR_CLASS_KEY in result:  # see _tune_trial: the trainable raised
            try:
                job.error_class = ErrorClass(result[ERROR_CLASS_KEY])
            except ValueError:
                job.error_class = ErrorClass.CRASH
            job.error_message = f"{result.get(ERROR_TYPE_KEY, 'Error')}: {result.get(ERROR_MESSAGE_KEY, '')}"
            job.node_ip = result.get("node_ip") or job.node_ip
        else:
            self._record(job, result)

    def _record(self, job: JobState, result: dict[str, Any]) -> None:
        metrics = result_metrics(result)
        job.n_results += 1
        job.iterations = int(result.get("training_iteration", job.iterations) or job.iterations)
        job.time_total_s = result.get("time_total_s", job.time_total_s)
        job.node_ip = result.get("node_ip") or job.node_ip
        job.last_metrics = metrics
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            best = job.best_metrics.get(self.metric)
            if best is None or not math.isfinite(best) or self._better(value, best):
                job.best_metrics = dict(metrics)

    def finalize(self, job: JobState, status: JobStatus, error_class: ErrorClass | None = None,
                 message: str | None = None, *, persist: bool = True) -> bool:
        """Make ``job`` terminal (once), write its sidecar and wake waiters. Lock held.

        With ``persist=False`` the result stays in memory only, so a later
        :meth:`TrainingExecutor.resume` runs the trial again.
        """
        if job.status.is_terminal():
            return False
        job.set_status(status)
        job.ended_at = job.history[-1][1]
        if error_class is not None:
            job.error_class, job.error_message = error_class, message
        elif status == JobStatus.COMPLETED:
            job.error_class, job.error_message = None, None
        job.result = job.to_result()
        try:
            if persist:
                self.store.write_json(f"arc/results/{job.experiment_id}.json",
                                      job.result.model_dump(mode="json"))
        except Exception as exc:  # the in-memory result still stands; resume re-runs it at worst
            logger.error("could not write the result of %s: %s", job.experiment_id, exc)
        logger.info("trial %s %s%s", job.experiment_id, status.value,
                    f" ({job.error_class.value}: {job.error_message})" if job.error_class else "")
        self.cond.notify_all()
        return True

    # ------------------------------------------------- Tune hooks (Tune's thread)

    def on_trial_add(self, trial: Trial) -> None:
        with self.cond:
            job = self._job(trial)
            if job is None or job.status.is_terminal():
                return
            job.trial_id = trial.trial_id
            if trial.status == Trial.TERMINATED:  # restored as finished, sidecar lost
                for r in _read_result_history(trial) or [trial.last_result or {}]:
                    self._absorb(job, r)
                self._finish_from_tune(job, trial, errored=False)
            elif trial.status == Trial.ERROR:
                self._finish_from_tune(job, trial, errored=True)
            else:
                job.set_status(JobStatus.QUEUED)
                logger.debug("trial %s queued", job.experiment_id)
                self.cond.notify_all()

    def on_trial_start(self, trial: Trial) -> None:
        last = trial.last_result or {}
        with self.cond:
            job = self._job(trial)
            if job is None or job.status.is_terminal():
                return
            trained_s = float(last.get("time_total_s") or 0.0)  # before this start (checkpoint)
            if job.started_at is None and last.get("training_iteration"):
                # restored from another driver's run: take in the epochs it saw
                for r in _read_result_history(trial):
                    self._absorb(job, r)
                job.restored_time_s = trained_s
            job.set_status(JobStatus.RUNNING)
            logger.debug("trial %s running", job.experiment_id)
            job.trial_id = trial.trial_id
            job.started_at = job.started_at or time.time()
            job.attempt_started = time.monotonic()
            job.attempt_prior_s = trained_s
            self.cond.notify_all()

    def on_trial_result(self, trial: Trial, result: dict[str, Any]) -> None:
        with self.cond:
            job = self._job(trial)
            if job is None or job.status.is_terminal():
                return
            self._absorb(job, result)
            self.cond.notify_all()

    def on_trial_complete(self, trial: Trial) -> None:
        with self.cond:
            job = self._job(trial)
            if job is not None:
                self._finish_from_tune(job, trial, errored=False)

    def on_trial_error(self, trial: Trial) -> None:
        with self.cond:
            job = self._job(trial)
            if job is not None:
                self._finish_from_tune(job, trial, errored=True)

    def on_trial_recover(self, trial: Trial) -> None:
        with self.cond:
            job = self._job(trial)
            if job is not None and not job.status.is_terminal():
                logger.warning("trial %s: worker failed, retrying (failure %d)", job.experiment_id,
                               trial.num_failures)
                job.set_status(JobStatus.QUEUED)
                self.cond.notify_all()

    def _finish_from_tune(self, job: JobState, trial: Trial, errored: bool) -> None:
        if job.status.is_terminal():
            return
        if job.error_class is not None:  # the trainable raised; the wrapper reported it
            self.finalize(job, JobStatus.FAILED, job.error_class, job.error_message)
        elif errored:
            text = _error_text(trial)
            self.finalize(job, JobStatus.FAILED, classify_error(text), _last_line(text))
        else:
            problem = missing_metric(job.last_metrics, job.last_metrics, self.metric)
            if problem is None:
                self.finalize(job, JobStatus.COMPLETED)
            else:
                logger.warning("trial %s failed (no_metric): %s", job.experiment_id, problem)
                self.finalize(job, JobStatus.FAILED, ErrorClass.NO_METRIC, problem)

    def decide(self, trial: Trial, result: dict[str, Any], decision: str, full: bool = False) -> str:
        """The scheduler's verdict on a result, after ARC's timeout and cancellation rules
        (``full``: the trial reached the scheduler's ``max_t``; a stop then is not early)."""
        with self.cond:
            job = self._job(trial)
            if job is None:
                return decision
            if job.status.is_terminal():  # cancelled (or timed out) while it kept reporting
                self._graceful.setdefault(job.experiment_id, time.monotonic())
                return TrialScheduler.STOP
            total = result.get("time_total_s")
            if self.timeout_s is not None and total is not None and float(total) >= self.timeout_s:
                self._record(job, result)
                self._graceful[job.experiment_id] = time.monotonic()
                self.finalize(job, JobStatus.FAILED, ErrorClass.TIMEOUT,
                              f"exceeded trial_timeout_s={self.timeout_s:g} ({float(total):.1f} s of training)")
                return TrialScheduler.STOP
            if decision == TrialScheduler.STOP and not result.get("done") and not full:
                job.stopped_early = True
            return decision

    def enforce(self, controller: Any) -> None:
        """Once per Tune step: time out silent trials; make Tune agree with terminal jobs."""
        now = time.monotonic()
        to_kill: list[tuple[Trial, Any]] = []
        to_stop: list[Trial] = []
        with self.cond:
            for trial in controller.get_trials():
                job = self._job(trial)
                if job is None or trial.status in (Trial.TERMINATED, Trial.ERROR):
                    continue
                eid = job.experiment_id
                if (trial.status == Trial.RUNNING and not job.status.is_terminal()
                        and self.timeout_s is not None and job.attempt_started is not None):
                    elapsed = now - job.attempt_started + job.attempt_prior_s
                    if elapsed >= self.timeout_s:
                        self.finalize(job, JobStatus.FAILED, ErrorClass.TIMEOUT,
                                      f"exceeded trial_timeout_s={self.timeout_s:g} "
                                      f"({elapsed:.1f} s without finishing)")
                if not job.status.is_terminal():
                    continue
                if trial.status in (Trial.PENDING, Trial.PAUSED):
                    to_stop.append(trial)
                elif trial.status == Trial.RUNNING and eid not in self._killed:
                    asked = self._graceful.get(eid)
                    if asked is None or now - asked > GRACEFUL_STOP_S:
                        self._killed.add(eid)
                        to_kill.append((trial, trial.temporary_state.ray_actor))
        for trial in to_stop:
            controller.stop_trial(trial)
        for trial, actor in to_kill:
            _kill_trial(trial, actor)

    # ------------------------------------------------- executor side

    def cancel(self, job: JobState, reason: str) -> None:
        """Mark ``job`` cancelled now (lock held); Tune is made to agree at its next step."""
        self.finalize(job, JobStatus.CANCELLED, ErrorClass.CANCELLED, reason)

    def fit_finished(self, error: BaseException | None) -> None:
        """Called when ``Tuner.fit()`` returned or raised: nothing of this run is left open."""
        with self.cond:
            if error is not None:
                self.fit_error = f"{type(error).__name__}: {error}"
            for job in self.jobs.values():
                if not job.status.is_terminal():
                    # The run ended under the trial (driver exiting, Ray shut down, a Tune
                    # error): that is no verdict on the trial, so it is not written down and
                    # a resumed cycle runs it again.
                    why = self.fit_error or "the Tune run ended without finishing this trial"
                    self.finalize(job, JobStatus.FAILED, ErrorClass.CRASH, why, persist=False)
            self.cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def _kill_trial(trial: Trial, actor: Any) -> None:
    """Kill a running trial's actor without Tune retrying it (its job is already terminal)."""
    import ray

    trial.max_failures = 0  # the kill must not count as a worker failure worth retrying
    if actor is None:
        return
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # already gone: Tune will notice on its own
        logger.debug("killing the actor of %s: %s", trial, exc)


def _error_text(trial: Trial) -> str:
    try:
        err = trial.get_error()
        if err is not None:
            return str(err)
    except Exception as exc:
        logger.debug("no error text for %s: %s", trial, exc)
    return trial.error_message if hasattr(trial, "error_message") and trial.error_message else "trial failed"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else text)[:2000]


def _read_result_history(trial: Trial) -> list[dict[str, Any]]:
    """Every result a trial reported before this driver restored it (Tune's result.json)."""
    try:
        fs = trial.storage.storage_filesystem
        with fs.open_input_stream(f"{trial.path}/result.json") as fh:
            lines = fh.readall().decode().splitlines()
        return [json.loads(ln) for ln in lines if ln.strip()]
    except Exception as exc:
        logger.debug("no result history for %s: %s", trial, exc)
        return []


# ------------------------------------------------------------ registry and hooks

_RUNS: dict[str, TuneRun] = {}
_RUNS_LOCK = threading.Lock()


def register_run(run: TuneRun) -> None:
    with _RUNS_LOCK:
        _RUNS[run.token] = run


def unregister_run(run: TuneRun) -> None:
    with _RUNS_LOCK:
        if _RUNS.get(run.token) is run:
            del _RUNS[run.token]


def _lookup(token: str) -> TuneRun | None:
    with _RUNS_LOCK:
        return _RUNS.get(token)


class ArcCallback(Callback):
    """Feeds Tune's trial events to the :class:`TuneRun` registered under ``token``."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _run(self) -> TuneRun | None:
        return _lookup(self.token)

    def _call(self, method: str, *args: Any) -> None:
        run = self._run()
        if run is None:
            return
        try:
            getattr(run, method)(*args)
        except Exception:  # a bookkeeping bug must not take the Tune run down
            logger.exception("ARC callback %s failed", method)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_start", trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict,
                        **info: Any) -> None:
        self._call("on_trial_result", trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_complete", trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_error", trial)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._call("on_trial_recover", trial)


class ArcScheduler(TrialScheduler):
    """FIFO or ASHA, plus ARC's per-trial timeout, cancellation and early-stop bookkeeping.

    Exposes no metric to Tune, so a trainable that never reports the study metric is a
    failed trial rather than a ``ValueError`` that ends the whole Tune run.

    A stream's warm trials (:mod:`arc_ray.executor._tune_stream`) bypass the inner
    scheduler: one is stopped, so that Tune hands its worker on, once the live trials
    outnumber ``slots`` or the stream's queue is closed.
    """

    def __init__(self, token: str, inner: TrialScheduler | None = None, max_t: int | None = None,
                 slots: int | None = None) -> None:
        super().__init__()
        self.token = token
        self.inner = inner or FIFOScheduler()
        self.max_t = max_t  # the inner scheduler's last rung (ASHA stops every trial there)
        self.slots = slots  # a stream's slots (warm trials hold them until a trial needs one)

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the inner scheduler was built with the study's metric and mode

    def _run(self) -> TuneRun | None:
        return _lookup(self.token)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)
        run = self._run()
        if run is not None:
            _guard(run.on_trial_add, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if WARM_KEY in result:
            return TrialScheduler.STOP if self._release_warm(tune_controller) else TrialScheduler.CONTINUE
        if ERROR_CLASS_KEY in result:
            decision = TrialScheduler.CONTINUE  # the trainable already stopped itself
        else:
            decision = self.inner.on_trial_result(tune_controller, trial, result)
        run = self._run()
        if run is None:
            return decision
        # ASHA stops every trial at max_t, its last rung: that is a full run, not an early stop
        full = self.max_t is not None and (result.get("training_iteration") or 0) >= self.max_t
        verdict = _guard(run.decide, trial, result, decision, full)
        return verdict if verdict is not None else decision

    def _stream_open(self) -> bool:
        """Whether this run is a stream whose driver may still queue trials."""
        from arc_ray.executor._tune_stream import queue_of

        queue = queue_of(self.token)
        return queue is not None and not queue.closed

    def _release_warm(self, controller: Any) -> bool:
        """Whether a warm trial should stop now: a decided trial waits for its slot, or no
        more will come."""
        if self.slots is None or not self._stream_open():
            return True
        live = sum(t.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED) for t in controller.get_trials())
        return live > self.slots

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        run = self._run()
        if run is not None:
            _guard(run.enforce, tune_controller)
        if self.slots is not None:
            _guard(self._drop_waiting_warm, tune_controller)
        return self.inner.choose_trial_to_run(tune_controller)

    def _drop_waiting_warm(self, controller: Any) -> None:
        """Once the stream is closed, stop warm trials whose worker has not started yet
        (a started one stops at its next report): the experiment ends without them."""
        if self._stream_open():
            return
        for trial in controller.get_trials():
            if trial.status == Trial.PENDING and is_warm(trial):
                controller.stop_trial(trial)

    def debug_string(self) -> str:
        return f"ARC ({self.inner.debug_string()})"

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


def _guard(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # a bookkeeping bug must not take the Tune run down
        logger.exception("ARC scheduler hook %s failed", getattr(fn, "__name__", fn))
        return None


# ------------------------------------------------------------------ quiet loggers


class NoCSVLogger(CSVLoggerCallback):
    """Stands in for Tune's default CSV logger (Tune adds one unless one is present)."""

    def __init__(self) -> None:
        super().__init__()

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


class NoTBXLogger(TBXLoggerCallback):
    """Stands in for Tune's default TensorBoard logger; skips importing tensorboardX."""

    def __init__(self) -> None:  # the parent's __init__ imports tensorboardX
        self._trial_writer = {}
        self._trial_result = {}

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


__all__ = ["ArcCallback", "ArcScheduler", "NoCSVLogger", "NoTBXLogger", "TuneRun", "register_run",
           "unregister_run"]

