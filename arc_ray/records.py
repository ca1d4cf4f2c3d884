"""The records that travel between ARC's parts.

Every arrow of a cycle (see ``DESIGN.md``) carries one of these pydantic v2 models;
nothing passes untyped dicts between agents. They are plain data: serialisable with
``model_dump(mode="json")``, picklable for Ray, and comparable in tests.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from arc_ray.errors import ConfigValidationError, Violation

# --------------------------------------------------------------------------- ids

EXPERIMENT_ID_MAX_LEN = 64
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def experiment_id_problem(experiment_id: object) -> str | None:
    """Why ``experiment_id`` is not a safe folder name, or ``None`` when it is."""
    if not isinstance(experiment_id, str):
        return f"must be a string, got {type(experiment_id).__name__}"
    if not experiment_id:
        return "must not be empty"
    if len(experiment_id) > EXPERIMENT_ID_MAX_LEN:
        return f"must be at most {EXPERIMENT_ID_MAX_LEN} characters, got {len(experiment_id)}"
    if experiment_id.startswith("."):
        return "must not start with a dot"
    if ".." in experiment_id:
        return "must not contain '..'"
    if not _SAFE_ID.match(experiment_id):
        return "may contain only letters, digits, '_', '.' and '-' (no '/', spaces or other characters)"
    return None


def validate_experiment_id(experiment_id: object) -> str:
    """Return ``experiment_id`` if it is a safe folder name.

    Raises:
        ConfigValidationError: naming the field ``experiment_id`` and the rule broken.
    """
    problem = experiment_id_problem(experiment_id)
    if problem:
        raise ConfigValidationError([Violation("experiment_id", experiment_id, problem)])
    return experiment_id  # type: ignore[return-value]


def _safe_name(value: str) -> str:
    problem = experiment_id_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    return value


# A name that becomes a folder (experiment ids, study names): validated where it is declared.
SafeName = Annotated[str, AfterValidator(_safe_name)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False, frozen=False)


# ------------------------------------------------------------------------- enums


class JobStatus(str, Enum):
    """Where a trial is in its life; ``is_terminal()`` says whether it can still change."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class ErrorClass(str, Enum):
    """Why a trial did not complete."""

    OOM = "oom"
    DIVERGED = "diverged"
    TIMEOUT = "timeout"
    CRASH = "crash"
    CANCELLED = "cancelled"
    NO_METRIC = "no_metric"  # finished without a finite value of the study metric


class ProposalType(str, Enum):
    HYPERPARAMETER_TUNING = "hyperparameter_tuning"
    ARCHITECTURE_CHANGE = "architecture_change"
    AUGMENTATION_CHANGE = "augmentation_change"
    EXPLORATION = "exploration"
    RECOVERY = "recovery"
    BASELINE = "baseline"


