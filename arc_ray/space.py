"""The search space: what may vary in a study, and the one unit-cube encoding of it.

Configs are nested dicts (``{"augmentation": {"flip": True}}``); the search space and
the history address parameters by dotted names (``augmentation.flip``).
:func:`flatten_config` and :func:`unflatten_config` convert between the two.

:class:`ParamSpec` declares one parameter (float / int / categorical / bool) and
:class:`SearchSpace` the study's set of them. Samplers, distance checks, the world
model and the report all place configs in the unit cube ``[0, 1]^d``, through one map
(:func:`unit_array`, and :meth:`ParamSpec.to_unit` / :meth:`ParamSpec.from_unit` for one
value): numbers linearly or on a log scale between ``low`` and ``high``; bools as 0/1;
categoricals by their position among :attr:`ParamSpec.ordered_choices` over ``n - 1``,
where numeric choices (batch size 16/32/64) are in value order because they *are*
ordered. The world model expands unordered categoricals one-hot on top of this (a
layout choice of its own, see ``arc_ray.world_model._encoding``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from arc_ray.errors import Violation

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

    # The unit cube is where samplers, distances and the world model work.
    @property
    def ordered_choices(self) -> list[Any]:
        """A categorical's choices in unit-cube order: by value when all are numbers, else as declared."""
        choices = list(self.choices or [])
        if choices and all(_is_number(c) for c in choices):
            return sorted(choices)
        return choices

    @property
    def values(self) -> list[Any]:
        """A categorical's choices as declared, a bool's ``[False, True]``; ``[]`` for a number."""
        if self.type == "categorical":
            return list(self.choices or [])
        return [False, True] if self.type == "bool" else []

    def stepped(self, value: Any, step: float) -> Any:
        """A number ``value`` moved by ``step`` in the unit cube, the other way when that
        would leave it (a step off one bound lands inside, not on the bound). An int
        moves by one at least, unless it has nowhere to go."""
        u = self.to_unit(value)
        way = step if 0.0 <= u + step <= 1.0 else -step
        moved = self.from_unit(u + way)
        if self.type == "int" and moved == value and way != 0:
            assert self.low is not None and self.high is not None
            moved = int(min(max(value + (1 if way > 0 else -1), math.ceil(self.low)), math.floor(self.high)))
        return moved

    def to_unit(self, value: Any) -> float:
        """Map a valid value to [0, 1] (see :func:`unit_array`)."""
        return _unit(self, value, "clip")

    def from_unit(self, u: float) -> Any:
        """Inverse of :meth:`to_unit` (categorical/bool/int round to the nearest value)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.type == "bool":
            return u >= 0.5
        if self.type == "categorical":
            ordered = self.ordered_choices
            return ordered[min(int(u * len(ordered)), len(ordered) - 1)]
        assert self.low is not None and self.high is not None
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        if self.type == "int":
            return int(min(max(round(x), math.ceil(self.low)), math.floor(self.high)))
        return float(min(max(x, self.low), self.high))

    def from_unit_array(self, u: np.ndarray) -> tuple[list[Any], np.ndarray]:
        """:meth:`from_unit` over an array, and each value's own unit position.

        The positions are where the snapped values sit (an int's rounding, a choice's
        slot), as :meth:`to_unit` would give them; vectorised for scoring candidates.
        """
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if self.type == "bool":
            on = u >= 0.5
            return on.tolist(), on.astype(float)
        if self.type == "categorical":
            ordered = self.ordered_choices
            idx = np.minimum((u * len(ordered)).astype(int), len(ordered) - 1)
            return [ordered[i] for i in idx], idx / max(len(ordered) - 1, 1)
        assert self.low is not None and self.high is not None
        lo, hi = float(self.low), float(self.high)
        if self.log:
            # math.exp per element, not np.exp: numpy's SIMD exp can differ from libm's in
            # the last bit on some CPUs, and these values must be the ones from_unit gives.
            x = np.array([math.exp(v) for v in (math.log(lo) + u * (math.log(hi) - math.log(lo))).tolist()],
                         dtype=float)
        else:
            x = lo + u * (hi - lo)
        if self.type == "int":
            x = np.clip(np.round(x), math.ceil(lo), math.floor(hi))
            values: list[Any] = [int(v) for v in x]
        else:
            x = np.clip(x, lo, hi)
            values = x.tolist()
        if hi <= lo:
            return values, np.zeros(len(x))
        pos = (np.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) if self.log else (x - lo) / (hi - lo)
        return values, np.clip(pos, 0.0, 1.0)


def unit_array(spec: ParamSpec, values: Sequence[Any],
               beyond: Literal["clip", "extend", "nan"] = "clip") -> np.ndarray:
    """The one unit-cube encoding: raw values of one parameter → ``[0, 1]``.

    Numbers map linearly, or on a log scale where declared, ``low → 0`` and ``high → 1``;
    bools to 0/1; categoricals to their position in :attr:`ParamSpec.ordered_choices`
    over ``n - 1``. Values are coerced as :meth:`ParamSpec.check` does (``"0.01"`` reads
    as a number).

    Args:
        spec: the parameter.
        values: its raw values (from a config, a history column, ...).
        beyond: numbers outside ``[low, high]``: ``"clip"`` to the cube's face,
            ``"extend"`` past it (a model may extrapolate), or ``"nan"``.

    Returns:
        One float per value; NaN where a value is missing (None, NaN) or cannot be
        encoded (wrong type, unknown choice, not positive on a log scale).
    """
    return np.array([_unit(spec, v, beyond) for v in values], dtype=float)


def _unit(spec: ParamSpec, value: Any, beyond: str) -> float:
    # Plain Python per value: the callers encode one config or one history column at a
    # time, where numpy's per-call overhead would cost more than the arithmetic.
    if value is None:
        return math.nan
    if spec.type in ("categorical", "bool"):
        good, problem = spec.check(value)
        if problem:
            return math.nan
        if spec.type == "bool":
            return 1.0 if good else 0.0
        ordered = spec.ordered_choices
        return ordered.index(good) / max(len(ordered) - 1, 1)
    if isinstance(value, str):
        value, problem = _parse_number_string(value, "float")
        if problem:
            return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return math.nan
    x = float(value)
    if not math.isfinite(x) or (spec.type == "int" and x != round(x)):
        return math.nan
    lo, hi = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    if spec.log:
        if x <= 0:
            return math.nan
        u = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) if hi > lo else 0.0
    else:
        u = (x - lo) / (hi - lo) if hi > lo else 0.0
    if 0.0 <= u <= 1.0 or beyond == "extend":
        return u
    return min(max(u, 0.0), 1.0) if beyond == "clip" else math.nan


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

    def middle(self) -> dict[str, Any]:
        """Each parameter at the middle of its range (log-middle on log scales), flat."""
        return {name: spec.from_unit(0.5) for name, spec in self.params.items()}

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

    def from_unit_row(self, names: Sequence[str], row: Iterable[float]) -> dict[str, Any]:
        """A unit-cube point over ``names`` (one coordinate each) as a flat config."""
        return {name: self.params[name].from_unit(float(u)) for name, u in zip(names, row)}

    def from_unit_matrix(self, names: Sequence[str], units: np.ndarray) -> tuple[dict[str, list[Any]], np.ndarray]:
        """Unit-cube points (rows; a column per name) as value columns, and the points
        snapped to the values they take (:meth:`ParamSpec.from_unit_array`)."""
        columns: dict[str, list[Any]] = {}
        snapped = np.empty((len(units), len(names)))
        for k, name in enumerate(names):
            columns[name], snapped[:, k] = self.params[name].from_unit_array(units[:, k])
        return columns, snapped

    def sample(self, rng: Any) -> dict[str, Any]:
        """A uniform sample (in each parameter's own scale) as a flat config. ``rng``: numpy Generator."""
        return {name: spec.from_unit(rng.random()) for name, spec in self.params.items()}


__all__ = ["ParamSpec", "SearchSpace", "flatten_config", "unflatten_config", "unit_array"]
