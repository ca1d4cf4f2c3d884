"""Study configuration: what ``configs/*.yaml`` load into.

A *study* is one research campaign: a trainable, a search space, a baseline config, a
target metric and the settings of the agents that steer it. ``StudyConfig.from_yaml``
is the single way a study is loaded; relative paths in it resolve against the YAML
file's folder, and every problem is raised as :class:`ConfigValidationError` naming the
file, the field and (where YAML gives one) the line.

The search space itself (parameters, nested ⇄ dotted configs, the unit cube) lives in
:mod:`arc_ray.space`; this module holds the study's settings and their loading.
"""

from __future__ import annotations

import importlib
import math
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.outcomes import OutcomeConstraint
from arc_ray.records import Constraint, Resources, SafeName
from arc_ray.space import SearchSpace, flatten_config, unflatten_config

logger = logging.getLogger(__name__)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# ------------------------------------------------------------------ study settings


class SchedulerSettings(BaseModel):
    """Early stopping inside a cycle (Ray Tune's ASHA)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha"] = "asha"
    grace_period: int = Field(1, ge=1)  # iterations a trial always gets
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int = Field(100, ge=1)  # iterations after which ASHA stops judging


class BudgetSettings(BaseModel):
    """When the autonomous loop stops, and how much one cycle may spend."""

    model_config = ConfigDict(extra="forbid")

    max_cycles: int | None = Field(None, ge=1)
    max_trials: int | None = Field(None, ge=1)  # over the whole study
    max_gpu_hours: float | None = Field(None, gt=0)  # over the whole study
    trials_per_cycle: int = Field(4, ge=1)  # most trials approved to run in one cycle
    gpu_hours_per_cycle: float | None = Field(None, gt=0)
    # Early stopping, opt-in: a run otherwise spends the budget it was given (max_trials,
    # max_cycles, a run's cycle count) even when recover cycles stop paying off.
    stop_on_no_improvement: bool = False
    max_recover_cycles_without_improvement: int = Field(3, ge=1)  # the early-stopping rule's patience


class DirectorSettings(BaseModel):
    """How the director picks explore / exploit / recover."""

    model_config = ConfigDict(extra="forbid")

    explore_cycles: int = Field(1, ge=0)  # the first cycles always explore
    stagnation_window: int = Field(8, ge=2)  # completed experiments looked back on
    # What counts as a gain. By default any new best (scale-free: ranks, not units). A
    # share of the metric's spread (the interquartile range of the completed values) or a
    # threshold in the metric's own units (which takes precedence) asks for more, e.g. for
    # a noisy metric. Shares of the spread were the default until measured at 100
    # evaluations: a converging search's gains shrink while the spread of all it has tried
    # does not, so long runs sat in recover cycles while the model still improved the best.
    stagnation_share: float = Field(0.0, ge=0)  # of the spread: smaller gains count as no improvement
    exploit_share: float = Field(0.0, ge=0)  # of the spread: a gain this large in the last cycle → exploit
    stagnation_threshold: float | None = Field(None, ge=0)  # in metric units, instead of the share
    exploit_threshold: float | None = Field(None, ge=0)  # in metric units, instead of the share

    def gains(self, spread: float | None) -> tuple[float, float]:
        """``(stagnation, exploit)`` thresholds in the metric's units for a metric ``spread``."""
        scale = spread if spread is not None and math.isfinite(spread) and spread > 0 else 0.0
        return (self.stagnation_threshold if self.stagnation_threshold is not None else self.stagnation_share * scale,
                self.exploit_threshold if self.exploit_threshold is not None else self.exploit_share * scale)


