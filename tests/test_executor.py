"""TrainingExecutor on a real local Ray (2 CPUs, 2 logical GPUs) with the toy trainable.

Every trial here is a real Ray Tune trial in a real worker process; timings and
overlaps are measured from the trials' own event lines (``events_file``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from arc_ray.errors import ConfigValidationError, TrainingExecutionError
from arc_ray.executor import Job, TrainingExecutor
from arc_ray.records import (
    DecisionOutcome,
    ErrorClass,
    JobStatus,
    Proposal,
    ProposalType,
    Resources,
    RiskLevel,
)
from arc_ray.study import SchedulerSettings

from _executors import approved, runnable, wait_for


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def max_overlap(events: list[dict]) -> int:
    """The most runs alive at one moment, from start/end event times."""
    marks = sorted([(e["t"], 1 if e["event"] == "start" else -1) for e in events],
                   key=lambda m: (m[0], m[1]))  # an end at the same instant counts first
    alive = peak = 0
    for _, step in marks:
        alive += step
        peak = max(peak, alive)
    return peak


@pytest.fixture
def make_executor():
    made: list[TrainingExecutor] = []

    def make(study, **kw) -> TrainingExecutor:
        ex = TrainingExecutor(study, **kw)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(timeout=30)


# ------------------------------------------------------------------- concurrency


@pytest.mark.ray
def test_gpu_fraction_and_cap_bound_concurrency(ray_session, toy_study, make_executor, tmp_path):
    study = toy_study.model_copy(update={"max_concurrent_trials": 2})
    events = tmp_path / "events.jsonl"
    half_gpu = Resources(cpu=0.25, gpu=0.5)  # by resources 4 could run at once; the cap says 2
    items = [runnable(study, f"c{i}", resources=half_gpu, x=i / 10, epochs=2, sleep_s=0.6,
                      events_file=str(events)) for i in range(6)]
    ex = make_executor(study)
    jobs = ex.submit_batch(items, cycle_id=1)
    assert [j.status for j in jobs] == [JobStatus.PENDING] * 6  # returned before Tune started
    assert all(isinstance(j, Job) and j.tune_experiment == "cycle_0001" for j in jobs)
    statuses = wait_for(ex, [j.experiment_id for j in jobs], timeout=120)
    assert set(statuses.values()) == {JobStatus.COMPLETED}
    for j in jobs:  # driven by Tune's hooks, in order; QUEUED may last only microseconds
        steps = [s for s, _ in ex.status_history(j.experiment_id)]
        assert steps == [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED]

    log = read_events(events)
    assert sorted(e["experiment_id"] for e in log if e["event"] == "start") == [f"c{i}" for i in range(6)]
    assert max_overlap(log) == 2  # the cap was reached and never exceeded
    assert all(e["cuda_visible_devices"] not in (None, "") for e in log)  # Ray assigned a GPU

    r = ex.collect_results("c3")
    assert r.status == JobStatus.COMPLETED and r.cycle_id == 1 and r.iterations == 2
    assert r.config == items[3].config  # exactly what was submitted, no Tune internals
    assert r.metrics["score"] == pytest.approx(r.best_metrics["score"])
    assert r.metrics["epoch"] == 2.0 and "training_iteration" not in r.metrics
    assert r.resources == half_gpu and r.node_ip
    assert r.started_at < r.ended_at and r.duration_s > 0.6 * 2 * 0.9
    tune_dir = Path(study.tune_dir) / "cycle_0001"
    assert {f"c{i}" for i in range(6)} <= {p.name for p in tune_dir.iterdir()}  # dirs = ids


# ---------------------------------------------------------------------- failures


@pytest.mark.ray
def test_failures_end_as_data_with_their_class(ray_session, toy_study, make_executor, tmp_path):
    study = toy_study.model_copy(update={"max_concurrent_trials": 4, "trial_timeout_s": 4.0,
                                         "max_failures": 1})
    small = Resources(cpu=0.25, gpu=0)
    events = tmp_path / "events.jsonl"
    items = [
        runnable(study, "ok", cycle=2, resources=small),
        runnable(study, "crash", cycle=2, resources=small, fail="crash"),
        runnable(study, "nan", cycle=2, resources=small, fail="nan"),
        runnable(study, "oom", cycle=2, resources=small, fail="oom"),
        runnable(study, "silent", cycle=2, resources=small, epochs=1, sleep_s=120),  # never reports
        runnable(study, "chatty", cycle=2, resources=small, epochs=5, sleep_s=1.5),  # reports past 4 s
        runnable(study, "cancelme", cycle=2, resources=small, epochs=1, sleep_s=120),
        runnable(study, "exit", cycle=2, resources=small, epochs=3, fail="exit", events_file=str(events)),
    ]
    ex = make_executor(study)
    t0 = time.monotonic()
    ex.submit_batch(items, cycle_id=2)
    while ex.status("cancelme") != JobStatus.RUNNING:
        assert time.monotonic() - t0 < 60, "the trial to cancel never started"
        time.sleep(0.05)
    ex.cancel(["cancelme"])
    assert ex.status("cancelme") == JobStatus.CANCELLED
    statuses = wait_for(ex, [d.experiment_id for d in items], timeout=150)

    results = {d.experiment_id: ex.collect_results(d.experiment_id) for d in items}
    expected = {
        "ok": (JobStatus.COMPLETED, None), "crash": (JobStatus.FAILED, ErrorClass.CRASH),
        "nan": (JobStatus.FAILED, ErrorClass.DIVERGED), "oom": (JobStatus.FAILED, ErrorClass.OOM),
        "silent": (JobStatus.FAILED, ErrorClass.TIMEOUT), "chatty": (JobStatus.FAILED, ErrorClass.TIMEOUT),
        "cancelme": (JobStatus.CANCELLED, ErrorClass.CANCELLED), "exit": (JobStatus.COMPLETED, None),
    }
    got = {k: (r.status, r.error_class) for k, r in results.items()}
    assert got == expected
    assert statuses == {k: v[0] for k, v in expected.items()}
    assert "asked to crash" in results["crash"].error_message
    assert "nan" in results["nan"].error_message.lower()
    assert "trial_timeout_s=4" in results["silent"].error_message
    assert results["silent"].duration_s < 30 and results["cancelme"].duration_s < 30  # not 120 s
    # the reporting trial keeps the metrics it reached before the limit
    assert 1 <= results["chatty"].iterations < 5 and "score" in results["chatty"].metrics
    # a dead worker is retried from its checkpoint: two starts, the second at epoch 1
    starts = [e["start_epoch"] for e in read_events(events) if e["event"] == "start"]
    assert starts == [0, 1] and results["exit"].iterations == 3
    # a raising trainable is not retried (failures are data, not worker deaths)
    assert (Path(study.tune_dir) / "cycle_0002" / "arc" / "results" / "crash.json").is_file()


@pytest.mark.ray
def test_resume_before_tunes_first_state_runs_the_trials_afresh(ray_session, toy_study, make_executor):
    """A driver killed after Tune wrote tuner.pkl but before its first experiment state
    (the chaos test hit it): Tune's restore of such a folder lost every trial's config
    (all FAILED with KeyError 'arc_trial'); the new driver must run them afresh."""
    ex = make_executor(toy_study)
    ex.submit_batch([runnable(toy_study, "a", cycle=2, epochs=1), runnable(toy_study, "b", cycle=2, epochs=1)],
                    cycle_id=2)
    assert wait_for(ex, ["a", "b"], timeout=120) == {"a": JobStatus.COMPLETED, "b": JobStatus.COMPLETED}
    ex.shutdown(timeout=30)
    run_dir = Path(toy_study.tune_dir) / "cycle_0002"
    assert (run_dir / "tuner.pkl").exists()
    # what a kill in between leaves: tuner.pkl and ARC's manifest; no Tune state, no results
    for state in run_dir.glob("experiment_state-*.json"):
        state.unlink()
    shutil.rmtree(run_dir / "arc" / "results")
    again = make_executor(toy_study)
    assert sorted(j.experiment_id for j in again.resume(2)) == ["a", "b"]
    assert wait_for(again, ["a", "b"], timeout=120) == {"a": JobStatus.COMPLETED, "b": JobStatus.COMPLETED}
    assert again.collect_results("a").metrics["score"] == ex.collect_results("a").metrics["score"]


@pytest.mark.ray
def test_wait_past_timeout_cancels_and_polling_does_not(ray_session, toy_study, make_executor):
    study = toy_study.model_copy(update={"max_concurrent_trials": 1})
    ex = make_executor(study)
    ex.submit_batch([runnable(study, "long", cycle=3, epochs=1, sleep_s=120),
                     runnable(study, "queued", cycle=3, epochs=1, sleep_s=120)], cycle_id=3)
    polled = wait_for(ex, ["long", "queued"], timeout=0.5)
    assert not any(s.is_terminal() for s in polled.values())
    t0 = time.monotonic()
    statuses = wait_for(ex, ["long", "queued"], timeout=3, cancel_on_timeout=True)
    assert statuses == {"long": JobStatus.CANCELLED, "queued": JobStatus.CANCELLED}
    assert time.monotonic() - t0 < 10
    run = ex._runs["cycle_0003"]
    run.thread.join(timeout=30)  # Tune itself wound down: the sleeping worker was killed
    assert not run.thread.is_alive()
    assert ex.collect_results("queued").error_class == ErrorClass.CANCELLED


# ------------------------------------------------------- ASHA, proposals, resubmits


@pytest.mark.ray
def test_asha_stops_worse_trials_early_and_cycle_is_idempotent(ray_session, toy_study, make_executor):
    sched = SchedulerSettings(grace_period=1, reduction_factor=2, max_t=10)
    study = toy_study.model_copy(update={"max_concurrent_trials": 1, "scheduler": sched})
    # run one at a time, best first, so ASHA's rungs are filled in a known order
    decisions = [approved(study, Proposal(experiment_id=f"a{i}", changes={"x": x, "epochs": 5},
                                          proposer="bayesian", type=ProposalType.EXPLORATION,
                                          risk_level=RiskLevel.MEDIUM), cycle_id=4)
                 for i, x in enumerate([0.3, -0.9, -0.8, 0.95])]
    ex = make_executor(study)
    jobs = ex.submit_batch(decisions, cycle_id=4)
    wait_for(ex, [j.experiment_id for j in jobs], timeout=120)
    best, *worse = [ex.collect_results(j.experiment_id) for j in jobs]
    assert best.status == JobStatus.COMPLETED and not best.stopped_early and best.iterations == 5
    for r in worse:
        assert r.status == JobStatus.COMPLETED and r.stopped_early and r.iterations < 5
        assert r.metrics["score"] < best.metrics["score"]
    assert best.proposer == "bayesian" and best.proposal_type == ProposalType.EXPLORATION
    assert best.risk_level == RiskLevel.MEDIUM and best.config["x"] == 0.3

    # the same items again: the same jobs, nothing rerun; a new one: a second batch folder
    again = ex.submit_batch(decisions, cycle_id=4)
    assert [j.status for j in again] == [JobStatus.COMPLETED] * 4
    extra = ex.submit_job(approved(study, Proposal(experiment_id="a4", changes={"x": 0.1, "epochs": 1}),
                                   cycle_id=4), cycle_id=4)
    assert extra.tune_experiment == "cycle_0004-2"
    assert wait_for(ex, ["a4"], timeout=60) == {"a4": JobStatus.COMPLETED}

    # a fresh executor reads the finished cycle back from disk without running anything
    other = make_executor(study)
    restored = {j.experiment_id: j for j in other.resume(4)}
    assert set(restored) == {"a0", "a1", "a2", "a3", "a4"}
    assert all(j.status == JobStatus.COMPLETED for j in restored.values())
    assert not any(r.thread for r in other._runs.values())
    assert other.collect_results("a2") == ex.collect_results("a2")
    assert other.resume(5) == []

    # a result file lost (killed between Tune finishing a trial and ARC writing it down):
    # the restored Tune experiment says the trial finished, and it is not run again
    (Path(study.tune_dir) / "cycle_0004" / "arc" / "results" / "a0.json").unlink()
    third = make_executor(study)
    third.resume(4)
    assert wait_for(third, ["a0"], timeout=60) == {"a0": JobStatus.COMPLETED}
    again_a0 = third.collect_results("a0")
    assert again_a0.iterations == 5 and again_a0.metrics == best.metrics  # same t_end: no rerun

    # the cycle stored: older checkpoints go, each trial's newest stays
    trial_dirs = [d for run in Path(study.tune_dir).glob("cycle_0004*") for d in run.iterdir()
                  if d.name in {"a0", "a1", "a2", "a3", "a4"}]
    before = {d.name: sorted(p.name for p in d.glob("checkpoint_*")) for d in trial_dirs}
    assert len(before["a0"]) == 5
    removed = third.prune_checkpoints(4, keep=1)
    after = {d.name: sorted(p.name for p in d.glob("checkpoint_*")) for d in trial_dirs}
    assert removed == sum(len(v) - 1 for v in before.values()) > 0
    assert after == {name: names[-1:] for name, names in before.items()}
    with pytest.raises(ConfigValidationError, match="keep"):
        third.prune_checkpoints(4, keep=0)


# --------------------------------------------------------------------- bad input


def test_bad_items_are_refused_naming_the_problem(toy_study, tmp_path):
    ex = TrainingExecutor(toy_study)
    vetoed = runnable(toy_study, "v").model_copy(update={"outcome": DecisionOutcome.VETOED})
    no_config = runnable(toy_study, "n").model_copy(update={"config": None})
    other_cycle = runnable(toy_study, "o", cycle=9)
    mismatch = runnable(toy_study, "m")
    mismatch.config["experiment_id"] = "something-else"
    bad_id = runnable(toy_study, "b").model_copy(update={"experiment_id": "../escape"})
    with pytest.raises(ConfigValidationError) as err:
        ex.submit_batch([vetoed, no_config, other_cycle, mismatch, bad_id, "not an item",
                         runnable(toy_study, "dup"), runnable(toy_study, "dup")], cycle_id=1)
    fields = err.value.fields
    for expected in ["items[0].outcome", "items[1].config", "items[2].cycle_id",
                     "items[3].config.experiment_id", "items[4].experiment_id", "items[5]",
                     "items[7].experiment_id"]:
        assert expected in fields, (expected, fields)
    # a proposal is not runnable: the executor never generates (or writes) its config
    with pytest.raises(ConfigValidationError, match=r"items\[1\]=.*never generates configs"):
        ex.submit_batch([runnable(toy_study, "good"), Proposal(experiment_id="p", changes={"x": 0.1})],
                        cycle_id=1)
    assert not Path(toy_study.experiments_dir).exists()
    with pytest.raises(ConfigValidationError, match="cycle_id"):
        ex.submit_batch([runnable(toy_study, "x")], cycle_id=-1)
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        ex.status("nope")
    with pytest.raises(TrainingExecutionError, match="never submitted"):
        ex.collect_results("nope")
    assert not Path(toy_study.tune_dir).exists()  # nothing half-submitted
    ex.shutdown()
    with pytest.raises(TrainingExecutionError, match="shut down"):
        ex.submit_batch([runnable(toy_study, "late")], cycle_id=1)


@pytest.mark.ray
def test_resources_the_cluster_lacks_are_refused(ray_session, toy_study, make_executor, monkeypatch,
                                                 caplog):
    ex = make_executor(toy_study)
    big = runnable(toy_study, "big", resources=Resources(cpu=1, gpu=3))
    with pytest.raises(ConfigValidationError, match=r"items\[0\]\.resources\.gpu.*2 GPU"):
        ex.submit_batch([big], cycle_id=1)
    assert not Path(toy_study.tune_dir).exists()
    # on a cluster this driver only connected to, an autoscaler may add the GPUs: it waits
    import arc_ray.executor.tune as executor_module

    monkeypatch.setattr(executor_module, "_cluster_started_here", lambda: False)
    job = ex.submit_job(big, cycle_id=1)
    assert "waits until the autoscaler adds nodes" in caplog.text
    time.sleep(1.0)
    assert ex.status(job.experiment_id) in (JobStatus.PENDING, JobStatus.QUEUED)
    ex.cancel([job.experiment_id])
    assert wait_for(ex, ["big"], timeout=5) == {"big": JobStatus.CANCELLED}


def test_error_classes_from_exceptions_and_text():
    from arc_ray.executor import classify_error
    from arc_ray.errors import TrainingDivergedError, TrainingOutOfMemoryError

    class OutOfMemoryError(RuntimeError):  # the name torch.cuda and Ray give theirs
        pass

    cases = [
        (TrainingDivergedError("loss is nan at epoch 3"), ErrorClass.DIVERGED),
        (TrainingOutOfMemoryError("CUDA out of memory"), ErrorClass.OOM),
        (OutOfMemoryError("Tried to allocate 2.00 GiB"), ErrorClass.OOM),
        (MemoryError(), ErrorClass.OOM),
        (TimeoutError("data loader"), ErrorClass.TIMEOUT),
        (RuntimeError("CUDA error: out of memory"), ErrorClass.OOM),
        (ValueError("bad shape"), ErrorClass.CRASH),
        ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory",
         ErrorClass.OOM),
        ("TrainingDivergedError: loss is inf", ErrorClass.DIVERGED),
        ("ActorDiedError: The actor died unexpectedly", ErrorClass.CRASH),
        (None, ErrorClass.CRASH),
    ]
    assert [classify_error(e) for e, _ in cases] == [c for _, c in cases]


def test_result_metrics_keep_what_the_trainable_reported():
    from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

    from arc_ray.executor._tune_jobs import _NOT_METRICS, result_metrics

    assert set(AUTO_RESULT_KEYS) | set(DEBUG_METRICS) <= _NOT_METRICS  # in step with Ray
    result = {"auc": 0.9, "val": {"loss": 0.3, "note": "x"}, "flag": True, "arc_error_class": "oom",
              "training_iteration": 3, "time_total_s": 1.0, "config": {"lr": 0.1}, "pid": 7}
    assert result_metrics(result) == {"auc": 0.9, "val/loss": 0.3}
