"""The Historian class on real Parquet files: idempotence, restarts, bad input, summaries, two drivers."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from arc_ray.errors import HistoryError
from arc_ray.historian import Historian
from arc_ray.records import (
    CycleReport,
    Decision,
    DecisionOutcome,
    Proposal,
    Resources,
    Strategy,
    StrategyMode,
    TrialResult,
    Vote,
)

ROOT = Path(__file__).resolve().parent.parent


def _result(i, score=None, status="COMPLETED", cycle=0, error=None, lr=0.01, **extra):
    config = {"x": 0.1 * i, "lr": lr, "model": "small", "augmentation": {"flip": i % 2 == 0}, **extra}
    return TrialResult(experiment_id=f"exp-{i:03d}", cycle_id=cycle, status=status, config=config,
                       metrics={} if score is None else {"score": score, "loss": 1 - score},
                       error_class=error, duration_s=120.0, resources=Resources(cpu=1, gpu=0.5),
                       proposer="explorer", proposal_type="exploration", risk_level="low")


def _files(study, table="trials"):
    return sorted(p.name for p in (Path(study.study_dir) / table).glob("part-*.parquet"))


def test_integrate_is_idempotent_and_survives_a_restart(toy_study):
    h = Historian(toy_study)
    batch = [_result(i, 0.5 + 0.01 * i) for i in range(5)]
    first = h.integrate_experiment_results(batch, cycle_id=0)
    assert first.status == "ok" and first.total == 5 and first.successful == 5 and first.history_updated
    assert first.best_metrics == {"score": 0.54, "loss": pytest.approx(0.46)}
    files = _files(toy_study)
    again = h.integrate_experiment_results(batch, cycle_id=0)
    assert again.status == "duplicate" and again.skipped_duplicates == 5 and not again.history_updated
    assert _files(toy_study) == files and h.trials_table().num_rows == 5

    reborn = Historian(toy_study)  # a new actor: rebuilds everything from the files
    assert reborn.integrated_ids() == {f"exp-{i:03d}" for i in range(5)}
    assert reborn.trials_table().num_rows == 5
    mixed = reborn.integrate_experiment_results(batch[:2] + [_result(7, 0.9)], cycle_id=1)
    assert mixed.status == "ok" and mixed.skipped_duplicates == 2 and mixed.successful == 1
    assert reborn.summary().best_experiment_id == "exp-007"
    assert h.summary().best_experiment_id == "exp-007"  # the first instance sees the new file too
    assert ds.dataset(str(Path(toy_study.study_dir) / "trials")).to_table().num_rows == 6


def test_trials_table_follows_the_contract(toy_study):
    h = Historian(toy_study)
    h.integrate_experiment_results([_result(0, 0.7), _result(1, None, status="FAILED", error="oom")], 0)
    t = h.trials_table()
    for col in ["experiment_id", "cycle_id", "status", "proposer", "proposal_type", "risk_level",
                "config.x", "config.lr", "config.model", "config.augmentation.flip", "config_json",
                "metric.score", "metric.loss", "best_metrics_json", "duration_s", "error_class",
                "error_message", "node_ip", "resources_cpu", "resources_gpu", "stopped_early",
                "iterations", "started_at", "ended_at", "integrated_at"]:
        assert col in t.column_names, col
    assert str(t.schema.field("config.augmentation.flip").type) == "bool"
    assert str(t.schema.field("cycle_id").type) == "int64"
    row = t.to_pylist()[1]
    assert row["status"] == "FAILED" and row["error_class"] == "oom" and row["metric.score"] is None
    assert json.loads(row["config_json"])["augmentation"] == {"flip": False}


def test_bad_results_are_refused_whole_with_every_problem_named(toy_study):
    h = Historian(toy_study)
    good = _result(0, 0.5).model_dump(mode="json")
    unknown = dict(_result(1, 0.5).model_dump(mode="json"), status="EXPLODED")
    running = _result(2, 0.5).model_copy(update={"status": "RUNNING"})
    with pytest.raises(HistoryError) as err:
        h.integrate_experiment_results([good, unknown], cycle_id=0)
    assert "exp-001" in str(err.value) and "status" in str(err.value)
    with pytest.raises(HistoryError, match="exp-002.*not finished"):
        h.integrate_experiment_results([_result(0, 0.5), running], cycle_id=0)
    with pytest.raises(HistoryError, match="experiment_id"):
        h.integrate_experiment_results([_result(0, 0.5).model_copy(update={"experiment_id": "../x"})], 0)
    with pytest.raises(HistoryError, match="expected a list"):
        h.integrate_experiment_results(_result(0, 0.5), cycle_id=0)
    with pytest.raises(HistoryError, match="#0"):
        h.integrate_experiment_results(["not a result"], cycle_id=0)
    assert _files(toy_study) == [] and h.trials_table().num_rows == 0
    assert h.integrate_experiment_results([], cycle_id=0).status == "empty"


def test_duplicates_in_a_batch_and_missing_or_nan_metrics(toy_study, caplog):
    h = Historian(toy_study)
    batch = [_result(0, 0.5), _result(0, 0.9), _result(1, float("nan")), _result(2, None)]
    with caplog.at_level(logging.WARNING, logger="arc_ray.historian.historian"):
        s = h.integrate_experiment_results(batch, cycle_id=0)
    assert s.status == "ok" and s.skipped_duplicates == 1 and s.successful == 3
    assert any("exp-002" in r.getMessage() and "cannot rank" in r.getMessage() for r in caplog.records)
    t = h.trials_table()
    assert t.column("experiment_id").to_pylist() == ["exp-000", "exp-001", "exp-002"]
    assert t.column("metric.score").to_pylist()[0] == 0.5  # the first copy won
    summary = h.summary()
    assert summary.n_completed == 3 and summary.best_value == 0.5 and summary.best_experiment_id == "exp-000"


def test_summary_fields(toy_study):
    h = Historian(toy_study)
    h.integrate_experiment_results([_result(0, 0.5, cycle=0), _result(1, 0.6, cycle=0)], 0)
    h.integrate_experiment_results([_result(2, 0.8, cycle=1),
                                    _result(3, None, status="FAILED", error="diverged", lr=0.5, cycle=1),
                                    _result(4, None, status="FAILED", error="diverged", lr=0.9, cycle=1),
                                    _result(5, None, status="CANCELLED", cycle=1)], 1)
    for c, mode in [(0, StrategyMode.EXPLORE), (1, StrategyMode.EXPLOIT)]:
        h.log_cycle(CycleReport(study="toy", cycle_id=c, strategy=Strategy(mode=mode, reason="because"),
                                duration_s=10.0))
    s = h.summary()
    assert (s.study, s.metric, s.mode) == ("toy", "score", "max")
    assert (s.n_trials, s.n_completed, s.n_failed, s.n_cycles, s.last_cycle) == (6, 3, 2, 2, 1)
    assert s.best_value == 0.8 and s.best_experiment_id == "exp-002"
    assert s.best_config["augmentation"] == {"flip": True} and s.best_metrics["score"] == 0.8
    assert s.recent_improvement == pytest.approx(0.2) and s.trend > 0
    assert s.failures_by_class == {"diverged": 2} and s.modes == ["explore", "exploit"]
    assert s.gpu_hours_used == pytest.approx(6 * 120.0 * 0.5 / 3600) and s.mean_trial_duration_s == 120.0
    (c,) = s.constraints
    assert c.parameters == ["lr"] and c.low == 0.5 and c.source == "learned" and c.cycle_id == 1
    assert h.learned_constraints() == s.constraints
    assert not s.stagnating and h.detect_stagnation() is False
    assert h.detect_stagnation(window=1, threshold=0.5) is True  # 0.8 beat 0.6 by less than 0.5
    trend = h.get_performance_trend(window=3)
    assert trend["values"] == [0.5, 0.6, 0.8] and trend["status"] == "improving"
    assert h.get_performance_trend(metric="loss", mode="min")["status"] == "improving"


def test_learned_constraints_are_persisted_and_retired(toy_study):
    h = Historian(toy_study)
    h.integrate_experiment_results([_result(0, 0.5, lr=0.01),
                                    _result(1, None, status="FAILED", error="diverged", lr=0.3),
                                    _result(2, None, status="FAILED", error="diverged", lr=0.6)], 0)
    t = h.constraints_table()
    assert t.num_rows == 1 and t.column("active").to_pylist() == [True] and t.column("low")[0].as_py() == 0.3
    # a success at lr=0.4 moves the bound to the failure above it, leaving one failure: not enough
    h.integrate_experiment_results([_result(3, 0.6, lr=0.4)], 1)
    assert h.learned_constraints() == []
    t = Historian(toy_study).constraints_table()
    assert t.num_rows == 1 and t.column("active").to_pylist() == [False]
    assert (Path(toy_study.study_dir) / "constraints").is_dir()


def test_decisions_and_cycles(toy_study):
    h = Historian(toy_study)
    prop = Proposal(experiment_id="exp-001", changes={"lr": 0.1}, proposer="bayesian")
    decisions = [Decision(experiment_id="exp-001", cycle_id=3, outcome=DecisionOutcome.APPROVED,
                          decided_by="supervisor", reason="fine", proposal=prop,
                          votes=[Vote(agent="critic", experiment_id="exp-001", approve=True, score=0.8)],
                          config={"lr": 0.1}),
                 Decision.rejected("exp-002", proposal=Proposal(experiment_id="exp-002"), cycle_id=3,
                                      decided_by="configgen", reason="lr out of range")]
    assert h.log_decisions(decisions) == 2
    assert h.log_decisions(decisions) == 0  # idempotent per (cycle, experiment)
    assert Historian(toy_study).decisions_for_cycle(3) == decisions
    assert h.decisions_for_cycle(4) == []
    t = h.decisions_table()
    assert t.column("outcome").to_pylist() == ["approved", "rejected"] and t.column("n_approve")[0].as_py() == 1
    with pytest.raises(HistoryError, match="decision"):
        h.log_decisions([{"experiment_id": "x"}])

    h.log_cycle(CycleReport(study="toy", cycle_id=0, strategy=Strategy(mode="explore", reason="start")))
    files = _files(toy_study, "cycles")
    h.log_cycle(CycleReport(study="toy", cycle_id=0, strategy=Strategy(mode="explore", reason="start")))
    assert _files(toy_study, "cycles") == files  # same report: nothing written
    h.log_cycle(CycleReport(study="toy", cycle_id=0, strategy=Strategy(mode="recover", reason="resumed"),
                            resumed=True))
    rows = Historian(toy_study).cycles_table().to_pylist()
    assert len(rows) == 1 and rows[0]["mode"] == "recover" and rows[0]["resumed"] is True


def test_unwritable_storage_fails_at_construction(toy_study, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the history folder should be")
    study = toy_study.model_copy(update={"storage": str(blocker)})
    with pytest.raises(HistoryError, match="not writable"):
        Historian(study)


def test_file_uri_storage_and_a_corrupt_file(toy_study, tmp_path, caplog):
    study = toy_study.model_copy(update={"storage": f"file://{tmp_path}/uri-history"})
    h = Historian(study)
    h.integrate_experiment_results([_result(0, 0.5)], 0)
    folder = tmp_path / "uri-history" / "toy" / "trials"
    bad = folder / "part-00000000000000000000-000000000000.parquet"
    bad.write_bytes(b"garbage, not parquet")
    with caplog.at_level(logging.ERROR):
        again = Historian(study)
    assert again.trials_table().num_rows == 1
    assert again.corrupt_files() == [f"trials/{bad.name}"]
    assert any(bad.name in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    again.integrate_experiment_results([_result(1, 0.6)], 1)
    again.compact()
    assert bad.read_bytes() == b"garbage, not parquet"
    assert Historian(study).trials_table().num_rows == 2


def test_automatic_compaction_keeps_every_row(toy_study):
    h = Historian(toy_study, compact_every=3)
    for i in range(7):
        h.integrate_experiment_results([_result(i, 0.1 * i)], i)
    assert len(_files(toy_study)) < 3
    assert Historian(toy_study).integrated_ids() == {f"exp-{i:03d}" for i in range(7)}
    assert h.compact()["trials"] in (0, 2)


_DRIVER = """
import os, sys, time
from arc_ray.study import StudyConfig
from arc_ray.historian import Historian
from arc_ray.records import TrialResult
study = StudyConfig.model_validate_json(open(sys.argv[1]).read())
h = Historian(study, compact_every=None)
start, barrier = int(sys.argv[2]), sys.argv[3]
open(f"{barrier}.ready{start}", "w").close()
while not os.path.exists(f"{barrier}.go"):  # both drivers start integrating together
    time.sleep(0.005)
