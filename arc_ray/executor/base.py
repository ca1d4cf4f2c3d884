"""The executor contract: runnable decisions in, one trial result per experiment out.

An executor turns a cycle's runnable decisions (approved or repaired
:class:`~arc_ray.records.Decision` objects, each carrying the validated config the
supervisor generated and wrote) into trials, tracks each to a terminal
:class:`~arc_ray.records.JobStatus` and hands back its :class:`~arc_ray.records.TrialResult`.
:class:`Executor` states the contract; :class:`arc_ray.executor.TrainingExecutor` (Ray Tune
trials) and :class:`arc_ray.executor.InProcessExecutor` (a plain objective called in the
driver) implement it, and ``tests/test_executor_contract.py`` runs the same cases against
both.

Shared here so that both behave alike: :class:`Job` (a snapshot of one submitted
experiment), :func:`prepare_batch` (the checks every submission passes: a refused batch
is refused the same way, naming every problem, with nothing submitted) and
:func:`classify_error` (an exception → its :class:`~arc_ray.records.ErrorClass`, used by
both executors and by the wrapper that runs inside each Tune trial). Nothing here imports
Ray.
"""

from __future__ import annotations

import abc
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from arc_ray.errors import ConfigValidationError, TrainingDivergedError, TrainingOutOfMemoryError, Violation
from arc_ray.records import (
    Decision,
    ErrorClass,
    JobStatus,
    Proposal,
    Resources,
    TrialResult,
    experiment_id_problem,
)

if TYPE_CHECKING:
    from arc_ray.study import StudyConfig


