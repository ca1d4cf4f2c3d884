"""The historian's pure analysis functions, on Arrow tables built in memory (no Ray, no files)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from arc_ray.historian import analysis
from arc_ray.historian.analysis import ConstraintRule
from arc_ray.historian.schema import trials_to_table
from arc_ray.historian.store import concat_unified
from arc_ray.records import ErrorClass, TrialResult
from arc_ray.space import flatten_config


def _result(i, value=None, status="COMPLETED", cycle=0, metric="auc", error=None, **config):
    metrics = {} if value is None else {metric: value}
    return TrialResult(experiment_id=f"e{i:04d}", cycle_id=cycle, status=status, config=config,
                       metrics=metrics, error_class=error, duration_s=60.0)


def _table(results, t0=1000.0):
    # one table per result with increasing integrated_at, then unified: like the history
    return concat_unified([trials_to_table([r], integrated_at=t0 + i) for i, r in enumerate(results)])


def _series(values, mode_metric="auc"):
    return _table([_result(i, v, cycle=i // 4) for i, v in enumerate(values)])


# ------------------------------------------------------------------------- best


@pytest.mark.parametrize("mode, expected", [("max", "e0002"), ("min", "e0001")])
def test_best_respects_mode_and_ignores_failed_and_nan(mode, expected):
    rows = [_result(0, 0.5, lr=0.1), _result(1, 0.2, lr=0.2), _result(2, 0.9, lr=0.3),
            _result(3, 0.99, status="FAILED", error="crash", lr=0.4),  # failed: never best
            _result(4, float("nan"), lr=0.5),  # NaN: stored as null, cannot rank
            _result(5, None, lr=0.6)]  # completed without the metric
    t = _table(rows)
    best = analysis.best_trial(t, "auc", mode)
    assert best["experiment_id"] == expected
    assert best["config"] == {"lr": {"max": 0.3, "min": 0.2}[mode]}
    assert analysis.best_metrics(t, "auc", mode) == {"auc": best["value"]}
    assert t.column("metric.auc").null_count == 2  # NaN and missing are stored as null


def test_best_of_nothing_is_none():
    t = _table([_result(0, None, status="FAILED", error="oom")])
    assert analysis.best_trial(t, "auc", "max") is None
    assert analysis.best_metrics(t, "auc", "max") == {}
    with pytest.raises(ValueError, match="mode"):
        analysis.best_trial(t, "auc", "largest")


def test_order_follows_integration_time_not_row_order():
    t = _series([0.1, 0.2, 0.3, 0.4])
    shuffled = t.take(pa.array([3, 1, 0, 2]))
    assert analysis.performance_trend(shuffled, "auc", "max", 4)["values"] == [0.1, 0.2, 0.3, 0.4]
    assert analysis.recent_experiments(shuffled, 2).column("experiment_id").to_pylist() == ["e0002", "e0003"]


# ------------------------------------------------------------- trend/stagnation


def test_trend_is_positive_when_getting_better_in_either_mode():
    up = _series([0.1, 0.2, 0.3, 0.5])
    tr = analysis.performance_trend(up, "auc", "max", window=10)
    assert tr["slope"] > 0 and tr["trend"] > 0 and tr["status"] == "improving" and tr["n"] == 4
    tr_min = analysis.performance_trend(up, "auc", "min", window=10)
    assert tr_min["slope"] > 0 and tr_min["trend"] < 0 and tr_min["status"] == "declining"
    assert tr_min["best"] == 0.1 and tr["best"] == 0.5 and tr["last"] == 0.5
    assert analysis.performance_trend(up, "auc", "max", window=2)["values"] == [0.3, 0.5]
    one = analysis.performance_trend(_series([0.3]), "auc", "max")
    assert one["status"] == "insufficient_data" and one["trend"] is None


def test_stagnation_window_threshold_and_direction():
    rising = _series([0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    flat = _series([0.5, 0.9, 0.85, 0.88, 0.9, 0.89])
    s = analysis.stagnation(flat, "auc", "max", threshold=0.01, window=4)
    assert s.stagnating and s.recent_gain == pytest.approx(0.0) and s.experiments_since_improvement == 4
    assert not analysis.stagnation(rising, "auc", "max", 0.01, 4).stagnating
    # same numbers under "min": the rising series is getting worse → stagnating
    assert analysis.stagnation(rising, "auc", "min", 0.01, 4).stagnating
    # a gain smaller than the threshold is no improvement
    small = _series([0.5, 0.9, 0.901, 0.902, 0.903, 0.904])
    assert analysis.stagnation(small, "auc", "max", 0.01, 4).stagnating
    assert not analysis.stagnation(small, "auc", "max", 0.001, 4).stagnating
    # threshold 0 (the director's default): any new best is a gain, a tie is not
    assert analysis.stagnation(small, "auc", "max", 0.0, 4).stagnating is False
    tie = analysis.stagnation(flat, "auc", "max", 0.0, 4)
    assert tie.stagnating and tie.experiments_since_improvement == 4
    # too little history to judge is never stagnation
    assert not analysis.stagnation(_series([0.5, 0.5, 0.5]), "auc", "max", 0.01, 3).stagnating


def test_spread_is_the_interquartile_range_of_what_completed():
    values = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert analysis.spread(_series(values), "auc", "max") == pytest.approx(0.2)
    assert analysis.spread(_series([v * 1e4 for v in values]), "auc", "min") == pytest.approx(2000)
    # half of them tie: the full range; fewer than two: nothing to scale by
    assert analysis.spread(_series([0.5, 0.5, 0.5, 0.5, 0.9]), "auc", "max") == pytest.approx(0.4)
    assert analysis.spread(_series([0.5]), "auc", "max") is None
    rows = [_result(0, 0.5), _result(1, None, status="FAILED", error="oom"), _result(2, 0.7)]
    assert analysis.spread(_table(rows), "auc", "max") == pytest.approx(0.1)


def test_stagnation_counts_only_completed_with_metric():
    rows = [_result(0, 0.5), _result(1, 0.6)]
    rows += [_result(2 + i, None, status="FAILED", error="crash") for i in range(10)]
    t = _table(rows)
    s = analysis.stagnation(t, "auc", "max", 0.01, window=1)
    assert not s.stagnating  # the last completed (0.6) improved on 0.5; failures do not count


def test_recent_improvement_and_cycle_summaries():
    rows = [_result(0, 0.5, cycle=0), _result(1, 0.6, cycle=0),
            _result(2, 0.55, cycle=1), _result(3, None, status="FAILED", cycle=1, error="oom"),
            _result(4, 0.7, cycle=2)]
    t = _table(rows)
    assert analysis.recent_improvement(t, "auc", "max") == pytest.approx(0.1)
    assert analysis.recent_improvement(t, "auc", "min") == pytest.approx(0.0)
    cycles = analysis.cycle_summaries(t, "auc", "max")
    assert [c["cycle_id"] for c in cycles] == [0, 1, 2]
    assert cycles[0] == {"cycle_id": 0, "n_trials": 2, "n_completed": 2, "n_failed": 0, "best_value": 0.6,
                         "best_experiment_id": "e0001", "best_so_far": 0.6, "improved": True}
    assert cycles[1]["n_failed"] == 1 and cycles[1]["best_value"] == 0.55 and not cycles[1]["improved"]
    assert cycles[2]["improved"] and cycles[2]["best_so_far"] == 0.7
    assert analysis.recent_improvement(_table(rows[:2]), "auc", "max") is None  # one cycle only
    # rolling rounds: the last `window` results in history order, whatever their cycles
    assert analysis.recent_improvement(t, "auc", "max", window=2) == pytest.approx(0.1)  # 0.55, 0.7 vs 0.6
    assert analysis.recent_improvement(t, "auc", "max", window=3) == pytest.approx(0.2)  # 0.6.. vs 0.5
    assert analysis.recent_improvement(t, "auc", "min", window=1) == pytest.approx(0.0)
    assert analysis.recent_improvement(t, "auc", "max", window=4) is None  # nothing before the window


def test_failures_and_resources():
    rows = [_result(0, 0.5), _result(1, None, status="FAILED", error="oom"),
            _result(2, None, status="FAILED", error="oom"), _result(3, None, status="CANCELLED")]
    rows[0].resources = rows[1].resources = None
    t = trials_to_table(rows)
    assert analysis.failures_by_class(t) == {"oom": 2}  # cancelled is not a failure
    from arc_ray.records import Resources
    t2 = trials_to_table(rows, default_resources=Resources(cpu=4, gpu=0.5))
    hours, mean = analysis.resource_usage(t2)
    assert hours == pytest.approx(4 * 60.0 * 0.5 / 3600) and mean == 60.0


# --------------------------------------------------------------------- patterns


def test_patterns_find_what_the_top_quartile_shares():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        model = ["a", "b", "c", "d"][i % 4]
        lr = float(10 ** rng.uniform(-5, -1))
        # model "b" and a low learning rate make a good experiment
        auc = 0.6 + 0.2 * (model == "b") + 0.1 * (lr < 1e-4) + 0.01 * rng.random()
        rows.append(_result(i, auc, model=model, lr=lr, flip=bool(rng.integers(2)), seed=i))
    t = _table(rows)
    found = analysis.find_patterns(t, "auc", "max", ["model", "lr", "flip"])
    by_param = {(p.parameter, str(p.value)): p for p in found}
    model_b = by_param[("model", "b")]
    assert model_b.support == 20 and model_b.top_share == 1.0 and model_b.lift == pytest.approx(4.0)
    lr_pat = [p for p in found if p.parameter == "lr"]
    assert lr_pat and lr_pat[0].value[0] < 1e-4 and lr_pat[0].lift > 1.2  # a quartile bin [low, high]
    assert all(p.parameter != "seed" for p in found)  # only the parameters asked for
    assert found == sorted(found, key=lambda p: (-p.lift, -p.support, p.parameter))
    # under "min" the worst models are the pattern
    worst = analysis.find_patterns(t, "auc", "min", ["model"])
    assert {p.value for p in worst} <= {"a", "c", "d"} and worst
    assert analysis.find_patterns(t.slice(0, 5), "auc", "max") == []  # too few to say


# ----------------------------------------------------------------- constraints


def _flat_completed(t):
    rows = t.filter(pa.compute.equal(t.column("status"), "COMPLETED")).column("config_json").to_pylist()
    import json
    return [flatten_config(json.loads(r)) for r in rows]


def test_diverged_learns_an_upper_bound_on_lr_per_optimizer():
    rows = []
    for i, lr in enumerate([1e-4, 1e-3, 1e-2, 0.05]):
        rows.append(_result(i, 0.8, optimizer="sgd", learning_rate=lr))
    for i, lr in enumerate([0.2, 0.5, 0.9]):
        rows.append(_result(10 + i, None, status="FAILED", error="diverged", optimizer="sgd", learning_rate=lr))
    # adam diverged once at a small lr but succeeded higher: failures do not cluster above → no rule
    rows += [_result(20, 0.8, optimizer="adam", learning_rate=0.5),
             _result(21, None, status="FAILED", error="diverged", optimizer="adam", learning_rate=1e-3),
             _result(22, None, status="FAILED", error="diverged", optimizer="adam", learning_rate=0.3)]
    t = _table(rows)
    learned = analysis.learn_constraints(t, cycle_id=3)
    assert len(learned) == 1
    c = learned[0]
    assert c.parameters == ["learning_rate"] and c.when == {"optimizer": "sgd"}
    assert c.low == 0.2 and c.high is None and c.n_failed == 3 and c.n_succeeded == 4
    assert c.error_class == ErrorClass.DIVERGED and c.source == "learned" and c.cycle_id == 3
    assert "diverged" in c.reason and "optimizer=sgd" in c.reason and "0.05" in c.reason
    assert c.forbids({"optimizer": "sgd", "learning_rate": 0.3})
    assert not c.forbids({"optimizer": "adam", "learning_rate": 0.3})
    assert not any(c.forbids(f) for f in _flat_completed(t))
    assert analysis.learn_constraints(t, min_failures=4) == []


def test_oom_bounds_batch_times_image_per_model_and_timeout_bounds_epochs():
    rows = [_result(0, 0.8, model="vit", batch_size=32, image_size=224, epochs=10),
            _result(1, 0.8, model="vit", batch_size=16, image_size=384, epochs=20),
            _result(2, None, status="FAILED", error="oom", model="vit", batch_size=64, image_size=224, epochs=5),
            _result(3, None, status="FAILED", error="oom", model="vit", batch_size=128, image_size=384, epochs=5),
            _result(4, None, status="FAILED", error="timeout", model="vit", batch_size=8, image_size=64, epochs=40),
            _result(5, None, status="FAILED", error="timeout", model="vit", batch_size=8, image_size=64, epochs=50),
            _result(6, 0.7, model="resnet", batch_size=128, image_size=384, epochs=50)]
    t = _table(rows)
    learned = {c.error_class: c for c in analysis.learn_constraints(t)}
    oom = learned[ErrorClass.OOM]
    assert oom.parameters == ["batch_size", "image_size"] and oom.when == {"model": "vit"}
    assert oom.low == 64 * 224 and oom.n_failed == 2 and oom.n_succeeded == 2
    assert oom.forbids({"model": "vit", "batch_size": 128, "image_size": 224})
    assert not oom.forbids({"model": "resnet", "batch_size": 128, "image_size": 384})
    timeout = learned[ErrorClass.TIMEOUT]
    assert timeout.parameters == ["epochs"] and timeout.low == 40 and timeout.when == {"model": "vit"}
    assert not any(c.forbids(f) for c in learned.values() for f in _flat_completed(t))


def test_constraint_rules_fall_back_to_other_spellings_and_no_group():
    # the toy study spells it "lr" and has no optimizer: one global bound
    rows = [_result(0, 0.8, lr=0.01), _result(1, None, status="FAILED", error="diverged", lr=0.5),
            _result(2, None, status="FAILED", error="diverged", lr=0.7)]
    (c,) = analysis.learn_constraints(_table(rows))
    assert c.parameters == ["lr"] and c.when == {} and c.low == 0.5
    custom = (ConstraintRule(ErrorClass.CRASH, ("layers",), None),)
    rows = [_result(0, 0.8, layers=2), _result(1, None, status="FAILED", layers=9),
            _result(2, None, status="FAILED", layers=8)]
    (c,) = analysis.learn_constraints(_table(rows), custom)
    assert c.low == 8 and c.error_class == ErrorClass.CRASH


def test_failures_below_a_success_teach_nothing():
    rows = [_result(0, 0.8, optimizer="sgd", learning_rate=0.9),
            _result(1, None, status="FAILED", error="diverged", optimizer="sgd", learning_rate=0.5),
            _result(2, None, status="FAILED", error="diverged", optimizer="sgd", learning_rate=0.6)]
    assert analysis.learn_constraints(_table(rows)) == []
    assert analysis.learn_constraints(pa.table({})) == []


# -------------------------------------------------------------- schema evolution


def test_schemas_unify_across_new_metrics_new_keys_and_type_changes():
    a = trials_to_table([_result(0, 0.5, lr=1, model="a")])  # lr an int here
    b = trials_to_table([TrialResult(experiment_id="e1", cycle_id=1, status="COMPLETED",
                                     config={"lr": 0.1, "model": "b", "aug": {"flip": True}},
                                     metrics={"auc": 0.6, "sensitivity": 0.7})])
    c = trials_to_table([_result(2, 0.7, lr=0.2, model=3)])  # model: int vs string
    t = concat_unified([a, b, c])
    assert t.num_rows == 3
    assert t.schema.field("config.lr").type == pa.float64()
    assert t.column("config.lr").to_pylist() == [1.0, 0.1, 0.2]
    assert t.column("metric.sensitivity").to_pylist() == [None, 0.7, None]
    assert t.column("config.aug.flip").to_pylist() == [None, True, None]
    assert t.schema.field("config.model").type == pa.string()
    assert t.column("config.model").to_pylist() == ["a", "b", "3"]
    assert analysis.best_trial(t, "auc", "max")["experiment_id"] == "e0002"
    assert math.isclose(analysis.best_trial(t, "sensitivity", "max")["value"], 0.7)


# ------------------------------------------------------------------------ frame


def test_an_incremental_frame_gives_the_same_answers_as_a_fresh_one():
    from arc_ray.historian.frame import Frame

    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        opt = ["sgd", "adam"][i % 2]
        lr = float(10 ** rng.uniform(-4, 0))
        failed = opt == "sgd" and lr > 0.1
        rows.append(_result(i, None if failed else float(rng.random()), status="FAILED" if failed else "COMPLETED",
                            error="diverged" if failed else None, cycle=i // 10, optimizer=opt, learning_rate=lr,
                            batch_size=int(rng.choice([16, 32])), flip=bool(i % 3)))
    chunks = [trials_to_table(rows[i:i + 7], integrated_at=1000.0 + i) for i in range(0, 60, 7)]
    frame = Frame()
    for c in chunks:
        assert frame.extend(c)
    table = concat_unified(chunks)
    fresh = Frame.from_table(table)
    params = ["optimizer", "learning_rate", "batch_size", "flip"]
    for fr in (frame, fresh):
        assert fr.n == 60 and fr.cycle_ids == set(range(6))
    assert analysis.learn_constraints(table, frame=frame) == analysis.learn_constraints(table, frame=fresh)
    assert analysis.learn_constraints(table, frame=frame)  # sgd above 0.1 diverged
    assert analysis.find_patterns(table, "auc", "max", params, frame=frame) == \
        analysis.find_patterns(table, "auc", "max", params, frame=fresh)
    assert analysis.failures_by_class(table, frame=frame) == analysis.failures_by_class(table) != {}
    assert frame.small_values("config.batch_size") == [16.0, 32.0] and frame.is_integer("config.batch_size")
    assert not frame.extend(pa.table({"config.batch_size": ["big"]}))  # number → text: caller rebuilds
    assert frame.n == 60
    with pytest.raises(ValueError, match="rows"):
        analysis.best_trial(table.slice(0, 10), "auc", "max", frame=frame)