for b in range(20):
    batch = [TrialResult(experiment_id=f"exp-{start + 5 * b + i:03d}", cycle_id=b, status="COMPLETED",
                         config={"x": 0.1}, metrics={"score": 0.5}, proposer=f"driver{start}")
             for i in range(5)]
    h.integrate_experiment_results(batch, b)
    time.sleep(0.01)  # a driver between cycles; lets the two interleave
"""


def test_two_drivers_integrating_at_once_lose_no_row(toy_study, tmp_path):
    study_file = tmp_path / "study.json"
    study_file.write_text(toy_study.model_dump_json())
    Historian(toy_study)  # create the folders first, as the orchestrator would
    # driver A writes 0..99, driver B 50..149: 50 ids overlap
    barrier = tmp_path / "barrier"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_DRIVER), str(study_file), str(s),
                               str(barrier)], cwd=ROOT, stderr=subprocess.PIPE, text=True) for s in (0, 50)]
    deadline = time.time() + 60
    while not all(Path(f"{barrier}.ready{s}").exists() for s in (0, 50)) and time.time() < deadline:
        time.sleep(0.01)
    Path(f"{barrier}.go").touch()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    h = Historian(toy_study)
    ids = h.trials_table().column("experiment_id").to_pylist()
    assert len(ids) == len(set(ids)) == 150
    assert h.integrated_ids() == {f"exp-{i:03d}" for i in range(150)}
    assert not math.isnan(h.summary().best_value)
    written = ds.dataset(str(Path(toy_study.study_dir) / "trials")).to_table()
    stamps = list(zip(written.column("proposer").to_pylist(), written.column("integrated_at").to_pylist()))
    a, b = ([t for p, t in stamps if p == name] for name in ("driver0", "driver50"))
    assert min(b) < max(a) and min(a) < max(b)  # the two really wrote at the same time


def test_schema_evolves_new_metric_new_key_and_a_type_change(toy_study):
    h = Historian(toy_study)
    h.integrate_experiment_results([_result(0, 0.5)], 0)
    later = _result(1, 0.6, model=3, layers=4)  # model becomes a number; a new key appears
    later.metrics["auc"] = 0.7  # and a new metric
    h.integrate_experiment_results([later], 1)
    for historian in (h, Historian(toy_study)):
        t = historian.trials_table()
        assert t.column("config.model").to_pylist() == ["small", "3"]
        assert t.column("config.layers").to_pylist() == [None, 4]
        assert t.column("metric.auc").to_pylist() == [None, 0.7]
        s = historian.summary()
        assert s.n_trials == 2 and s.best_experiment_id == "exp-001"


def test_an_empty_history_has_typed_empty_tables_and_a_plain_summary(toy_study):
    h = Historian(toy_study)
    assert h.trials_table().num_rows == 0 and "status" in h.trials_table().column_names
    assert h.cycles_table().schema.field("cycle_id").type == "int64"
    assert h.decisions_table().num_rows == 0 and h.decisions_for_cycle(0) == []
    s = h.summary()
    assert (s.n_trials, s.best_value, s.trend, s.stagnating, s.constraints, s.patterns, s.modes) == \
        (0, None, None, False, [], [], [])
    assert h.get_performance_trend()["status"] == "insufficient_data" and not h.detect_stagnation()
    assert h.learned_constraints() == [] and h.integrated_ids() == set()
    assert h.compact() == {"trials": 0, "decisions": 0, "cycles": 0, "constraints": 0}
