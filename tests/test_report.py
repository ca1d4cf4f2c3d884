"""The study report: figures and HTML drawn from a history in the contract's schema."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from arc_ray.records import Constraint, Decision, DecisionOutcome, Pattern, Proposal
from arc_ray.report import (
    EmptyHistoryError,
    ReportData,
    best_so_far_by_cycle,
    load_report_data,
    parameter_importance,
    render_report,
)
from arc_ray.space import flatten_config
from trainables.toy import objective

MODES = {1: "explore", 2: "explore", 3: "exploit", 4: "recover"}


def toy_trials(study, n_per_cycle: int = 6, seed: int = 0) -> pd.DataFrame:
    """A trials table in the historian's schema, scored by the real toy objective."""
    rng = np.random.default_rng(seed)
    rows = []
    for cycle in MODES:
        for i in range(n_per_cycle):
            flat = flatten_config(study.baseline) | study.search_space.sample(rng)
            flat["val_split"] = round(1 - flat["train_split"], 9)
            failed = cycle == 4 and i < 2
            score = None if failed else objective(flat)["score"]
            row = {"experiment_id": f"c{cycle}_e{i}", "cycle_id": cycle,
                   "status": "FAILED" if failed else "COMPLETED", "proposer": "bayesian",
                   "proposal_type": "hyperparameter_tuning", "risk_level": "low",
                   "config_json": json.dumps(flat), "metric.score": score,
                   "metric.loss": None if failed else 1 - score,
                   "error_class": "oom" if failed else None, "duration_s": 1.0}
            row |= {f"config.{k}": v for k, v in flat.items()}
            rows.append(row)
    return pd.DataFrame(rows)


def toy_report_data(study) -> ReportData:
    proposal = Proposal(experiment_id="c4_e5", changes={"x": 0.3}, rationale="close to the best x",
                        proposer="bayesian")
    decisions = [
        Decision(experiment_id="c4_e5", cycle_id=4, outcome=DecisionOutcome.APPROVED,
                 decided_by="supervisor", reason="score 0.8 above quorum", proposal=proposal),
        Decision(experiment_id="c4_vetoed", cycle_id=4, outcome=DecisionOutcome.VETOED,
                 decided_by="supervisor", reason="failure risk 0.9 above cap 0.6 <script>",
                 proposal=proposal.model_copy(update={"experiment_id": "c4_vetoed"})),
    ]
    constraint = Constraint(id="lr_too_high", parameters=["lr"], low=0.5, reason="diverged 3 times",
                            source="learned", n_failed=3)
    pattern = Pattern(parameter="model", value="medium", support=4, lift=1.8, top_share=0.8,
                      all_share=0.44)
    return ReportData(study=study, trials=toy_trials(study), cycle_modes=dict(MODES),
                      last_decisions=decisions, constraints=[constraint], patterns=[pattern])


def test_best_so_far_is_monotone_and_matches_the_data(toy_study):
    data = toy_report_data(toy_study)
    xs, ys = best_so_far_by_cycle(data)
    assert xs == [1, 2, 3, 4]
    assert all(b >= a for a, b in zip(ys, ys[1:]))
    assert ys[-1] == pytest.approx(data.completed()["metric.score"].max())
    first = data.trials[data.trials.cycle_id == 1]["metric.score"].max()
    assert ys[0] == pytest.approx(first)


def test_best_so_far_follows_the_direction_for_min(toy_study):
    study = toy_study.model_copy(update={"metric": "loss", "mode": "min"})
    data = toy_report_data(study)
    _, ys = best_so_far_by_cycle(data)
    assert all(b <= a for a, b in zip(ys, ys[1:]))
    assert ys[-1] == pytest.approx(data.completed()["metric.loss"].min())


def test_importance_finds_the_parameter_that_drives_the_toy_score(toy_study):
    ranked = parameter_importance(toy_report_data(toy_study))
    # the toy score is dominated by (x - 0.3)^2 (range 1.7, against 0.45 for lr, 0.05 for model)
    assert ranked[0][0] == "x" and ranked[0][1] > 0.5
    assert {name for name, _ in ranked} >= {"x", "lr", "model", "layers"}