class Job(BaseModel):
    """A submitted experiment, as it stood when this snapshot was taken."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    cycle_id: int
    config: dict[str, Any]  # the validated nested config the trainable receives
    resources: Resources  # what the trial asks of the cluster
    status: JobStatus = JobStatus.PENDING
    tune_experiment: str | None = None  # its Tune experiment's folder under study.tune_dir (Tune only)
    proposer: str | None = None  # the agent that proposed it, where the decision said


class Executor(abc.ABC):
    """Runs a study's trials; the contract the orchestrator relies on.

    **Who calls what, when.** The orchestrator makes one executor per driver (on first
    use, from ``study.executor``) and is its only caller in a study run:

    1. :meth:`resume` first, when the driver picks up a cycle an earlier driver decided
       (the executor reads back what it can of that cycle);
    2. :meth:`submit_batch` once per cycle with the cycle's runnable decisions (and on
       resume, with the decided experiments that never started);
    3. :meth:`poll` in the orchestrator's wait loop, the only wait / timeout loop there
       is, sleeping in :meth:`wait_for_change` between polls;
    4. :meth:`cancel` at the cycle's timeout, for what is still open;
    5. :meth:`collect_results` once per experiment as it turns terminal;
    6. :meth:`prune_checkpoints` once the cycle's results are stored in the history;
    7. :meth:`shutdown` when the driver stops.

    Tests, benchmarks and notebooks may call any method in any order.

    **Configs.** An executor never generates, changes or writes a config: it runs
    exactly the ``config`` each decision carries (plus its ``experiment_id``). Proposals,
    decisions without a config and decisions that do not run are refused
    (:func:`prepare_batch`).

    **Idempotence.** An experiment id the executor already holds for the same cycle is
    not run again: :meth:`submit_batch` returns its job as it stands. An id held for
    another cycle is refused.

    **Failures are data.** Nothing a trial does raises in the caller: a trial that
    raises, diverges, runs out of memory or past ``study.trial_timeout_s`` ends FAILED
    with its :class:`~arc_ray.records.ErrorClass` and message. Methods raise only on the
    caller's mistakes: :class:`~arc_ray.errors.ConfigValidationError` for a batch that
    cannot run (nothing of it is submitted), :class:`~arc_ray.errors.TrainingExecutionError`
    for an id never submitted or a submission after :meth:`shutdown`.

    **Thread safety.** Every public method may be called from any thread at any time.
    Trials run on the executor's own background threads, which change job states under
    :attr:`_cond` and notify it. :class:`Job` and :class:`~arc_ray.records.TrialResult`
    objects handed out are copies the caller may keep or change.

    **Ownership.** The executor owns its jobs and whatever it keeps on disk for resume
    (the Tune executor: its Tune experiment folders under ``study.tune_dir``); configs
    under ``study.experiments_dir`` belong to the supervisor, the history to the
    historian. What survives the driver is the implementation's to say: the Tune
    executor keeps every finished trial's result beside its Tune experiment, the
    in-process one keeps nothing.

    Args:
        study: the study whose trials this executor runs.
    """

    def __init__(self, study: "StudyConfig") -> None:
        self.study = study
        # Every job change happens under this condition and notifies it (wait_for_change).
        self._cond = threading.Condition(threading.RLock())

    # ---------------------------------------------------------------- the contract

    @abc.abstractmethod
    def submit_batch(self, decisions: Sequence[Decision], cycle_id: int) -> list[Job]:
        """Start a cycle's runnable decisions as trials; returns at once.

        Args:
            decisions: approved or repaired :class:`~arc_ray.records.Decision` objects of
                cycle ``cycle_id``, each carrying its validated ``config``.
            cycle_id: the cycle (``>= 0``).

        Returns:
            one :class:`Job` per decision, in order (an id already held: its job as it stands).

        Raises:
            ConfigValidationError: a decision cannot run (see :func:`prepare_batch`); the
                error names every problem and nothing of the batch is submitted.
            TrainingExecutionError: the executor was shut down.
        """

    @abc.abstractmethod
    def poll(self, experiment_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Each experiment's status now; never blocks on a trial.

        Raises:
            TrainingExecutionError: an id was never submitted to this executor.
        """

    @abc.abstractmethod
    def cancel(self, experiment_ids: Iterable[str], reason: str = "cancelled") -> list[str]:
        """Cancel experiments that have not finished; they end CANCELLED.

        An experiment already terminal, or one the implementation cannot stop (the
        in-process executor cannot interrupt a running call), is left as it is.

        Returns:
            the ids actually cancelled, in the order given.

        Raises:
            TrainingExecutionError: an id was never submitted to this executor.
        """

    @abc.abstractmethod
    def collect_results(self, experiment_id: str) -> TrialResult:
        """The experiment's result: final once it is terminal, as it stands before.

        Raises:
            TrainingExecutionError: the id was never submitted to this executor.
        """

    @abc.abstractmethod
    def resume(self, cycle_id: int) -> list[Job]:
        """Pick up a cycle: whatever this executor can recover of it runs on or is read back.

        Safe to call more than once.

        Returns:
            every job of the cycle this executor now holds (``[]`` when it has none).
        """

    @abc.abstractmethod
    def prune_checkpoints(self, cycle_id: int, keep: int = 1) -> int:
        """Delete all but each trial's newest ``keep`` checkpoints of a stored cycle.

        Returns:
            how many checkpoints were deleted (``0`` when the executor keeps none).

        Raises:
            ConfigValidationError: ``cycle_id`` or ``keep`` is out of range.
        """

    def prune_to_best(self, stored_cycles: Iterable[int], keep_ids: Collection[str]) -> int:
        """Across the study's stored cycles, keep only the best model of the ``keep_ids`` trials.

        Every trial of a stored cycle keeps at most its newest checkpoint, reduced to what
        ``arc export`` reads; only the ``keep_ids`` trials keep even that. Cycles with a
        trial still running here are left alone, and the caller passes only cycles stored
        in the history, so nothing a running or resumable trial needs is deleted. The
        default keeps everything (an executor without checkpoints).

        Returns:
            how many checkpoint folders and files were deleted.
        """
        return 0

    @abc.abstractmethod
    def jobs(self, cycle_id: int | None = None) -> list[Job]:
        """Snapshots of every job (of one cycle, if given), in submission order."""

    @abc.abstractmethod
    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel everything unfinished and stop the executor's threads; idempotent.

        Args:
            timeout: seconds to wait for the threads; ``None``: the implementation's default.
        """

    # ---------------------------------------------------------------- shared

    def warm_up(self) -> None:
        """Start, in the background, what the first submission would otherwise wait for
        (the Tune executor's long-lived stream experiment), so that the first trials
        start as soon as they are decided. Optional: the default does nothing; idempotent.
        The rolling loop calls it before it decides its first round."""

    def submit_job(self, decision: Decision, cycle_id: int) -> Job:
        """Submit one decision; see :meth:`submit_batch`."""
        return self.submit_batch([decision], cycle_id)[0]

    def status(self, experiment_id: str) -> JobStatus:
        """The experiment's current status (see :meth:`poll`)."""
        return self.poll([experiment_id])[experiment_id]

    def wait_for_change(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, waking early when any job changes.

        A single bounded wait, not a loop: the caller's loop polls, decides and
        cancels; this only lets it notice a finished trial at once instead of at its
        next poll interval.
        """
        with self._cond:
            self._cond.wait(timeout=max(0.0, timeout))

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


# ---------------------------------------------------------------------- submission


@dataclass
class PreparedTrial:
    """One decision of a batch, checked: what a trial needs to run."""

    experiment_id: str
    config: dict[str, Any]  # the decision's config, with its experiment_id
    resources: Resources
    meta: dict[str, Any] = field(default_factory=dict)  # proposer, proposal_type, risk_level (JSON-safe)
    held: bool = False  # the executor already holds it for this cycle: not run again
    where: str = ""  # its place in the batch, for error messages ("items[3]")


def check_cycle_id(cycle_id: Any) -> int:
    """``cycle_id`` if it is an int ``>= 0``.

    Raises:
        ConfigValidationError: it is not.
    """
    if isinstance(cycle_id, bool) or not isinstance(cycle_id, int) or cycle_id < 0:
        raise ConfigValidationError([Violation("cycle_id", cycle_id, "must be an int >= 0")])
    return cycle_id


def missing_metric(metrics: Mapping[str, Any], reported: Iterable[str], metric: str) -> str | None:
    """Why a trial that ended normally does not count as completed, or ``None`` when it does.

    A trial counts only with a finite value of the study metric (in ``metrics``, the
    numbers it reported); NaN, inf, a string, another name or no report at all make it a
    ``no_metric`` failure, which keeps the metrics it did report.

    Args:
        metrics: the numbers the trial reported (its best or last report).
        reported: every metric name it reported, for the message.
        metric: the study metric.
    """
    value = metrics.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return None
    names = sorted(set(reported))
    if value is not None:
        return f"the study metric {metric!r} is {value!r}, not a finite number"
    if names:
        return f"it never reported the study metric {metric!r} (it reported: {', '.join(names[:10])})"
    return f"it never reported the study metric {metric!r} (no metric at all)"


def prepare_batch(items: Sequence[Any], cycle_id: int, held: Mapping[str, int],
                  default_resources: Resources) -> list[PreparedTrial]:
    """Check every item of a batch; raise once, naming every problem.

    An item runs when it is an approved or repaired :class:`~arc_ray.records.Decision` of
    ``cycle_id`` with a config (a mapping whose ``experiment_id``, if any, is the
    decision's), a safe experiment id, not twice in the batch and not held for another
    cycle. Its resources: the decision's, else its proposal's, else ``default_resources``.

    Args:
        items: the batch, in order.
        cycle_id: the cycle it is submitted to.
        held: experiment id → cycle id of every experiment the executor already holds.
        default_resources: the study's per-trial resources.

    Returns:
        one :class:`PreparedTrial` per item, in order (``held=True`` for one already held).

    Raises:
        ConfigValidationError: with one violation per problem, fields named
            ``items[i].<field>``.
    """
    out: list[PreparedTrial] = []
    problems: list[Violation] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"items[{i}]"
        try:
            trial = _prepare_one(item, cycle_id, default_resources)
        except ConfigValidationError as exc:
            problems += [Violation(f"{where}.{v.field}" if v.field else where, v.value, v.rule)
                         for v in exc.violations]
            continue
        eid = trial.experiment_id
        if eid in seen:
            problems.append(Violation(f"{where}.experiment_id", eid, "appears twice in this batch"))
            continue
        seen.add(eid)
        if eid in held:
            if held[eid] != cycle_id:
                problems.append(Violation(f"{where}.experiment_id", eid,
                                          f"was already submitted in cycle {held[eid]}"))
                continue
            trial.held = True
        trial.where = where
        out.append(trial)
    if problems:
        raise ConfigValidationError(problems, source="submit_batch")
    return out


def _prepare_one(item: Any, cycle_id: int, default_resources: Resources) -> PreparedTrial:
    if isinstance(item, Proposal):
        raise ConfigValidationError([Violation(
            "", "Proposal", "expected an approved Decision with its config; an executor never generates "
                            "configs (the supervisor does, through arc_ray.configgen)")])
    if not isinstance(item, Decision):
        raise ConfigValidationError([Violation("", type(item).__name__,
                                               "expected an approved Decision with its config")])
    eid = item.experiment_id
    if not item.outcome.runs():
        raise ConfigValidationError([Violation("outcome", item.outcome.value,
                                               "only approved or repaired decisions run")])
    if item.cycle_id != cycle_id:
        raise ConfigValidationError([Violation("cycle_id", item.cycle_id,
                                               f"the decision is for cycle {item.cycle_id}, "
                                               f"submitted to cycle {cycle_id}")])
    problem = experiment_id_problem(eid)
    if problem:
        raise ConfigValidationError([Violation("experiment_id", eid, problem)])
    config = item.config
    if config is None:
        raise ConfigValidationError([Violation("config", None, "a decision needs its validated config to run "
                                                               "(an executor never generates one)")])
    if not isinstance(config, dict):
        raise ConfigValidationError([Violation("config", type(config).__name__, "expected a mapping")])
    if config.get("experiment_id", eid) != eid:
        raise ConfigValidationError([Violation("config.experiment_id", config["experiment_id"],
                                               f"does not match the experiment id {eid!r}")])
    proposal = item.proposal
    meta: dict[str, Any] = {}
    if proposal is not None:
        meta = {"proposer": proposal.proposer, "proposal_type": proposal.type.value,
                "risk_level": proposal.risk_level.value}
    resources = item.resources or (proposal.resources if proposal else None) or default_resources
    return PreparedTrial(experiment_id=eid, config={**config, "experiment_id": eid},
                         resources=resources, meta=meta)


# -------------------------------------------------------------------------- errors

_OOM_TEXT = ("out of memory", "outofmemoryerror", "cuda error: out of memory", "cannot allocate memory",
             "trainingoutofmemoryerror", "memoryerror")
_DIVERGED_TEXT = ("trainingdivergederror", "loss is nan", "loss is inf")
_TIMEOUT_TEXT = ("timeouterror", "timed out", "timeout")


def classify_error(error: BaseException | str | None) -> ErrorClass:
    """The :class:`~arc_ray.records.ErrorClass` of an exception, or of an error's text.

    ``TrainingDivergedError`` (any ``FloatingPointError``) → diverged;
    ``TrainingOutOfMemoryError``, ``MemoryError``, any ``*OutOfMemoryError`` or
    "out of memory" → oom; ``TimeoutError`` / "timed out" → timeout; anything else → crash.
    Text (a Tune error's last line, type name included) is read the same way.
    """
    if isinstance(error, BaseException):
        if isinstance(error, (TrainingDivergedError, FloatingPointError)):
            return ErrorClass.DIVERGED
        if isinstance(error, (TrainingOutOfMemoryError, MemoryError)):
            return ErrorClass.OOM
        if "OutOfMemoryError" in type(error).__name__:  # torch.cuda.OutOfMemoryError, ray's
            return ErrorClass.OOM
        if isinstance(error, TimeoutError):
            return ErrorClass.TIMEOUT
        text = f"{type(error).__name__}: {error}"
    else:
        text = error or ""
    low = text.lower()
    # Diverged first: a NaN loss message may mention memory, never the other way round.
    if any(t in low for t in _DIVERGED_TEXT):
        return ErrorClass.DIVERGED
    if any(t in low for t in _OOM_TEXT):
        return ErrorClass.OOM
    if any(t in low for t in _TIMEOUT_TEXT):
        return ErrorClass.TIMEOUT
    return ErrorClass.CRASH


__all__ = ["Executor", "Job", "PreparedTrial", "check_cycle_id", "classify_error", "missing_metric", "prepare_batch"]