class RiskLevel(str, Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class StrategyMode(str, Enum):
    EXPLORE = "explore"
    EXPLOIT = "exploit"
    RECOVER = "recover"


class DecisionOutcome(str, Enum):
    APPROVED = "approved"
    VETOED = "vetoed"
    REPAIRED = "repaired"
    REJECTED = "rejected"

    def runs(self) -> bool:
        """Whether a proposal with this outcome goes on to be trained."""
        return self in (DecisionOutcome.APPROVED, DecisionOutcome.REPAIRED)


# ----------------------------------------------------------------------- records


class Resources(_Record):
    """What one trial asks of the cluster; fractional GPUs are allowed."""

    cpu: float = Field(1.0, ge=0)
    gpu: float = Field(0.0, ge=0)

    def as_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


class Prediction(_Record):
    """A world-model forecast of an experiment's metric (and its risk) before it runs."""

    mean: float
    std: float = Field(ge=0)
    failure_probability: float | None = Field(None, ge=0, le=1)
    expected_improvement: float | None = None
    is_prior: bool = False  # True when there was too little data to fit a model
    feasibility: float | None = Field(None, ge=0, le=1)  # P(outcome constraints met); None without any


class Proposal(_Record):
    """One experiment an agent wants to run, as changes relative to the baseline."""

    experiment_id: SafeName
    type: ProposalType = ProposalType.HYPERPARAMETER_TUNING
    changes: dict[str, Any] = Field(default_factory=dict)
    rationale: str = ""
    proposer: str = "unknown"
    risk_level: RiskLevel = RiskLevel.LOW
    predicted: Prediction | None = None
    resources: Resources | None = None  # None: the study's default per-trial resources
    cycle_id: int | None = None



class Vote(_Record):
    """One agent's opinion of one proposal."""

    agent: str
    experiment_id: str
    approve: bool
    score: float = Field(ge=0, le=1)  # 0 = certainly bad, 1 = certainly good
    weight: float = Field(1.0, ge=0)
    rationale: str = ""


class Decision(_Record):
    """What became of a proposal, who decided it and why. Every decision is persisted."""

    experiment_id: str
    cycle_id: int
    outcome: DecisionOutcome
    decided_by: str
    reason: str
    proposal: Proposal | None = None
    votes: list[Vote] = Field(default_factory=list)
    weighted_score: float | None = None
    repair: dict[str, Any] = Field(default_factory=dict)  # changes the supervisor applied
    config: dict[str, Any] | None = None  # the final, validated config when it runs
    resources: Resources | None = None
    prediction: Prediction | None = None
    rank: int | None = None
    timestamp: float = Field(default_factory=time.time)

    # Named constructors, one per outcome: the proposal's id and forecast are filled in
    # from it, and what must hold for the outcome (a config to run) is asked for.

    @classmethod
    def approved(cls, proposal: Proposal, *, cycle_id: int, decided_by: str, reason: str,
                 config: dict[str, Any], **fields: Any) -> "Decision":
        """The proposal runs as proposed, with ``config`` (the validated, written config)."""
        return cls._about(proposal, DecisionOutcome.APPROVED, cycle_id, decided_by, reason,
                          config=config, **fields)

    @classmethod
    def repaired(cls, proposal: Proposal, *, cycle_id: int, decided_by: str, reason: str,
                 config: dict[str, Any], repair: dict[str, Any], **fields: Any) -> "Decision":
        """The proposal runs with the changes in ``repair`` applied, as ``config``."""
        return cls._about(proposal, DecisionOutcome.REPAIRED, cycle_id, decided_by, reason,
                          config=config, repair=repair, **fields)

    @classmethod
    def vetoed(cls, proposal: Proposal, *, cycle_id: int, decided_by: str, reason: str,
               **fields: Any) -> "Decision":
        """The vote approved the proposal and oversight (or a budget) stopped it."""
        return cls._about(proposal, DecisionOutcome.VETOED, cycle_id, decided_by, reason, **fields)

    @classmethod
    def rejected(cls, experiment_id: str, *, cycle_id: int, decided_by: str, reason: str,
                 proposal: Proposal | None = None, **fields: Any) -> "Decision":
        """The proposal never reached oversight: malformed, invalid, or short of the quorum.

        ``experiment_id`` is separate from the proposal because a proposal with an
        unusable id (or none at all, when its proposer failed) is recorded under another.
        """
        fields.setdefault("prediction", proposal.predicted if proposal is not None else None)
        return cls(experiment_id=experiment_id, cycle_id=cycle_id, outcome=DecisionOutcome.REJECTED,
                   decided_by=decided_by, reason=reason, proposal=proposal, **fields)

    @classmethod
    def _about(cls, proposal: Proposal, outcome: DecisionOutcome, cycle_id: int, decided_by: str,
               reason: str, **fields: Any) -> "Decision":
        fields.setdefault("prediction", proposal.predicted)
        return cls(experiment_id=proposal.experiment_id, cycle_id=cycle_id, outcome=outcome,
                   decided_by=decided_by, reason=reason, proposal=proposal, **fields)


class TrialResult(_Record):
    """The outcome of one trial, as the executor collected it from Ray Tune."""

    experiment_id: str
    cycle_id: int
    status: JobStatus
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)  # the last reported values
    best_metrics: dict[str, float] = Field(default_factory=dict)  # best of the study metric's epoch
    duration_s: float | None = None
    error_class: ErrorClass | None = None
    error_message: str | None = None
    node_ip: str | None = None
    resources: Resources | None = None
    stopped_early: bool = False
    iterations: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    proposer: str | None = None
    proposal_type: ProposalType | None = None
    risk_level: RiskLevel | None = None

    @field_validator("metrics", "best_metrics", mode="before")
    @classmethod
    def _numeric_metrics(cls, v: Any) -> Any:
        # Keep only numbers: Tune results carry strings and dicts we do not store as metrics.
        if isinstance(v, dict):
            return {k: float(x) for k, x in v.items()
                    if isinstance(x, (int, float)) and not isinstance(x, bool)}
        return v

    @model_validator(mode="after")
    def _failed_has_class(self) -> "TrialResult":
        if self.status == JobStatus.FAILED and self.error_class is None:
            self.error_class = ErrorClass.CRASH
        if self.status == JobStatus.CANCELLED and self.error_class is None:
            self.error_class = ErrorClass.CANCELLED
        return self

    def metric(self, name: str) -> float | None:
        """The final value of ``name``, or ``None`` when missing or not finite."""
        value = self.metrics.get(name)
        if value is None or not math.isfinite(value):
            return None
        return value


