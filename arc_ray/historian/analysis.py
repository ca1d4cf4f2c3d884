"""What the history says: pure functions over the ``trials`` Arrow table.

Every function takes the table (schema in :mod:`arc_ray.historian.schema`), the metric
name and the study's ``mode`` ("max" or "min"), and returns plain values or records;
none does I/O, so each is tested without Ray or files. "Better", "trend" and "gain"
are always in the study's direction: positive means better, whichever the mode.

Order: experiments are taken in the order they were integrated (``integrated_at``,
ties in row order), which is cycle order.

Every function also takes an optional ``frame``: the table's columns as numpy
(:class:`~arc_ray.historian.frame.Frame`). Without one it is built from the table; the
historian keeps one that grows with each batch, so its summaries of a 100,000-row
history cost milliseconds, and the analyses of one summary share their intermediate
results through the frame's memo.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from arc_ray.historian.frame import Frame
from arc_ray.historian.schema import (
    CONFIG_JSON,
    CONFIG_PREFIX,
    CYCLE_ID,
    DURATION_S,
    ERROR_CLASS,
    EXPERIMENT_ID,
    METRIC_PREFIX,
    RESOURCES_GPU,
    STATUS,
)
from arc_ray.outcomes import OutcomeConstraint
from arc_ray.records import Constraint, ErrorClass, Pattern

COMPLETED = "COMPLETED"
FAILED = "FAILED"

logger = logging.getLogger(__name__)
_WARNED_MISSING: set[str] = set()  # constrained metrics already warned about (once per process)


# ------------------------------------------------------------------ columns


def _sign(mode: str) -> float:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    return 1.0 if mode == "max" else -1.0


def _frame(table: pa.Table, frame: Frame | None) -> Frame:
    if frame is not None:
        if frame.n != table.num_rows:
            raise ValueError(f"frame has {frame.n} rows, the table {table.num_rows}")
        return frame
    return Frame.from_table(table)


def history_order(table: pa.Table, *, frame: Frame | None = None) -> np.ndarray:
    """Row indices in integration order (stable for rows integrated together)."""
    t = _frame(table, frame).floats("integrated_at")
    if t.size < 2 or np.all(t[1:] >= t[:-1]):
        return np.arange(t.size)
    return np.argsort(np.nan_to_num(t, nan=np.inf), kind="stable")


@dataclass(frozen=True)
class Scored:
    """Completed experiments with a finite metric, in history order; ``scores`` higher = better."""

    rows: np.ndarray  # row indices into the table
    values: np.ndarray  # the metric as reported
    scores: np.ndarray  # sign × values
    sign: float


def feasible_rows(table: pa.Table, constraints: Sequence[OutcomeConstraint] = (), *,
                  frame: Frame | None = None) -> np.ndarray:
    """Per row: completed and meeting every outcome constraint (a missing metric never does).

    A constrained metric no completed trial reported is logged once: the study's
    trainable may not report it under that name, and then nothing is feasible.
    """
    fr = _frame(table, frame)
    ok = fr.equals(STATUS, COMPLETED).copy()
    for c in constraints:
        column = METRIC_PREFIX + c.metric
        if not fr.has(column):
            if ok.any() and c.metric not in _WARNED_MISSING:
                _WARNED_MISSING.add(c.metric)
                logger.warning("outcome constraint %s: no trial reports %r, so no trial is feasible; "
                               "check the metric's name", c, c.metric)
            return np.zeros(fr.n, dtype=bool)
        v = fr.floats(column)
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(v) & (v >= c.value if c.op == ">=" else v <= c.value)
    return ok


def scored(table: pa.Table, metric: str, mode: str, *, frame: Frame | None = None,
           constraints: Sequence[OutcomeConstraint] = ()) -> Scored:
    """The completed (and, with ``constraints``, feasible) experiments that can rank, in history order."""
    sign = _sign(mode)
    fr = _frame(table, frame)
    constraints = tuple(constraints)

    def compute() -> Scored:
        values = fr.floats(METRIC_PREFIX + metric)
        keep = fr.equals(STATUS, COMPLETED) & np.isfinite(values)
        if constraints:
            keep = keep & feasible_rows(table, constraints, frame=fr)
        t = fr.floats("integrated_at")
        if t.size < 2 or np.all(t[1:] >= t[:-1]):  # the usual case: rows already in order
            rows = np.flatnonzero(keep)
        else:
            order = history_order(table, frame=fr)
            rows = order[keep[order]]
        vals = values[rows]
        return Scored(rows, vals, sign * vals, sign)

    return fr.memo(("scored", metric, mode, constraints), compute)


def _row(table: pa.Table, i: int) -> dict[str, Any]:
    return table.slice(int(i), 1).to_pylist()[0]


# --------------------------------------------------------------------- best


def best_trial(table: pa.Table, metric: str, mode: str, *,
               frame: Frame | None = None,
               constraints: Sequence[OutcomeConstraint] = ()) -> dict[str, Any] | None:
    """The best completed experiment (earliest on ties) or ``None``.

    Returns:
        ``{"experiment_id", "cycle_id", "value", "config", "metrics"}``; ``config`` is the
        nested config, ``metrics`` every finite final metric of that trial.
    """
    sc = scored(table, metric, mode, frame=frame, constraints=constraints)
    if sc.rows.size == 0:
        return None
    row = _row(table, sc.rows[int(np.argmax(sc.scores))])
    metrics = {k[len(METRIC_PREFIX):]: v for k, v in row.items()
               if k.startswith(METRIC_PREFIX) and v is not None and math.isfinite(v)}
    config = json.loads(row[CONFIG_JSON]) if row.get(CONFIG_JSON) else {}
    return {"experiment_id": row[EXPERIMENT_ID], "cycle_id": row.get(CYCLE_ID),
            "value": metrics[metric], "config": config, "metrics": metrics}


def best_metrics(table: pa.Table, metric: str, mode: str, *, frame: Frame | None = None,
                 constraints: Sequence[OutcomeConstraint] = ()) -> dict[str, float]:
    """Every final metric of the best experiment; empty when none completed."""
    best = best_trial(table, metric, mode, frame=frame, constraints=constraints)
    return best["metrics"] if best else {}


# -------------------------------------------------------------- trajectories


def cycle_summaries(table: pa.Table, metric: str, mode: str, *,
                    frame: Frame | None = None,
                    constraints: Sequence[OutcomeConstraint] = ()) -> list[dict[str, Any]]:
    """One dict per cycle, in cycle order: counts, the cycle's best, the best so far, and
    whether the cycle improved on every earlier one."""
    if table.num_rows == 0:
        return []
    fr = _frame(table, frame)
    sc = scored(table, metric, mode, frame=fr, constraints=constraints)
    cycles = fr.floats(CYCLE_ID)
    completed, failed = fr.equals(STATUS, COMPLETED), fr.equals(STATUS, FAILED)
    score_of = np.full(table.num_rows, -np.inf)
    score_of[sc.rows] = sc.scores
    ids = table.column(EXPERIMENT_ID)
    out, best_so_far = [], -np.inf
    for c in np.unique(cycles[np.isfinite(cycles)]):
        mask = cycles == c
        i = int(np.argmax(np.where(mask, score_of, -np.inf)))
        has_best = mask[i] and np.isfinite(score_of[i])
        improved = bool(has_best and score_of[i] > best_so_far)
        if has_best:
            best_so_far = max(best_so_far, score_of[i])
        out.append({
            "cycle_id": int(c), "n_trials": int(mask.sum()),
            "n_completed": int((mask & completed).sum()), "n_failed": int((mask & failed).sum()),
            "best_value": float(sc.sign * score_of[i]) if has_best else None,
            "best_experiment_id": ids[i].as_py() if has_best else None,
            "best_so_far": float(sc.sign * best_so_far) if np.isfinite(best_so_far) else None,
            "improved": improved,
        })
    return out


def recent_experiments(table: pa.Table, n: int = 10, *, frame: Frame | None = None) -> pa.Table:
    """The last ``n`` experiments integrated, oldest first."""
    order = history_order(table, frame=frame)
    return table.take(pa.array(order[-n:] if n > 0 else order[:0], pa.int64()))


def performance_trend(table: pa.Table, metric: str, mode: str, window: int = 10, *,
                      frame: Frame | None = None,
                      constraints: Sequence[OutcomeConstraint] = ()) -> dict[str, Any]:
    """Least-squares slope of the metric over the last ``window`` completed experiments.

    Returns:
        dict with ``slope`` (metric units per experiment), ``trend`` (the slope in the
        study's direction: > 0 is improving), ``status`` (improving / declining / flat /
        insufficient_data), ``values``, ``mean``, ``best``, ``last``, ``n``.
    """
    sc = scored(table, metric, mode, frame=frame, constraints=constraints)
    values = sc.values[-window:] if window > 0 else sc.values[:0]
    out: dict[str, Any] = {"metric": metric, "mode": mode, "window": window, "n": int(values.size),
                           "values": values.tolist(), "slope": None, "trend": None,
                           "status": "insufficient_data",
                           "mean": float(values.mean()) if values.size else None,
                           "best": float(sc.sign * (sc.sign * values).max()) if values.size else None,
                           "last": float(values[-1]) if values.size else None}
    if values.size >= 2:
        slope = float(np.polyfit(np.arange(values.size, dtype=float), values, 1)[0])
        trend = sc.sign * slope
        out.update(slope=slope, trend=trend,
                   status="improving" if trend > 0 else "declining" if trend < 0 else "flat")
    return out


@dataclass(frozen=True)
class Stagnation:
    """Whether the search has stalled, and the evidence."""

    stagnating: bool
    experiments_since_improvement: int  # completed since the last gain ≥ threshold on the best
    recent_gain: float | None  # best of the window minus best before it (study direction)
    window: int
    threshold: float


def stagnation(table: pa.Table, metric: str, mode: str, threshold: float, window: int, *,
               frame: Frame | None = None,
               constraints: Sequence[OutcomeConstraint] = ()) -> Stagnation:
    """Stagnating: the best of the last ``window`` completed experiments does not beat the
    best before them, or by less than ``threshold`` (in the study's direction; a gain
    counts when it is positive and at least ``threshold``). Needs more than ``window``
    completed experiments; fewer is never stagnation."""
    s = scored(table, metric, mode, frame=frame, constraints=constraints).scores
    n = s.size
    since = 0
    if n:
        prev = np.concatenate([[-np.inf], np.maximum.accumulate(s)[:-1]])
        since = int(n - 1 - np.flatnonzero((s - prev >= threshold) & (s > prev))[-1])
    if window < 1 or n <= window:  # nothing before the window to compare with
        return Stagnation(False, since, None, window, threshold)
    gain = float(s[-window:].max() - s[:-window].max())
    return Stagnation(not (gain > 0 and gain >= threshold), since, gain, window, threshold)


def spread(table: pa.Table, metric: str, mode: str, *, frame: Frame | None = None,
           constraints: Sequence[OutcomeConstraint] = ()) -> float | None:
    """The metric's spread over the completed experiments: the interquartile range (the
    full range where half or more of them tie), ``None`` with fewer than two. The unit
    of the director's scale-free thresholds."""
    s = scored(table, metric, mode, frame=frame, constraints=constraints).scores
    if s.size < 2:
        return None
    q25, q75 = np.quantile(s, [0.25, 0.75])
    return float(q75 - q25) if q75 > q25 else float(s.max() - s.min())


