"""The history's tables as Arrow: records in, rows out.

``trials`` (one row per finished experiment; what the world model and agents read):

=====================  ========  ====================================================
column                 type      meaning
=====================  ========  ====================================================
experiment_id          string    the experiment (unique; the row key)
cycle_id               int64     the cycle that ran it
status                 string    COMPLETED, FAILED or CANCELLED
proposer               string    the agent that proposed it
proposal_type          string    hyperparameter_tuning, architecture_change, ...
risk_level             string    low, medium, high
config.<dotted key>    typed     one column per flattened config key (bool, int64,
                                 float64 or string; lists/dicts as JSON strings)
config_json            string    the whole nested config as JSON
metric.<name>          float64   the final reported value of each metric (null when
                                 missing or not finite)
best_metrics_json      string    metrics at the best epoch of the study's metric
duration_s             float64   wall time of the trial
error_class            string    oom, diverged, timeout, crash, cancelled (null if ok)
error_message          string
node_ip                string
resources_cpu          float64   what the trial held
resources_gpu          float64
stopped_early          bool      stopped by the scheduler (ASHA)
iterations             int64     reported epochs
started_at, ended_at   float64   unix seconds
integrated_at          float64   unix seconds, when the historian stored it
=====================  ========  ====================================================

Config and metric columns appear as trials bring them; readers unify schemas (a
missing column reads as null). ``decisions``, ``cycles`` and ``constraints`` have
fixed schemas, below.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from arc_ray.errors import HistoryError
from arc_ray.records import Constraint, CycleReport, Decision, Resources, TrialResult
from arc_ray.space import flatten_config

# Column names. Code outside this module names columns through these constants only,
# so a column is renamed (or grepped for) in one place.
CONFIG_PREFIX = "config."  # + a flattened config key: one column per key (trials)
METRIC_PREFIX = "metric."  # + a metric name: its final value (trials)
EXPERIMENT_ID = "experiment_id"
CYCLE_ID = "cycle_id"
STATUS = "status"
PROPOSER = "proposer"
PROPOSAL_TYPE = "proposal_type"
CONFIG_JSON = "config_json"
DURATION_S = "duration_s"
ERROR_CLASS = "error_class"
ERROR_MESSAGE = "error_message"
ITERATIONS = "iterations"
DECISION_JSON = "decision_json"  # decisions: the whole Decision record
MODE = "mode"  # cycles: the director's strategy mode
REASON = "reason"
BEST_VALUE = "best_value"  # cycles: the study's best after the cycle
OFFLINE = "offline"  # cycles: decided only, nothing ran
N_COMPLETED = "n_completed"
N_FAILED = "n_failed"
RESOURCES_GPU = "resources_gpu"

# The trials columns every row has (config.* and metric.* come with the trials).
TRIALS_BASE_SCHEMA = pa.schema([
    (EXPERIMENT_ID, pa.string()), (CYCLE_ID, pa.int64()), (STATUS, pa.string()),
    (PROPOSER, pa.string()), (PROPOSAL_TYPE, pa.string()), ("risk_level", pa.string()),
    (CONFIG_JSON, pa.string()), ("best_metrics_json", pa.string()), (DURATION_S, pa.float64()),
    (ERROR_CLASS, pa.string()), (ERROR_MESSAGE, pa.string()), ("node_ip", pa.string()),
    ("resources_cpu", pa.float64()), (RESOURCES_GPU, pa.float64()), ("stopped_early", pa.bool_()),
    (ITERATIONS, pa.int64()), ("started_at", pa.float64()), ("ended_at", pa.float64()),
    ("integrated_at", pa.float64()),
])

DECISIONS_SCHEMA = pa.schema([
    (EXPERIMENT_ID, pa.string()), (CYCLE_ID, pa.int64()), ("outcome", pa.string()),
    ("decided_by", pa.string()), (REASON, pa.string()), (PROPOSER, pa.string()),
    (PROPOSAL_TYPE, pa.string()), ("risk_level", pa.string()), ("weighted_score", pa.float64()),
    ("rank", pa.int64()), ("n_votes", pa.int64()), ("n_approve", pa.int64()),
    ("predicted_mean", pa.float64()), ("predicted_std", pa.float64()),
    ("failure_probability", pa.float64()), ("resources_cpu", pa.float64()),
    (RESOURCES_GPU, pa.float64()), ("changes_json", pa.string()), ("repair_json", pa.string()),
    (CONFIG_JSON, pa.string()), (DECISION_JSON, pa.string()), ("timestamp", pa.float64()),
    ("logged_at", pa.float64()),
])

CYCLES_SCHEMA = pa.schema([
    (CYCLE_ID, pa.int64()), ("study", pa.string()), (MODE, pa.string()), (REASON, pa.string()),
    ("n_decisions", pa.int64()), ("n_approved", pa.int64()), ("n_results", pa.int64()),
    (N_COMPLETED, pa.int64()), (N_FAILED, pa.int64()), (BEST_VALUE, pa.float64()),
    ("best_experiment_id", pa.string()), (DURATION_S, pa.float64()),
    ("decision_time_s", pa.float64()), ("resumed", pa.bool_()), (OFFLINE, pa.bool_()),
    ("stop_reason", pa.string()), ("strategy_json", pa.string()), ("integration_json", pa.string()),
    ("finished_at", pa.float64()),
])

CONSTRAINTS_SCHEMA = pa.schema([
    ("id", pa.string()), ("parameters", pa.list_(pa.string())), ("low", pa.float64()),
    ("high", pa.float64()), ("when_json", pa.string()), (REASON, pa.string()),
    (ERROR_CLASS, pa.string()), ("source", pa.string()), (N_FAILED, pa.int64()),
    ("n_succeeded", pa.int64()), (CYCLE_ID, pa.int64()), ("active", pa.bool_()),
    ("updated_at", pa.float64()), ("constraint_json", pa.string()),
])


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _enum(x: Any) -> str | None:
    return None if x is None else getattr(x, "value", str(x))


def _dumps(x: Any) -> str:
    return json.dumps(x, default=str, allow_nan=False, sort_keys=True) if x is not None else None


def _safe_json(x: Any) -> str:
    try:
        return _dumps(x)
    except ValueError:  # NaN/inf in a config: JSON has no spelling for them, keep Python's
        return json.dumps(x, default=str, sort_keys=True)


def typed_column(values: Sequence[Any]) -> pa.Array:
    """One config column: bool, int64, float64 or string by what the values are."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int" if -(2**63) <= v < 2**63 else "other")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            kinds.add("other")
    if not kinds:
        return pa.nulls(len(values))
    if kinds == {"bool"}:
        return pa.array(values, pa.bool_())
    if kinds == {"int"}:
        return pa.array(values, pa.int64())
    if kinds <= {"int", "float"}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if kinds == {"str"}:
        return pa.array(values, pa.string())
    return pa.array([None if v is None else v if isinstance(v, str) else _safe_json(v)
                     for v in values], pa.string())


