"""The trials table as the agents read it: searched parameters in the unit cube.

Every agent plans from the historian's trials table (``config.<dotted>`` columns, a
``config_json`` fallback, ``metric.<name>``, ``status``, ...). :class:`HistoryView`
reads it once per cycle into numpy arrays: the configs as points of the unit cube
(the space samplers, the world model and the duplicate checks share), the metric, and
which rows completed or failed. Distances are root-mean-square over the searched
dimensions, so they lie in [0, 1] whatever the number of parameters.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from arc_ray.study import ParamSpec, SearchSpace, flatten_config


def _choice_key(value: Any) -> tuple[str, Any]:
    # bool is an int in Python and 16 == 16.0: tag values so True, 1 and "1" stay apart
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return ("n", float(value))
    return ("s", str(value))


def _column_values(table: pa.Table, name: str, json_rows: list[dict[str, Any]] | None) -> list[Any] | None:
    col = f"config.{name}"
    if col in table.column_names:
        return table.column(col).to_pylist()
    if json_rows is not None:
        return [row.get(name) for row in json_rows]
    return None


def unit_values(spec: ParamSpec, values: Sequence[Any], default: float) -> np.ndarray:
    """Map raw values of one parameter to [0, 1]; missing or invalid values become ``default``."""
    n = len(values)
    out = np.full(n, default, dtype=float)
    if spec.type == "categorical":
        assert spec.choices is not None
        index = {_choice_key(c): i for i, c in enumerate(spec.choices)}
        denom = max(len(spec.choices) - 1, 1)
        for i, v in enumerate(values):
            j = index.get(_choice_key(v)) if v is not None else None
            if j is not None:
                out[i] = j / denom
        return out
    if spec.type == "bool":
        for i, v in enumerate(values):
            if isinstance(v, (bool, np.bool_)):
                out[i] = 1.0 if v else 0.0
        return out
    arr = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                    for v in values], dtype=float)
    lo, hi = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    with np.errstate(invalid="ignore", divide="ignore"):
        if hi == lo:
            u = np.where(np.isfinite(arr), 0.0, np.nan)
        elif spec.log:
            u = (np.log(arr) - math.log(lo)) / (math.log(hi) - math.log(lo))
        else:
            u = (arr - lo) / (hi - lo)
    ok = np.isfinite(u)
    out[ok] = np.clip(u[ok], 0.0, 1.0)
    return out


def unit_point(space: SearchSpace, flat: Mapping[str, Any], baseline_flat: Mapping[str, Any],
               names: Sequence[str] | None = None) -> np.ndarray:
    """One flat config as a point of the unit cube over ``names`` (default: every searched name)."""
    names = list(names or space.names)
    out = np.empty(len(names))
    for k, name in enumerate(names):
        spec = space[name]
        value = flat.get(name, baseline_flat.get(name))
        default = _baseline_unit(spec, baseline_flat.get(name))
        out[k] = unit_values(spec, [value], default)[0]
    return out


def _baseline_unit(spec: ParamSpec, value: Any) -> float:
    if value is None:
        return 0.5
    good, problem = spec.check(value)
    return 0.5 if problem else spec.to_unit(good)


def rms_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Pairwise RMS distance (in [0, 1]) between rows of ``points`` (m×d) and ``others`` (n×d)."""
    points = np.atleast_2d(points)
    others = np.atleast_2d(others)
    if others.shape[0] == 0 or points.shape[1] == 0:
        return np.full((points.shape[0], others.shape[0]), np.inf if others.shape[0] == 0 else 0.0)
    diff = points[:, None, :] - others[None, :, :]
    return np.sqrt(np.mean(diff * diff, axis=2))