class VotingSettings(BaseModel):
    """The democratic vote."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(default_factory=lambda: {"critic": 2.0, "director": 1.0})
    default_weight: float = Field(1.0, ge=0)  # for voters not named in weights
    quorum: float = Field(0.5, ge=0, le=1)  # weighted approval share needed
    # How many may run per cycle is budget.trials_per_cycle (voting.max_approved, the
    # same cap under an older name, is still read: see StudyConfig._merge_max_approved).


class ProposerSettings(BaseModel):
    """Which proposers run and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] = Field(default_factory=lambda: ["bayesian", "surrogate", "explorer", "architect",
                                                                 "recovery"])
    sampler: Literal["tpe", "gp"] = "tpe"
    # Proposals before the vote; None: max(6, ceil(1.5 × budget.trials_per_cycle)), so
    # the vote has a choice and a batch is filled (resolved when the study loads).
    proposals_per_cycle: int | None = Field(None, ge=1)
    min_distance: float = Field(0.05, ge=0)  # explorer: unit-cube distance to anything already run
    # Searched parameters the proposers leave at the baseline: e.g. the flagship's
    # train_split/val_split, which its trainable's Config requires to sum to 1.
    exclude: list[str] = Field(default_factory=list)
    # bayesian: completed trials before the sampler models (Optuna's default is 10; the
    # explorer's space filling covers the start, so one batch of 4 is enough)
    startup_trials: int = Field(4, ge=0)
    explorer: Literal["sobol", "uncertainty"] = "sobol"  # space-filling, or highest world-model std


class SupervisorSettings(BaseModel):
    """Final oversight."""

    model_config = ConfigDict(extra="forbid")

    max_failure_probability: float = Field(0.6, ge=0, le=1)  # the risk cap
    duplicate_tolerance: float = Field(1e-3, ge=0)  # unit-cube distance below which configs are the same
    max_gpu_per_trial: float = Field(8.0, ge=0)

    @property
    def same_config_distance(self) -> float:
        """``duplicate_tolerance``, above zero: within it a config counts as one already run."""
        return max(self.duplicate_tolerance, 1e-9)


class CheckpointSettings(BaseModel):
    """Which trials keep a model on disk once their cycle is stored."""

    model_config = ConfigDict(extra="forbid")

    # The study's best trials (feasible first, by the study metric) keep their best
    # model, reduced to what `arc export` reads; every other stored trial's checkpoints
    # are deleted. None keeps every checkpoint whole.
    keep_top: int | None = Field(3, ge=1)


def default_proposals_per_cycle(trials_per_cycle: int) -> int:
    """Proposals per cycle when the study sets none: half as many again as may run, at least 6."""
    return max(6, math.ceil(1.5 * trials_per_cycle))


