"""Approved experiments → Ray Tune trials: submission, job lifecycle, failures, resume, results.

:class:`TrainingExecutor` runs each cycle's batch as one Ray Tune experiment at
``<study.tune_dir>/cycle_NNNN`` (a later batch of the same cycle gets ``cycle_NNNN-2``,
``-3``, ...), one trial per experiment, named after its experiment id and kept in a folder
of that name. ``Tuner.fit()`` runs on a background thread of the driver, so
:meth:`~TrainingExecutor.submit_batch` returns at once; Tune's own hooks move each job
through ``PENDING → QUEUED → RUNNING → COMPLETED / FAILED / CANCELLED`` (see
:mod:`arc_ray._tune_monitor`).

Resources are per trial: the study's ``resources``, or a decision's (or proposal's) own
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
    executor.wait_for_completion([j.experiment_id for j in jobs], timeout=3600)
    results = [executor.collect_results(j.experiment_id) for j in jobs]
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from arc_ray._tune_trial import TRIAL_KEY, make_trial_function, trial_dirname, trial_name, trial_resources
from arc_ray.errors import ConfigValidationError, TrainingExecutionError, Violation
from arc_ray.records import (
    Decision,
    JobStatus,
    Proposal,
    Resources,
    TrialResult,
    experiment_id_problem,
)
from arc_ray.study import join_storage

if TYPE_CHECKING:  # the Tune side is imported on first use: ``Job`` alone stays light
    from arc_ray._tune_jobs import JobState
    from arc_ray._tune_monitor import TuneRun
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

_MANIFEST = "arc/manifest.json"
_RESULTS = "arc/results"


class Job(BaseModel):
    """A submitted experiment, as it stood when this snapshot was taken."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    cycle_id: int
    config: dict[str, Any]  # the validated nested config the trainable receives
    resources: Resources  # what the trial asks of the cluster
    status: JobStatus = JobStatus.PENDING
    tune_experiment: str | None = None  # its Tune experiment's folder under study.tune_dir