def nearest_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each row of ``points``, the RMS distance to the nearest row of ``others`` (inf if none)."""
    points = np.atleast_2d(points)
    if len(others) == 0:
        return np.full(points.shape[0], np.inf)
    return rms_distance(points, others).min(axis=1)


class HistoryView:
    """The trials table read into arrays over the study's searched parameters.

    Args:
        table: the historian's trials table (any subset of its columns; may be empty).
        space: the study's search space.
        metric: the study metric (column ``metric.<metric>``).
        mode: ``"max"`` or ``"min"``.
        baseline: the study baseline (nested), used where a row lacks a parameter.

    Attributes:
        names: searched parameter names, in search-space order (the unit cube's axes).
        ids: experiment ids, one per row.
        status: status strings.
        values: the metric (NaN where missing or not finite).
        completed: rows that completed with a finite metric.
        failed: rows that failed.
        X: the configs as an ``n × d`` unit-cube matrix.
    """

    def __init__(self, table: pa.Table | None, space: SearchSpace, metric: str, mode: str,
                 baseline: Mapping[str, Any]) -> None:
        self.space = space
        self.metric = metric
        self.mode = mode
        self.baseline_flat = flatten_config(baseline)
        self.names = list(space.names)
        table = table if table is not None else pa.table({})
        n = table.num_rows
        self.n = n
        cols = table.column_names
        self.ids: list[str] = [str(x) for x in table.column("experiment_id").to_pylist()] \
            if "experiment_id" in cols else [f"row{i}" for i in range(n)]
        self.status = np.array([str(x) for x in table.column("status").to_pylist()], dtype=object) \
            if "status" in cols else np.full(n, "COMPLETED", dtype=object)
        mcol = f"metric.{metric}"
        if mcol in cols:
            raw = table.column(mcol).to_pylist()
            self.values = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in raw], dtype=float)
        else:
            self.values = np.full(n, np.nan)
        self.completed = (self.status == "COMPLETED") & np.isfinite(self.values)
        self.failed = self.status == "FAILED"
        self.error_class = [x if x is None else str(x) for x in table.column("error_class").to_pylist()] \
            if "error_class" in cols else [None] * n
        self.duration_s = np.array([np.nan if v is None else float(v) for v in table.column("duration_s").to_pylist()],
                                   dtype=float) if "duration_s" in cols else np.full(n, np.nan)
        json_rows = None
        if n and any(f"config.{name}" not in cols for name in self.names) and "config_json" in cols:
            json_rows = [flatten_config(json.loads(s)) if s else {} for s in table.column("config_json").to_pylist()]
        self._raw: dict[str, list[Any]] = {}
        self.X = np.empty((n, len(self.names)))
        for k, name in enumerate(self.names):
            spec = space[name]
            values = _column_values(table, name, json_rows)
            if values is None:
                values = [self.baseline_flat.get(name)] * n
            self._raw[name] = values
            self.X[:, k] = unit_values(spec, values, _baseline_unit(spec, self.baseline_flat.get(name)))

    # ---------------------------------------------------------------- queries

    @property
    def n_completed(self) -> int:
        return int(self.completed.sum())

    @property
    def n_failed(self) -> int:
        return int(self.failed.sum())

    def failure_rate(self) -> float:
        """The share of finished trials that failed, shrunk towards 1/4 (one failure in
        four pseudo-trials) so that a short history does not read as 0 or 1."""
        done = self.n_completed + self.n_failed
        return (self.n_failed + 1.0) / (done + 4.0)

    def signed_values(self) -> np.ndarray:
        """The metric in the "higher is better" direction."""
        return self.values if self.mode == "max" else -self.values

    def best_index(self) -> int | None:
        """Row of the best completed trial, or ``None`` when none completed."""
        if not self.completed.any():
            return None
        signed = np.where(self.completed, self.signed_values(), -np.inf)
        return int(np.argmax(signed))

    def top_indices(self, fraction: float = 0.25, minimum: int = 1) -> np.ndarray:
        """Rows of the best completed trials (the top ``fraction``, at least ``minimum``)."""
        idx = np.flatnonzero(self.completed)
        if len(idx) == 0:
            return idx
        k = max(minimum, int(math.ceil(fraction * len(idx))))
        order = np.argsort(-self.signed_values()[idx], kind="stable")
        return idx[order[:k]]

    def flat_config(self, i: int) -> dict[str, Any]:
        """Row ``i``'s searched parameters, coerced to the space (invalid values → baseline)."""
        out: dict[str, Any] = {}
        for name in self.names:
            spec = self.space[name]
            good, problem = spec.check(self._raw[name][i]) if self._raw[name][i] is not None else (None, "missing")
            if problem:
                good, problem = spec.check(self.baseline_flat.get(name)) if name in self.baseline_flat else (None, "x")
                if problem:
                    good = spec.from_unit(0.5)
            out[name] = good
        return out

    def raw(self, name: str) -> list[Any]:
        """Row values of one searched parameter as stored (not coerced)."""
        return self._raw[name]

    def unit(self, flat: Mapping[str, Any]) -> np.ndarray:
        """A flat config as a unit-cube point over :attr:`names`."""
        return unit_point(self.space, flat, self.baseline_flat, self.names)

    def axes(self, exclude: Iterable[str] = ()) -> np.ndarray:
        """Column indices of the searched parameters not in ``exclude``."""
        skip = set(exclude)
        return np.array([k for k, n in enumerate(self.names) if n not in skip], dtype=int)
