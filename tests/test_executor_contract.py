"""The executor contract, once, against every executor (Optuna's storage tests do the same).

Each case runs with the Ray Tune executor (real Tune trials of ``trainables.toy:train`` on
the session's Ray) and the in-process one (the same toy response as a plain objective
that honours the toy's ``fail``, ``sleep_s`` and ``events_file`` keys). A case states
what :class:`arc_ray.executor.Executor` promises; what only one executor does is tested
in test_executor.py and test_inprocess.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from arc_ray.errors import ConfigValidationError, TrainingExecutionError, TrainingOutOfMemoryError
from arc_ray.executor import Executor, InProcessExecutor, TrainingExecutor
from arc_ray.records import DecisionOutcome, ErrorClass, JobStatus, Proposal, ProposalType
from trainables.toy import objective as toy_objective

from _executors import approved, runnable, wait_for

_RELEASE = threading.Event()  # ends an in-process trial's sleep early (it cannot be cancelled)


def _objective(config: dict[str, Any]) -> dict[str, float]:
    """``trainables.toy``'s response as a plain objective, with its misbehaviour keys."""
    if config.get("events_file"):
        with open(config["events_file"], "a", encoding="utf-8") as fh:
            # an in-process objective gets only the study's keys, not the experiment id
            fh.write(json.dumps({"event": "start", "experiment_id": config.get("experiment_id")}) + "\n")
    _RELEASE.wait(float(config.get("sleep_s", 0.0)) * int(config.get("epochs", 1)))
    if config.get("fail") == "crash":
        raise RuntimeError("toy objective asked to crash")
    if config.get("fail") == "oom":
        raise TrainingOutOfMemoryError("CUDA out of memory (toy objective asked to fail)")
    return toy_objective(config)


@pytest.fixture(params=["tune", "inprocess"])
def make_executor(request, toy_study) -> Callable[..., Executor]:
    """Builds the parametrized executor over the toy study (with ``study`` updates if given)."""
    made: list[Executor] = []

    def make(**update: Any) -> Executor:
        study = toy_study.model_copy(update=update)
        if request.param == "tune":
            request.getfixturevalue("ray_session")
            ex: Executor = TrainingExecutor(study)
        else:
            ex = InProcessExecutor(study, trainable=_objective)
        made.append(ex)
        return ex

    yield make
    _RELEASE.set()
    for ex in made:
        ex.shutdown(timeout=30)
    _RELEASE.clear()


def _starts(events: Path) -> int:
    """Runs started, as one experiment's own events file records them."""
    if not events.exists():
        return 0
    return sum(1 for line in events.read_text().splitlines() if json.loads(line)["event"] == "start")


