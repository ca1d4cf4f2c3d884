"""The in-process executor: the executor contract over a plain objective (its own cases;
the shared ones are in test_executor_contract.py)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from arc_ray.errors import ConfigValidationError, TrainingDivergedError, TrainingExecutionError, TrainingOutOfMemoryError
from arc_ray.executor import InProcessExecutor
from arc_ray.executor import classify_error as error_class_of
from arc_ray.records import Decision, DecisionOutcome, ErrorClass, JobStatus, Proposal, Resources
from trainables.toy import objective as toy_objective

from _executors import wait_for


def _objective(config):
    """Behaves according to ``x``: the toy's score, or a failure of each kind."""
    x = config["x"]
    if x == -1.0:
        raise TrainingOutOfMemoryError("CUDA out of memory")
    if x == -0.9:
        raise TrainingDivergedError("loss is nan")
    if x == -0.8:
        raise ValueError("bad shape")
    if x == -0.7:
        return {"score": math.nan}
    if x == -0.6:
        return {"other": 1.0}
    if x == -0.5:
        return "not a mapping"
    return {"score": 1 - (x - 0.3) ** 2, "loss": (x - 0.3) ** 2, "note": "strings are dropped"}


@pytest.fixture
def executor(toy_study):
    ex = InProcessExecutor(toy_study, trainable=_objective)
    yield ex
    ex.shutdown()


def _decision(eid, x, outcome=DecisionOutcome.APPROVED, **kw):
    prop = Proposal(experiment_id=eid, changes={"x": x}, proposer="bayesian")
    config = {"x": x, "experiment_id": eid, "train_split": 0.8, "val_split": 0.2}
    return Decision(experiment_id=eid, cycle_id=1, outcome=outcome, decided_by="supervisor", reason="ok",
                    proposal=prop, config=config if outcome.runs() else None, **kw)


def test_runs_a_batch_and_reports_like_the_tune_executor(executor, toy_study):
    jobs = executor.submit_batch([_decision("a", 0.3, resources=Resources(cpu=1, gpu=0.5)), _decision("b", 0.0)], 1)
    assert [j.experiment_id for j in jobs] == ["a", "b"] and jobs[0].resources.gpu == 0.5
    assert wait_for(executor, ["a", "b"], timeout=30) == {"a": JobStatus.COMPLETED, "b": JobStatus.COMPLETED}
    r = executor.collect_results("a")
    assert r.status == JobStatus.COMPLETED and r.metric("score") == 1.0 and "note" not in r.metrics
    assert r.proposer == "bayesian" and r.cycle_id == 1 and r.config["experiment_id"] == "a"
    assert r.duration_s is not None and r.duration_s >= 0 and r.resources.gpu == 0.5
    assert executor.status("b") == JobStatus.COMPLETED
    assert [j.experiment_id for j in executor.resume(1)] == ["a", "b"] and executor.resume(2) == []
    # the same id again is not rerun
    again = executor.submit_job(_decision("a", 0.9), 1)
    assert again.status == JobStatus.COMPLETED and executor.collect_results("a").metric("score") == 1.0


def test_failures_become_data_with_their_class(executor):
    cases = {"oom": -1.0, "nan": -0.9, "crash": -0.8, "nanmetric": -0.7, "nometric": -0.6, "garbage": -0.5}
    executor.submit_batch([_decision(k, x) for k, x in cases.items()], 1)
    statuses = wait_for(executor, list(cases), timeout=30)
    assert set(statuses.values()) == {JobStatus.FAILED}
    got = {k: executor.collect_results(k) for k in cases}
    assert got["oom"].error_class == ErrorClass.OOM
    assert got["nan"].error_class == ErrorClass.DIVERGED
    assert got["crash"].error_class == ErrorClass.CRASH and "bad shape" in got["crash"].error_message
    assert got["nanmetric"].error_class == ErrorClass.NO_METRIC and "nan" in got["nanmetric"].error_message
    assert got["nometric"].error_class == ErrorClass.NO_METRIC and "'score'" in got["nometric"].error_message
    assert got["garbage"].error_class == ErrorClass.CRASH and "not a mapping" in got["garbage"].error_message
    assert error_class_of(TimeoutError()) == ErrorClass.TIMEOUT
    assert error_class_of(RuntimeError("CUDA error: out of memory")) == ErrorClass.OOM