def trials_to_table(results: Sequence[TrialResult], *, integrated_at: float | None = None,
                    default_resources: Resources | None = None) -> pa.Table:
    """Rows of the ``trials`` table for finished results (see the module docstring)."""
    now = time.time() if integrated_at is None else integrated_at
    flats = []
    for r in results:
        flat = flatten_config(r.config)
        flat.pop(EXPERIMENT_ID, None)  # already a column of its own
        flats.append(flat)
    config_keys = sorted(set().union(*flats)) if flats else []
    metric_keys = sorted(set().union(*(r.metrics for r in results))) if results else []
    cols: dict[str, pa.Array] = {}
    res = [r.resources or default_resources for r in results]

    def col(name: str, typ: pa.DataType, values: Iterable[Any]) -> None:
        cols[name] = pa.array(list(values), typ)

    col(EXPERIMENT_ID, pa.string(), (r.experiment_id for r in results))
    col(CYCLE_ID, pa.int64(), (r.cycle_id for r in results))
    col(STATUS, pa.string(), (_enum(r.status) for r in results))
    col(PROPOSER, pa.string(), (r.proposer for r in results))
    col(PROPOSAL_TYPE, pa.string(), (_enum(r.proposal_type) for r in results))
    col("risk_level", pa.string(), (_enum(r.risk_level) for r in results))
    for key in config_keys:
        cols[CONFIG_PREFIX + key] = typed_column([f.get(key) for f in flats])
    col(CONFIG_JSON, pa.string(), (_safe_json(r.config) for r in results))
    for key in metric_keys:
        col(METRIC_PREFIX + key, pa.float64(), (_finite(r.metrics.get(key)) for r in results))
    col("best_metrics_json", pa.string(),
        (_dumps({k: v for k, v in r.best_metrics.items() if _finite(v) is not None}) for r in results))
    col(DURATION_S, pa.float64(), (_finite(r.duration_s) for r in results))
    col(ERROR_CLASS, pa.string(), (_enum(r.error_class) for r in results))
    col(ERROR_MESSAGE, pa.string(), (r.error_message for r in results))
    col("node_ip", pa.string(), (r.node_ip for r in results))
    col("resources_cpu", pa.float64(), (x.cpu if x else None for x in res))
    col(RESOURCES_GPU, pa.float64(), (x.gpu if x else None for x in res))
    col("stopped_early", pa.bool_(), (r.stopped_early for r in results))
    col(ITERATIONS, pa.int64(), (r.iterations for r in results))
    col("started_at", pa.float64(), (r.started_at for r in results))
    col("ended_at", pa.float64(), (r.ended_at for r in results))
    col("integrated_at", pa.float64(), (now for _ in results))
    return pa.table(cols)


