"""Study configuration: what ``configs/*.yaml`` load into.

A *study* is one research campaign: a trainable, a search space, a baseline config, a
target metric and the settings of the agents that steer it. ``StudyConfig.from_yaml``
is the single way a study is loaded; relative paths in it resolve against the YAML
file's folder, and every problem is raised as :class:`ConfigValidationError` naming the
file, the field and (where YAML gives one) the line.

Configs are nested dicts (``{"augmentation": {"flip": True}}``); the search space and
the history address parameters by dotted names (``augmentation.flip``).
:func:`flatten_config` and :func:`unflatten_config` convert between the two.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.records import Constraint, Resources, experiment_id_problem

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# ---------------------------------------------------------------- nested ⇄ dotted


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``. Lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}``; the inverse of :func:`flatten_config`."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if isinstance(value, Mapping):
            value = unflatten_config(flatten_config(value))
        node[leaf] = value
    return nested


# ------------------------------------------------------------------ search space


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_number_string(value: str, kind: Literal["float", "int"]) -> tuple[Any, str | None]:
    text = value.strip()
    try:
        parsed: float | int = float(text)
    except ValueError:
        return None, f"expected a {kind}, got the string {value!r}, which is not a number"
    if kind == "int":
        if not math.isfinite(parsed) or parsed != int(parsed):
            return None, f"expected an int, got the string {value!r}, which is not a whole number"
        parsed = int(parsed)
    return parsed, None


class ParamSpec(BaseModel):
    """One searchable parameter.

    ``float`` and ``int`` take ``low``/``high`` (inclusive) and ``log``; ``categorical``
    takes ``choices``; ``bool`` takes nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what it is
    type: Literal["float", "int", "categorical", "bool"]
    # --- numeric bounds (float, int)
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample and model on a log scale; needs low > 0
    # --- categorical
    choices: list[Any] | None = None
    # --- documentation
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> "ParamSpec":
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs both low and high")
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError("low and high must be finite")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log-scale parameter needs low > 0")
            if self.choices is not None:
                raise ValueError(f"a {self.type} parameter takes low/high, not choices")
        elif self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list of choices")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError("categorical choices must be unique")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical parameter takes choices, not low/high/log")
        else:  # bool
            if self.low is not None or self.high is not None or self.choices or self.log:
                raise ValueError("a bool parameter takes no low/high/log/choices")
        return self

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Coerce ``value`` to this parameter's type.

        Returns:
            ``(coerced, None)`` when valid, else ``(None, rule broken in words)``.
        """
        if self.type == "bool":
            if isinstance(value, bool):
                return value, None
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true", None
            return None, f"expected a bool, got {type(value).__name__}"
        if self.type == "categorical":
            assert self.choices is not None
            for choice in self.choices:
                if value == choice and type(value) is type(choice) or (
                    _is_number(value) and _is_number(choice) and value == choice
                ):
                    return choice, None
            if isinstance(value, str):
                for choice in self.choices:
                    if not isinstance(choice, str) and str(choice) == value.strip():
                        return choice, None
            shown = ", ".join(map(str, self.choices))
            return None, f"unknown choice; expected one of: {shown}"
        # float / int
        if isinstance(value, bool):
            return None, f"expected a {self.type}, got a bool"
        if isinstance(value, str):
            value, problem = _parse_number_string(value, self.type)  # type: ignore[arg-type]
            if problem:
                return None, problem
        if not _is_number(value):
            return None, f"expected a {self.type}, got {type(value).__name__}"
        if not math.isfinite(value):
            return None, f"must be finite, got {value}"
        if self.type == "int":
            if value != int(value):
                return None, f"expected an int, got {value}"
            value = int(value)
        else:
            value = float(value)
        assert self.low is not None and self.high is not None
        if value < self.low or value > self.high:
            return None, f"out of range [{self.low:g}, {self.high:g}]"
        return value, None

    # The unit cube is where samplers and the world model work.
    def to_unit(self, value: Any) -> float:
        """Map a valid value to [0, 1] (log scale where declared). Categorical: index / (n-1)."""
        if self.type == "bool":
            return 1.0 if value else 0.0
        if self.type == "categorical":
            assert self.choices is not None
            n = len(self.choices)
            return 0.0 if n == 1 else self.choices.index(value) / (n - 1)
        assert self.low is not None and self.high is not None
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (float(value) - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> Any:
        """Inverse of :meth:`to_unit` (categorical/bool/int round to the nearest value)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.type == "bool":
            return u >= 0.5
        if self.type == "categorical":
            assert self.choices is not None
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        assert self.low is not None and self.high is not None
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        if self.type == "int":
            return int(min(max(round(x), math.ceil(self.low)), math.floor(self.high)))
        return float(min(max(x, self.low), self.high))


