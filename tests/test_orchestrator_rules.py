"""The loop's rules: stop rules (arc_ray.stopping, re-exported by the
orchestrator), and results read back from the history for a resumed cycle."""

from __future__ import annotations

import pytest

from arc_ray.orchestrator import (
    StopReason,
    check_stop,
    recover_cycles_without_improvement,
)
from arc_ray.records import ErrorClass, HistorySummary, JobStatus, TrialResult
from arc_ray.stopping import check_cycle_failures
from test_report import seed_history


def summary(study, **kw) -> HistorySummary:
    return HistorySummary(study=study.name, metric=study.metric, mode=study.mode, **kw)


def rows(*modes_and_best):
    return [{"cycle_id": i + 1, "mode": m, "best_value": b} for i, (m, b) in enumerate(modes_and_best)]


def test_no_stop_on_a_fresh_study(toy_study):
    assert check_stop(toy_study, summary(toy_study), []) is None


@pytest.mark.parametrize("mode,best,stops", [("max", 0.99, True), ("max", 0.98, False),
                                             ("min", 0.99, True), ("min", 1.2, False)])
def test_target_in_the_study_direction(toy_study, mode, best, stops):
    study = toy_study.model_copy(update={"mode": mode, "target": 0.99 if mode == "max" else 1.0})
    result = check_stop(study, summary(study, best_value=best, best_experiment_id="e1"), [])
    assert (result is not None and result[0] == StopReason.TARGET_REACHED) == stops
    if stops:
        assert "e1" in result[1]


def test_budgets(toy_study):
    budget = toy_study.budget.model_copy(update={"max_cycles": 2, "max_trials": 10, "max_gpu_hours": 1.5})
    study = toy_study.model_copy(update={"budget": budget})
    assert check_stop(study, summary(study), rows(("explore", 0.1))) is None
    assert check_stop(study, summary(study), rows(("explore", 0.1), ("explore", 0.2)))[0] == StopReason.CYCLE_BUDGET
    assert check_stop(study, summary(study, n_trials=10), [])[0] == StopReason.TRIAL_BUDGET
    assert check_stop(study, summary(study, n_trials=9), []) is None
    assert check_stop(study, summary(study, gpu_hours_used=1.6), [])[0] == StopReason.GPU_BUDGET
    # offline cycles (decisions only) do not use up the cycle budget
    offline = [dict(r, offline=True) for r in rows(("explore", None), ("explore", None))]
    assert check_stop(study, summary(study), offline) is None


def test_recover_cycles_without_improvement(toy_study):
    n = toy_study.budget.max_recover_cycles_without_improvement
    assert n == 3
    flat = rows(("explore", 0.5), ("recover", 0.5), ("recover", 0.5), ("recover", 0.5))
    assert recover_cycles_without_improvement(toy_study, flat) == 3
    # the rule only stops a run that opted into early stopping: otherwise the budget is spent
    assert check_stop(toy_study, summary(toy_study, best_value=0.5), flat) is None
    early = toy_study.model_copy(update={"budget": toy_study.budget.model_copy(
        update={"stop_on_no_improvement": True})})
    stop = check_stop(early, summary(early, best_value=0.5), flat)
    assert stop[0] == StopReason.NO_IMPROVEMENT and "early stopping" in stop[1]
    improved = rows(("explore", 0.5), ("recover", 0.5), ("recover", 0.6), ("recover", 0.6))
    assert recover_cycles_without_improvement(toy_study, improved) == 1
    broken = rows(("recover", 0.5), ("recover", 0.5), ("exploit", 0.5), ("recover", 0.5))
    assert recover_cycles_without_improvement(toy_study, broken) == 1
    nothing_yet = rows(("recover", None), ("recover", None), ("recover", None))
    assert recover_cycles_without_improvement(toy_study, nothing_yet) == 3
    study_min = toy_study.model_copy(update={"mode": "min"})
    assert recover_cycles_without_improvement(study_min, rows(("recover", 0.5), ("recover", 0.4))) == 0


def test_results_read_back_from_the_history(toy_study):
    h = seed_history(toy_study, n_cycles=2, per_cycle=3, failures=1)
    got = h.results_of_cycle(2)
    assert sorted(r.experiment_id for r in got) == [f"c0002-bayesian-0{i}" for i in range(3)]
    failed = [r for r in got if r.status == JobStatus.FAILED]
    assert len(failed) == 1 and failed[0].error_class.value == "oom"
    ok = [r for r in got if r.status == JobStatus.COMPLETED][0]
    assert set(ok.metrics) >= {"score", "loss"} and ok.config["x"] == pytest.approx(ok.config["x"])
    assert h.results_of_cycle(7) == []


def test_stop_rules_read_the_historians_cycle_rows(toy_study):
    h = seed_history(toy_study, n_cycles=3, per_cycle=2, failures=0)
    got = h.cycle_rows()
    assert [(r["cycle_id"], r["mode"], r["offline"]) for r in got] == [
        (1, "explore", False), (2, "exploit", False), (3, "recover", False)]
    assert h.cycle_ids() == {"decided": {1, 2, 3}, "done": {1, 2, 3}, "ran": {1, 2, 3}}
    assert h.pending_cycle() is None and h.next_cycle_id() == 4


def test_stopping_names_stay_importable_from_the_orchestrator():
    import arc_ray.orchestrator as orchestrator
    import arc_ray.records as records
    import arc_ray.stopping as stopping

    assert orchestrator.check_stop is stopping.check_stop
    assert orchestrator.RunReport is records.RunReport and orchestrator.CycleEvent is records.CycleEvent
    assert orchestrator.StopReason is records.StopReason


def _failed(eid, error_class=ErrorClass.CRASH, message="KeyError: 'lr'"):
    return TrialResult(experiment_id=eid, cycle_id=1, status=JobStatus.FAILED, error_class=error_class,
                       error_message=message)


def test_a_cycle_whose_trials_all_crash_the_same_way_stops_the_run():
    stop = check_cycle_failures([_failed("a"), _failed("b"), _failed("c")])
    assert stop[0] == StopReason.ALL_FAILED and "KeyError: 'lr'" in stop[1] and "all 3 trials" in stop[1]
    # different errors, one success, a single trial, or failures that depend on the config: go on
    assert check_cycle_failures([_failed("a"), _failed("b", message="ValueError: x")]) is None
    ok = TrialResult(experiment_id="c", cycle_id=1, status=JobStatus.COMPLETED, metrics={"score": 1.0})
    assert check_cycle_failures([_failed("a"), ok]) is None
    assert check_cycle_failures([_failed("a")]) is None
    assert check_cycle_failures([_failed("a", ErrorClass.OOM, "oom"), _failed("b", ErrorClass.OOM, "oom")]) is None
