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
    Strategy,
    StrategyMode,
    TrialResult,
    Vote,
)
from arc_ray.space import ParamSpec, SearchSpace, flatten_config, unflatten_config
from arc_ray.study import StudyConfig

__version__ = "0.1.0"

__all__ = [
    "ArcError",
    "ClusterConnectionError",
    "ConfigValidationError",
    "Constraint",
    "CycleReport",
    "DataError",
    "Decision",
    "DecisionOutcome",
    "ErrorClass",
    "ExperimentConfigGenerator",
    "HistoryError",
    "HistorySummary",
    "IntegrationSummary",
    "JobStatus",
    "ParamSpec",
    "Pattern",
    "Prediction",
    "Proposal",
    "ProposalType",
    "Resources",
    "RiskLevel",
    "SearchSpace",
    "Strategy",
    "StrategyMode",
    "StudyConfig",
    "TrainingDivergedError",
    "TrainingExecutionError",
    "TrainingOutOfMemoryError",
    "TrialResult",
    "Violation",
    "Vote",
    "flatten_config",
    "get_config_generator",
    "load_model",
    "make_study",
    "run_study",
    "unflatten_config",
]