class SearchSpace(BaseModel):
    """The searchable parameters of a study, by dotted name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, ParamSpec]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "SearchSpace":
        """Build from YAML-shaped data: ``name: {type: ...}``, groups nest (``augmentation: {flip: {type: bool}}``)."""
        params: dict[str, Any] = {}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for key, value in node.items():
                name = f"{prefix}{key}"
                if not isinstance(value, Mapping):
                    raise ValueError(f"{name}: expected a parameter spec (a mapping with 'type')")
                if "type" in value and not isinstance(value["type"], Mapping):
                    params[name] = dict(value)
                else:
                    walk(value, name + ".")

        walk(data, "")
        if not params:
            raise ValueError("the search space declares no parameter")
        return cls(params=params)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> ParamSpec:
        return self.params[name]

    def __len__(self) -> int:
        return len(self.params)

    def validate_flat(self, flat: Mapping[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
        """Check every searchable key of a flat config; unknown keys are not judged here."""
        coerced: dict[str, Any] = {}
        violations: list[Violation] = []
        for name, value in flat.items():
            spec = self.params.get(name)
            if spec is None:
                coerced[name] = value
                continue
            good, problem = spec.check(value)
            if problem:
                violations.append(Violation(name, value, problem))
            else:
                coerced[name] = good
        return coerced, violations

    def sample(self, rng: Any) -> dict[str, Any]:
        """A uniform sample (in each parameter's own scale) as a flat config. ``rng``: numpy Generator."""
        return {name: spec.from_unit(rng.random()) for name, spec in self.params.items()}

    def to_unit(self, flat: Mapping[str, Any]) -> list[float]:
        """The config as a point in the unit cube, in ``names`` order (missing → 0.5)."""
        return [spec.to_unit(flat[n]) if n in flat else 0.5 for n, spec in self.params.items()]

    def to_yaml_dict(self) -> dict[str, Any]:
        return {n: s.model_dump(exclude_defaults=True) for n, s in self.params.items()}


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
    trials_per_cycle: int = Field(4, ge=1)
    gpu_hours_per_cycle: float | None = Field(None, gt=0)
    max_recover_cycles_without_improvement: int = Field(3, ge=1)


class DirectorSettings(BaseModel):
    """How the director picks explore / exploit / recover."""

    model_config = ConfigDict(extra="forbid")

    explore_cycles: int = Field(1, ge=0)  # the first cycles always explore
    stagnation_window: int = Field(8, ge=2)  # completed experiments looked back on
    stagnation_threshold: float = Field(0.005, ge=0)  # smaller gains count as no improvement
    exploit_threshold: float = Field(0.01, ge=0)  # a gain this large in the last cycle → exploit


class VotingSettings(BaseModel):
    """The democratic vote."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(default_factory=lambda: {"critic": 2.0, "director": 1.0})
    default_weight: float = Field(1.0, ge=0)  # for voters not named in weights
    quorum: float = Field(0.5, ge=0, le=1)  # weighted approval share needed
    max_approved: int = Field(4, ge=1)


class ProposerSettings(BaseModel):
    """Which proposers run and how."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] = Field(default_factory=lambda: ["bayesian", "explorer", "architect", "recovery"])
    sampler: Literal["tpe", "gp"] = "tpe"
    proposals_per_cycle: int = Field(6, ge=1)  # before the vote
    min_distance: float = Field(0.05, ge=0)  # explorer: unit-cube distance to anything already run
    exclude: list[str] = Field(default_factory=lambda: ["train_split", "val_split"])  # never searched
    startup_trials: int = Field(8, ge=0)  # bayesian: completed trials before the sampler models
    explorer: Literal["sobol", "uncertainty"] = "sobol"  # space-filling, or highest world-model std


class SupervisorSettings(BaseModel):
    """Final oversight."""

    model_config = ConfigDict(extra="forbid")

    max_failure_probability: float = Field(0.6, ge=0, le=1)  # the risk cap
    duplicate_tolerance: float = Field(1e-3, ge=0)  # unit-cube distance below which configs are the same
    max_gpu_per_trial: float = Field(8.0, ge=0)


class StudyConfig(BaseModel):
    """One research campaign, as loaded from ``configs/<study>.yaml``."""

    model_config = ConfigDict(extra="forbid")

    # --- identity
    name: str  # a safe folder name; history lives under <storage>/<name>/
    description: str = ""
    # --- what is trained and how it is scored
    trainable: str  # "module:function"; a Tune function trainable, or a cheap objective
    config_model: str | None = None  # "module:Class", a pydantic model; default: the trainable module's Config
    metric: str
    mode: Literal["max", "min"] = "max"
    target: float | None = None  # the loop stops once the best reaches it
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
    trial_timeout_s: float | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0)  # Tune retries of a trial whose worker died
    # Checkpoints kept per trial once its cycle is stored in the history (resume needs
    # none then); the newest are kept. None keeps every checkpoint.
    checkpoints_kept: int | None = Field(1, ge=1)
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

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        problem = experiment_id_problem(v)
        if problem:
            raise ValueError(f"study name {v!r} {problem}")
        return v

    @field_validator("target")
    @classmethod
    def _finite_target(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"target must be a finite number, got {v}")
        return v

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
    "ParamSpec",
    "ProposerSettings",
    "SchedulerSettings",
    "SearchSpace",
    "StudyConfig",
    "SupervisorSettings",
    "VotingSettings",
    "flatten_config",
    "join_storage",
    "unflatten_config",
]
