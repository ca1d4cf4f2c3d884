"""Real `arc` driver processes on one study: one driver at a time, SIGTERM (also from
`ray job stop`), takeover.

Each test starts `arc run` as a separate process connected to the session's Ray (the
toy study, Tune trials that sleep), and checks what a user would see: the exit code,
the message, and a history where every approved experiment has exactly one trial row
and nothing was recorded as cancelled or failed by an interrupted driver.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_resume import STUDY, rows

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(storage=tmp_path / "history"))
    return path


def arc(argv: list[str], log: Path, address: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "arc_ray.cli", *argv, "--address", address],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(pattern, log.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never saw {pattern!r} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def assert_each_experiment_once(study_dir: Path) -> list[dict]:
    """Every approved experiment has one trial row, cycles are 1..N once each; returns the trials."""
    s = SimpleNamespace(study_dir=str(study_dir))
    decisions = rows(s, "decisions")
    runnable = {(r["cycle_id"], r["experiment_id"]) for r in decisions if r["outcome"] in ("approved", "repaired")}
    trials = [(r["cycle_id"], r["experiment_id"]) for r in rows(s, "trials")]
    assert sorted(trials) == sorted(runnable), "a result is missing or stored twice"
    cycles = [r["cycle_id"] for r in rows(s, "cycles")]
    assert sorted(cycles) == list(range(1, len(cycles) + 1)), "a cycle is missing or stored twice"
    return rows(s, "trials")


RUNNING = r"trials: \d+ queued, [1-9]\d* running"


def test_a_second_driver_is_refused_fast_and_the_first_completes(ray_session, study_file, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    first = arc(["run", str(study_file), "--cycles", "2"], tmp_path / "first.log", address)
    wait_for(tmp_path / "first.log", r"cycle 1: deciding", first)
    t0 = time.monotonic()
    second = arc(["run", str(study_file), "--cycles", "2"], tmp_path / "second.log", address)
    assert second.wait(timeout=60) == 5, (tmp_path / "second.log").read_text()[-3000:]
    assert time.monotonic() - t0 < 30
    text = (tmp_path / "second.log").read_text()
    assert "is being run by another driver" in text and f"pid {first.pid} on host" in text
    assert "Traceback" not in text
    cycle = arc(["cycle", str(study_file)], tmp_path / "cycle.log", address)
    assert cycle.wait(timeout=60) == 5, (tmp_path / "cycle.log").read_text()[-3000:]
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    trials = assert_each_experiment_once(tmp_path / "history" / "resume_toy")
    assert {r["cycle_id"] for r in trials} == {1, 2}


def test_a_killed_drivers_study_is_taken_over(ray_session, study_file, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    first = arc(["run", str(study_file), "--cycles", "2"], tmp_path / "first.log", address)
    wait_for(tmp_path / "first.log", RUNNING, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = arc(["run", str(study_file), "--cycles", "2"], tmp_path / "second.log", address)
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "cycle 1: resuming" in (tmp_path / "second.log").read_text()
    trials = assert_each_experiment_once(tmp_path / "history" / "resume_toy")
    assert all(r["status"] == "COMPLETED" for r in trials)


def test_sigterm_leaves_trials_to_resume_exit_143(ray_session, study_file, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    first = arc(["run", str(study_file), "--cycles", "4"], tmp_path / "first.log", address)
    wait_for(tmp_path / "first.log", RUNNING, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 143, (tmp_path / "first.log").read_text()[-3000:]
    text = (tmp_path / "first.log").read_text()
    assert "terminated (SIGTERM); run the same command again to resume" in text
    assert "Traceback" not in text
    second = arc(["run", str(study_file), "--cycles", "1"], tmp_path / "second.log", address)
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert re.search(r"cycle 1: resuming", (tmp_path / "second.log").read_text())
    trials = assert_each_experiment_once(tmp_path / "history" / "resume_toy")
    assert trials and all(r["status"] == "COMPLETED" for r in trials), trials


@pytest.mark.timeout(600)
def test_ray_job_stop_of_arc_cycle_leaves_its_trials_to_resume(study_file, tmp_path):
    """`ray job submit -- arc cycle`, then `ray job stop` while its trials run: Ray's job
    supervisor sends SIGTERM to the driver (then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S).
    No trial is recorded cancelled or failed, and the next `arc cycle` resumes the cycle."""
    import tempfile

    from _ray_nodes import start_node

    # trials of 6-9 s: each poll of `ray job logs` / `status` is a CLI start (1-2 s here), and
    # the stop must land while the cycle's trials still run
    study_file.write_text(study_file.read_text().replace("sleep_s: 0.8", "sleep_s: 3.0"))
    head = start_node(head=True, temp_dir=tempfile.mkdtemp(prefix="arcjs", dir="/tmp"), num_cpus=2,
                      dashboard=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PYTHONPATH=str(ROOT))
    ray_bin = str(Path(sys.executable).with_name("ray"))

    def job(command: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # --address before the arguments: after `submit ... --` it would be the entrypoint's
        return subprocess.run([ray_bin, "job", command, "--address", head.dashboard_url, *argv], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=tmp_path)

    try:
        entry = f"cd {ROOT} && exec {sys.executable} -m arc_ray.cli cycle {study_file}"
        submitted = job("submit", "--no-wait", "--submission-id", "arc-stop-test", "--", "bash", "-c", entry)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        deadline = time.monotonic() + 240
        while not re.search(RUNNING, logs := job("logs", "arc-stop-test").stdout):
            status = job("status", "arc-stop-test").stdout
            if time.monotonic() > deadline or re.search(r"FAILED|SUCCEEDED|STOPPED", status):
                pytest.fail(f"the job never ran trials: {status}\n{logs[-3000:]}")
            time.sleep(0.5)
        stopped = job("stop", "arc-stop-test")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "was stopped" in job("status", "arc-stop-test").stdout
        logs = job("logs", "arc-stop-test").stdout
        # The driver stops within the supervisor's grace period, or is SIGKILLed: either way
        # it must not have recorded its trials as ended.
        s = SimpleNamespace(study_dir=str(tmp_path / "history" / "resume_toy"))
        assert rows(s, "cycles") == [], "the stopped cycle was logged as done"
        assert all(r["status"] == "COMPLETED" for r in rows(s, "trials")), rows(s, "trials")
        assert "Traceback" not in logs, logs[-3000:]

        again = arc(["cycle", str(study_file)], tmp_path / "again.log", head.address)
        assert again.wait(timeout=300) == 0, (tmp_path / "again.log").read_text()[-3000:]
        assert "cycle 1: resuming" in (tmp_path / "again.log").read_text()
        trials = assert_each_experiment_once(s.study_dir)
        assert trials and all(r["status"] == "COMPLETED" for r in trials), trials
    finally:
        head.stop()