def _until_running(ex: Executor, eid: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while ex.poll([eid])[eid] != JobStatus.RUNNING:
        assert time.monotonic() < deadline, f"{eid} never started"
        ex.wait_for_change(0.1)


def test_submit_poll_collect(make_executor, toy_study):
    ex = make_executor()
    items = [runnable(toy_study, "good", x=0.3, epochs=1), runnable(toy_study, "fine", x=0.1, epochs=1)]
    jobs = ex.submit_batch(items, cycle_id=1)
    assert [j.experiment_id for j in jobs] == ["good", "fine"]
    assert all(j.cycle_id == 1 and not j.status.is_terminal() for j in jobs)
    assert wait_for(ex, ["good", "fine"], timeout=120) == {"good": JobStatus.COMPLETED,
                                                          "fine": JobStatus.COMPLETED}
    r = ex.collect_results("good")
    assert r.status == JobStatus.COMPLETED and r.cycle_id == 1 and r.error_class is None
    assert r.config == items[0].config  # exactly the decision's config
    assert r.metrics["score"] == pytest.approx(toy_objective(items[0].config)["score"])
    assert r.metrics["score"] > ex.collect_results("fine").metrics["score"]
    assert [j.status for j in ex.jobs(1)] == [JobStatus.COMPLETED] * 2 and ex.jobs(2) == []
    assert not Path(toy_study.experiments_dir).exists()  # an executor never writes configs


def test_a_proposal_metadata_travels_to_its_result(make_executor, toy_study):
    ex = make_executor()
    d = approved(toy_study, Proposal(experiment_id="p", changes={"x": 0.2, "epochs": 1}, proposer="explorer",
                                     type=ProposalType.EXPLORATION), cycle_id=2)
    ex.submit_job(d, cycle_id=2)
    assert wait_for(ex, ["p"], timeout=120) == {"p": JobStatus.COMPLETED}
    r = ex.collect_results("p")
    assert r.proposer == "explorer" and r.proposal_type == ProposalType.EXPLORATION
    assert r.config == d.config


def test_a_failing_config_ends_failed_with_its_class(make_executor, toy_study):
    ex = make_executor()
    ex.submit_batch([runnable(toy_study, "crash", fail="crash", epochs=1),
                     runnable(toy_study, "oom", fail="oom", epochs=1)], cycle_id=1)
    assert wait_for(ex, ["crash", "oom"], timeout=120) == {"crash": JobStatus.FAILED, "oom": JobStatus.FAILED}
    crash, oom = ex.collect_results("crash"), ex.collect_results("oom")
    assert crash.error_class == ErrorClass.CRASH and "asked to crash" in crash.error_message
    assert oom.error_class == ErrorClass.OOM and oom.error_message


@pytest.mark.parametrize("how", ["nan", "inf", "string", "renamed", "none"])
def test_a_trial_without_a_finite_metric_fails_no_metric(make_executor, toy_study, how, caplog):
    ex = make_executor()
    ex.submit_batch([runnable(toy_study, "bad", bad_metric=how, epochs=1)], cycle_id=1)
    assert wait_for(ex, ["bad"], timeout=120) == {"bad": JobStatus.FAILED}
    r = ex.collect_results("bad")
    assert r.error_class == ErrorClass.NO_METRIC and "'score'" in r.error_message
    assert r.metric("score") is None
    if how != "none":
        assert "loss" in r.metrics  # the metrics it did report are kept
    assert any("no_metric" in rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING")


def test_the_same_id_again_is_not_run_twice(make_executor, toy_study, tmp_path):
    ex = make_executor()
    events = tmp_path / "events.jsonl"
    item = runnable(toy_study, "once", epochs=1, events_file=str(events))
    ex.submit_job(item, cycle_id=1)
    assert wait_for(ex, ["once"], timeout=120) == {"once": JobStatus.COMPLETED}
    first = ex.collect_results("once")
    again = ex.submit_batch([item], cycle_id=1)
    assert [j.status for j in again] == [JobStatus.COMPLETED]
    assert ex.collect_results("once") == first and _starts(events) == 1
    with pytest.raises(ConfigValidationError, match="already submitted in cycle 1"):
        ex.submit_job(runnable(toy_study, "once", cycle=2), cycle_id=2)


def test_unrunnable_items_are_refused_and_nothing_is_submitted(make_executor, toy_study):
    ex = make_executor()
    good = runnable(toy_study, "good")
    no_config = runnable(toy_study, "bare").model_copy(update={"config": None})
    vetoed = runnable(toy_study, "vetoed").model_copy(update={"outcome": DecisionOutcome.VETOED})
    proposal = Proposal(experiment_id="raw", changes={"x": 0.1})
    with pytest.raises(ConfigValidationError) as err:
        ex.submit_batch([good, no_config, vetoed, proposal, runnable(toy_study, "good")], cycle_id=1)
    assert err.value.fields == ["items[1].config", "items[2].outcome", "items[3]", "items[4].experiment_id"]
    assert "never generates" in str(err.value)
    assert ex.jobs() == []
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        ex.poll(["good"])
    with pytest.raises(ConfigValidationError, match="cycle_id"):
        ex.submit_job(good, cycle_id=-1)
    assert not Path(toy_study.tune_dir).exists() and not Path(toy_study.experiments_dir).exists()


def test_cancel_returns_what_it_cancelled(make_executor, toy_study):
    ex = make_executor(max_concurrent_trials=1)
    ex.submit_batch([runnable(toy_study, "long", epochs=1, sleep_s=60),
                     runnable(toy_study, "queued", epochs=1, sleep_s=60),
                     runnable(toy_study, "quick", epochs=1)], cycle_id=1)
    _until_running(ex, "long")
    cancelled = ex.cancel(["queued", "long"])
    assert "queued" in cancelled and set(cancelled) <= {"queued", "long"}
    assert set(ex.poll(cancelled).values()) == {JobStatus.CANCELLED}  # at once
    assert ex.collect_results("queued").error_class == ErrorClass.CANCELLED
    assert ex.cancel(cancelled) == []  # nothing left to cancel
    _RELEASE.set()  # the in-process "long" cannot be cancelled: let it finish
    assert wait_for(ex, ["quick"], timeout=120) == {"quick": JobStatus.COMPLETED}
    assert ex.cancel(["quick"]) == []  # a finished trial is left as it is
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        ex.cancel(["ghost"])


def test_poll_never_blocks(make_executor, toy_study):
    ex = make_executor()
    ex.submit_job(runnable(toy_study, "slow", epochs=1, sleep_s=60), cycle_id=1)
    _until_running(ex, "slow")
    t0 = time.monotonic()
    for _ in range(20):
        assert ex.poll(["slow"]) == {"slow": JobStatus.RUNNING}
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    ex.wait_for_change(0.2)  # one bounded wait: nothing changes, it returns at the timeout
    assert time.monotonic() - t0 < 5.0


def test_resume_returns_the_cycles_jobs(make_executor, toy_study):
    ex = make_executor()
    ex.submit_batch([runnable(toy_study, "r1", cycle=3, epochs=1), runnable(toy_study, "r2", cycle=3, epochs=1)],
                    cycle_id=3)
    wait_for(ex, ["r1", "r2"], timeout=120)
    assert [(j.experiment_id, j.status) for j in ex.resume(3)] == [("r1", JobStatus.COMPLETED),
                                                                 ("r2", JobStatus.COMPLETED)]
    assert ex.resume(3) == ex.resume(3)  # safe to call again
    assert ex.resume(4) == []


def test_prune_checkpoints_returns_a_count(make_executor, toy_study):
    ex = make_executor()
    ex.submit_job(runnable(toy_study, "ckpt", epochs=2), cycle_id=1)
    wait_for(ex, ["ckpt"], timeout=120)
    removed = ex.prune_checkpoints(1, keep=1)
    assert isinstance(removed, int) and removed >= 0
    assert ex.prune_checkpoints(7, keep=1) == 0  # a cycle with nothing
    with pytest.raises(ConfigValidationError, match="keep"):
        ex.prune_checkpoints(1, keep=0)


def test_shutdown_ends_every_job_and_refuses_more(make_executor, toy_study):
    ex = make_executor(max_concurrent_trials=1)
    ex.submit_batch([runnable(toy_study, "long", epochs=1, sleep_s=60),
                     runnable(toy_study, "queued", epochs=1)], cycle_id=1)
    _until_running(ex, "long")
    release = threading.Timer(1.0, _RELEASE.set)  # the in-process running call ends by itself
    release.start()
    try:
        ex.shutdown(timeout=30)
    finally:
        release.cancel()
    statuses = ex.poll(["long", "queued"])
    assert statuses["queued"] == JobStatus.CANCELLED and statuses["long"].is_terminal()
    with pytest.raises(TrainingExecutionError, match="shut down"):
        ex.submit_job(runnable(toy_study, "late"), cycle_id=1)
    ex.shutdown(timeout=5)  # idempotent