def test_a_proposal_is_refused_and_no_config_is_written(executor, toy_study):
    with pytest.raises(ConfigValidationError, match="never generates configs"):
        executor.submit_job(Proposal(experiment_id="p1", changes={"x": 0.2}), 4)
    assert executor.jobs() == [] and not Path(toy_study.experiments_dir).exists()


def test_bad_items_are_refused_before_anything_runs(executor):
    with pytest.raises(ConfigValidationError, match="only approved or repaired"):
        executor.submit_batch([_decision("ok", 0.1), _decision("no", 0.1, DecisionOutcome.VETOED)], 1)
    with pytest.raises(ConfigValidationError, match="config"):
        executor.submit_batch([_decision("ok", 0.1), _decision("no", 0.1).model_copy(update={"config": None})], 1)
    with pytest.raises(ConfigValidationError, match="expected an approved Decision"):
        executor.submit_batch([{"x": 1}], 1)
    assert executor.jobs() == []  # nothing of a refused batch was queued
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        executor.status("ghost")
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        executor.poll(["ghost"])


def test_cancel_queued_trials_and_shutdown(toy_study):
    gate = threading.Event()

    def slow(config):
        gate.wait(10)
        return {"score": 0.5}

    ex = InProcessExecutor(toy_study, trainable=slow)
    ex.submit_batch([_decision("first", 0.1), _decision("second", 0.2)], 1)
    assert wait_for(ex, ["first"], timeout=0.2) == {"first": JobStatus.RUNNING}
    assert ex.cancel(["second", "first"]) == ["second"]  # a running call is not stopped
    gate.set()
    assert wait_for(ex, ["first", "second"], timeout=30) == {
        "first": JobStatus.COMPLETED, "second": JobStatus.CANCELLED}
    assert ex.collect_results("second").error_class == ErrorClass.CANCELLED
    ex.shutdown()
    with pytest.raises(TrainingExecutionError, match="shut down"):
        ex.submit_job(_decision("late", 0.3), 2)


def test_the_study_trainable_is_used_and_checked(toy_study):
    study = toy_study.model_copy(update={"trainable": "trainables.toy:objective"})
    ex = InProcessExecutor(study)
    ex.submit_job(_decision("t", 0.3), 1)
    wait_for(ex, ["t"], timeout=30)
    r = ex.collect_results("t")
    assert r.metric("score") == pytest.approx(toy_objective(r.config)["score"])
    ex.shutdown()
    with pytest.raises(ConfigValidationError, match="not a function"):
        InProcessExecutor(toy_study.model_copy(update={"trainable": "trainables.toy:_MODEL_BONUS"}))


@pytest.mark.ray
@pytest.mark.slow
def test_a_cycle_timeout_shorter_than_an_objective_records_timeouts(ray_session, toy_study):
    """An in-process call cannot be stopped: at the cycle's timeout (and its grace period)
    the trial is stored as a timeout failure and the cycle completes."""
    from arc_ray.orchestrator import Orchestrator

    release = threading.Event()

    def slow(config):
        release.wait(120)
        return toy_objective(config)

    study = toy_study.model_copy(update={"executor": "inprocess", "trainable": "trainables.toy:objective"})
    orch = Orchestrator(study, executor=InProcessExecutor(study, trainable=slow))
    try:
        report = orch.run_autonomous_cycle(timeout=1)
        got = {(r.status, r.error_class) for r in report.results}
        assert (JobStatus.FAILED, ErrorClass.TIMEOUT) in got  # the call that was running
        assert got <= {(JobStatus.FAILED, ErrorClass.TIMEOUT), (JobStatus.CANCELLED, ErrorClass.CANCELLED)}  # and the queued ones
        assert orch.pending_cycle() is None and orch.next_cycle_id() == report.cycle_id + 1
    finally:
        release.set()
        orch.shutdown(kill_actors=True)


def test_a_bare_number_is_the_study_metric_and_the_config_holds_the_study_keys(toy_study):
    seen = []

    def objective(config):
        seen.append(dict(config))
        return 1 - (config["x"] - 0.3) ** 2  # a float, as Optuna objectives return

    ex = InProcessExecutor(toy_study, trainable=objective)
    try:
        ex.submit_job(_decision("f", 0.3), 1)
        wait_for(ex, ["f"], timeout=30)
        r = ex.collect_results("f")
    finally:
        ex.shutdown()
    assert r.status == JobStatus.COMPLETED and r.metric(toy_study.metric) == pytest.approx(1.0)
    assert "experiment_id" not in seen[0] and seen[0]["x"] == 0.3
    assert r.config["experiment_id"] == "f"  # the history still knows which trial it was