class TrainingExecutor:
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
        checkpoints_to_keep: Tune's ``CheckpointConfig(num_to_keep)`` per trial. The
            default ``None`` keeps every checkpoint a trainable reports: Tune deletes old
            checkpoints before its (periodic) experiment snapshot records the new one, so
            a driver killed in between would find a restored trial's checkpoint gone. Set
            it to bound disk use when checkpoints are large.

    Thread safety: every public method may be called from any thread; Tune's hooks run
    on the executor's background threads. Returned :class:`Job` objects are snapshots.
    """

    def __init__(self, study: "StudyConfig", trainable: Callable[..., Any] | None = None, *,
                 reuse_actors: bool = True, cancel_grace_s: float = 30.0,
                 checkpoints_to_keep: int | None = None) -> None:
        self.study = study
        self.reuse_actors = reuse_actors
        self.checkpoints_to_keep = checkpoints_to_keep
        self.cancel_grace_s = cancel_grace_s
        self._user_trainable = trainable
        self._trial_fn: Callable[..., Any] | None = None
        self._cond = threading.Condition(threading.RLock())
        self._submit_lock = threading.RLock()  # one submission / restore at a time
        self._jobs: dict[str, JobState] = {}
        self._runs: dict[str, TuneRun] = {}
        self._loaded_cycles: set[int] = set()
        self._configgen: Any = None
        self._closed = False

    # ---------------------------------------------------------------- submit

    def submit_job(self, item: Decision | Proposal, cycle_id: int) -> Job:
        """Submit one experiment; see :meth:`submit_batch`."""
        return self.submit_batch([item], cycle_id)[0]

    def submit_batch(self, items: Sequence[Decision | Proposal], cycle_id: int) -> list[Job]:
        """Start a cycle's experiments as one Tune experiment; returns at once.

        Args:
            items: approved (or repaired) :class:`Decision` objects, whose ``config`` is
                the validated config (generated from ``proposal`` when missing), or
                :class:`Proposal` objects, whose config the executor generates and writes
                with the study's config generator.
            cycle_id: the cycle (``>= 0``).

        Returns:
            one :class:`Job` per item, in order. Submitting an experiment id this
            executor (or the cycle's folder on disk) already holds returns its job
            instead of running it again.

        Raises:
            ConfigValidationError: an item is not runnable (vetoed, no config, bad id,
                duplicate id, config generation failed, resources the cluster does
                not have); it names every problem and nothing is submitted.
            TrainingExecutionError: the executor was shut down.
        """
        cycle_id = _check_cycle_id(cycle_id)
        if self._closed:
            raise TrainingExecutionError("the executor is shut down; create a new one")
        items = list(items)
        with self._submit_lock:
            self._attach_cycle(cycle_id)
            with self._cond:
                known = {eid: job for eid, job in self._jobs.items()}
            prepared = self._prepare(items, cycle_id, known)
            new = [p for p in prepared if p["experiment_id"] not in known]
            if new:
                self._launch(cycle_id, new)
            return [self._snapshot(p["experiment_id"]) for p in prepared]

    def _prepare(self, items: list[Any], cycle_id: int, known: dict[str, JobState]) -> list[dict[str, Any]]:
        """Validate every item and build what a trial needs; raise once with all problems."""
        out: list[dict[str, Any]] = []
        problems: list[Violation] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"items[{i}]"
            held = known.get(getattr(item, "experiment_id", None))  # type: ignore[arg-type]
            if held is not None and held.cycle_id == cycle_id and isinstance(item, (Decision, Proposal)):
                if held.experiment_id in seen:
                    problems.append(Violation(f"{where}.experiment_id", held.experiment_id,
                                              "appears twice in this batch"))
                seen.add(held.experiment_id)
                out.append({"experiment_id": held.experiment_id})  # already running or done
                continue
            try:
                p = self._prepare_one(item, cycle_id)
            except ConfigValidationError as exc:
                problems += [Violation(f"{where}.{v.field}" if v.field else where, v.value, v.rule)
                             for v in exc.violations]
                continue
            eid = p["experiment_id"]
            if eid in seen:
                problems.append(Violation(f"{where}.experiment_id", eid, "appears twice in this batch"))
                continue
            seen.add(eid)
            other = known.get(eid)
            if other is not None and other.cycle_id != cycle_id:
                problems.append(Violation(f"{where}.experiment_id", eid,
                                          f"was already submitted in cycle {other.cycle_id}"))
                continue
            p["where"] = where
            out.append(p)
        if not problems:  # only a clean batch is worth asking the cluster about
            problems += self._resource_problems([p for p in out if p["experiment_id"] not in known])
        if problems:
            raise ConfigValidationError(problems, source="submit_batch")
        for p in out:  # configs generated here are written only once the whole batch is good
            if p.pop("generated", False):
                self._configgen.write_config(p["experiment_id"], p["config"])
        return out

    def _prepare_one(self, item: Any, cycle_id: int) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        generated = False
        if isinstance(item, Decision):
            if not item.outcome.runs():
                raise ConfigValidationError([Violation("outcome", item.outcome.value,
                                                       "only approved or repaired decisions run")])
            if item.cycle_id != cycle_id:
                raise ConfigValidationError([Violation("cycle_id", item.cycle_id,
                                                       f"the decision is for cycle {item.cycle_id}, "
                                                       f"submitted to cycle {cycle_id}")])
            eid = item.experiment_id
            proposal = item.proposal
            config = item.config
            if config is None:
                if proposal is None:
                    raise ConfigValidationError([Violation("config", None,
                                                           "a decision needs a config or a proposal")])
                config, generated = self._generate_config(eid, proposal), True
            resources = item.resources or (proposal.resources if proposal else None)
        elif isinstance(item, Proposal):
            eid, proposal = item.experiment_id, item
            config, generated = self._generate_config(eid, item), True
            resources = item.resources
        else:
            raise ConfigValidationError([Violation("", type(item).__name__,
                                                   "expected a Decision or a Proposal")])
        problem = experiment_id_problem(eid)
        if problem:
            raise ConfigValidationError([Violation("experiment_id", eid, problem)])
        if not isinstance(config, dict):
            raise ConfigValidationError([Violation("config", type(config).__name__, "expected a mapping")])
        if config.get("experiment_id", eid) != eid:
            raise ConfigValidationError([Violation("config.experiment_id", config["experiment_id"],
                                                   f"does not match the experiment id {eid!r}")])
        if proposal is not None:
            meta = {"proposer": proposal.proposer, "proposal_type": proposal.type.value,
                    "risk_level": proposal.risk_level.value}
        return {"experiment_id": eid, "config": {**config, "experiment_id": eid},
                "resources": resources or self.study.resources, "meta": meta, "generated": generated}

    def _generate_config(self, experiment_id: str, proposal: Proposal) -> dict[str, Any]:
        if self._configgen is None:
            from arc_ray.configgen import ExperimentConfigGenerator

            self._configgen = ExperimentConfigGenerator(self.study)
        return self._configgen.generate_config(experiment_id, proposal, write=False)

    def _resource_problems(self, prepared: list[dict[str, Any]]) -> list[Violation]:
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
            res: Resources = p["resources"]
            for kind, asked in (("CPU", res.cpu), ("GPU", res.gpu)):
                have = float(total.get(kind, 0.0))
                if asked <= have:
                    continue
                rule = (f"experiment {p['experiment_id']!r} asks for more than the Ray cluster's "
                        f"{have:g} {kind} in all")
                if fixed:
                    problems.append(Violation(f"{p['where']}.resources.{kind.lower()}", asked, rule))
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

    def _launch(self, cycle_id: int, prepared: list[dict[str, Any]]) -> None:
        from arc_ray._tune_jobs import JobState

        name = self._next_run_name(cycle_id)
        token = uuid.uuid4().hex
        uri = join_storage(self.study.tune_dir, name)
        jobs = {p["experiment_id"]: JobState(experiment_id=p["experiment_id"], cycle_id=cycle_id,
                                             config=p["config"], resources=p["resources"],
                                             meta=p["meta"], run_name=name)
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
        from arc_ray._tune_monitor import TuneRun, register_run

        run = TuneRun(token, cycle_id, name, uri, jobs, self._cond, metric=self.study.metric,
                      mode=self.study.mode, timeout_s=self.study.trial_timeout_s)
        with self._cond:
            self._runs[name] = run
            self._jobs.update(jobs)
        register_run(run)
        return run

    def _new_tuner(self, run: TuneRun, jobs: list[JobState]) -> Any:
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from arc_ray._tune_monitor import ArcCallback, ArcScheduler, NoCSVLogger, NoTBXLogger

        inner = None
        if self.study.scheduler is not None:
            from ray.tune.schedulers import ASHAScheduler

            s = self.study.scheduler
            inner = ASHAScheduler(time_attr="training_iteration", metric=self.study.metric,
                                  mode=self.study.mode, max_t=s.max_t, grace_period=s.grace_period,
                                  reduction_factor=s.reduction_factor)
        entries = [{"experiment_id": j.experiment_id, "config": j.config,
                    "resources": j.resources.model_dump()} for j in jobs]
        return tune.Tuner(
            self._trainable(),
            param_space={TRIAL_KEY: tune.grid_search(entries)},
            tune_config=tune.TuneConfig(
                scheduler=ArcScheduler(run.token, inner),
                max_concurrent_trials=self.study.max_concurrent_trials,
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
        cycle_id = _check_cycle_id(cycle_id)
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
        self._loaded_cycles.add(cycle_id)

    def _attach_run(self, cycle_id: int, name: str) -> None:
        from ray import tune

        from arc_ray._tune_jobs import JobState, RunStore

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
        if tune.Tuner.can_restore(uri):
            try:
                tuner = tune.Tuner.restore(uri, trainable=self._trainable(), resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
            except Exception:  # a damaged Tune state must not stop the study
                logger.exception("cannot restore %s; its %d unfinished trials start over", uri,
                                 len(unfinished))
        if tuner is None:  # killed before Tune saved any state (or it is unreadable)
            tuner = self._new_tuner(run, unfinished)
        self._start(run, tuner)

    # ---------------------------------------------------------------- state

    def status(self, experiment_id: str) -> JobStatus:
        """The current status of an experiment."""
        with self._cond:
            return self._get(experiment_id).status

    def status_history(self, experiment_id: str) -> list[tuple[JobStatus, float]]:
        """Every status the experiment went through, with the unix time it got there."""
        with self._cond:
            return list(self._get(experiment_id).history)

    def jobs(self, cycle_id: int | None = None) -> list[Job]:
        """Snapshots of every job (of one cycle, if given), in submission order."""
        with self._cond:
            ids = [e for e, j in self._jobs.items() if cycle_id is None or j.cycle_id == cycle_id]
            return [self._snapshot(e) for e in ids]

    def wait_for_completion(self, experiment_ids: Iterable[str], timeout: float | None = None, *,
                            cancel_on_timeout: bool = True) -> dict[str, JobStatus]:
        """Block until every experiment is finished, or ``timeout`` seconds pass.

        Args:
            experiment_ids: the experiments to wait for.
            timeout: seconds; ``None`` waits as long as it takes.
            cancel_on_timeout: at the timeout, cancel what is still queued or running
                (it ends CANCELLED); with ``False`` just return the statuses (polling).

        Returns:
            each experiment's status when the call returns.
        """
        ids = list(experiment_ids)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            jobs = [self._get(e) for e in ids]
            while not all(j.status.is_terminal() for j in jobs):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(timeout=1.0 if left is None else min(left, 1.0))
            open_ids = [j.experiment_id for j in jobs if not j.status.is_terminal()]
        if open_ids and cancel_on_timeout:
            logger.warning("timeout after %.0f s: cancelling %d trials", timeout or 0, len(open_ids))
            self.cancel(open_ids, reason=f"not finished within the {timeout:g} s wait")
        with self._cond:
            return {e: self._jobs[e].status for e in ids}

    def cancel(self, experiment_ids: Iterable[str], reason: str = "cancelled") -> None:
        """Cancel experiments that have not finished: they end CANCELLED at once.

        A queued trial is then removed from Tune and a running one has its worker
        killed at Tune's next step; finished experiments are left as they are.
        """
        with self._cond:
            for eid in experiment_ids:
                job = self._get(eid)
                if not job.status.is_terminal():
                    self._runs[job.run_name].cancel(job, reason)

    def collect_results(self, experiment_id: str) -> TrialResult:
        """The experiment's :class:`TrialResult`: final once it finished, as it stands before."""
        with self._cond:
            return self._get(experiment_id).to_result().model_copy(deep=True)

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel everything unfinished, wait for the Tune threads (up to ``timeout``), close.

        Nothing already finished is lost: its result stays on disk for :meth:`resume`.
        """
        from arc_ray._tune_monitor import unregister_run

        self._closed = True
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

    def prune_checkpoints(self, cycle_id: int, keep: int = 1) -> int:
        """Delete all but the newest ``keep`` checkpoints of each trial of a finished cycle.

        Call it only once the cycle's results are stored: its Tune experiments are then
        never restored again, so older checkpoints only cost disk (a timm trial writes one
        per epoch). Trials of the cycle still running are left alone.

        Returns:
            how many checkpoint folders were deleted.
        """
        cycle_id = _check_cycle_id(cycle_id)
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
        removed = 0
        for run in _cycle_run_names(self.study.tune_dir, cycle_id):
            trials = fs.get_file_info(pafs.FileSelector(f"{root}/{run}", allow_not_found=True))
            for trial in (t for t in trials if t.type == pafs.FileType.Directory):
                entries = fs.get_file_info(pafs.FileSelector(trial.path, allow_not_found=True))
                checkpoints = sorted(e.path for e in entries if e.type == pafs.FileType.Directory
                                     and e.base_name.startswith("checkpoint_"))
                for path in checkpoints[:-keep]:
                    fs.delete_dir(path)
                    removed += 1
        if removed:
            logger.info("cycle %d: removed %d older checkpoints", cycle_id, removed)
        return removed

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
                       resources=j.resources, status=j.status, tune_experiment=j.run_name)

    def __enter__(self) -> "TrainingExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _check_cycle_id(cycle_id: Any) -> int:
    if isinstance(cycle_id, bool) or not isinstance(cycle_id, int) or cycle_id < 0:
        raise ConfigValidationError([Violation("cycle_id", cycle_id, "must be an int >= 0")])
    return cycle_id


def _cluster_started_here() -> bool:
    """Whether this driver started its Ray itself (a local instance no autoscaler grows)."""
    try:
        from ray._private import worker

        node = worker._global_node
        return bool(node is not None and node.head)
    except Exception:  # a private detail of Ray: when in doubt, do not refuse
        return False


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


__all__ = ["Job", "TrainingExecutor"]
