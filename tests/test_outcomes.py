"""Outcome constraints: validation, feasibility in the history's analyses, P(feasible),
and a constrained study whose unconstrained optimum is infeasible."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from arc_ray.errors import ConfigValidationError
from arc_ray.historian import analysis
from arc_ray.historian.schema import trials_to_table
from arc_ray.outcomes import OutcomeConstraint, is_feasible, probability_feasible
from arc_ray.records import JobStatus, TrialResult
from arc_ray.study import StudyConfig

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
SENS = {"metric": "sens", "op": ">=", "value": 0.5}


def objective(config):
    """Score peaks at x = 0.7, but sensitivity (1 - x) stays >= 0.5 only for x <= 0.5."""
    x = float(config["x"])
    return {"score": 1.0 - (x - 0.7) ** 2, "sens": 1.0 - x}


def _study(tmp_path, **extra) -> StudyConfig:
    data = {"name": "constrained", "trainable": "tests.test_outcomes:objective", "metric": "score",
            "baseline": {"x": 0.7}, "search_space": SPACE, "storage": str(tmp_path / "h"),
            "executor": "inprocess", **extra}
    return StudyConfig.from_dict(data)


@pytest.mark.parametrize("bad, words", [
    ({"metric": "sens", "op": ">", "value": 0.5}, "'>=' or '<='"),
    ({"metric": "sens", "op": ">=", "value": math.inf}, "finite"),
    ({"metric": "sens", "op": ">=", "value": math.nan}, "finite"),
    ({"metric": " ", "op": ">=", "value": 0.5}, "reported metric"),
    ({"metric": "sens", "op": ">="}, "value"),
    ({"metric": "sens", "op": ">=", "value": 0.5, "bound": 1}, "bound"),
])
def test_bad_constraints_are_clear_errors(tmp_path, bad, words):
    with pytest.raises(ConfigValidationError) as err:
        _study(tmp_path, outcome_constraints=[bad])
    assert "outcome_constraints" in str(err.value) and words in str(err.value)


def test_a_bound_on_the_study_metric_is_allowed_but_warned(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="arc_ray.study"):
        study = _study(tmp_path, outcome_constraints=[{"metric": "score", "op": ">=", "value": 0.2}])
    assert study.outcome_constraints[0].metric == "score"
    assert "bounds the study metric itself" in caplog.text


def test_feasibility_of_one_trial_and_of_a_forecast():
    c = [OutcomeConstraint(**SENS), OutcomeConstraint(metric="loss", op="<=", value=0.3)]
    assert is_feasible({"sens": 0.5, "loss": 0.3}, c)
    assert not is_feasible({"sens": 0.49, "loss": 0.1}, c)
    assert not is_feasible({"sens": 0.9}, c)  # a missing metric is never feasible
    assert not is_feasible({"sens": math.nan, "loss": 0.1}, c)
    assert is_feasible({}, [])
    p = probability_feasible({"sens": (np.array([0.5, 0.7]), np.array([0.1, 0.1])),
                              "loss": (np.array([0.3, 0.1]), np.array([0.1, 0.1]))}, c)
    assert p[0] == pytest.approx(0.25) and p[1] == pytest.approx(0.97725 * 0.97725, abs=1e-4)
    assert probability_feasible({}, c) is None  # nothing forecast: no evidence either way
    assert str(c[0]) == "sens >= 0.5"


def _table(points):
    return trials_to_table([
        TrialResult(experiment_id=f"e{i}", cycle_id=1 + i // 2, status=JobStatus.COMPLETED,
                    config={"x": x}, metrics=objective({"x": x})) for i, x in enumerate(points)])


def test_the_best_is_the_best_feasible_and_a_missing_metric_warns(caplog):
    t = _table([0.2, 0.7, 0.45, 0.9])
    c = [OutcomeConstraint(**SENS)]
    assert analysis.best_trial(t, "score", "max")["experiment_id"] == "e1"  # unconstrained: x = 0.7
    assert analysis.best_trial(t, "score", "max", constraints=c)["experiment_id"] == "e2"
    assert analysis.feasible_rows(t, c).tolist() == [True, False, True, False]
    summaries = analysis.cycle_summaries(t, "score", "max", constraints=c)
    assert [s["best_experiment_id"] for s in summaries] == ["e0", "e2"]
    with caplog.at_level(logging.WARNING, logger="arc_ray.historian.analysis"):
        missing = [OutcomeConstraint(metric="specificity_typo", op=">=", value=0.1)]
        assert analysis.best_trial(t, "score", "max", constraints=missing) is None
    assert "no trial reports 'specificity_typo'" in caplog.text


def test_a_constrained_study_reports_the_feasible_best(tmp_path, capsys):
    from arc_ray import run_study
    from arc_ray.cli import main
    from arc_ray.export import choose_experiment
    from arc_ray.historian.reader import HistoryReader

    study = _study(tmp_path, outcome_constraints=[SENS], budget={"trials_per_cycle": 4}, seed=3)
    run = run_study(study, cycles=4)
    reader = HistoryReader(study)
    rows = reader.trials_table().to_pylist()
    done = [r for r in rows if r["status"] == "COMPLETED"]
    overall = max(done, key=lambda r: r["metric.score"])
    feasible = [r for r in done if r["metric.sens"] >= 0.5]
    assert feasible and overall["metric.sens"] < 0.5, "the unconstrained optimum should be infeasible"
    best = max(feasible, key=lambda r: r["metric.score"])
    assert run.best_experiment_id == best["experiment_id"] != overall["experiment_id"]
    summary = reader.summary()
    assert summary.best_experiment_id == best["experiment_id"] and summary.n_feasible == len(feasible)
    assert choose_experiment(study, reader)["experiment_id"] == best["experiment_id"]
    assert reader.top_experiment_ids(2)[0] == best["experiment_id"]
    reasons = [r["reason"] for r in reader.decisions_table().to_pylist()]
    assert any("P(feasible)=" in (r or "") for r in reasons), "the supervisor's reasons cite P(feasible)"

    path = tmp_path / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump({k: v for k, v in study.model_dump(mode="json").items()
                                    if k not in ("source_path",)}))
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"feasible: {len(feasible)} of {len(done)} completed (sens >= 0.5)" in out
    assert f"(experiment {best['experiment_id']})" in out
    assert main(["history", str(path), "--top", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "feasible" in table[0] and best["experiment_id"] in table[1] and " yes " in table[1]


def test_the_report_marks_infeasible_trials(tmp_path):
    from arc_ray import run_study
    from arc_ray.historian.reader import HistoryReader
    from arc_ray.report import build_report

    study = _study(tmp_path, outcome_constraints=[SENS], budget={"trials_per_cycle": 3}, seed=1)
    run_study(study, cycles=2)
    report = build_report(study, tmp_path / "report")
    html = report.html.read_text()
    assert "<th>feasible</th>" in html and "<td>yes</td>" in html
    best = [r for r in HistoryReader(study).trials_table().to_pylist()
            if r["experiment_id"] == report.best_experiment_id]
    assert best and best[0]["metric.sens"] >= 0.5