def recent_improvement(table: pa.Table, metric: str, mode: str, *,
                       frame: Frame | None = None,
                       constraints: Sequence[OutcomeConstraint] = (),
                       window: int | None = None) -> float | None:
    """How much the last cycle raised the best (≥ 0), or ``None`` with no earlier best.

    ``window``: instead of the last cycle, the last ``window`` completed experiments in
    history order (rolling decisions, whose rounds hold about one trial each, compare a
    cycle's worth of results, as a batch cycle does).
    """
    fr = _frame(table, frame)
    sc = scored(table, metric, mode, frame=fr, constraints=constraints)
    if window is not None:
        if window < 1 or sc.scores.size <= window:
            return None
        return float(max(sc.scores[-window:].max() - sc.scores[:-window].max(), 0.0))
    cycles = fr.floats(CYCLE_ID)
    if sc.rows.size == 0 or not np.isfinite(cycles).any():
        return None
    last = np.nanmax(cycles)
    before = sc.scores[cycles[sc.rows] < last]
    if before.size == 0:
        return None
    return float(max(sc.scores.max() - before.max(), 0.0))


def failures_by_class(table: pa.Table, *, frame: Frame | None = None) -> dict[str, int]:
    """Failed experiments counted by error class (``unknown`` when none was given)."""
    fr = _frame(table, frame)
    failed = fr.equals(STATUS, FAILED)
    codes, values = fr.codes(ERROR_CLASS)
    counts = np.bincount(codes[failed] + 1, minlength=len(values) + 1)
    out = {v: int(c) for v, c in zip(values, counts[1:]) if c}
    if counts[0]:
        out["unknown"] = int(counts[0])
    return out