class Constraint(_Record):
    """A forbidden region of the search space, declared by the user or learned from failures.

    The constrained quantity is the product of ``parameters`` (one parameter in the
    common case; ``batch_size × image_size`` for memory). A config is forbidden when
    every ``when`` condition holds and the quantity lies in ``[low, high]`` (an open
    end is unbounded).
    """

    id: str
    parameters: list[str] = Field(min_length=1)
    low: float | None = None
    high: float | None = None
    when: dict[str, Any] = Field(default_factory=dict)
    reason: str
    error_class: ErrorClass | None = None
    source: str = "declared"  # "declared" (study file) or "learned" (historian)
    n_failed: int = 0
    n_succeeded: int = 0
    cycle_id: int | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> "Constraint":
        if self.low is None and self.high is None:
            raise ValueError(f"constraint {self.id!r} needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"constraint {self.id!r} has low > high")
        return self

    def quantity(self, flat_config: dict[str, Any]) -> float | None:
        """The constrained quantity for a flat config, or ``None`` when a parameter is absent."""
        value = 1.0
        for name in self.parameters:
            x = flat_config.get(name)
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                return None
            value *= float(x)
        return value

    def applies_to(self, flat_config: dict[str, Any]) -> bool:
        return all(flat_config.get(k) == v for k, v in self.when.items())

    def forbids(self, flat_config: dict[str, Any]) -> bool:
        """Whether ``flat_config`` (dotted keys) lies inside this forbidden region."""
        if not self.applies_to(flat_config):
            return False
        q = self.quantity(flat_config)
        if q is None:
            return False
        if self.low is not None and q < self.low:
            return False
        if self.high is not None and q > self.high:
            return False
        return True

    def describe(self) -> str:
        name = " × ".join(self.parameters)
        if self.low is not None and self.high is not None:
            region = f"{self.low:g} ≤ {name} ≤ {self.high:g}"
        elif self.low is not None:
            region = f"{name} ≥ {self.low:g}"
        else:
            region = f"{name} ≤ {self.high:g}"
        cond = ", ".join(f"{k}={v}" for k, v in self.when.items())
        return f"forbidden: {region}" + (f" when {cond}" if cond else "")


class Strategy(_Record):
    """The director's plan for one cycle."""

    mode: StrategyMode
    reason: str
    quotas: dict[str, int] = Field(default_factory=dict)  # proposer name → proposals wanted
    cycle_id: int | None = None


class Pattern(_Record):
    """A parameter value over-represented among the best experiments."""

    parameter: str
    value: Any
    support: int  # how many top-quartile experiments have it
    lift: float  # share among the top quartile / share among all completed
    top_share: float = 0.0
    all_share: float = 0.0


class HistorySummary(_Record):
    """What the historian knows, in the shape the director and proposers plan from."""

    study: str
    metric: str
    mode: str  # "max" or "min"
    n_trials: int = 0
    n_completed: int = 0
    n_failed: int = 0
    n_cycles: int = 0
    last_cycle: int | None = None
    best_value: float | None = None
    best_experiment_id: str | None = None
    best_config: dict[str, Any] | None = None
    best_metrics: dict[str, float] = Field(default_factory=dict)
    trend: float | None = None  # slope of the metric over recent experiments, in its direction
    recent_improvement: float | None = None  # last cycle's gain of the best (rolling: last trials_per_cycle results)
    stagnating: bool = False
    experiments_since_improvement: int = 0
    metric_spread: float | None = None  # interquartile range of the completed values (the director's unit)
    constraints: list[Constraint] = Field(default_factory=list)
    patterns: list[Pattern] = Field(default_factory=list)
    failures_by_class: dict[str, int] = Field(default_factory=dict)
    modes: list[str] = Field(default_factory=list)  # strategy mode of each past cycle, in order
    gpu_hours_used: float = 0.0
    mean_trial_duration_s: float | None = None
    n_feasible: int | None = None  # completed trials meeting the outcome constraints; None without any

    def learned_constraints(self) -> list[Constraint]:
        """The constraints learned from failures (the study's declared ones left out)."""
        return [c for c in self.constraints if c.source != "declared"]


class IntegrationSummary(_Record):
    """What one ``integrate_experiment_results`` call changed."""

    status: str  # "ok", "empty" or "duplicate"
    cycle_id: int
    total: int = 0
    successful: int = 0
    failed: int = 0
    skipped_duplicates: int = 0
    best_metrics: dict[str, float] = Field(default_factory=dict)
    history_updated: bool = False


class CycleReport(_Record):
    """Everything one cycle did, returned by the orchestrator and printed by the CLI."""

    study: str
    cycle_id: int
    strategy: Strategy | None = None
    decisions: list[Decision] = Field(default_factory=list)
    results: list[TrialResult] = Field(default_factory=list)
    integration: IntegrationSummary | None = None
    best_value: float | None = None
    best_experiment_id: str | None = None
    duration_s: float = 0.0
    decision_time_s: float = 0.0
    resumed: bool = False
    offline: bool = False
    stop_reason: str | None = None


# ----------------------------------------------------------------- run outcome


class StopReason(str, Enum):
    """Why :meth:`Orchestrator.run` stopped."""

    TARGET_REACHED = "target_reached"  # the best reached the study's target
    MAX_CYCLES = "max_cycles"  # this run did the cycles it was asked for
    CYCLE_BUDGET = "cycle_budget"  # the study's budget.max_cycles are done
    TRIAL_BUDGET = "trial_budget"  # budget.max_trials trials are in the history
    GPU_BUDGET = "gpu_budget"  # budget.max_gpu_hours are spent
    NO_IMPROVEMENT = "no_improvement"  # early stopping (opt-in): N recover cycles did not improve the best
    ALL_FAILED = "all_failed"  # every trial of a cycle failed with the same error
    NOTHING_TO_RUN = "nothing_to_run"  # stopping.IDLE_CYCLES cycles in a row approved no trial


class RunReport(_Record):
    """What one :meth:`Orchestrator.run` did, and why it stopped."""

    study: str
    cycles: list[CycleReport] = Field(default_factory=list)
    stop_reason: StopReason
    stop_message: str
    best_value: float | None = None
    best_experiment_id: str | None = None
    best_config: dict[str, Any] | None = None
    n_trials: int = 0  # in the whole history
    n_cycles: int = 0  # completed cycles in the whole history
    duration_s: float = 0.0
    history_dir: str = ""


# A frozen dataclass rather than a pydantic record: events never cross a process or get
# stored, and a progress display receives many of them per cycle.
@dataclass(frozen=True)
class CycleEvent:
    """A step of a cycle, for progress displays and hooks (``on_event``).

    ``phase`` is one of ``deciding``, ``decided`` (decisions made, not yet logged),
    ``logged``, ``submitted``, ``progress`` (trial counts changed), ``integrating``
    (results collected, not yet stored), ``integrated`` (stored, cycle not yet
    logged), ``finished``, or ``resuming``.
    """

    cycle_id: int
    phase: str
    counts: Mapping[str, int] = field(default_factory=dict)  # queued / running / done / failed / total
    best_value: float | None = None
    best_experiment_id: str | None = None
    message: str = ""


def count_statuses(statuses: Iterable[JobStatus]) -> dict[str, int]:
    """Trials by progress bucket (queued / running / done / failed / total), for :class:`CycleEvent`."""
    c = {"queued": 0, "running": 0, "done": 0, "failed": 0, "total": 0}
    for s in statuses:
        c["total"] += 1
        if s == JobStatus.RUNNING:
            c["running"] += 1
        elif s == JobStatus.COMPLETED:
            c["done"] += 1
        elif s in (JobStatus.FAILED, JobStatus.CANCELLED):
            c["failed"] += 1
        else:
            c["queued"] += 1
    return c


def count_outcomes(decisions: list[Decision]) -> str:
    """The decisions by outcome in words (``"3 approved, 1 vetoed"``), for progress lines."""
    by: dict[str, int] = {}
    for d in decisions:
        by[d.outcome.value] = by.get(d.outcome.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(by.items())) or "no proposal"


__all__ = [
    "Constraint",
    "CycleEvent",
    "CycleReport",
    "count_outcomes",
    "count_statuses",
    "Decision",
    "DecisionOutcome",
    "ErrorClass",
    "HistorySummary",
    "IntegrationSummary",
    "JobStatus",
    "Pattern",
    "Prediction",
    "Proposal",
    "ProposalType",
    "Resources",
    "RiskLevel",
    "RunReport",
    "StopReason",
    "Strategy",
    "StrategyMode",
    "TrialResult",
    "Vote",
    "experiment_id_problem",
    "validate_experiment_id",
]
