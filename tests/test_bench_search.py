"""Keeps ``benchmarks/bench_search.py`` from rotting: its problems are valid ARC studies,
the known optima hold, and (slow) the smallest run of the suite ends with its headlines."""

from __future__ import annotations

import importlib.util
import math
import time
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


problems = _load("_search_problems")
bench = _load("bench_search")


def test_the_suite_has_24_problems_in_three_families():
    families = {p.family for p in problems.PROBLEMS.values()}
    assert len(problems.PROBLEMS) >= 24 and families == set(problems.FAMILIES)


@pytest.mark.parametrize("name", sorted(problems.PROBLEMS))
def test_every_space_is_a_valid_study(name, tmp_path):
    import arc_ray

    p = problems.PROBLEMS[name]
    arc_ray.make_study(bench.arc_objective, p.space, "value", mode=p.mode, executor="inprocess",
                       name=name, storage=tmp_path)


@pytest.mark.parametrize(("name", "config"), [
    ("branin_cat", {"x0": math.pi, "x1": 2.275, "variant": "a"}),
    ("branin_int", {"x0": 3, "x1": 2.388}),
    ("hartmann6", {f"x{i}": v for i, v in enumerate([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573])}),
    ("rosenbrock4_int", {"x0": 1, "x1": 1, "x2": 1.0, "x3": 1.0, "shape": "narrow"}),
    ("levy6_int", {f"x{i}": 1 for i in range(6)}),
    ("styblinski4_cat", {**{f"x{i}": -2.903534 for i in range(4)}, "form": "plain"}),
    ("bowl_cat", {"x0": 0.2, "x1": -0.3, "x2": 5, "opt": "adam"}),
    ("batch_oom", {"model": "large", "batch_size": 8, "image_size": 320, "learning_rate": 1e-3}),
])
def test_the_known_optima_are_reached(name, config):
    p = problems.PROBLEMS[name]
    assert p.objective(config) == pytest.approx(p.optimum, abs=2e-3)


def test_a_failure_region_raises_and_counts_as_no_result():
    p = problems.PROBLEMS["batch_oom"]
    with pytest.raises(MemoryError):
        p.objective({"model": "large", "batch_size": 256, "image_size": 320, "learning_rate": 1e-3})
    assert bench.best_of([None, 2.0, None, 1.0], 3, "min") == 2.0
    assert bench.best_of([None, None], 2, "max") == -math.inf
    assert not bench.better(math.inf, math.inf, "min") and bench.better(1.0, math.inf, "min")