class StudyConfig(BaseModel):
    """One research campaign, as loaded from ``configs/<study>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    # --- identity
    name: SafeName  # a safe folder name; history lives under <storage>/<name>/
    description: str = ""
    # --- what is trained and how it is scored
    trainable: str  # "module:function"; a Tune function trainable, or a cheap objective
    config_model: str | None = None  # "module:Class", a pydantic model; default: the trainable module's Config
    metric: str
    mode: Literal["max", "min"] = "max"
    target: float | None = None  # the loop stops once the best reaches it
    # Bounds other metrics must meet (e.g. sensitivity >= 0.85); the best is the best feasible trial.
    outcome_constraints: list[OutcomeConstraint] = Field(default_factory=list)
    # --- the space searched
    baseline: dict[str, Any]
    search_space: SearchSpace
    constraints: list[Constraint] = Field(default_factory=list)  # declared forbidden regions
    path_keys: list[str] = Field(default_factory=lambda: ["data_dir"])  # baseline keys that are paths
    # --- where results go
    storage: str = "history"  # local folder or pyarrow filesystem URI (s3://…)
    # --- how trials run
    executor: Literal["tune", "inprocess"] = "tune"
    resources: Resources = Field(default_factory=Resources)  # per trial
    max_concurrent_trials: int = Field(2, ge=1)
    # batch: a cycle decides a batch and waits for its last trial before deciding again;
    # rolling: whenever trial slots (max_concurrent_trials) free up, a small decision round
    # fills just those slots while the other trials run on (arc_ray.rolling).
    scheduling: Literal["batch", "rolling"] = "batch"
    trial_timeout_s: float | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0)  # Tune retries of a trial whose worker died
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    scheduler: SchedulerSettings | None = None
    # --- the agents
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    director: DirectorSettings = Field(default_factory=DirectorSettings)
    voting: VotingSettings = Field(default_factory=VotingSettings)
    proposers: ProposerSettings = Field(default_factory=ProposerSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    seed: int = 0
    # --- where it came from (set by from_yaml)
    source_path: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_max_approved(cls, data: Any) -> Any:
        """Accept ``voting.max_approved`` (deprecated) as ``budget.trials_per_cycle``.

        Both capped the trials run per cycle, the smaller one binding; the value carried
        over keeps that: the old cap, or the smaller of both when both are set.
        """
        if not isinstance(data, Mapping):
            return data
        voting = data.get("voting")
        if not isinstance(voting, Mapping) or "max_approved" not in voting:
            return data
        data = dict(data)
        voting = dict(voting)
        cap = voting.pop("max_approved")
        data["voting"] = voting
        budget = data.get("budget")
        budget = dict(budget) if isinstance(budget, Mapping) else {}
        current = budget.get("trials_per_cycle")
        if current is None:
            budget["trials_per_cycle"] = cap
        elif isinstance(cap, int) and isinstance(current, int):
            budget["trials_per_cycle"] = min(cap, current)
        data["budget"] = budget
        message = (f"voting.max_approved is deprecated: it is the same cap as budget.trials_per_cycle; "
                   f"using budget.trials_per_cycle={budget['trials_per_cycle']}")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logger.warning("%s", message)
        return data

    @model_validator(mode="before")
    @classmethod
    def _fold_checkpoints_kept(cls, data: Any) -> Any:
        """Accept ``checkpoints_kept`` (deprecated): each stored trial now keeps its newest
        checkpoint, and ``checkpoints.keep_top`` says how many trials keep one; ``None``
        (keep every checkpoint) still means that."""
        if not isinstance(data, Mapping) or "checkpoints_kept" not in data:
            return data
        data = dict(data)
        kept = data.pop("checkpoints_kept")
        settings = data.get("checkpoints")
        settings = dict(settings) if isinstance(settings, Mapping) else {}
        if kept is None:
            settings.setdefault("keep_top", None)
        data["checkpoints"] = settings
        message = ("checkpoints_kept is deprecated: a stored trial keeps only its newest checkpoint; "
                   f"using checkpoints.keep_top={settings.get('keep_top', 3)} (the trials that keep one)")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logger.warning("%s", message)
        return data

    @model_validator(mode="after")
    def _default_proposals_per_cycle(self) -> "StudyConfig":
        if self.proposers.proposals_per_cycle is None:
            self.proposers.proposals_per_cycle = default_proposals_per_cycle(self.budget.trials_per_cycle)
        return self

    @field_validator("target")
    @classmethod
    def _finite_target(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"target must be a finite number, got {v}")
        return v

    @model_validator(mode="after")
    def _constraints_on_other_metrics(self) -> "StudyConfig":
        for c in self.outcome_constraints:
            if c.metric == self.metric:
                message = (f"outcome constraint {c} bounds the study metric itself; "
                           "the search still maximises it, the bound only marks trials infeasible")
                logger.warning("%s", message)
        return self

    @field_validator("resources")
    @classmethod
    def _some_cpu(cls, v: Resources) -> Resources:
        if v.cpu < 1:
            raise ValueError(f"each trial needs at least one CPU (resources.cpu={v.cpu:g}): "
                             "Ray runs a trial's process on a CPU slot")
        return v

    @field_validator("trainable")
    @classmethod
    def _module_function(cls, v: str) -> str:
        module, _, attr = v.partition(":")
        if not module or not attr:
            raise ValueError(f"expected 'module:function', got {v!r}")
        return v

    @field_validator("search_space", mode="before")
    @classmethod
    def _space(cls, v: Any) -> Any:
        if isinstance(v, Mapping) and "params" not in v:
            return SearchSpace.from_mapping(v)
        return v

    @model_validator(mode="after")
    def _baseline_in_space(self) -> "StudyConfig":
        flat = flatten_config(self.baseline)
        _, violations = self.search_space.validate_flat(flat)
        if violations:
            raise ValueError("baseline breaks the search space: " + "; ".join(map(str, violations)))
        return self

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        """Load a study file; ``baseline`` and ``search_space`` may be inline or file paths.

        Raises:
            ConfigValidationError: the file is missing or malformed, a required key is
                missing, a referenced file is missing, or a value breaks a rule.
        """
        path = Path(path)
        source = str(path)
        data, lines = _load_yaml_mapping(path)
        base = path.resolve().parent
        violations: list[Violation] = []

        for key in ("baseline", "search_space"):
            ref = data.get(key)
            if isinstance(ref, str):
                ref_path = (base / ref).resolve()
                where = f" (line {lines[key]})" if key in lines else ""
                if not ref_path.is_file():
                    violations.append(Violation(key, ref, f"file not found: {ref_path}{where}"))
                    continue
                try:
                    data[key], _ = _load_yaml_mapping(ref_path)
                except ConfigValidationError as exc:
                    violations.extend(exc.violations)
                    continue
                if key == "baseline":
                    data[key] = _resolve_paths(data[key], ref_path.parent, data.get("path_keys", ["data_dir"]))
            elif key == "baseline" and isinstance(ref, Mapping):
                data[key] = _resolve_paths(dict(ref), base, data.get("path_keys", ["data_dir"]))
        # ARC_STORAGE, the shared root a cluster sets on its nodes (cluster.yaml), wins.
        storage = os.environ.get("ARC_STORAGE") or data.get("storage", "history")
        if isinstance(storage, str) and "://" not in storage:
            storage = str((base / storage).resolve())
            name = data.get("name")
            for folder in (Path(storage), Path(storage, name) if isinstance(name, str) else None):
                if folder is not None and folder.exists() and not folder.is_dir():
                    where = f" (line {lines['storage']})" if "storage" in lines else ""
                    violations.append(Violation("storage", str(folder),
                                                f"is a file, not a folder the history can live in{where}"))
                    break
        data["storage"] = storage
        if violations:
            raise ConfigValidationError(violations, source=source)
        data["source_path"] = str(path.resolve())
        return cls.from_dict(data, source=source, lines=lines)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<study>",
                  lines: Mapping[str, int] | None = None) -> "StudyConfig":
        """Validate a study given as a dict (the Python API); errors as ``from_yaml``."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise _to_config_error(exc, source, lines or {}) from None

    # ------------------------------------------------------------------ places

    @property
    def study_dir(self) -> str:
        """``<storage>/<name>``: the study's history, Tune runs and experiment configs."""
        return join_storage(self.storage, self.name)

    @property
    def experiments_dir(self) -> str:
        return join_storage(self.study_dir, "experiments")

    @property
    def tune_dir(self) -> str:
        return join_storage(self.study_dir, "tune")

    @property
    def sign(self) -> float:
        """``+1.0`` when the metric is maximised, ``-1.0`` when minimised.

        The study's direction, held once: ``sign * value`` is larger-is-better everywhere
        (agents, world model, historian, monitors); nothing re-derives it from ``mode``.
        """
        return 1.0 if self.mode == "max" else -1.0

    @property
    def searched_names(self) -> list[str]:
        """The search space's parameters the proposers may change, in space order: all of
        them but ``proposers.exclude`` (which the proposers leave at the baseline)."""
        skip = set(self.proposers.exclude)
        return [n for n in self.search_space.names if n not in skip]

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b`` in this study's direction."""
        return self.sign * a > self.sign * b

    # ----------------------------------------------------------------- imports

    def load_trainable(self) -> Callable[..., Any]:
        """Import the trainable named by ``trainable`` ("module:function").

        Raises:
            ConfigValidationError: the module cannot be imported (missing, or raising on
                import), has no such attribute, or the attribute is not callable.
        """
        fn = _import_object(self.trainable, "trainable", self.source_path)
        if not callable(fn):
            raise ConfigValidationError([Violation("trainable", self.trainable,
                                                   f"is a {type(fn).__name__}, not a function")])
        return fn

    def load_config_model(self) -> type[BaseModel] | None:
        """The trainable's pydantic ``Config`` (or ``config_model``), if it has one."""
        if self.config_model:
            return _import_object(self.config_model, "config_model", self.source_path)
        module = _import_module(self.trainable.partition(":")[0], "trainable", self.source_path)
        model = getattr(module, "Config", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
        return None


def join_storage(root: str, *parts: str) -> str:
    """Join path parts onto a local folder or a URI (``s3://bucket/x``)."""
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def _resolve_paths(baseline: dict[str, Any], base: Path, keys: Iterable[str]) -> dict[str, Any]:
    flat = flatten_config(baseline)
    changed = False
    for key in keys:
        value = flat.get(key)
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            flat[key] = str((base / value).resolve())
            changed = True
    return unflatten_config(flat) if changed else baseline


# A study file is a page of settings; past this it is a mistake or an attack, and is
# refused before it is parsed (a 50 MB file once took 40 s and 2 GB to reject).
MAX_STUDY_FILE_BYTES = 1 << 20


def _load_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Safely load a YAML mapping; returns it and the 1-based line of each top-level key.

    Refuses, each with a :class:`ConfigValidationError` naming the file: a missing file,
    one over :data:`MAX_STUDY_FILE_BYTES`, one that is not UTF-8, malformed YAML, and
    YAML aliases (``*name``): an alias repeats a subtree by reference, and a few
    hundred bytes of nested aliases expand to gigabytes (the "billion laughs").
    """
    source = str(path)
    if not path.is_file():
        raise ConfigValidationError([Violation("file", source, "file not found")], source=source)
    size = path.stat().st_size
    if size > MAX_STUDY_FILE_BYTES:
        raise ConfigValidationError([Violation("file", f"{size:,} bytes", (
            f"a study file may hold at most {MAX_STUDY_FILE_BYTES:,} bytes"))], source=source)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigValidationError([Violation("file", f"byte {exc.start} (line {line})",
                                               "the file is not UTF-8 text")], source=source) from None
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            _refuse_aliases(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _AliasError as exc:
        raise ConfigValidationError([Violation("yaml", None, str(exc))], source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigValidationError(
            [Violation("yaml", None, f"malformed YAML at {where}{problem}")], source=source
        ) from None
    if not isinstance(data, dict):
        raise ConfigValidationError(
            [Violation("yaml", type(data).__name__, "expected a mapping at the top of the file")],
            source=source,
        )
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[str(key_node.value)] = key_node.start_mark.line + 1
    return data, lines


class _AliasError(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__(f"line {mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                         "allowed in a study file; write the value out")


def _refuse_aliases(root: Any) -> None:
    """Raise at the first node reached twice: the composer shares one node per alias, so
    this finds them after one parse and before anything is expanded."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise _AliasError(node.start_mark)
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _to_config_error(exc: ValidationError, source: str, lines: Mapping[str, int]) -> ConfigValidationError:
    violations = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "study"
        rule = err["msg"]
        if err["type"] == "missing":
            rule = "required key is missing"
        elif loc and loc[0] in lines:
            rule += f" (line {lines[loc[0]]})"
        violations.append(Violation(field, err.get("input") if err["type"] != "missing" else None, rule))
    return ConfigValidationError(violations, source=source)


def _import_module(module_name: str, what: str, source_path: str | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if source_path and exc.name == module_name.split(".")[0]:
            folder = str(Path(source_path).parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
                return _import_module(module_name, what, None)
        raise ConfigValidationError(
            [Violation(what, module_name, f"cannot import module: {exc}")]
        ) from None
    except Exception as exc:  # the module itself is broken: say so here, not in every trial
        raise ConfigValidationError(
            [Violation(what, module_name, f"importing the module raised {type(exc).__name__}: {exc}")]
        ) from None


def _import_object(ref: str, what: str, source_path: str | None) -> Any:
    module_name, _, attr = ref.partition(":")
    module = _import_module(module_name, what, source_path)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigValidationError(
            [Violation(what, ref, f"module {module_name!r} has no attribute {attr!r}")]
        ) from None


__all__ = [
    "BudgetSettings",
    "DirectorSettings",
    "ProposerSettings",
    "SchedulerSettings",
    "StudyConfig",
    "SupervisorSettings",
    "VotingSettings",
    "join_storage",
]
