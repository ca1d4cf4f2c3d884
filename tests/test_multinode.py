"""Multi-node on one machine: a head and a worker node, trials on both, a node killed mid-trial.

Two Ray nodes run as their own process groups (``ray start --block``): the head on this
machine's address, the worker on 127.0.0.2, one CPU each, so two one-CPU trials must
spread over both. ``arc cycle`` drives one cycle against the head (``RAY_ADDRESS``) from a
subprocess; when both trials are running, the whole worker node is SIGKILLed. Tune must
retry the lost trial on the head from its checkpoint, the cycle must complete, and the
Parquet history must hold each experiment exactly once, completed.

The trainable appends a JSON line per start and end of a run (with its pid) to an events
file; the test maps each pid to a node by its process group while the run is alive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _ray_nodes import read_events, start_node

ROOT = Path(__file__).resolve().parent.parent
ARC = str(Path(sys.executable).with_name("arc"))

STUDY = {
    "name": "multinode",
    "trainable": "trainables.toy:train",
    "metric": "score",
    "mode": "max",
    "baseline": {"x": 0.0, "lr": 0.01, "model": "small", "layers": 2, "epochs": 4,
                 "train_split": 0.8, "val_split": 0.2, "sleep_s": 2.0},
    "search_space": {"x": {"type": "float", "low": -1.0, "high": 1.0},
                     "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
                     "layers": {"type": "int", "low": 1, "high": 6}},
    "executor": "tune",
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent_trials": 2,
    "trial_timeout_s": 150,
    "max_failures": 2,
    "budget": {"max_cycles": 1, "trials_per_cycle": 2},
    "proposers": {"proposals_per_cycle": 3},
}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killing_the_worker_node_mid_trial_retries_it_and_the_cycle_completes(tmp_path):
    events_file = tmp_path / "events.jsonl"
    study = dict(STUDY, storage=str(tmp_path / "history"))
    study["baseline"] = dict(STUDY["baseline"], events_file=str(events_file))
    study_file = tmp_path / "multinode.yaml"
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))

    # Node failures are noticed within ~3 s instead of Ray's default ~15 s.
    fast_failure = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    tag = f"{os.getpid()}"
    head = start_node(head=True, temp_dir=f"/tmp/arc-mn-{tag}-h", num_cpus=1, env=fast_failure)
    worker = None
    driver = None
    try:
        worker = start_node(head=False, address=head.address, temp_dir=f"/tmp/arc-mn-{tag}-w",
                            node_ip="127.0.0.2", num_cpus=1, env=fast_failure)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "ARC_STORAGE")}
        env["RAY_ADDRESS"] = head.address
        log_path = tmp_path / "driver.log"
        with open(log_path, "w") as log:
            driver = subprocess.Popen([ARC, "cycle", str(study_file)], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)

        node_of_pid: dict[int, str] = {}

        def observe() -> list[dict]:
            """Read the events; note the node of every run whose process is alive now."""
            evs = read_events(events_file)
            head_pids, worker_pids = set(head.pids()), set(worker.pids()) if worker.alive() else set()
            for e in evs:
                if e["pid"] not in node_of_pid:
                    if e["pid"] in head_pids:
                        node_of_pid[e["pid"]] = "head"
                    elif e["pid"] in worker_pids:
                        node_of_pid[e["pid"]] = "worker"
            return evs

        # Both trials running, one on each node.
        deadline = time.time() + 150
        while True:
            evs = observe()
            starts = [e for e in evs if e["event"] == "start"]
            nodes = {node_of_pid.get(e["pid"]) for e in starts}
            if {"head", "worker"} <= nodes:
                break
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, f"trials never ran on both nodes: {evs}"
            time.sleep(0.2)
        on_worker = next(e["experiment_id"] for e in starts if node_of_pid.get(e["pid"]) == "worker")
        assert not any(e["event"] == "end" and e["experiment_id"] == on_worker for e in evs)

        time.sleep(1.0)  # into the trial's first epoch
        worker.kill()  # every process of the node at once: raylet, agents, the trial's worker
        assert worker.pids() == []
        killed_at = time.time()

        while driver.poll() is None:
            observe()
            assert time.time() < killed_at + 200, "the cycle did not finish after the node died"
            time.sleep(0.3)
        evs = observe()
        output = log_path.read_text()
        assert driver.returncode == 0, output[-4000:]
        assert "cycle 1 done: 2 result(s)" in output, output[-4000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        if worker is not None:
            worker.stop()
        head.stop()
        shutil.rmtree(f"/tmp/arc-mn-{tag}-h", ignore_errors=True)
        shutil.rmtree(f"/tmp/arc-mn-{tag}-w", ignore_errors=True)

    # The lost trial ran again, after the kill, on the head, to the end.
    runs = [e for e in evs if e["experiment_id"] == on_worker]
    retries = [e for e in runs if e["event"] == "start" and e["t"] > killed_at]
    assert retries, runs
    assert node_of_pid.get(retries[-1]["pid"]) == "head", (runs, node_of_pid)
    assert any(e["event"] == "end" and e["t"] > killed_at for e in runs), runs

    # The history is intact: each experiment once, both completed, the cycle logged.
    import pyarrow.dataset as ds

    study_dir = tmp_path / "history" / "multinode"
    trials = ds.dataset(study_dir / "trials", format="parquet").to_table().to_pylist()
    assert sorted(t["experiment_id"] for t in trials) == sorted({e["experiment_id"] for e in evs})
    assert len(trials) == 2
    assert all(t["status"] == "COMPLETED" and t["metric.score"] is not None for t in trials)
    lost = next(t for t in trials if t["experiment_id"] == on_worker)
    assert lost["node_ip"] != "127.0.0.2"  # its final result came from the head
    cycles = ds.dataset(study_dir / "cycles", format="parquet").to_table().to_pylist()
    assert [c["cycle_id"] for c in cycles] == [1]
