"""When a study stops: the target, its budgets, and (opt-in) recover cycles that did not help.

Pure functions over the study, the historian's summary and the cycles as rows
(:meth:`HistoryReader.cycle_rows <arc_ray.historian.HistoryReader.cycle_rows>`), so the
rules are tested without Ray or files; :mod:`arc_ray.orchestrator` applies them before
each cycle and after it, and ``arc status`` shows the recover-cycle count.

A cycle row is a mapping with ``cycle_id``, ``mode`` (the director's strategy mode),
``best_value`` (the study's best after the cycle) and ``offline`` (decided only).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from arc_ray.historian.schema import BEST_VALUE, MODE, OFFLINE
from arc_ray.records import ErrorClass, HistorySummary, JobStatus, StopReason, StrategyMode

if TYPE_CHECKING:
    from arc_ray.records import CycleReport, TrialResult
    from arc_ray.study import StudyConfig

# Failures that depend on the config tried (the search's business: it learns to avoid
# them); any other class (a crash, a missing metric) repeated by every trial of a cycle
# is a broken objective, and more cycles would only spend the budget on it.
_CONFIG_FAILURES = (ErrorClass.OOM, ErrorClass.DIVERGED, ErrorClass.TIMEOUT, ErrorClass.CANCELLED)


def recover_cycles_without_improvement(study: "StudyConfig", rows: Sequence[Mapping[str, Any]]) -> int:
    """How many of the last cycles in a row were recover cycles that did not improve the best.

    Args:
        study: the study (its direction decides what "improve" means).
        rows: the cycles as rows, in cycle order.
    """
    count = 0
    for i in range(len(rows) - 1, -1, -1):
        row = rows[i]
        if row.get(MODE) != StrategyMode.RECOVER.value:
            break
        prev = next((r.get(BEST_VALUE) for r in reversed(rows[:i]) if r.get(BEST_VALUE) is not None), None)
        now = row.get(BEST_VALUE)
        if now is not None and (prev is None or study.better(now, prev)):
            break
        count += 1
    return count


def check_stop(study: "StudyConfig", summary: HistorySummary,
               cycle_rows: Sequence[Mapping[str, Any]]) -> tuple[StopReason, str] | None:
    """Whether the study should stop now (not counting a run's own cycle limit).

    Args:
        study: the study (target, budget).
        summary: the historian's summary.
        cycle_rows: the cycles as rows, in cycle order.

    Returns:
        the reason and a sentence saying it, or ``None`` to go on.
    """
    best = summary.best_value
    if study.target is not None and best is not None and not study.better(study.target, best):
        return StopReason.TARGET_REACHED, (
            f"target reached: best {study.metric} {best:.4g} (experiment {summary.best_experiment_id}) "
            f"{'≥' if study.mode == 'max' else '≤'} target {study.target:g}")
    b = study.budget
    done = len([r for r in cycle_rows if not r.get(OFFLINE)])
    if b.max_cycles is not None and done >= b.max_cycles:
        return StopReason.CYCLE_BUDGET, f"the study's budget of {b.max_cycles} cycles is spent ({done} done)"
    if b.max_trials is not None and summary.n_trials >= b.max_trials:
        return StopReason.TRIAL_BUDGET, (
            f"the study's budget of {b.max_trials} trials is spent ({summary.n_trials} run)")
    if b.max_gpu_hours is not None and summary.gpu_hours_used >= b.max_gpu_hours:
        return StopReason.GPU_BUDGET, (
            f"the study's budget of {b.max_gpu_hours:g} GPU hours is spent "
            f"({summary.gpu_hours_used:.2f} used)")
    if not b.stop_on_no_improvement:  # the budget asked for is spent in full unless early stopping is on
        return None
    n = recover_cycles_without_improvement(study, cycle_rows)
    if n >= b.max_recover_cycles_without_improvement:
        return StopReason.NO_IMPROVEMENT, (
            f"early stopping (budget.stop_on_no_improvement): {n} recover cycles in a row without "
            f"improving the best (limit budget.max_recover_cycles_without_improvement="
            f"{b.max_recover_cycles_without_improvement})")
    return None


def check_cycle_failures(results: Sequence["TrialResult"]) -> tuple[StopReason, str] | None:
    """Whether a cycle's results show a broken objective: every trial (two or more) failed
    with the same error, and not one that depends on the config (out of memory, diverged,
    timed out).

    Args:
        results: the trials of the cycle just run.

    Returns:
        :attr:`StopReason.ALL_FAILED` and a sentence quoting the error, or ``None`` to go on.
    """
    if len(results) < 2 or any(r.status != JobStatus.FAILED for r in results):
        return None
    errors = {(r.error_class, r.error_message) for r in results}
    if len(errors) != 1:
        return None
    error_class, message = errors.pop()
    if error_class in _CONFIG_FAILURES:
        return None
    cls = error_class.value if error_class is not None else "unknown"
    return StopReason.ALL_FAILED, (
        f"all {len(results)} trials of cycle {results[0].cycle_id} failed with the same error "
        f"({cls}): {message}; fix the objective and run again")


IDLE_CYCLES = 3  # cycles in a row that run no trial before the loop stops


def check_idle_cycles(reports: Sequence["CycleReport"], limit: int = IDLE_CYCLES) -> tuple[StopReason, str] | None:
    """Whether the loop is deciding in vain: the last ``limit`` cycles of this run ran no
    trial (offline cycles, which run nothing by design, do not count). Without this rule
    a loop with no trial or cycle budget went on deciding empty cycles for ever.

    Returns:
        :attr:`StopReason.NOTHING_TO_RUN` and a sentence with the last cycle's most
        common rejection reasons, or ``None`` to go on.
    """
    last = list(reports[-limit:])
    if len(last) < limit or any(r.results or r.offline for r in last):
        return None
    reasons = Counter(d.reason for d in last[-1].decisions if not d.outcome.runs())
    why = ("; ".join(f"{n} x {reason[:200]}" for reason, n in reasons.most_common(2))
           if reasons else "no proposer proposed anything")
    return StopReason.NOTHING_TO_RUN, (
        f"the last {limit} cycles ran no trial (cycles {last[0].cycle_id}-{last[-1].cycle_id}); "
        f"cycle {last[-1].cycle_id}'s rejections: {why}")


__all__ = ["IDLE_CYCLES", "check_cycle_failures", "check_idle_cycles", "check_stop",
           "recover_cycles_without_improvement"]
