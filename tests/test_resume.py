"""Resume: a driver SIGKILLed at any step of a cycle loses no result and counts none twice.

Each test starts a real driver process (``Orchestrator.run_autonomous_cycle`` on the toy
study, Tune trials that sleep) connected to the session's Ray, holds it at one step
with an ``on_event`` hook, kills it with SIGKILL, and finishes the cycle from this
process the way a re-run of ``arc cycle`` would. The agent and historian actors belong
to this process's job, so they outlive the driver, as on a cluster; the killed driver's
Tune trials die with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from arc_ray.records import JobStatus
from arc_ray.study import StudyConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent

STUDY = """\
name: resume_toy
trainable: trainables.toy:train
metric: score
mode: max
baseline: {{x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 2, train_split: 0.8, val_split: 0.2,
           sleep_s: 0.8}}
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
  model: {{type: categorical, choices: [small, medium, large]}}
  layers: {{type: int, low: 1, high: 4}}
  epochs: {{type: int, low: 2, high: 3}}
storage: {storage}
checkpoints: {{keep_top: 100}}   # every stored trial keeps its newest checkpoint (test_checkpoints: top-k)
resources: {{cpu: 1, gpu: 0}}
max_concurrent_trials: 2
budget: {{trials_per_cycle: 3}}
proposers: {{enabled: [bayesian, explorer], proposals_per_cycle: 4}}
"""

DRIVER = textwrap.dedent("""
    import sys, time
    from arc_ray.study import StudyConfig
    from arc_ray.orchestrator import Orchestrator
    from arc_ray.storage import atomic_write_text

    config, address, hold, marker = sys.argv[1:5]

    def hook(event):
        if event.phase != hold:
            return
        if hold == "progress" and event.counts.get("running", 0) < 1:
            return
        # atomically: the test must never read a marker that exists but is empty
        atomic_write_text(marker, f"{event.cycle_id} {dict(event.counts)}")
        time.sleep(3600)  # killed here

    orch = Orchestrator(StudyConfig.from_yaml(config), address=address, on_event=hook)
    orch.run_autonomous_cycle()
    print("the driver was not held", file=sys.stderr)