def test_report_writes_pngs_and_a_self_contained_page(toy_study, tmp_path):
    data = toy_report_data(toy_study)
    report = render_report(data, tmp_path / "report")
    assert set(report.figures) == {"metric_by_cycle", "modes", "parameters"}
    for path in report.figures.values():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 200
    page = report.html.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert base64.b64decode(images[0]) == report.figures["metric_by_cycle"].read_bytes()
    assert "src='http" not in page and "<link" not in page  # nothing fetched from elsewhere
    best = data.completed().sort_values("metric.score").iloc[-1]
    assert report.best_experiment_id == best.experiment_id
    assert report.best_value == pytest.approx(best["metric.score"])
    assert best.experiment_id in page
    assert "close to the best x" in page  # the last cycle's proposal rationale
    assert "failure risk 0.9 above cap 0.6 &lt;script&gt;" in page  # escaped, not injected
    assert "lr_too_high" in page and "forbidden: lr ≥ 0.5" in page
    assert "medium" in page and "Patterns" in page
    assert not (tmp_path / "report" / ".report.html.tmp").exists()


def test_report_with_too_few_trials_skips_the_parameter_plot(toy_study, tmp_path):
    data = toy_report_data(toy_study)
    data.trials = data.trials.iloc[:1]
    report = render_report(data, tmp_path)
    assert "parameters" not in report.figures
    assert "not enough varied parameters" in report.html.read_text()


class _EmptyHistorian:
    def trials_table(self):
        import pyarrow as pa

        return pa.table({"experiment_id": pa.array([], pa.string())})


def test_empty_history_is_a_clear_error(toy_study):
    with pytest.raises(EmptyHistoryError, match="no trial in the history of study 'toy'"):
        load_report_data(toy_study, historian=_EmptyHistorian())


# ------------------------------------------------- against the real historian's files


def seed_history(study, n_cycles: int = 3, per_cycle: int = 4, seed: int = 0, failures: int = 1):
    """Write a real history (trials, decisions, cycles) through the plain Historian."""
    from arc_ray.historian import Historian
    from arc_ray.records import CycleReport, JobStatus, Strategy, StrategyMode, TrialResult

    h = Historian(study)
    rng = np.random.default_rng(seed)
    modes = [StrategyMode.EXPLORE, StrategyMode.EXPLOIT, StrategyMode.RECOVER]
    for cycle in range(1, n_cycles + 1):
        decisions, results = [], []
        for i in range(per_cycle):
            eid = f"c{cycle:04d}-bayesian-{i:02d}"
            changes = {"x": float(rng.uniform(-1, 1)), "lr": float(10 ** rng.uniform(-4, -1)),
                       "model": str(rng.choice(["small", "medium", "large"]))}
            config = flatten_config(study.baseline) | changes
            p = Proposal(experiment_id=eid, changes=changes, rationale=f"try x={changes['x']:.2f}",
                         proposer="bayesian")
            decisions.append(Decision(experiment_id=eid, cycle_id=cycle, outcome=DecisionOutcome.APPROVED,
                                      decided_by="supervisor", reason="approved by vote", proposal=p,
                                      config=config))
            if cycle == n_cycles and i < failures:
                results.append(TrialResult(experiment_id=eid, cycle_id=cycle, status=JobStatus.FAILED,
                                           config=config, error_class="oom", error_message="CUDA OOM",
                                           proposer="bayesian"))
            else:
                results.append(TrialResult(experiment_id=eid, cycle_id=cycle, status=JobStatus.COMPLETED,
                                           config=config, metrics=objective(config), duration_s=2.0,
                                           proposer="bayesian", iterations=2))
        h.log_decisions(decisions)
        h.integrate_experiment_results(results, cycle)
        summary = h.summary()
        h.log_cycle(CycleReport(study=study.name, cycle_id=cycle, decisions=decisions, results=results,
                                strategy=Strategy(mode=modes[(cycle - 1) % 3], reason="test"),
                                best_value=summary.best_value, best_experiment_id=summary.best_experiment_id))
    return h


