"""ARC on Ray: an autonomous research loop for training models on a Ray cluster."""

from __future__ import annotations

from arc_ray.api import make_study, run_study
from arc_ray.configgen import ExperimentConfigGenerator, get_config_generator
from arc_ray.errors import (
    ArcError,
    ClusterConnectionError,
    ConfigValidationError,
    DataError,
    HistoryError,
    StudyLockedError,
    TrainingDivergedError,
    TrainingExecutionError,
    TrainingOutOfMemoryError,
    Violation,
)
from arc_ray.predict import load_model
from arc_ray.records import (
    Constraint,
    CycleReport,
    Decision,
    DecisionOutcome,
    ErrorClass,
    HistorySummary,
    IntegrationSummary,
    JobStatus,
    Pattern,
    Prediction,
    Proposal,
    ProposalType,
    Resources,
    RiskLevel,
    RunReport,
    StopReason,
    Strategy,
    StrategyMode,
    TrialResult,
    Vote,
)
from arc_ray.space import ParamSpec, SearchSpace, flatten_config, unflatten_config
from arc_ray.study import StudyConfig

__version__ = "0.1.0"

__all__ = [
    # running a study
    "run_study",
    "make_study",
    "StudyConfig",
    "SearchSpace",
    "ParamSpec",
    "flatten_config",
    "unflatten_config",
    "ExperimentConfigGenerator",
    "get_config_generator",
    "load_model",
    # the records a cycle passes along, in the order it makes them
    "HistorySummary",
    "Constraint",
    "Pattern",
    "Strategy",
    "StrategyMode",
    "Proposal",
    "ProposalType",
    "RiskLevel",
    "Prediction",
    "Resources",
    "Vote",
    "Decision",
    "DecisionOutcome",
    "JobStatus",
    "TrialResult",
    "ErrorClass",
    "IntegrationSummary",
    "CycleReport",
    "RunReport",
    "StopReason",
    # errors
    "ArcError",
    "ConfigValidationError",
    "Violation",
    "ClusterConnectionError",
    "DataError",
    "HistoryError",
    "StudyLockedError",
    "TrainingExecutionError",
    "TrainingDivergedError",
    "TrainingOutOfMemoryError",
]