def resource_usage(table: pa.Table, *, frame: Frame | None = None) -> tuple[float, float | None]:
    """``(gpu_hours_used, mean_trial_duration_s)`` over every stored trial."""
    fr = _frame(table, frame)
    dur = fr.floats(DURATION_S)
    gpu = np.nan_to_num(fr.floats(RESOURCES_GPU))
    finite = np.isfinite(dur)
    hours = float((dur[finite] * gpu[finite]).sum() / 3600.0)
    return hours, float(dur[finite].mean()) if finite.any() else None


# ------------------------------------------------------------------ patterns


def find_patterns(table: pa.Table, metric: str, mode: str, params: Sequence[str] | None = None, *,
                  top_fraction: float = 0.25, min_rows: int = 8, min_support: int = 2,
                  min_lift: float = 1.2, max_patterns: int = 10,
                  frame: Frame | None = None) -> list[Pattern]:
    """Parameter values over-represented among the best completed experiments.

    The top ``top_fraction`` of completed experiments by the metric is compared with
    all completed ones. Categorical, bool and numeric parameters with at most 8
    distinct values are counted by value; other numeric parameters are binned at the
    quartiles of the completed values and reported as ``[low, high]`` (low inclusive;
    with a kept frame the quartiles are refreshed each time the history grows 10%).

    Returns:
        patterns with ``support`` (top experiments having the value) ≥ ``min_support``
        and ``lift`` (top share / overall share) ≥ ``min_lift``, highest lift first.
    """
    fr = _frame(table, frame)
    sc = scored(table, metric, mode, frame=fr)
    n = sc.rows.size
    if n < min_rows:
        return []
    k = max(1, math.ceil(n * top_fraction))
    # Each row's state: 0 not ranked, 1 ranked, 2 in the top; one bincount per parameter
    # over (code, state) then gives both the overall and the top counts, with no gathers.
    state = np.zeros(fr.n, dtype=np.int64)
    state[sc.rows] = 1
    state[sc.rows[np.argpartition(-sc.scores, k - 1)[:k]]] = 2
    names = [CONFIG_PREFIX + p for p in params] if params is not None else [
        c for c in table.column_names if c.startswith(CONFIG_PREFIX)]
    found: list[Pattern] = []
    for col_name in names:
        if not fr.has(col_name):
            continue
        labels: list[Any]
        if not fr.is_numeric(col_name):
            codes_all, labels = fr.codes(col_name)
        elif fr.small_values(col_name) is not None:
            codes_all, small = fr.small_codes(col_name)
            labels = [int(v) if fr.is_integer(col_name) else float(v) for v in small]
        else:
            codes_all, edges = fr.quartile_bins(col_name, sc.rows, key=(metric, mode))
            vals = fr.floats(col_name)[sc.rows]
            fin = vals[np.isfinite(vals)]
            if fin.size == 0:
                continue
            lo, hi = [float(fin.min()), *edges.tolist()], [*edges.tolist(), float(fin.max())]
            labels = [[a, b] for a, b in zip(lo, hi)]
        if len(labels) < 2:
            continue
        counts = np.bincount((codes_all + 1) * 3 + state, minlength=(len(labels) + 1) * 3)
        counts = counts.reshape(-1, 3)[1:]  # drop the null code
        top_counts = counts[:, 2]
        all_counts = counts[:, 1] + top_counts
        n_all, n_top = int(all_counts.sum()), int(top_counts.sum())
        if n_top == 0:
            continue
        all_share = all_counts / n_all
        top_share = top_counts / n_top
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(all_share > 0, top_share / all_share, 0.0)
        for j in np.flatnonzero((top_counts >= min_support) & (lift >= min_lift)):
            found.append(Pattern(parameter=col_name[len(CONFIG_PREFIX):], value=labels[j],
                                 support=int(top_counts[j]), lift=float(lift[j]),
                                 top_share=float(top_share[j]), all_share=float(all_share[j])))
    found.sort(key=lambda p: (-p.lift, -p.support, p.parameter))
    return found[:max_patterns]