""")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    path = folder / "study.yaml"
    path.write_text(STUDY.format(storage=folder / "history"))
    return StudyConfig.from_yaml(path)


@pytest.fixture(scope="module")
def orch(ray_session, study):
    from arc_ray.orchestrator import Orchestrator

    o = Orchestrator(study)
    # the tests drive this study from several drivers (the CLI, an offline orchestrator,
    # driver processes) while this one lives: it lends them the lease (tests/test_drivers.py
    # and tests/test_lease.py test the lease itself)
    o.lease.release()
    yield o
    o.shutdown(kill_actors=True)


def rows(study, table: str) -> list[dict]:
    """Every row physically stored in a history table (all parts, no de-duplication)."""
    folder = Path(study.study_dir) / table
    if not folder.is_dir():
        return []
    return ds.dataset(str(folder), format="parquet").to_table().to_pylist()


def kill_driver_at(study, tmp_path, hold: str, timeout_s: float = 180) -> tuple[str, float]:
    """Run a driver until it reaches ``hold``, SIGKILL it; returns its marker text and kill time."""
    import ray

    script, marker, log = tmp_path / "driver.py", tmp_path / "held", tmp_path / "driver.log"
    script.write_text(DRIVER)
    address = ray.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(script), study.source_path, address, hold, str(marker)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    try:
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"driver never reached {hold!r} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return marker.read_text(), time.time()


def assert_cycle_stored_once(study, orch, cycle_id: int) -> None:
    """Every decided experiment of the cycle has exactly one trial row; one cycle row."""
    decisions = [r for r in rows(study, "decisions") if r["cycle_id"] == cycle_id]
    keys = [r["experiment_id"] for r in decisions]
    assert len(keys) == len(set(keys)), "a decision was logged twice"
    runnable = {r["experiment_id"] for r in decisions if r["outcome"] in ("approved", "repaired")}
    assert runnable, "the cycle approved nothing"
    trials = [r["experiment_id"] for r in rows(study, "trials") if r["cycle_id"] == cycle_id]
    assert sorted(trials) == sorted(runnable), "a result is missing or stored twice"
    cycles = [r for r in rows(study, "cycles") if r["cycle_id"] == cycle_id]
    assert len(cycles) == 1
    assert orch.pending_cycle() is None


def finished_on_disk(study, cycle_id: int) -> set[str]:
    """Results the executor saved for the cycle (``arc/results/<id>.json`` per finished trial)."""
    folder = Path(study.tune_dir) / f"cycle_{cycle_id:04d}" / "arc" / "results"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def test_killed_while_deciding_decides_the_same_cycle_again(orch, study, tmp_path):
    first = orch.next_cycle_id()
    held, _ = kill_driver_at(study, tmp_path, "decided")
    assert held.startswith(f"{first} ")
    assert orch.pending_cycle() is None  # nothing was logged: nothing to resume
    assert orch.next_cycle_id() == first
    report = orch.run_autonomous_cycle()
    assert report.cycle_id == first and not report.resumed
    assert all(r.status == JobStatus.COMPLETED for r in report.results)
    assert_cycle_stored_once(study, orch, first)


def test_killed_while_trials_run_resumes_the_tune_run(orch, study, tmp_path):
    cycle = orch.next_cycle_id()
    held, killed_at = kill_driver_at(study, tmp_path, "progress")
    assert held.startswith(f"{cycle} ")
    done_before = finished_on_disk(study, cycle)
    assert orch.pending_cycle() == cycle
    report = orch.run_autonomous_cycle()
    assert report.resumed and report.cycle_id == cycle
    assert len(done_before) < len(report.results)  # some trials had to run after the kill
    assert all(r.status == JobStatus.COMPLETED for r in report.results)
    ends = {r.experiment_id: r.metrics["t_end"] for r in report.results}
    for eid in done_before:  # finished before the kill: not rerun
        assert ends[eid] < killed_at
    assert report.strategy is not None  # the mode survives the crash
    assert_cycle_stored_once(study, orch, cycle)
    # once the cycle is stored, each trial keeps only its newest checkpoint (2 epochs ran)
    trial_dirs = [d for run in Path(study.tune_dir).glob(f"cycle_{cycle:04d}*")
                  for d in run.iterdir() if d.is_dir() and d.name in ends]
    assert sorted(d.name for d in trial_dirs) == sorted(ends)
    for d in trial_dirs:
        assert len(list(d.glob("checkpoint_*"))) == 1, d


@pytest.mark.parametrize("hold", ["integrating", "integrated"])
def test_killed_while_integrating_stores_each_result_once(orch, study, tmp_path, hold):
    cycle = orch.next_cycle_id()
    kill_driver_at(study, tmp_path, hold)
    stored = {r["experiment_id"] for r in rows(study, "trials") if r["cycle_id"] == cycle}
    if hold == "integrating":
        assert not stored  # collected, not yet stored
    else:
        assert stored  # stored, the cycle not yet logged
    assert orch.pending_cycle() == cycle
    report = orch.run_autonomous_cycle()
    assert report.resumed and report.cycle_id == cycle
    assert len(report.results) == len([d for d in report.decisions if d.outcome.runs()])
    if hold == "integrated":
        assert report.integration is None  # nothing left to store
    assert_cycle_stored_once(study, orch, cycle)
    cycles = {r["cycle_id"]: r for r in rows(study, "cycles")}
    assert cycles[cycle]["resumed"] and cycles[cycle]["mode"] is not None
    assert json.loads(cycles[cycle]["strategy_json"])["mode"] == cycles[cycle]["mode"]


def test_ctrl_c_leaves_trials_to_resume_not_cancelled(orch, study, tmp_path):
    """SIGINT to ``arc cycle`` while trials run: exit 130, and the next run finishes the cycle."""
    import re

    import ray

    cycle = orch.next_cycle_id()
    log = tmp_path / "arc.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "arc_ray.cli", "cycle", study.source_path,
            "--address", ray.get_runtime_context().gcs_address]

    def as_foreground_job() -> None:
        # SIGINT at its default, as a terminal's foreground job has it (a suite started in
        # the background by a non-interactive shell, `pytest &`, hands SIG_IGN down, and
        # an ignored SIGINT is what a background job should have); and SIGINT and SIGTERM
        # blocked, as a parent may hand down its mask (it survives exec; arc unblocks them)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=as_foreground_job)
    deadline = time.monotonic() + 180
    while not re.search(r"trials: \d+ queued, [1-9]\d* running", log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no trial started (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    status = Path(f"/proc/{proc.pid}/status")
    signals = [line for line in status.read_text().splitlines() if line.startswith("Sig")] \
        if status.exists() else []
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, "\n".join(signals) + "\n" + log.read_text()[-3000:]
    assert "interrupted; run the same command again to resume" in log.read_text()
    assert orch.pending_cycle() == cycle
    report = orch.run_autonomous_cycle()
    assert report.resumed and report.cycle_id == cycle
    assert [r.status for r in report.results] == [JobStatus.COMPLETED] * len(report.results)
    assert_cycle_stored_once(study, orch, cycle)
