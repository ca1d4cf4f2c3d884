"""The trials table as the agents read it: searched parameters in the unit cube.

Every agent plans from the historian's trials table, decoded by
:func:`arc_ray.historian.schema.decode_trials` (the reader the world model uses too).
:class:`HistoryView` holds it once per cycle as numpy arrays: the configs as points of
the search space's unit cube (:func:`arc_ray.space.unit_array`, the encoding samplers,
the world model and the duplicate checks share), the metric, and which rows completed
or failed. Distances are root-mean-square over the searched
dimensions, so they lie in [0, 1] whatever the number of parameters.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from arc_ray.historian.schema import decode_trials
from arc_ray.space import ParamSpec, SearchSpace, flatten_config, unit_array


def unit_point(space: SearchSpace, flat: Mapping[str, Any], baseline_flat: Mapping[str, Any],
               names: Sequence[str] | None = None) -> np.ndarray:
    """One flat config as a point of the unit cube over ``names`` (default: every searched name).

    A parameter the config lacks takes the baseline's value; one that cannot be encoded
    takes the baseline's position (the cube's centre when the baseline has none).
    """
    names = list(names or space.names)
    out = np.empty(len(names))
    for k, name in enumerate(names):
        spec = space[name]
        out[k] = _units(spec, [flat.get(name, baseline_flat.get(name))], baseline_flat.get(name))[0]
    return out


def _units(spec: ParamSpec, values: Sequence[Any], baseline: Any) -> np.ndarray:
    """:func:`~arc_ray.space.unit_array` clipped to the cube, gaps at the baseline's position."""
    u = unit_array(spec, values, beyond="clip")
    if np.isnan(u).any():
        fill = unit_array(spec, [baseline], beyond="nan")[0] if baseline is not None else np.nan
        u[np.isnan(u)] = 0.5 if np.isnan(fill) else fill
    return u


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
        sign: the study's direction (``StudyConfig.sign``: +1 maximise, -1 minimise).
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

    def __init__(self, table: pa.Table | None, space: SearchSpace, metric: str, sign: float,
                 baseline: Mapping[str, Any]) -> None:
        self.space = space
        self.metric = metric
        self.sign = float(sign)
        self.baseline_flat = flatten_config(baseline)
        self.names = list(space.names)
        rows = decode_trials(table if table is not None else pa.table({}), self.names, metric,
                             default_status="COMPLETED")
        self.n = rows.n
        self.ids = rows.ids
        self.status = rows.status
        self.values = rows.values
        self.completed = (self.status == "COMPLETED") & np.isfinite(self.values)
        self.failed = self.status == "FAILED"
        self.error_class = rows.error_class
        self.duration_s = rows.duration_s
        self._raw: dict[str, list[Any]] = {}
        self.X = np.empty((self.n, len(self.names)))
        for k, name in enumerate(self.names):
            # a row without the parameter ran with the baseline's value
            values = [self.baseline_flat.get(name) if v is None else v for v in rows.config[name]]
            self._raw[name] = values
            self.X[:, k] = _units(space[name], values, self.baseline_flat.get(name))

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
        return self.sign * self.values

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

    def baseline_ran(self, tolerance: float) -> bool:
        """Whether a trial (any status) ran the baseline: within ``tolerance`` of it in the unit cube."""
        return self.ran_near(self.unit(self.baseline_flat), tolerance)

    def ran_near(self, x: np.ndarray, tolerance: float, picked: Sequence[np.ndarray] = ()) -> bool:
        """Whether the unit-cube point ``x`` lies within ``tolerance`` (RMS) of a trial of any
        status, or of one of the points ``picked`` (this cycle's): the supervisor's
        duplicate rule, which refuses such a config."""
        d = float(nearest_distance(x[None, :], self.X)[0])
        if len(picked):
            d = min(d, float(nearest_distance(x[None, :], np.vstack(picked))[0]))
        return d <= tolerance

    def axes(self, exclude: Iterable[str] = ()) -> np.ndarray:
        """Column indices of the searched parameters not in ``exclude``."""
        skip = set(exclude)
        return np.array([k for k, n in enumerate(self.names) if n not in skip], dtype=int)
