"""Telemetry: values recorded with ``ray.util.metrics`` reach Ray's Prometheus export."""

from __future__ import annotations

import logging
import time
import urllib.request
import uuid

import pytest

from arc_ray.records import CycleReport, Decision, Strategy, TrialResult
from arc_ray.telemetry import EXPORTED_NAMES, Telemetry


def _report(study: str, cycle_id: int = 3) -> CycleReport:
    decisions = [
        Decision(experiment_id=f"e{i}", cycle_id=cycle_id, outcome=o, decided_by="supervisor",
                 reason="test")
        for i, o in enumerate(["approved", "approved", "repaired", "vetoed", "rejected"])
    ]
    results = [
        TrialResult(experiment_id="e0", cycle_id=cycle_id, status="COMPLETED", metrics={"score": 0.8}),
        TrialResult(experiment_id="e1", cycle_id=cycle_id, status="COMPLETED", metrics={"score": 0.7}),
        TrialResult(experiment_id="e2", cycle_id=cycle_id, status="FAILED", error_class="oom"),
    ]
    return CycleReport(study=study, cycle_id=cycle_id, strategy=Strategy(mode="exploit", reason="test"),
                       decisions=decisions, results=results, best_value=0.8125,
                       best_experiment_id="e0", duration_s=12.5, decision_time_s=0.75)


def test_record_cycle_without_ray_keeps_values_and_sends_nothing(monkeypatch):
    monkeypatch.setattr("arc_ray.telemetry._ray_ready", lambda: False)
    t = Telemetry("offline", metric="score")
    assert not t.active
    t.record_cycle(_report("offline"))
    t.record_cycle(_report("offline", cycle_id=4))
    t.set_trials_by_status({"COMPLETED": 4, "FAILED": 1})
    snap = t.snapshot()
    assert snap["current_cycle"] == 4
    assert snap["cycles"] == 2
    assert snap["best_metric{metric=score}"] == 0.8125
    assert snap["proposals{decision=approved}"] == 4  # two per cycle, counted over both
    assert snap["proposals{decision=vetoed}"] == 2
    assert snap["trials_finished{status=FAILED}"] == 2
    assert snap["strategy_mode{mode=exploit}"] == 1.0
    assert snap["strategy_mode{mode=explore}"] == 0.0
    assert snap["trials{status=COMPLETED}"] == 4
    assert snap["trials{status=RUNNING}"] == 0  # statuses not given are set to 0
    assert snap["cycle_duration_seconds"] == 12.5


def test_a_failing_metric_never_fails_the_cycle(monkeypatch, caplog):
    monkeypatch.setattr("arc_ray.telemetry._ray_ready", lambda: False)
    t = Telemetry("broken")

    def boom(*args, **kwargs):
        raise RuntimeError("metrics agent gone")

    monkeypatch.setattr(t, "_set", boom)
    with caplog.at_level(logging.WARNING, logger="arc_ray.telemetry"):
        t.record_cycle(_report("broken"))
        t.set_trials_by_status({"COMPLETED": 1})
    assert "could not record telemetry for cycle 3" in caplog.text
    assert "could not record trials by status" in caplog.text


def _scrape(port: int) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return samples


def _value(samples, name: str, **labels: str) -> float | None:
    for s in samples.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@pytest.mark.ray
@pytest.mark.slow
def test_metrics_reach_rays_prometheus_export(ray_session):
    ray = ray_session
    study = f"telemetry_{uuid.uuid4().hex[:8]}"
    t = Telemetry(study, metric="auc")
    assert t.active
    t.record_cycle(_report(study))
    t.set_trials_by_status({"COMPLETED": 4, "FAILED": 1})

    # The export port of this node's metrics agent, as the GCS knows it.
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    want = {
        (EXPORTED_NAMES["current_cycle"], ()): 3.0,
        (EXPORTED_NAMES["cycles"], ()): 1.0,
        (EXPORTED_NAMES["best_metric"], (("metric", "auc"),)): 0.8125,
        (EXPORTED_NAMES["trials"], (("status", "COMPLETED"),)): 4.0,
        (EXPORTED_NAMES["trials"], (("status", "FAILED"),)): 1.0,
        (EXPORTED_NAMES["trials"], (("status", "RUNNING"),)): 0.0,
        (EXPORTED_NAMES["trials_finished"], (("status", "FAILED"),)): 1.0,
        (EXPORTED_NAMES["proposals"], (("decision", "approved"),)): 2.0,
        (EXPORTED_NAMES["proposals"], (("decision", "repaired"),)): 1.0,
        (EXPORTED_NAMES["proposals"], (("decision", "vetoed"),)): 1.0,
        (EXPORTED_NAMES["proposals"], (("decision", "rejected"),)): 1.0,
        (EXPORTED_NAMES["strategy_mode"], (("mode", "exploit"),)): 1.0,
        (EXPORTED_NAMES["strategy_mode"], (("mode", "explore"),)): 0.0,
        (EXPORTED_NAMES["cycle_duration_seconds"], ()): 12.5,
        (EXPORTED_NAMES["decision_time_seconds"], ()): 0.75,
    }
    # The core worker flushes metrics to the agent every few seconds (10 s by default).
    deadline = time.time() + 45
    while True:
        samples = _scrape(port)
        got = {key: _value(samples, key[0], study=study, **dict(key[1])) for key in want}
        if got == want or time.time() > deadline:
            break
        time.sleep(1)
    assert got == want
