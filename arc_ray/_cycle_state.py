"""The loop's bookkeeping, read from the history: what it returns, when it stops, resume state.

Pure functions over the historian's tables and records (no Ray), so the stop rules and
the resume logic are tested without a cluster; :mod:`arc_ray.orchestrator` drives them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from arc_ray._io import atomic_write_text as write_text, read_text
from arc_ray.records import (
    CycleReport,
    Decision,
    DecisionOutcome,
    ErrorClass,
    HistorySummary,
    JobStatus,
    TrialResult,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from arc_ray.study import StudyConfig


# ------------------------------------------------------------------ run outcome


class StopReason(str, Enum):
    """Why :meth:`Orchestrator.run` stopped."""

    TARGET_REACHED = "target_reached"  # the best reached the study's target
    MAX_CYCLES = "max_cycles"  # this run did the cycles it was asked for
    CYCLE_BUDGET = "cycle_budget"  # the study's budget.max_cycles are done
    TRIAL_BUDGET = "trial_budget"  # budget.max_trials trials are in the history
    GPU_BUDGET = "gpu_budget"  # budget.max_gpu_hours are spent
    NO_IMPROVEMENT = "no_improvement"  # N recover cycles in a row did not improve the best


class RunReport(BaseModel):
    """What one :meth:`Orchestrator.run` did, and why it stopped."""

    model_config = ConfigDict(extra="forbid")

    study: str
    cycles: list[CycleReport] = Field(default_factory=list)
    stop_reason: StopReason
    stop_message: str
    best_value: float | None = None
    best_experiment_id: str | None = None
    best_config: dict[str, Any] | None = None
    n_trials: int = 0  # in the whole history
    n_cycles: int = 0  # completed cycles in the whole history
    duration_s: float = 0.0
    history_dir: str = ""


@dataclass(frozen=True)
class CycleEvent:
    """A step of a cycle, for progress displays and hooks (``on_event``).

    ``phase`` is one of ``deciding``, ``decided`` (decisions made, not yet logged),
    ``logged``, ``submitted``, ``progress`` (trial counts changed), ``integrating``
    (results collected, not yet stored), ``integrated`` (stored, cycle not yet
    logged), ``finished``, or ``resuming``.
    """

    cycle_id: int
    phase: str
    counts: Mapping[str, int] = field(default_factory=dict)  # queued / running / done / failed / total
    best_value: float | None = None
    best_experiment_id: str | None = None
    message: str = ""


# ----------------------------------------------------------------- stop checks


def cycle_rows(cycles: "pa.Table | None") -> list[dict[str, Any]]:
    if cycles is None or cycles.num_rows == 0:
        return []
    return sorted(cycles.select([c for c in ("cycle_id", "mode", "best_value", "offline")
                                 if c in cycles.column_names]).to_pylist(),
                  key=lambda r: r["cycle_id"])


def recover_cycles_without_improvement(study: "StudyConfig", rows: list[dict[str, Any]]) -> int:
    """How many of the last cycles in a row were recover cycles that did not improve the best."""
    count = 0
    for i in range(len(rows) - 1, -1, -1):
        row = rows[i]
        if row.get("mode") != "recover":
            break
        prev = next((r.get("best_value") for r in reversed(rows[:i]) if r.get("best_value") is not None), None)
        now = row.get("best_value")
        if now is not None and (prev is None or study.better(now, prev)):
            break
        count += 1
    return count


def check_stop(study: "StudyConfig", summary: HistorySummary,
               cycle_rows: list[dict[str, Any]]) -> tuple[StopReason, str] | None:
    """Whether the study should stop now (not counting a run's own cycle limit).

    Args:
        study: the study (target, budget).
        summary: the historian's summary.
        cycle_rows: the ``cycles`` table as rows (cycle_id, mode, best_value), in order.
    """
    best = summary.best_value
    if study.target is not None and best is not None and not study.better(study.target, best):
        return StopReason.TARGET_REACHED, (
            f"target reached: best {study.metric} {best:.4g} (experiment {summary.best_experiment_id}) "
            f"{'≥' if study.mode == 'max' else '≤'} target {study.target:g}")
    b = study.budget
    done = len([r for r in cycle_rows if not r.get("offline")])
    if b.max_cycles is not None and done >= b.max_cycles:
        return StopReason.CYCLE_BUDGET, f"the study's budget of {b.max_cycles} cycles is spent ({done} done)"
    if b.max_trials is not None and summary.n_trials >= b.max_trials:
        return StopReason.TRIAL_BUDGET, (
            f"the study's budget of {b.max_trials} trials is spent ({summary.n_trials} run)")
    if b.max_gpu_hours is not None and summary.gpu_hours_used >= b.max_gpu_hours:
        return StopReason.GPU_BUDGET, (
            f"the study's budget of {b.max_gpu_hours:g} GPU hours is spent "
            f"({summary.gpu_hours_used:.2f} used)")
    n = recover_cycles_without_improvement(study, cycle_rows)
    if n >= b.max_recover_cycles_without_improvement:
        return StopReason.NO_IMPROVEMENT, (
            f"{n} recover cycles in a row without improving the best "
            f"(limit budget.max_recover_cycles_without_improvement={b.max_recover_cycles_without_improvement})")
    return None


def limit_to_trial_budget(decisions: list[Decision], max_trials: int | None,
                          n_trials: int) -> list[Decision]:
    """Veto, in order, the decisions to run beyond what is left of ``max_trials``."""
    if max_trials is None:
        return decisions
    left = max(max_trials - n_trials, 0)
    out = []
    for d in decisions:
        if d.outcome.runs():
            if left <= 0:
                d = d.model_copy(update={
                    "outcome": DecisionOutcome.VETOED, "decided_by": "budget",
                    "reason": f"the study's budget of {max_trials} trials is spent (was: {d.reason})"})
            else:
                left -= 1
        out.append(d)
    return out


def results_from_history(trials: "pa.Table", cycle_id: int) -> list[TrialResult]:
    """The cycle's results as stored in the trials table (for a cycle integrated before a crash)."""
    import pyarrow.compute as pc

    if trials.num_rows == 0:
        return []
    rows = trials.filter(pc.equal(trials.column("cycle_id"), cycle_id)).to_pylist()
    out = []
    for r in rows:
        metrics = {k[len("metric."):]: v for k, v in r.items()
                   if k.startswith("metric.") and isinstance(v, (int, float)) and math.isfinite(v)}
        try:
            config = json.loads(r.get("config_json") or "{}")
        except ValueError:
            config = {}
        err = r.get("error_class")
        out.append(TrialResult(
            experiment_id=r["experiment_id"], cycle_id=cycle_id, status=JobStatus(r["status"]),
            config=config, metrics=metrics, duration_s=r.get("duration_s"),
            error_class=ErrorClass(err) if err in ErrorClass._value2member_map_ else None,
            error_message=r.get("error_message"), iterations=r.get("iterations") or 0))
    return out


def cycle_ids(historian: Any) -> dict[str, set[int]]:
    """Cycle ids a historian knows: ``decided`` (decisions logged), ``done`` (cycle logged),
    ``ran`` (trials stored). Runs inside the historian actor via ``__ray_call__``."""
    return {"decided": set(int_column(historian.decisions_table(), "cycle_id")),
            "done": set(int_column(historian.cycles_table(), "cycle_id")),
            "ran": set(int_column(historian.trials_table(), "cycle_id"))}


def int_column(table: "pa.Table | None", column: str) -> list[int]:
    if table is None or table.num_rows == 0 or column not in table.column_names:
        return []
    return [int(v) for v in table.column(column).to_pylist() if v is not None]


def count_statuses(statuses: Iterable[JobStatus]) -> dict[str, int]:
    c = {"queued": 0, "running": 0, "done": 0, "failed": 0, "total": 0}
    for s in statuses:
        c["total"] += 1
        if s == JobStatus.RUNNING:
            c["running"] += 1
        elif s == JobStatus.COMPLETED:
            c["done"] += 1
        elif s in (JobStatus.FAILED, JobStatus.CANCELLED):
            c["failed"] += 1
        else:
            c["queued"] += 1
    return c


def count_outcomes(decisions: list[Decision]) -> str:
    by: dict[str, int] = {}
    for d in decisions:
        by[d.outcome.value] = by.get(d.outcome.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(by.items())) or "no proposal"


__all__ = [
    "CycleEvent",
    "RunReport",
    "StopReason",
    "check_stop",
    "count_outcomes",
    "count_statuses",
    "cycle_ids",
    "cycle_rows",
    "int_column",
    "limit_to_trial_budget",
    "read_text",
    "recover_cycles_without_improvement",
    "results_from_history",
    "write_text",
]