@pytest.mark.slow
def test_the_smallest_run_ends_with_the_headlines(tmp_path, capsys):
    out = tmp_path / "raw.json"
    assert bench.main(["--problems", "branin_cat", "--seeds", "1", "--budgets", "8", "--batches", "4",
                       "--workers", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("headline: search_gp_win_fraction=")
    assert lines[-1].startswith("headline: search_tpe_win_fraction=")
    assert out.exists() and "runs that raised" not in "\n".join(lines)


def test_virtual_slots_reveal_results_in_the_order_trials_end(tmp_path):
    """Rolling decisions' search check: four slots in virtual time, each trial's result
    hidden until the clock reaches its end, the clock moved only by waiting."""
    import arc_ray
    from _virtual_slots import UNIT_S, VirtualSlots

    from arc_ray.records import Decision, DecisionOutcome, JobStatus

    p = problems.PROBLEMS["branin_cat"]
    study = arc_ray.make_study(bench.arc_objective, p.space, "value", mode=p.mode, executor="inprocess",
                               name="v", storage=tmp_path)
    bench._CURRENT = bench._Evaluations(p)
    ex = VirtualSlots(study, bench.arc_objective, slots=2)
    base = {"x0": 1.0, "x1": 2.0, "variant": "a"}
    decisions = [Decision(experiment_id=f"e{i}", cycle_id=1, outcome=DecisionOutcome.APPROVED, decided_by="test", reason="test",
                          config={**base, "x0": float(i)}) for i in range(3)]
    try:
        ex.submit_batch(decisions, 1)
        ends = dict(ex._end)
        first, second = sorted(ends, key=ends.get)[:2]
        assert ends["e2"] > min(ends["e0"], ends["e1"])  # the third waits for a slot
        time.sleep(0.2)  # computed by the thread, yet not ended in virtual time
        assert set(ex.poll(ends).values()) == {JobStatus.RUNNING}
        ex.wait_for_change(5.0)
        assert ex.now == ends[first] and ex.poll([first])[first] == JobStatus.COMPLETED
        assert ex.poll([second])[second] == JobStatus.RUNNING
        assert ex.collect_results(first).duration_s == pytest.approx((ends[first] - 0.0) * UNIT_S)
        ex.wait_for_change(5.0)
        ex.wait_for_change(5.0)
        assert all(s == JobStatus.COMPLETED for s in ex.poll(ends).values())
    finally:
        ex.shutdown()


def test_baseline_random_declares_a_drawn_baseline_per_problem_and_seed(monkeypatch, tmp_path):
    """``--baseline random``: ARC's study declares a baseline drawn per problem and seed
    (not the space's middle), the same draw for the same pair."""
    import arc_ray
    from arc_ray.space import SearchSpace, flatten_config

    declared = []
    p = problems.PROBLEMS["branin_cat"]

    def recording(trainable, **settings):  # the study ARC would run, not the run (its own tests)
        study = arc_ray.make_study(trainable, **settings)  # raises if the baseline breaks the space
        declared.append(flatten_config(study.baseline))
        return SimpleNamespace(n_cycles=0, stop_reason=SimpleNamespace(value="recorded"))

    monkeypatch.setattr(arc_ray, "run_study", recording)
    monkeypatch.setenv("ARC_BENCH_BASELINE", "random")
    for seed in (0, 0, 1):
        bench._run_arc(p, 4, seed, 4, str(tmp_path))
    monkeypatch.setenv("ARC_BENCH_BASELINE", "middle")
    bench._run_arc(p, 4, 0, 4, str(tmp_path))
    middle = SearchSpace.from_mapping(p.space).middle()
    assert declared[0] == declared[1] != declared[2]
    assert all(any(d[k] != middle[k] for k in middle) for d in declared[:3])
    assert {k: declared[3][k] for k in middle} == middle  # the default: make_study's middle



def test_proposer_yield_scores_every_trial_by_phase_and_proposer(capsys):
    """The analysis behind the README's "who proposes what pays" table: every trial of a
    run lands in one phase x proposer cell with a percentile among the random draws in
    [0, 1]; main ends with the early cycles' median percentile as its headline."""
    yield_ = _load("proposer_yield")
    draws = yield_._random_draws(["branin_cat"], 4, 12, 2, None)
    assert len(draws["branin_cat"]) == 24 and (draws["branin_cat"][:-1] <= draws["branin_cat"][1:]).all()
    pct, new_best = yield_.tally(["branin_cat"], 4, 12, 1, draws)
    assert sum(len(xs) for xs in pct.values()) == 12  # 12 trials in batches of 4: cycles 1 to 3
    assert {phase for phase, _ in pct} == {"1", "2-3"}
    assert all(0.0 <= x <= 1.0 for xs in pct.values() for x in xs)
    marks = [m for ms in new_best.values() for m in ms]
    assert len(marks) == 12 and set(marks) <= {0, 1} and sum(marks) <= 11  # the first trial beats nothing
    assert yield_.main(["--problems", "branin_cat", "--batch", "4", "--evals", "12", "--seeds", "1",
                        "--draw-seeds", "2"]) == 0
    head = capsys.readouterr().out.strip().splitlines()[-1]
    assert head.startswith("headline: early_batch_percentile=") and 0.0 <= float(head.split("=")[1]) <= 1.0


def _two_choices(config):
    return {"value": {"a": 1.0, "b": 2.0}[config["k"]]}


def test_a_rolling_loop_with_nothing_left_to_run_stops_and_says_why(tmp_path):
    """Rolling decisions on a space of two configs and no trial budget: once both ran and
    none is in flight, every round is empty. The loop decided empty rounds for ever (here
    until the 30 asked for); now it stops after stopping.IDLE_CYCLES of them."""
    import arc_ray
    from _virtual_slots import VirtualSlots

    from arc_ray.orchestrator import Orchestrator
    from arc_ray.stopping import IDLE_CYCLES

    study = arc_ray.make_study(_two_choices, {"k": {"type": "categorical", "choices": ["a", "b"]}}, "value",
                               executor="inprocess", storage=tmp_path, scheduling="rolling",
                               max_concurrent_trials=2)
    orch = Orchestrator(study, trainable=_two_choices, in_driver=True, poll_interval_s=0.05,
                        executor=VirtualSlots(study, _two_choices, 2))
    try:
        report = orch.run(max_cycles=30)
    finally:
        orch.shutdown(kill_actors=True)
    assert report.stop_reason.value == "nothing_to_run", report.stop_message
    assert report.n_trials == 2 and report.best_value == 2.0
    assert [len(c.results) for c in report.cycles][-IDLE_CYCLES:] == [0] * IDLE_CYCLES