def decisions_to_table(decisions: Sequence[Decision], *, logged_at: float | None = None) -> pa.Table:
    """Rows of the ``decisions`` table; ``decision_json`` round-trips the whole record."""
    now = time.time() if logged_at is None else logged_at
    rows = []
    for d in decisions:
        p = d.proposal
        pred = d.prediction or (p.predicted if p else None)
        res = d.resources or (p.resources if p else None)
        rows.append({
            EXPERIMENT_ID: d.experiment_id, CYCLE_ID: d.cycle_id, "outcome": _enum(d.outcome),
            "decided_by": d.decided_by, REASON: d.reason,
            PROPOSER: p.proposer if p else None, PROPOSAL_TYPE: _enum(p.type) if p else None,
            "risk_level": _enum(p.risk_level) if p else None,
            "weighted_score": _finite(d.weighted_score), "rank": d.rank,
            "n_votes": len(d.votes), "n_approve": sum(v.approve for v in d.votes),
            "predicted_mean": _finite(pred.mean) if pred else None,
            "predicted_std": _finite(pred.std) if pred else None,
            "failure_probability": pred.failure_probability if pred else None,
            "resources_cpu": res.cpu if res else None, RESOURCES_GPU: res.gpu if res else None,
            "changes_json": _safe_json(p.changes) if p else None, "repair_json": _safe_json(d.repair),
            CONFIG_JSON: _safe_json(d.config) if d.config is not None else None,
            DECISION_JSON: d.model_dump_json(), "timestamp": d.timestamp, "logged_at": now,
        })
    return pa.Table.from_pylist(rows, schema=DECISIONS_SCHEMA)


def cycle_to_table(report: CycleReport, *, finished_at: float | None = None) -> pa.Table:
    """One row of the ``cycles`` table."""
    s = report.strategy
    integ = report.integration
    row = {
        CYCLE_ID: report.cycle_id, "study": report.study,
        MODE: _enum(s.mode) if s else None, REASON: s.reason if s else report.stop_reason,
        "n_decisions": len(report.decisions),
        "n_approved": sum(d.outcome.runs() for d in report.decisions),
        "n_results": len(report.results),
        N_COMPLETED: sum(r.status.value == "COMPLETED" for r in report.results),
        N_FAILED: sum(r.status.value == "FAILED" for r in report.results),
        BEST_VALUE: _finite(report.best_value), "best_experiment_id": report.best_experiment_id,
        DURATION_S: report.duration_s, "decision_time_s": report.decision_time_s,
        "resumed": report.resumed, OFFLINE: report.offline, "stop_reason": report.stop_reason,
        "strategy_json": s.model_dump_json() if s else None,
        "integration_json": integ.model_dump_json() if integ else None,
        "finished_at": time.time() if finished_at is None else finished_at,
    }
    return pa.Table.from_pylist([row], schema=CYCLES_SCHEMA)


def constraints_to_table(constraints: Sequence[Constraint], *, active: bool,
                         updated_at: float | None = None) -> pa.Table:
    """Rows of the ``constraints`` table (a log: the newest row per ``id`` is current)."""
    now = time.time() if updated_at is None else updated_at
    rows = [{
        "id": c.id, "parameters": list(c.parameters), "low": c.low, "high": c.high,
        "when_json": _safe_json(c.when), REASON: c.reason, ERROR_CLASS: _enum(c.error_class),
        "source": c.source, N_FAILED: c.n_failed, "n_succeeded": c.n_succeeded,
        CYCLE_ID: c.cycle_id, "active": active, "updated_at": now,
        "constraint_json": c.model_dump_json(),
    } for c in constraints]
    return pa.Table.from_pylist(rows, schema=CONSTRAINTS_SCHEMA)


