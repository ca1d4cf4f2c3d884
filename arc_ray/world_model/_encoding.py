"""Turning configs and the historian's trials table into numbers the world model fits.

Two jobs, kept apart from the model itself:

* :class:`SpaceEncoder` maps a flat config onto a real vector over the study's
  :class:`~arc_ray.space.SearchSpace`, through the search space's one unit-cube
  encoding (:func:`arc_ray.space.unit_array`: log scale where declared, bools 0/1,
  numeric choices such as batch size 16/32/64 by their rank), except that categoricals
  whose choices are not numbers go one-hot: such choices have no order, and with a
  position ``adam`` would sit "between" ``sgd`` and ``adamw``. Numbers outside
  ``[low, high]`` are encoded past ``[0, 1]`` (the model extrapolates); range is the
  config generator's rule.
* :func:`read_trials` encodes the trials table as decoded by
  :func:`arc_ray.historian.schema.decode_trials` (the reader the agents use too).

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
from arc_ray.historian.schema import (
    CONFIG_JSON,
    CONFIG_PREFIX,
    CYCLE_ID,
    ENDED_AT,
    ERROR_CLASS,
    EXPERIMENT_ID,
    METRIC_PREFIX,
    STATUS,
    decode_trials,
)
from arc_ray.space import flatten_config, unit_array

if TYPE_CHECKING:
    from arc_ray.space import ParamSpec, SearchSpace

logger = logging.getLogger(__name__)

COMPLETED = "COMPLETED"
FAILED = "FAILED"


def _one_hot(spec: ParamSpec) -> bool:
    """Whether a parameter takes one column per choice (categoricals without an order)."""
    return spec.type == "categorical" and not all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices or [])


class SpaceEncoder:
    """Encodes flat or nested configs as rows of a float matrix over a search space.

    Args:
        space: the study's search space; its parameter order fixes the column order.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # (name, spec, first column, number of columns)
        self._layout: list[tuple[str, ParamSpec, int, int]] = []
        col = 0
        for name, spec in space.params.items():
            width = len(spec.choices or []) if _one_hot(spec) else 1
            self._layout.append((name, spec, col, width))
            col += width
        self.n_features = col
        # Unit-cube scale of each column: a one-hot pair differs in two columns, so
        # 1/sqrt(2) makes "another choice" as far apart as the ends of a numeric range.
        self.distance_scale = np.ones(col)
        for _, spec, start, width in self._layout:
            if _one_hot(spec):
                self.distance_scale[start:start + width] = 1 / math.sqrt(2)

    @property
    def groups(self) -> list[tuple[int, int]]:
        """``(first column, number of columns)`` of each parameter, in ``space.names`` order."""
        return [(start, width) for _, _, start, width in self._layout]

    def feature_names(self) -> list[str]:
        """One name per column (``optimizer=adam`` for one-hot columns)."""
        names: list[str] = []
        for name, spec, _, _ in self._layout:
            if _one_hot(spec):
                names += [f"{name}={c}" for c in spec.choices or ()]
            else:
                names.append(name)
        return names

    def encode_columns(self, columns: Mapping[str, Sequence[Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode configs given column-wise (parameter → one raw value per row).

        Returns:
            The ``(n, n_features)`` matrix (NaN where unset or not encodable) and, per
            row, whether it held a value that cannot be encoded (wrong type, unknown
            choice, a non-positive number on a log scale).
        """
        X = np.full((n, self.n_features), np.nan)
        bad = np.zeros(n, dtype=bool)
        for name, spec, start, width in self._layout:
            values = columns.get(name)
            if values is None:
                continue
            given = np.array([v is not None and v == v for v in values], dtype=bool)
            if _one_hot(spec):
                choices = spec.choices or []
                for i in np.flatnonzero(given):
                    good, problem = spec.check(values[i])
                    if problem:
                        bad[i] = True
                        continue
                    X[i, start:start + width] = 0.0
                    X[i, start + choices.index(good)] = 1.0
            else:
                X[:, start] = unit_array(spec, values, beyond="extend")
                bad |= given & np.isnan(X[:, start])
        return X, bad

    def encode_one(self, flat: Mapping[str, Any]) -> tuple[np.ndarray, list[Violation]]:
        """Encode one flat config; missing parameters stay NaN.

        Returns:
            The row, and the values that cannot be encoded at all (wrong type, unknown
            choice, a non-positive number on a log scale); those columns stay NaN.
        """
        X, problems = self._encode_flats([flat])
        return X[0], [p for _, p in problems]

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode candidate configs (nested or flat dotted) strictly.

        Raises:
            ConfigValidationError: a config is not a mapping, or a value cannot be
                encoded; the violation names ``configs[i].<param>``.
        """
        if isinstance(configs, Mapping):
            raise ConfigValidationError([Violation("configs", type(configs).__name__,
                                                   "expected a list of configs, got a single mapping")])
        found: list[tuple[int, Violation]] = []
        flats: list[Mapping[str, Any]] = []
        for i, config in enumerate(configs):
            if isinstance(config, Mapping):
                flats.append(flatten_config(config))
            else:
                found.append((i, Violation(f"configs[{i}]", type(config).__name__, "expected a config mapping")))
                flats.append({})
        X, problems = self._encode_flats(flats)
        found += [(i, Violation(f"configs[{i}].{p.field}", p.value, p.rule)) for i, p in problems]
        if found:
            found.sort(key=lambda t: t[0])  # stable: a row's parameters stay in space order
            raise ConfigValidationError([v for _, v in found], source="world model")
        return X

    def _encode_flats(self, flats: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[tuple[int, Violation]]]:
        """Encode flat configs column by column; the values that cannot be encoded, by row."""
        columns = {name: [f.get(name) for f in flats] for name in self.space.names}
        X, bad = self.encode_columns(columns, len(flats))
        problems = []
        for i in np.flatnonzero(bad):
            for name, spec, start, width in self._layout:
                value = columns[name][i]
                if value is not None and value == value and np.isnan(X[i, start:start + width]).all():
                    problems.append((int(i), Violation(name, value, _why_not(spec, value))))
        return X, problems


def _why_not(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` cannot be encoded (only the range rule is waived for numbers)."""
    _, problem = spec.check(value)
    if problem and problem.startswith("out of range") and spec.log:
        return f"must be > 0 on a log scale, got {value}"
    return problem or "cannot be encoded"


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
    rows = decode_trials(table, encoder.space.names, metric)
    X, bad = encoder.encode_columns(rows.config, rows.n)
    if bad.any():
        logger.warning("%d trial row(s) hold values the search space cannot encode "
                       "(e.g. a choice since removed); those parameters are imputed", int(bad.sum()))
    if rows.n and METRIC_PREFIX + metric not in table.column_names and (rows.status == COMPLETED).any():
        logger.warning("the trials table has no %r column: no completed trial can be "
                       "used to fit the metric", METRIC_PREFIX + metric)
    return TrialRows(rows.status, X, rows.values, rows.order)


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
        EXPERIMENT_ID: pa.array([str(r.get("experiment_id", f"exp-{i:05d}"))
                                   for i, r in enumerate(records)]),
        CYCLE_ID: pa.array([int(r.get("cycle_id", i)) for i, r in enumerate(records)], pa.int64()),
        STATUS: pa.array([str(r.get("status", COMPLETED)) for r in records]),
    }
    for key in config_keys:
        columns[CONFIG_PREFIX + key] = pa.array([f.get(key) for f in flats])
    columns[CONFIG_JSON] = pa.array([json.dumps(r.get("config", {}), default=str) for r in records])
    for key in metric_keys:
        values = [r.get("metrics", {}).get(key) for r in records]
        columns[METRIC_PREFIX + key] = pa.array([None if v is None else float(v) for v in values], pa.float64())
    columns[ERROR_CLASS] = pa.array([r.get("error_class") for r in records], pa.string())
    columns[ENDED_AT] = pa.array([float(r.get("ended_at", i)) for i, r in enumerate(records)], pa.float64())
    return pa.table(columns)


__all__ = ["COMPLETED", "FAILED", "SpaceEncoder", "TrialRows", "as_arrow", "read_trials",
           "trials_table_from_records"]