# -------------------------------------------------------- constraint learning


@dataclass(frozen=True)
class ConstraintRule:
    """Which failures bound which quantity: ``error_class`` failures bound the product
    of ``parameters`` from above, separately for each value of ``group_by``."""

    error_class: ErrorClass
    parameters: tuple[str, ...]
    group_by: str | None
    alternatives: tuple[tuple[str, ...], ...] = ()  # other spellings, tried in order


DEFAULT_RULES: tuple[ConstraintRule, ...] = (
    ConstraintRule(ErrorClass.DIVERGED, ("learning_rate",), "optimizer", (("lr",),)),
    ConstraintRule(ErrorClass.OOM, ("batch_size", "image_size"), "model", (("batch_size",),)),
    ConstraintRule(ErrorClass.TIMEOUT, ("epochs",), "model"),
)

_WHAT = {ErrorClass.DIVERGED: "diverged", ErrorClass.OOM: "ran out of memory",
         ErrorClass.TIMEOUT: "timed out"}


def learn_constraints(table: pa.Table, rules: Sequence[ConstraintRule] = DEFAULT_RULES, *,
                      min_failures: int = 2, cycle_id: int | None = None,
                      frame: Frame | None = None) -> list[Constraint]:
    """Forbidden regions learned from failures, by error class.

    For each rule and each value of its ``group_by`` parameter (e.g. each optimizer),
    the failures of that class whose quantity lies above every successful run's
    quantity are the evidence; with at least ``min_failures`` of them, the region
    ``quantity ≥ smallest such failure`` is forbidden. By construction no completed
    experiment lies in it (checked again before returning).
    """
    if table.num_rows == 0:
        return []
    fr = _frame(table, frame)
    completed = fr.equals(STATUS, COMPLETED)
    failed = fr.equals(STATUS, FAILED)
    out: list[Constraint] = []
    for rule in rules:
        params = next((p for p in (rule.parameters, *rule.alternatives)
                       if all(fr.is_numeric(CONFIG_PREFIX + x) for x in p)), None)
        cls_mask = failed & fr.equals(ERROR_CLASS, rule.error_class.value)
        if params is None or cls_mask.sum() < min_failures:
            continue
        q = np.ones(fr.n)
        for p in params:
            q = q * fr.floats(CONFIG_PREFIX + p)
        ok = np.isfinite(q)
        group_col = CONFIG_PREFIX + rule.group_by if rule.group_by else None
        if group_col and fr.has(group_col) and not fr.is_numeric(group_col):
            codes, values = fr.codes(group_col)
            groups = [(codes == j, {rule.group_by: v}) for j, v in enumerate(values)]
        elif group_col and fr.is_numeric(group_col):
            x = fr.floats(group_col)
            groups = [(x == v, {rule.group_by: int(v) if fr.is_integer(group_col) else v})
                      for v in np.unique(x[cls_mask & np.isfinite(x)])]
        else:
            groups = [(np.ones(fr.n, dtype=bool), {})]
        for in_group, when in groups:
            fails = q[cls_mask & in_group & ok]
            if fails.size < min_failures:
                continue
            succ = q[completed & in_group & ok]
            max_ok = succ.max() if succ.size else -np.inf
            above = fails[fails > max_ok]
            if above.size < min_failures:
                continue
            low = float(above.min())
            if (succ >= low).any():  # never forbid a config that already succeeded
                continue
            out.append(_constraint(rule, params, when, low, above.size, succ, cycle_id))
    return out