__all__ = [
    "BEST_VALUE", "CONFIG_JSON", "CONFIG_PREFIX", "CONSTRAINTS_SCHEMA", "CYCLES_SCHEMA", "CYCLE_ID",
    "DECISIONS_SCHEMA", "DECISION_JSON", "DURATION_S", "ERROR_CLASS", "ERROR_MESSAGE", "EXPERIMENT_ID",
    "ITERATIONS", "METRIC_PREFIX", "MODE", "N_COMPLETED", "N_FAILED", "OFFLINE", "PROPOSAL_TYPE",
    "PROPOSER", "REASON", "RESOURCES_GPU", "STATUS", "TRIALS_BASE_SCHEMA",
    "constraints_to_table", "cycle_to_table", "decisions_to_table", "trials_to_table",
    "typed_column",
]


# ------------------------------------------------------------------ reading trials back

ENDED_AT = "ended_at"  # trials: unix seconds; orders rows by recency


@dataclass
class DecodedTrials:
    """The columns of a trials table that the planners read, decoded once.

    One entry per row. The agents' :class:`~arc_ray.agents._history.HistoryView` and
    the world model's encoding both build on this, so the table is read one way.
    """

    ids: list[str]  # experiment_id ("row<i>" where the column is missing)
    status: np.ndarray  # object: upper-case status, "" where null
    values: np.ndarray  # float: the metric; NaN where missing or not finite
    config: dict[str, list[Any]]  # searched name → raw values; None where a row has none
    error_class: list[str | None]
    duration_s: np.ndarray  # float; NaN where missing
    order: np.ndarray  # float: larger = more recent (ended_at, else cycle_id, else row)

    @property
    def n(self) -> int:
        return len(self.ids)


def decode_trials(table: pa.Table, names: Sequence[str], metric: str,
                  default_status: str | None = None) -> DecodedTrials:
    """Decode status, the searched parameters, the metric and recency out of a trials table.

    A parameter is read from its ``config.<name>`` column; a row whose column is missing
    or null falls back to the row's ``config_json``.

    Args:
        table: the trials table (any subset of its columns; may be empty).
        names: the searched parameters (dotted) to read.
        metric: the study metric (column ``metric.<metric>``).
        default_status: the status of every row when the table has no ``status``
            column; None makes that an error.

    Raises:
        HistoryError: rows but no ``status`` column (and no ``default_status``), or a
            ``config_json`` that is needed and is not a JSON object.
    """
    n = table.num_rows
    cols = set(table.column_names)

    def floats(name: str) -> np.ndarray:
        if name not in cols:
            return np.full(n, np.nan)
        out = np.array([np.nan if v is None else float(v) for v in table.column(name).to_pylist()], dtype=float)
        out[~np.isfinite(out)] = np.nan
        return out

    ids = [str(x) for x in table.column(EXPERIMENT_ID).to_pylist()] if EXPERIMENT_ID in cols \
        else [f"row{i}" for i in range(n)]
    if STATUS in cols:
        status = np.array([str(s).upper() if s is not None else "" for s in table.column(STATUS).to_pylist()],
                          dtype=object)
    elif n and default_status is None:
        raise HistoryError("the trials table has no 'status' column; columns: "
                           + ", ".join(table.column_names[:20]))
    else:
        status = np.full(n, default_status or "", dtype=object)
    config: dict[str, list[Any]] = {}
    for name in names:
        col = CONFIG_PREFIX + name
        # pandas turns a missing float into NaN; both mean "not in this row's column"
        config[name] = [None if v != v else v for v in table.column(col).to_pylist()] if col in cols \
            else [None] * n
    gaps = [i for i in range(n) if any(config[name][i] is None for name in names)]
    if gaps and CONFIG_JSON in cols:
        texts = table.column(CONFIG_JSON).to_pylist()
        for i in gaps:
            if not texts[i]:
                continue
            flat = _parse_config_json(texts[i], i)
            for name in names:
                if config[name][i] is None:
                    config[name][i] = flat.get(name)
    error_class = [x if x is None else str(x) for x in table.column(ERROR_CLASS).to_pylist()] \
        if ERROR_CLASS in cols else [None] * n
    order = np.arange(n, dtype=float)
    for col in (ENDED_AT, CYCLE_ID):
        key = floats(col)
        if np.isfinite(key).any():
            # Row position breaks ties (and orders rows with no timestamp first).
            key = np.where(np.isfinite(key), key, np.nanmin(key) - 1)
            order = np.lexsort((np.arange(n), key)).argsort().astype(float)
            break
    return DecodedTrials(ids=ids, status=status, values=floats(METRIC_PREFIX + metric), config=config,
                         error_class=error_class, duration_s=floats(DURATION_S), order=order)


def _parse_config_json(text: Any, row: int) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise HistoryError(f"trial row {row}: config_json is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HistoryError(f"trial row {row}: config_json is not a JSON object")
    return flatten_config(data)


__all__ += ["ENDED_AT", "DecodedTrials", "decode_trials"]
