"""A driver killed with SIGKILL mid-batch; a new driver finishes the batch (real processes).

Each driver is its own Python process with its own local Ray, as after a real crash.
The trials write a line per start and end of a run (``events_file``), so the test sees
from the trials themselves what ran when.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("arc_ray").setLevel(logging.DEBUG)
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
from arc_ray.executor import TrainingExecutor
from arc_ray.records import Decision, DecisionOutcome
from arc_ray.study import StudyConfig

study_path, events, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
study = StudyConfig.from_yaml(study_path)
ex = TrainingExecutor(study)
if mode == "first":
    items = [Decision(experiment_id=f"t{i}", cycle_id=1, outcome=DecisionOutcome.APPROVED,
                      decided_by="test", reason="test",
                      config={**study.baseline, "x": i / 10, "epochs": 3, "sleep_s": 0.7,
                              "events_file": events, "experiment_id": f"t{i}"})
             for i in range(n)]
    jobs = ex.submit_batch(items, cycle_id=1)
else:
    jobs = ex.resume(1)
print("SUBMITTED", flush=True)
ids = [j.experiment_id for j in jobs]
deadline = time.monotonic() + 150
while not all(s.is_terminal() for s in ex.poll(ids).values()) and time.monotonic() < deadline:
    ex.wait_for_change(1.0)
results = {i: ex.collect_results(i).model_dump(mode="json") for i in ids}
print("RESULTS " + json.dumps(results), flush=True)
ex.shutdown()
"""


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a cluster of its own
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _reap_session(sid: int, timeout: float = 3.0) -> None:
    """Wait for the dead driver's Ray processes to exit; kill any that linger (ours only)."""
    deadline = time.monotonic() + timeout
    while (left := _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.ray
def test_sigkilled_driver_batch_finishes_once_in_a_new_driver(toy_study, tmp_path):
    n = 6
    events = tmp_path / "events.jsonl"
    study_path = toy_study.source_path  # storage under tmp_path; 2 trials at a time, 1 CPU each
    args = [sys.executable, "-c", DRIVER, study_path, str(events)]
    first = subprocess.Popen([*args, "first", str(n)], cwd=ROOT, env=_env(), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sid = first.pid  # start_new_session: the driver leads its own session
    results_dir = Path(toy_study.tune_dir) / "cycle_0001" / "arc" / "results"
    deadline = time.monotonic() + 120
    try:
        # Kill mid-batch at a moment no trial is finishing: every trial that ended has
        # been recorded by the driver, and every running trial is well inside its ~2.1 s.
        while True:
            log = _events(events)
            ended = {e["experiment_id"] for e in log if e["event"] == "end"}
            running = {e["experiment_id"]: e["t"] for e in log if e["event"] == "start"
                       and e["experiment_id"] not in ended}
            recorded = {p.stem for p in results_dir.glob("*.json")}
            ages = [time.time() - t for t in running.values()]
            if len(ended) >= 2 and recorded == ended and ages and all(0.5 < a < 1.3 for a in ages):
                break
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "never found a moment to kill the first driver"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        t_kill = time.time()
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        _reap_session(sid)
    assert first.returncode == -signal.SIGKILL

    done_before = {p.stem for p in results_dir.glob("*.json")}
    before = _events(events)
    interrupted = ({e["experiment_id"] for e in before if e["event"] == "start"}
                   - {e["experiment_id"] for e in before if e["event"] == "end"})
    assert len(done_before) >= 2 and interrupted  # the kill really landed mid-batch

    second = subprocess.run([*args, "resume", "0"], cwd=ROOT, env=_env(), capture_output=True,
                            text=True, timeout=240)
    lines = [ln for ln in second.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert second.returncode == 0 and lines, second.stdout[-3000:] + second.stderr[-3000:]
    results = json.loads(lines[0][len("RESULTS "):])

    assert sorted(results) == [f"t{i}" for i in range(n)]
    for eid, r in results.items():
        assert r["status"] == "COMPLETED", (eid, r["status"], r["error_class"], r["error_message"])
        assert r["iterations"] == 3 and r["metrics"]["epoch"] == 3.0
    log = _events(events)
    for i in range(n):
        eid = f"t{i}"
        mine = [e for e in log if e["experiment_id"] == eid]
        # trained to the end exactly once (a run resumed at its last checkpoint trains nothing)
        trained_to_end = [e for e in mine if e["event"] == "end" and e["start_epoch"] < e["epochs"]]
        assert len(trained_to_end) == 1, (eid, mine)
        if eid in done_before:  # finished before the kill: never touched again
            assert all(e["t"] < t_kill for e in mine), (eid, mine)
    resumed = [e for e in log if e["experiment_id"] in interrupted and e["t"] > t_kill
               and e["event"] == "start"]
    assert resumed  # the interrupted trials ran on in the new driver