def _constraint(rule: ConstraintRule, params: tuple[str, ...], when: dict[str, Any], low: float,
                n_failed: int, succ: np.ndarray, cycle_id: int | None) -> Constraint:
    name = " × ".join(params)
    scope = ", ".join(f"{k}={v}" for k, v in when.items())
    runs = f"runs with {scope}" if scope else "runs"
    what = _WHAT.get(rule.error_class, f"failed ({rule.error_class.value})")
    reason = f"{n_failed} {runs} {what} at {name} ≥ {low:g}; "
    reason += (f"all {succ.size} successful {runs} had {name} ≤ {succ.max():g}" if succ.size
               else "no such run has succeeded")
    ident = f"learned:{rule.error_class.value}:{'*'.join(params)}" + (
        ":" + ",".join(f"{k}={v}" for k, v in when.items()) if when else "")
    return Constraint(id=ident, parameters=list(params), low=low, when=when, reason=reason,
                      error_class=rule.error_class, source="learned", n_failed=int(n_failed),
                      n_succeeded=int(succ.size), cycle_id=cycle_id)


__all__ = [
    "ConstraintRule", "DEFAULT_RULES", "Scored", "Stagnation", "best_metrics", "best_trial",
    "cycle_summaries", "failures_by_class", "feasible_rows", "find_patterns", "history_order",
    "learn_constraints",
    "performance_trend", "recent_experiments", "recent_improvement", "resource_usage", "scored", "spread",
    "stagnation",
]