def test_report_from_the_historians_files(toy_study, tmp_path):
    from arc_ray.report import build_report

    seed_history(toy_study, n_cycles=3, per_cycle=4)
    data = load_report_data(toy_study)  # a fresh historian, reading the files
    assert len(data.trials) == 12
    assert data.cycle_modes == {1: "explore", 2: "exploit", 3: "recover"}
    assert {d.cycle_id for d in data.last_decisions} == {3} and len(data.last_decisions) == 4
    report = build_report(toy_study, tmp_path / "out")
    page = report.html.read_text()
    assert report.n_trials == 12 and page.count("data:image/png;base64,") == 3
    assert "c0003-bayesian-03" in page  # a decision of the last cycle
    best = data.completed().sort_values("metric.score").iloc[-1]
    assert report.best_experiment_id == best.experiment_id


def test_assign_slots_never_overlaps_two_trials_in_a_row():
    from arc_ray._timeline import assign_slots

    spans = [(0, 4), (0, 1), (1, 3), (3.5, 5), (4, 6), (1, 2)]
    slots = assign_slots(spans)
    assert max(slots) + 1 == 3  # three trials ran at once at t=1..2
    for k in set(slots):
        mine = sorted(s for s, slot in zip(spans, slots) if slot == k)
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:]))


def test_report_draws_the_slot_timeline_when_trials_have_times(toy_study, tmp_path):
    from arc_ray._timeline import slot_utilisation

    data = toy_report_data(toy_study)
    n = len(data.trials)
    data.trials["started_at"] = [1000.0 + 2 * i for i in range(n)]
    data.trials["ended_at"] = data.trials["started_at"] + 3.0
    data.round_times = {c: 999.0 + 12 * (c - 1) for c in MODES}
    report = render_report(data, tmp_path / "report")
    with Image.open(report.figures["timeline"]) as im:
        assert im.format == "PNG" and im.size[0] > 400
    assert len(re.findall(r"src='data:image/png;base64,", report.html.read_text())) == 4
    assert slot_utilisation(data.trials, 2) == pytest.approx(3.0 * n / (2 * (2 * (n - 1) + 3)))


@pytest.mark.ray
@pytest.mark.slow
def test_a_metric_less_history_runs_reports_and_counts_as_failures(ray_session, tmp_path):
    """Every trial reports only a misnamed metric: `arc run` stops after one cycle with a
    reason that names the error, `arc report` and `arc status` work, and the trials are
    no_metric failures the director sees."""
    import io

    from arc_ray.cli import main
    from arc_ray.historian import HistoryReader
    from arc_ray.study import StudyConfig

    path = tmp_path / "study.yaml"
    path.write_text(f"""\
name: no_metric
trainable: trainables.toy:objective
executor: inprocess
metric: score
mode: max
baseline: {{x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 2, train_split: 0.8, val_split: 0.2,
           bad_metric: renamed}}
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
storage: {tmp_path / "history"}
budget: {{trials_per_cycle: 2}}
proposers: {{enabled: [explorer], proposals_per_cycle: 2}}
""")
    out = io.StringIO()
    assert main(["run", str(path), "--cycles", "2", "--report-dir", str(tmp_path / "rep")], out=out) == 0
    text = out.getvalue()
    assert "best score: none yet" in text and (tmp_path / "rep" / "report.html").is_file()
    assert main(["report", str(path), "--out", str(tmp_path / "rep2")], out=io.StringIO()) == 0
    status = io.StringIO()
    assert main(["status", str(path)], out=status) == 0
    assert "failures: no_metric " in status.getvalue()
    h = HistoryReader(StudyConfig.from_yaml(path))
    trials = h.trials_table().to_pylist()
    assert trials and all(t["status"] == "FAILED" and t["error_class"] == "no_metric" for t in trials)
    assert all(t.get("metric.scor") is not None for t in trials)  # what it did report is kept
    s = h.summary()
    assert s.n_failed == len(trials) and s.best_value is None
    # one error from every trial is a broken objective: the run stops after the first cycle
    # and says why, rather than spending the second cycle on it
    assert "stopped: all 2 trials of cycle 1 failed with the same error (no_metric)" in text, text
    assert [r["mode"] for r in h.cycles_table().to_pylist()] == ["explore"]
    from arc_ray.agents.director import Director
    from arc_ray.records import StrategyMode
    assert Director(h.study).plan(s).mode == StrategyMode.RECOVER  # the director sees failures
