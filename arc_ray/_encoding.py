"""Turning configs and the historian's trials table into numbers the world model fits.

Two jobs, kept apart from the model itself:

* :class:`SpaceEncoder` maps a flat config onto a real vector over the study's
  :class:`~arc_ray.study.SearchSpace`: floats and ints through ``ParamSpec.to_unit``
  (log scale where declared, so ``[low, high]`` → ``[0, 1]``), bools to 0/1 and
  categoricals one-hot. One-hot rather than ``to_unit``'s index because choices have no
  order: with an index, ``adam`` would sit "between" ``sgd`` and ``adamw``. Categoricals
  whose choices are all numbers (batch size 16/32/64, image size) *are* ordered, so they
  take one column, their rank among the sorted choices over ``n - 1``, like an int: one
  column instead of n also keeps the GP's length scales few.
* :func:`read_trials` pulls status, encoded configs and the metric out of a trials table
  (pyarrow, or pandas), reading ``config.<name>`` columns and falling back to parsing
  ``config_json`` for parameters that have no column or a null in it.

A parameter a config does not set is encoded as NaN; the model imputes it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from arc_ray.errors import ConfigValidationError, HistoryError, Violation
from arc_ray.study import flatten_config

if TYPE_CHECKING:
    from arc_ray.study import ParamSpec, SearchSpace

logger = logging.getLogger(__name__)

COMPLETED = "COMPLETED"
FAILED = "FAILED"


class SpaceEncoder:
    """Encodes flat or nested configs as rows of a float matrix over a search space.

    Args:
        space: the study's search space; its parameter order fixes the column order.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # (name, spec, first column, number of columns)
        self._layout: list[tuple[str, ParamSpec, int, int]] = []
        # Numeric categoricals: choice → rank / (n - 1) on the sorted choices.
        self._ranks: dict[str, dict[Any, float]] = {}
        col = 0
        for name, spec in space.params.items():
            width = 1
            if spec.type == "categorical":
                choices = spec.choices or []
                if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
                    ordered = sorted(choices)
                    top = max(len(ordered) - 1, 1)
                    self._ranks[name] = {c: ordered.index(c) / top for c in choices}
                else:
                    width = len(choices)
            self._layout.append((name, spec, col, width))
            col += width
        self.n_features = col
        # Unit-cube scale of each column: a one-hot pair differs in two columns, so
        # 1/sqrt(2) makes "another choice" as far apart as the ends of a numeric range.
        self.distance_scale = np.ones(col)
        for name, spec, start, width in self._layout:
            if spec.type == "categorical" and name not in self._ranks:
                self.distance_scale[start:start + width] = 1 / math.sqrt(2)

    @property
    def groups(self) -> list[tuple[int, int]]:
        """``(first column, number of columns)`` of each parameter, in ``space.names`` order."""
        return [(start, width) for _, _, start, width in self._layout]

    def feature_names(self) -> list[str]:
        """One name per column (``optimizer=adam`` for one-hot columns)."""
        names: list[str] = []
        for name, spec, _, _ in self._layout:
            if spec.type == "categorical" and name not in self._ranks:
                names += [f"{name}={c}" for c in spec.choices or ()]
            else:
                names.append(name)
        return names

    def encode_one(self, flat: Mapping[str, Any]) -> tuple[np.ndarray, list[Violation]]:
        """Encode one flat config; missing parameters stay NaN.

        Numbers outside ``[low, high]`` are encoded past ``[0, 1]`` (the model
        extrapolates) rather than rejected: range is the config generator's rule.

        Returns:
            The row, and the values that cannot be encoded at all (wrong type, unknown
            choice, a non-positive number on a log scale); those columns stay NaN.
        """
        row = np.full(self.n_features, np.nan)
        problems: list[Violation] = []
        for name, spec, start, width in self._layout:
            value = flat.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            good, problem = spec.check(value)
            if problem and spec.type in ("float", "int") and problem.startswith("out of range"):
                good, problem = _out_of_range(spec, value)
            if problem:
                problems.append(Violation(name, value, problem))
                continue
            if name in self._ranks:
                row[start] = self._ranks[name][good]
            elif spec.type == "categorical":
                row[start:start + width] = 0.0
                row[start + (spec.choices or []).index(good)] = 1.0
            elif spec.type in ("float", "int") and not spec.low <= good <= spec.high:  # type: ignore[operator]
                row[start] = _unit_unclipped(spec, good)
            else:
                row[start] = spec.to_unit(good)
        return row, problems

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode candidate configs (nested or flat dotted) strictly.

        Raises:
            ConfigValidationError: a config is not a mapping, or a value cannot be
                encoded; the violation names ``configs[i].<param>``.
        """
        if isinstance(configs, Mapping):
            raise ConfigValidationError([Violation("configs", type(configs).__name__,
                                                   "expected a list of configs, got a single mapping")])
        rows = np.full((len(configs), self.n_features), np.nan)
        violations: list[Violation] = []
        for i, config in enumerate(configs):
            if not isinstance(config, Mapping):
                violations.append(Violation(f"configs[{i}]", type(config).__name__,
                                            "expected a config mapping"))
                continue
            rows[i], problems = self.encode_one(flatten_config(config))
            violations += [Violation(f"configs[{i}].{p.field}", p.value, p.rule) for p in problems]
        if violations:
            raise ConfigValidationError(violations, source="world model")
        return rows


def _out_of_range(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
    """Coerce a number that only broke the range rule; a log scale still needs it > 0."""
    x = float(value) if not isinstance(value, str) else float(value.strip())
    if spec.type == "int" and x != int(x):
        return None, f"expected an int, got {value}"
    if spec.log and x <= 0:
        return None, f"must be > 0 on a log scale, got {value}"
    return x, None


def _unit_unclipped(spec: ParamSpec, x: float) -> float:
    assert spec.low is not None and spec.high is not None
    if spec.high == spec.low:
        return 0.0
    if spec.log:
        return (math.log(x) - math.log(spec.low)) / (math.log(spec.high) - math.log(spec.low))
    return (x - spec.low) / (spec.high - spec.low)


# ------------------------------------------------------------------ trials table


@dataclass
class TrialRows:
    """What the world model needs from a trials table, one entry per row."""

    status: np.ndarray  # str: COMPLETED / FAILED / CANCELLED / ...
    X: np.ndarray  # (n, n_features) encoded configs, NaN where unset
    y: np.ndarray  # (n,) the metric, NaN where missing or not finite
    order: np.ndarray  # (n,) larger = more recent (ended_at, else cycle_id, else row)


def as_arrow(trials: Any) -> pa.Table:
    """Accept a pyarrow Table or a pandas DataFrame.

    Raises:
        HistoryError: ``trials`` is neither.
    """
    if isinstance(trials, pa.Table):
        return trials
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(trials, pd.DataFrame):
        return pa.Table.from_pandas(trials, preserve_index=False)
    raise HistoryError(f"expected the trials as a pyarrow Table or pandas DataFrame, "
                       f"got {type(trials).__name__}")


def read_trials(trials: Any, encoder: SpaceEncoder, metric: str) -> TrialRows:
    """Read status, encoded configs, the metric and recency out of a trials table.

    Args:
        trials: the historian's trials table (pyarrow Table or pandas DataFrame).
        encoder: the search space's encoder.
        metric: the metric name; read from ``metric.<metric>``.

    Raises:
        HistoryError: the table is not a table, has rows but no ``status`` column, or a
            row's ``config_json`` is needed and is not a JSON object.
    """
    table = as_arrow(trials)
    n = table.num_rows
    if n == 0:
        return TrialRows(np.array([], dtype=object), np.empty((0, encoder.n_features)),
                         np.empty(0), np.empty(0))
    if "status" not in table.column_names:
        raise HistoryError("the trials table has no 'status' column; columns: "
                           + ", ".join(table.column_names[:20]))
    status = np.array([str(s).upper() if s is not None else "" for s in table.column("status").to_pylist()],
                      dtype=object)

    columns: dict[str, list[Any]] = {}
    for name in encoder.space.names:
        col = f"config.{name}"
        if col in table.column_names:
            columns[name] = table.column(col).to_pylist()
    need_json = [name for name in encoder.space.names if name not in columns]
    json_col = table.column("config_json").to_pylist() if "config_json" in table.column_names else None

    X = np.full((n, encoder.n_features), np.nan)
    bad = 0
    for i in range(n):
        flat = {name: values[i] for name, values in columns.items()}
        # pandas turns a missing float into NaN; both mean "not in this row's column".
        missing = need_json + [k for k, v in flat.items() if v is None or v != v]
        if missing and json_col is not None and json_col[i]:
            flat.update({k: v for k, v in _parse_config_json(json_col[i], i).items()
                         if k in missing})
        X[i], problems = encoder.encode_one(flat)
        bad += bool(problems)
        if problems:
            logger.debug("trial row %d: cannot encode %s; treated as unset",
                         i, "; ".join(map(str, problems)))
    if bad:
        logger.warning("%d trial row(s) hold values the search space cannot encode "
                       "(e.g. a choice since removed); those parameters are imputed", bad)

    metric_col = f"metric.{metric}"
    if metric_col in table.column_names:
        y = np.array([np.nan if v is None else float(v) for v in table.column(metric_col).to_pylist()])
        y[~np.isfinite(y)] = np.nan
    else:
        y = np.full(n, np.nan)
        if (status == COMPLETED).any():
            logger.warning("the trials table has no %r column: no completed trial can be "
                           "used to fit the metric", metric_col)

    order = np.arange(n, dtype=float)
    for col in ("ended_at", "cycle_id"):
        if col in table.column_names:
            key = np.array([np.nan if v is None else float(v) for v in table.column(col).to_pylist()])
            if np.isfinite(key).any():
                # Row position breaks ties (and orders rows with no timestamp first).
                key = np.where(np.isfinite(key), key, np.nanmin(key) - 1)
                order = np.lexsort((np.arange(n), key)).argsort().astype(float)
                break
    return TrialRows(status, X, y, order)


def _parse_config_json(text: Any, row: int) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"trial row {row}: config_json is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HistoryError(f"trial row {row}: config_json is not a JSON object")
    return flatten_config(data)


def trials_table_from_records(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a trials table in the historian's schema from plain dicts.

    For tests, benchmarks and offline analysis. Each record has ``config`` (nested or
    flat dotted), ``status`` (default COMPLETED) and ``metrics`` (name → value), and
    optionally ``experiment_id``, ``cycle_id``, ``ended_at``, ``error_class``.

    Returns:
        A table with ``experiment_id``, ``cycle_id``, ``status``, one ``config.<name>``
        column per flattened key, ``config_json``, one float64 ``metric.<name>`` column
        per metric, ``error_class`` and ``ended_at``.
    """
    flats = [flatten_config(r.get("config", {})) for r in records]
    config_keys = sorted({k for f in flats for k in f})
    metric_keys = sorted({k for r in records for k in r.get("metrics", {})})
    columns: dict[str, Any] = {
        "experiment_id": pa.array([str(r.get("experiment_id", f"exp-{i:05d}"))
                                   for i, r in enumerate(records)]),
        "cycle_id": pa.array([int(r.get("cycle_id", i)) for i, r in enumerate(records)], pa.int64()),
        "status": pa.array([str(r.get("status", COMPLETED)) for r in records]),
    }
    for key in config_keys:
        columns[f"config.{key}"] = pa.array([f.get(key) for f in flats])
    columns["config_json"] = pa.array([json.dumps(r.get("config", {}), default=str) for r in records])
    for key in metric_keys:
        values = [r.get("metrics", {}).get(key) for r in records]
        columns[f"metric.{key}"] = pa.array([None if v is None else float(v) for v in values], pa.float64())
    columns["error_class"] = pa.array([r.get("error_class") for r in records], pa.string())
    columns["ended_at"] = pa.array([float(r.get("ended_at", i)) for i, r in enumerate(records)], pa.float64())
    return pa.table(columns)


__all__ = ["COMPLETED", "FAILED", "SpaceEncoder", "TrialRows", "as_arrow", "read_trials",
           "trials_table_from_records"]
