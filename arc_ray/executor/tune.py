"""Approved experiments → Ray Tune trials: submission, job lifecycle, failures, resume, results.

:class:`TrainingExecutor` runs each cycle's batch as one Ray Tune experiment at
``<study.tune_dir>/cycle_NNNN`` (a later batch of the same cycle gets ``cycle_NNNN-2``,
``-3``, ...), one trial per experiment, named after its experiment id and kept in a folder
of that name. ``Tuner.fit()`` runs on a background thread of the driver, so
:meth:`~TrainingExecutor.submit_batch` returns at once; Tune's own hooks move each job
through ``PENDING → QUEUED → RUNNING → COMPLETED / FAILED / CANCELLED`` (see
:mod:`arc_ray.executor._tune_monitor`). It implements :class:`~arc_ray.executor.base.Executor`.

Resources are per trial: the study's ``resources``, or a decision's (or its proposal's) own
request, fractional GPUs included; ``study.max_concurrent_trials`` caps how many run at
once. With ``study.scheduler`` set, ASHA stops poor trials early (``stopped_early``).

Failures are data. A trainable that raises ends FAILED with an error class (``oom``,
``diverged``, ``crash``, ``timeout``) and message, and is not retried; a trial whose worker
died is retried up to ``study.max_failures`` times; a trial past ``study.trial_timeout_s``
(reporting or silent) is stopped and FAILED with ``timeout``. Nothing a trial does raises
in the driver.

Resume: each experiment folder holds ARC's manifest (``arc/manifest.json``) and one JSON
:class:`~arc_ray.records.TrialResult` per finished trial (``arc/results/``). A new executor
asked for a cycle (``resume``, or ``submit_batch`` for a cycle already on disk) reads them,
and restores the Tune experiment with ``Tuner.restore(..., resume_unfinished=True)``:
finished trials are not rerun, unfinished ones continue from their last checkpoint.

Example::

    executor = TrainingExecutor(StudyConfig.from_yaml("configs/arc.yaml"))
    jobs = executor.submit_batch(approved_decisions, cycle_id=3)
    ids = [j.experiment_id for j in jobs]
    while not all(s.is_terminal() for s in executor.poll(ids).values()):
        executor.wait_for_change(1.0)
    results = [executor.collect_results(i) for i in ids]
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Sequence

from arc_ray.errors import ConfigValidationError, TrainingExecutionError, Violation
from arc_ray.executor._tune_trial import TRIAL_KEY, make_trial_function, trial_dirname, trial_name, trial_resources
from arc_ray.executor.base import Executor, Job, PreparedTrial, check_cycle_id, prepare_batch
from arc_ray.feasibility import cluster_started_here as _cluster_started_here
from arc_ray.records import Decision, JobStatus, Resources, TrialResult
from arc_ray.study import join_storage

if TYPE_CHECKING:  # the Tune side is imported on first use: importing the package stays light
    from arc_ray.executor._tune_jobs import JobState
    from arc_ray.executor._tune_monitor import TuneRun
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

_MANIFEST = "arc/manifest.json"
_RESULTS = "arc/results"


class TrainingExecutor(Executor):
    """Runs approved experiments as Ray Tune trials and tracks them to a result.

    Args:
        study: the study; its ``trainable``, ``resources``, ``max_concurrent_trials``,
            ``trial_timeout_s``, ``max_failures``, ``scheduler`` and ``tune_dir`` apply.
        trainable: the Tune function trainable (``train(config)``, reporting with
            ``tune.report``) or a plain ``objective(config) -> dict``; default: the
            study's ``trainable``.
        reuse_actors: let Tune hand a finished trial's worker to the next trial with the
            same resources (default ``True``), which saves a process start per trial.
            Turn it off for trainables that leak state between runs in one process.
        cancel_grace_s: how long :meth:`shutdown` waits for Tune to wind down.
        streaming: run every submission in one long-lived Tune experiment fed through a
            queue (:mod:`arc_ray.executor._tune_stream`) instead of one experiment per
            batch: no Tune start per round, warm workers (rolling decisions).
        checkpoints_to_keep: Tune's ``CheckpointConfig(num_to_keep)`` per trial. The
            default ``None`` keeps every checkpoint a trainable reports: Tune deletes old
            checkpoints before its (periodic) experiment snapshot records the new one, so
            a driver killed in between would find a restored trial's checkpoint gone. Set
            it to bound disk use when checkpoints are large.

    Thread safety: every public method may be called from any thread; Tune's hooks run
    on the executor's background threads. Returned :class:`Job` objects are snapshots.
    The contract (who calls what, when) is :class:`~arc_ray.executor.base.Executor`'s.
    """

    def __init__(self, study: "StudyConfig", trainable: Callable[..., Any] | None = None, *,
                 reuse_actors: bool = True, cancel_grace_s: float = 30.0,
                 checkpoints_to_keep: int | None = None, streaming: bool = False) -> None:
        super().__init__(study)
        self.reuse_actors = reuse_actors
        self.streaming = streaming
        self._stream: TuneRun | None = None  # the live stream experiment (streaming only)
        self._stream_queue: Any = None
        self.checkpoints_to_keep = checkpoints_to_keep
        self.cancel_grace_s = cancel_grace_s
        self._user_trainable = trainable
        self._trial_fn: Callable[..., Any] | None = None
        self._submit_lock = threading.RLock()  # one submission / restore at a time
        self._jobs: dict[str, JobState] = {}
        self._runs: dict[str, TuneRun] = {}
        self._loaded_cycles: set[int] = set()
        self._closed = False

    # ---------------------------------------------------------------- submit

    def submit_batch(self, decisions: Sequence[Decision], cycle_id: int) -> list[Job]:
        """Start a cycle's decisions as one Tune experiment; returns at once.

        See :meth:`Executor.submit_batch`. A later batch of the same cycle becomes the
        cycle's next Tune experiment; an id already held for the cycle, in this executor
        or in the cycle's folders on disk, is not run again.

        Raises:
            ConfigValidationError: a decision is not runnable (see
                :func:`~arc_ray.executor.base.prepare_batch`) or asks for resources a
                Ray cluster this driver started does not have; nothing is submitted.
            TrainingExecutionError: the executor was shut down.
        """
        cycle_id = check_cycle_id(cycle_id)
        if self._closed:
            raise TrainingExecutionError("the executor is shut down; create a new one")
        with self._submit_lock:
            self._attach_cycle(cycle_id)
            with self._cond:
                held = {eid: job.cycle_id for eid, job in self._jobs.items()}
            prepared = prepare_batch(list(decisions), cycle_id, held, self.study.resources)
            new = [p for p in prepared if not p.held]
            problems = self._resource_problems(new)
            if problems:
                raise ConfigValidationError(problems, source="submit_batch")
            if new:
                self._launch(cycle_id, new)
            return [self._snapshot(p.experiment_id) for p in prepared]

    def _resource_problems(self, prepared: list[PreparedTrial]) -> list[Violation]:
        """Requests the cluster can never satisfy would wait forever: refuse them.

        Only a Ray this driver started itself has a known, fixed size; on a cluster the
        driver connected to, an autoscaler may still add nodes, so a request beyond
        today's resources is logged, not refused.
        """
        if not prepared:
            return []
        import ray

        if not ray.is_initialized():
            logger.info("Ray is not running; starting a local instance")
            ray.init()
        total = ray.cluster_resources()
        fixed = _cluster_started_here()
        problems = []
        for p in prepared:
            res: Resources = p.resources
            for kind, asked in (("CPU", res.cpu), ("GPU", res.gpu)):
                have = float(total.get(kind, 0.0))
                if asked <= have:
                    continue
                rule = (f"experiment {p.experiment_id!r} asks for more than the Ray cluster's "
                        f"{have:g} {kind} in all")
                if fixed:
                    problems.append(Violation(f"{p.where}.resources.{kind.lower()}", asked, rule))
                else:
                    logger.warning("%s; it waits until the autoscaler adds nodes", rule)
        return problems

    # ---------------------------------------------------------------- launch

    def _trainable(self) -> Callable[..., Any]:
        if self._trial_fn is None:
            from ray import tune

            user_fn = self._user_trainable or self.study.load_trainable()
            self._trial_fn = tune.with_resources(make_trial_function(user_fn), resources=trial_resources)
        return self._trial_fn

    def _next_run_name(self, cycle_id: int) -> str:
        taken = set(self._runs) | set(_cycle_run_names(self.study.tune_dir, cycle_id))
        base = f"cycle_{cycle_id:04d}"
        if base not in taken:
            return base
        k = 2
        while f"{base}-{k}" in taken:
            k += 1
        return f"{base}-{k}"

    def _launch(self, cycle_id: int, prepared: list[PreparedTrial]) -> None:
        from arc_ray.executor._tune_jobs import JobState

        if self.streaming:
            self._feed_stream(cycle_id, prepared)
            return
        name = self._next_run_name(cycle_id)
        token = uuid.uuid4().hex
        uri = join_storage(self.study.tune_dir, name)
        jobs = {p.experiment_id: JobState(experiment_id=p.experiment_id, cycle_id=cycle_id,
                                          config=p.config, resources=p.resources, meta=p.meta,
                                          run_name=name)
                for p in prepared}
        run = self._new_run(token, cycle_id, name, uri, jobs)
        run.store.write_json(_MANIFEST, {
            "token": token, "cycle_id": cycle_id, "study": self.study.name, "created_at": time.time(),
            "jobs": [{"experiment_id": j.experiment_id, "config": j.config,
                      "resources": j.resources.model_dump(), "meta": j.meta} for j in jobs.values()],
        })
        tuner = self._new_tuner(run, list(jobs.values()))
        logger.info("cycle %d: %d trials submitted as Tune experiment %s", cycle_id, len(jobs), uri)
        self._start(run, tuner)

    def _new_run(self, token: str, cycle_id: int, name: str, uri: str,
                 jobs: dict[str, JobState]) -> TuneRun:
        from arc_ray.executor._tune_monitor import TuneRun, register_run

        run = TuneRun(token, cycle_id, name, uri, jobs, self._cond, metric=self.study.metric,
                      sign=self.study.sign, timeout_s=self.study.trial_timeout_s)
        with self._cond:
            self._runs[name] = run
            self._jobs.update(jobs)
        register_run(run)
        return run

    def warm_up(self) -> None:
        """Streaming only: start the stream experiment now, with an empty queue, so that
        Tune's start (seconds) overlaps the first round's decision."""
        if self.streaming and not self._closed:
            with self._submit_lock:
                self._stream_run(0)

    def _stream_run(self, cycle_id: int) -> TuneRun:
        """This driver's live stream experiment, started (its Tune fit in a thread) if there
        is none yet or its fit ended."""
        from arc_ray.executor._tune_stream import EntryQueue, register_queue, stream_name
        from arc_ray.executor._tune_trial import warm_entry

        run = self._stream  # the caller holds _submit_lock
        if run is not None and (run.thread is None or run.alive):
            return run
        name, token = stream_name(self.study.tune_dir), uuid.uuid4().hex
        run = self._new_run(token, cycle_id, name, join_storage(self.study.tune_dir, name), {})
        self._stream_queue = EntryQueue()
        if self.reuse_actors:  # one worker per slot starts now, before any decision needs it
            resources = self.study.resources.model_dump()
            self._stream_queue.put([warm_entry(k, resources) for k in range(self.study.max_concurrent_trials)])
        register_queue(token, self._stream_queue)
        self._stream = run
        run.store.write_json(_MANIFEST, {"token": run.token, "stream": True, "study": self.study.name,
                                         "created_at": time.time(), "jobs": []})
        self._start(run, self._new_tuner(run, []))
        return run

    def _feed_stream(self, cycle_id: int, prepared: list[PreparedTrial]) -> None:
        """Queue the trials on this driver's stream experiment (started on first use)."""
        from arc_ray.executor._tune_jobs import JobState

        run = self._stream_run(cycle_id)
        jobs = {p.experiment_id: JobState(experiment_id=p.experiment_id, cycle_id=cycle_id, config=p.config,
                                          resources=p.resources, meta=p.meta, run_name=run.name)
                for p in prepared}
        with self._cond:
            run.jobs.update(jobs)
            self._jobs.update(jobs)
            listed = [{"experiment_id": j.experiment_id, "cycle_id": j.cycle_id, "config": j.config,
                       "resources": j.resources.model_dump(), "meta": j.meta} for j in run.jobs.values()]
        run.store.write_json(_MANIFEST, {"token": run.token, "stream": True, "study": self.study.name,
                                         "created_at": time.time(), "jobs": listed})
        self._stream_queue.put([{"experiment_id": j.experiment_id, "config": j.config,
                                 "resources": j.resources.model_dump()} for j in jobs.values()])
        logger.info("cycle %d: %d trials queued on Tune experiment %s", cycle_id, len(jobs), run.uri)

    def _new_tuner(self, run: TuneRun, jobs: list[JobState]) -> Any:
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from arc_ray.executor._tune_monitor import ArcCallback, ArcScheduler, NoCSVLogger, NoTBXLogger

        inner = None
        if self.study.scheduler is not None:
            from ray.tune.schedulers import ASHAScheduler

            s = self.study.scheduler
            inner = ASHAScheduler(time_attr="training_iteration", metric=self.study.metric,
                                  mode=self.study.mode, max_t=s.max_t, grace_period=s.grace_period,
                                  reduction_factor=s.reduction_factor)
        entries = [{"experiment_id": j.experiment_id, "config": j.config,
                    "resources": j.resources.model_dump()} for j in jobs]
        space: dict[str, Any] = {TRIAL_KEY: tune.grid_search(entries)}
        search: dict[str, Any] = {}
        slots = self.study.max_concurrent_trials
        limit, warm = slots, None
        if run is self._stream:  # configs come from the stream's queue, as they are decided
            from arc_ray.executor._tune_stream import QueueSearcher

            # the searcher holds decided trials to the slots; the warm trials come on top
            space, search = {}, {"search_alg": QueueSearcher(run.token, slots=slots), "num_samples": -1}
            limit, warm = 2 * slots, slots
        return tune.Tuner(
            self._trainable(),
            param_space=space,
            tune_config=tune.TuneConfig(
                **search,
                scheduler=ArcScheduler(run.token, inner, max_t=self.study.scheduler.max_t if inner else None,
                                       slots=warm),
                max_concurrent_trials=limit,
                reuse_actors=self.reuse_actors,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=run.name,
                storage_path=self.study.tune_dir,
                # result.json is kept (resume reads a trial's earlier epochs from it);
                # Tune's CSV and TensorBoard copies of the same numbers are not written.
                callbacks=[ArcCallback(run.token), JsonLoggerCallback(), NoCSVLogger(), NoTBXLogger()],
                failure_config=tune.FailureConfig(max_failures=self.study.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=self.checkpoints_to_keep),
                verbose=0,
            ),
        )

    def _start(self, run: TuneRun, tuner: Any) -> None:
        def fit() -> None:
            error: BaseException | None = None
            try:
                tuner.fit()
            except BaseException as exc:  # the driver outlives whatever Tune raised
                logger.exception("Tune experiment %s ended with an error", run.uri)
                error = exc
            finally:
                run.fit_finished(error)

        run.thread = threading.Thread(target=fit, name=f"arc-tune-{run.name}", daemon=True)
        run.thread.start()

    # ---------------------------------------------------------------- resume

    def resume(self, cycle_id: int) -> list[Job]:
        """Pick up a cycle another driver started: finished trials are read, the rest run on.

        Restores each of the cycle's Tune experiments on disk with
        ``Tuner.restore(path, trainable, resume_unfinished=True)`` (or, if Tune had not
        saved its state yet, starts their unfinished trials afresh). Safe to call twice.

        Returns:
            every job of the cycle this executor now holds (``[]`` when the cycle has
            nothing on disk and nothing was submitted).
        """
        cycle_id = check_cycle_id(cycle_id)
        with self._submit_lock:
            self._attach_cycle(cycle_id)
            with self._cond:
                ids = [eid for eid, j in self._jobs.items() if j.cycle_id == cycle_id]
            return [self._snapshot(eid) for eid in ids]

    def _attach_cycle(self, cycle_id: int) -> None:
        if cycle_id in self._loaded_cycles:
            return
        for name in _cycle_run_names(self.study.tune_dir, cycle_id):
            if name not in self._runs:
                self._attach_run(cycle_id, name)
        from arc_ray.executor._tune_stream import finished_in_streams

        with self._cond:  # a stream's finished trials are read back; the rest are submitted again
            for job in finished_in_streams(self.study.tune_dir, cycle_id, skip=set(self._runs)):
                if job.experiment_id not in self._jobs:
                    self._jobs[job.experiment_id] = job
        self._loaded_cycles.add(cycle_id)

    def _attach_run(self, cycle_id: int, name: str) -> None:
        from ray import tune

        from arc_ray.executor._tune_jobs import JobState, RunStore

        uri = join_storage(self.study.tune_dir, name)
        store = RunStore(uri)
        manifest = store.read_json(_MANIFEST)
        if not manifest or "token" not in manifest:
            logger.warning("%s has no ARC manifest; not resumed", uri)
            return
        jobs: dict[str, JobState] = {}
        for entry in manifest.get("jobs", []):
            eid = entry["experiment_id"]
            if eid in self._jobs:
                logger.warning("%s: experiment %s is already held; skipped", uri, eid)
                continue
            jobs[eid] = JobState(experiment_id=eid, cycle_id=cycle_id, config=entry["config"],
                                 resources=Resources.model_validate(entry["resources"]),
                                 meta=entry.get("meta") or {}, run_name=name)
        for eid in store.list_json(_RESULTS):
            data = store.read_json(f"{_RESULTS}/{eid}.json")
            if eid in jobs and data:
                try:
                    jobs[eid].load_result(TrialResult.model_validate(data))
                except ValueError as exc:
                    logger.warning("%s: unreadable result of %s (%s); it runs again", uri, eid, exc)
        run = self._new_run(manifest["token"], cycle_id, name, uri, jobs)
        unfinished = [j for j in jobs.values() if not j.status.is_terminal()]
        logger.info("cycle %d: %s holds %d trials, %d finished", cycle_id, name, len(jobs),
                    len(jobs) - len(unfinished))
        if not unfinished:
            return
        tuner = None
        # Tune writes tuner.pkl (what can_restore looks for) before its first experiment
        # state: a driver killed in between leaves a folder Tune "restores" into trials
        # without their configs (KeyError 'arc_trial' in every one). Only a saved state
        # is restored; otherwise the unfinished trials start afresh, below.
        state_saved = any(n.startswith("experiment_state-") for n in store.list_json(""))
        if state_saved and tune.Tuner.can_restore(uri):
            try:
                tuner = tune.Tuner.restore(uri, trainable=self._trainable(), resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
            except Exception:  # a damaged Tune state must not stop the study
                logger.exception("cannot restore %s; its %d unfinished trials start over", uri,
                                 len(unfinished))
        if tuner is None:  # killed before Tune saved its state (or it is unreadable)
            tuner = self._new_tuner(run, unfinished)
        self._start(run, tuner)

    # ---------------------------------------------------------------- state

    def status_history(self, experiment_id: str) -> list[tuple[JobStatus, float]]:
        """Every status the experiment went through, with the unix time it got there."""
        with self._cond:
            return list(self._get(experiment_id).history)

    def jobs(self, cycle_id: int | None = None) -> list[Job]:
        """Snapshots of every job (of one cycle, if given), in submission order."""
        with self._cond:
            ids = [e for e, j in self._jobs.items() if cycle_id is None or j.cycle_id == cycle_id]
            return [self._snapshot(e) for e in ids]

    def poll(self, experiment_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Each experiment's status now (see :meth:`Executor.poll`); never blocks on Tune."""
        with self._cond:
            return {eid: self._get(eid).status for eid in experiment_ids}

    def cancel(self, experiment_ids: Iterable[str], reason: str = "cancelled") -> list[str]:
        """Cancel experiments that have not finished: they end CANCELLED at once.

        A queued trial is then removed from Tune and a running one has its worker
        killed at Tune's next step; finished experiments are left as they are.

        Returns:
            the ids cancelled (those not finished yet), in the order given.

        Raises:
            TrainingExecutionError: an id was never submitted to this executor.
        """
        done = []
        with self._cond:
            for eid in experiment_ids:
                job = self._get(eid)
                if not job.status.is_terminal():
                    self._runs[job.run_name].cancel(job, reason)
                    done.append(eid)
            if self._stream_queue is not None and done:
                self._stream_queue.drop(set(done))
        return done

    def collect_results(self, experiment_id: str) -> TrialResult:
        """The experiment's :class:`TrialResult`: final once it finished, as it stands before."""
        with self._cond:
            return self._get(experiment_id).to_result().model_copy(deep=True)

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel everything unfinished, wait for the Tune threads (up to ``timeout``), close.

        Nothing already finished is lost: its result stays on disk for :meth:`resume`.
        """
        from arc_ray.executor._tune_monitor import unregister_run

        self._closed = True
        if self._stream_queue is not None:
            self._stream_queue.close()  # the stream's experiment ends once its trials stopped
        with self._cond:
            open_ids = [e for e, j in self._jobs.items() if not j.status.is_terminal()]
        if open_ids:
            self.cancel(open_ids, reason="the executor was shut down")
        deadline = time.monotonic() + (self.cancel_grace_s if timeout is None else timeout)
        for run in list(self._runs.values()):
            if run.thread is not None:
                run.thread.join(timeout=max(0.0, deadline - time.monotonic()))
                if run.thread.is_alive():
                    logger.warning("Tune experiment %s still winding down", run.uri)
            unregister_run(run)
        if self._stream is not None:
            from arc_ray.executor._tune_stream import unregister_queue

            unregister_queue(self._stream.token)

    def prune_checkpoints(self, cycle_id: int, keep: int = 1) -> int:
        """Delete all but the newest ``keep`` checkpoints of each trial of a finished cycle.

        Call it only once the cycle's results are stored: its Tune experiments are then
        never restored again, so older checkpoints only cost disk (a timm trial writes one
        per epoch). Trials of the cycle still running are left alone.

        Returns:
            how many checkpoint folders were deleted.
        """
        cycle_id = check_cycle_id(cycle_id)
        if keep < 1:
            raise ConfigValidationError([Violation("keep", keep, "must be >= 1")])
        with self._cond:
            if any(j.cycle_id == cycle_id and not j.status.is_terminal() for j in self._jobs.values()):
                logger.warning("cycle %d still has trials running; its checkpoints are kept", cycle_id)
                return 0
        import pyarrow.fs as pafs

        if "://" in self.study.tune_dir:
            fs, root = pafs.FileSystem.from_uri(self.study.tune_dir)
        else:
            fs, root = pafs.LocalFileSystem(), os.path.abspath(self.study.tune_dir)
        from arc_ray.executor._tune_stream import stream_names

        with self._cond:
            mine = {e for e, j in self._jobs.items() if j.cycle_id == cycle_id}
        # a cycle's own experiments hold only its trials; a stream, every round's
        folders = [(r, None) for r in _cycle_run_names(self.study.tune_dir, cycle_id)]
        folders += [(r, mine) for r in stream_names(self.study.tune_dir)]
        removed = 0
        for run, only in folders:
            trials = fs.get_file_info(pafs.FileSelector(f"{root}/{run}", allow_not_found=True))
            for trial in (t for t in trials if t.type == pafs.FileType.Directory
                          and (only is None or t.base_name in only)):
                entries = fs.get_file_info(pafs.FileSelector(trial.path, allow_not_found=True))
                checkpoints = sorted(e.path for e in entries if e.type == pafs.FileType.Directory
                                     and e.base_name.startswith("checkpoint_"))
                for path in checkpoints[:-keep]:
                    fs.delete_dir(path)
                    removed += 1
        if removed:
            logger.info("cycle %d: removed %d older checkpoints", cycle_id, removed)
        return removed

    def prune_to_best(self, stored_cycles: Iterable[int], keep_ids: Collection[str]) -> int:
        """Keep the best model of the ``keep_ids`` trials only (see :meth:`Executor.prune_to_best`)."""
        from arc_ray.executor._tune_prune import prune_study

        with self._cond:
            busy = {j.cycle_id for j in self._jobs.values() if not j.status.is_terminal()}
        cycles = {int(c) for c in stored_cycles} - busy
        return prune_study(self.study.tune_dir, cycles, set(keep_ids)) if cycles else 0

    # ---------------------------------------------------------------- helpers

    def _get(self, experiment_id: str) -> JobState:
        job = self._jobs.get(experiment_id)
        if job is None:
            raise TrainingExecutionError(f"unknown experiment {experiment_id!r}: it was never submitted "
                                         "to this executor (resume its cycle first)",
                                         experiment_id=experiment_id)
        return job

    def _snapshot(self, experiment_id: str) -> Job:
        with self._cond:
            j = self._jobs[experiment_id]
            return Job(experiment_id=j.experiment_id, cycle_id=j.cycle_id, config=dict(j.config),
                       resources=j.resources, status=j.status, tune_experiment=j.run_name,
                       proposer=j.meta.get("proposer"))


def _cycle_run_names(tune_dir: str, cycle_id: int) -> list[str]:
    """The cycle's Tune experiment folders on disk, in batch order."""
    base = f"cycle_{cycle_id:04d}"
    pattern = re.compile(rf"^{base}(?:-(\d+))?$")
    if "://" in tune_dir:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(tune_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
    else:
        names = os.listdir(tune_dir) if os.path.isdir(tune_dir) else []
    found = [(int(m.group(1) or 1), n) for n in names if (m := pattern.match(n))]
    return [n for _, n in sorted(found)]


__all__ = ["TrainingExecutor"]
