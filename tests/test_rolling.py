"""Rolling decisions: a round per free slots, results stored as trials end, resume after SIGKILL.

The unit tests check the round's quota and the in-flight trials the agents see. The Ray
tests run ``Orchestrator.run`` on the toy study in ``scheduling: rolling`` (Tune trials
that sleep, in one long-lived Tune experiment) and kill real driver processes at each
phase of the rolling loop: while a round is decided with other trials running, between
a result's collection and its storage, and between rounds. This process then runs the
study on, as a re-run of ``arc run`` would; nothing may be lost or stored twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from arc_ray.records import Decision, DecisionOutcome, HistorySummary, JobStatus, Resources, TrialResult
from arc_ray.rolling import limit_to_slots, proposer_counts, with_pending

ROOT = Path(__file__).resolve().parent.parent

STUDY = """\
name: {name}
trainable: trainables.toy:train
metric: score
mode: max
scheduling: rolling
baseline: {{x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 2, train_split: 0.8, val_split: 0.2,
           sleep_s: 0.6}}
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
  model: {{type: categorical, choices: [small, medium, large]}}
  layers: {{type: int, low: 1, high: 4}}
  epochs: {{type: int, low: 1, high: 4}}
storage: {storage}
resources: {{cpu: 1, gpu: 0}}
max_concurrent_trials: 2
budget: {{trials_per_cycle: 3, max_trials: {max_trials}}}
proposers: {{enabled: [bayesian, explorer], proposals_per_cycle: 3}}
"""

DRIVER = textwrap.dedent("""
    import sys, time
    from arc_ray.study import StudyConfig
    from arc_ray.orchestrator import Orchestrator
    from arc_ray.storage import atomic_write_text

    config, address, hold, after, marker = sys.argv[1:6]
    after = int(after)

    def hook(event):
        if event.phase != hold or event.cycle_id < after:
            return
        # atomically: the test must never read a marker that exists but is empty
        atomic_write_text(marker, f"{event.cycle_id} {event.message}")
        time.sleep(3600)  # killed here

    orch = Orchestrator(StudyConfig.from_yaml(config), address=address, on_event=hook)
    orch.run()
    print("the driver was not held", file=sys.stderr)
""")


# ------------------------------------------------------------------ no Ray


def _decision(eid: str, outcome: DecisionOutcome = DecisionOutcome.APPROVED) -> Decision:
    return Decision(experiment_id=eid, cycle_id=3, outcome=outcome, decided_by="supervisor", reason="ok",
                    config={"x": 0.1})


def test_limit_to_slots_vetoes_the_lower_ranked_approvals():
    decisions = [_decision("a"), _decision("b", DecisionOutcome.VETOED), _decision("c"), _decision("d")]
    out = limit_to_slots(decisions, 2)
    assert [d.outcome for d in out] == [DecisionOutcome.APPROVED, DecisionOutcome.VETOED,
                                        DecisionOutcome.APPROVED, DecisionOutcome.VETOED]
    assert out[3].decided_by == "scheduler" and "no free trial slot" in out[3].reason


def _proposed(eid: str, proposer: str) -> Decision:
    from arc_ray.records import Proposal

    return _decision(eid).model_copy(update={"proposal": Proposal(experiment_id=eid, proposer=proposer)})


def test_a_rounds_slots_follow_the_directors_mix_not_only_the_critics_rank():
    """One free slot: the best-ranked decision of the proposer furthest below its share
    of the quotas runs; with the shares met, rank order decides."""
    ranked = [_proposed("s1", "surrogate"), _proposed("s2", "surrogate"), _proposed("b1", "bayesian"),
              _proposed("b2", "bayesian")]
    quotas = {"surrogate": 3, "bayesian": 3, "explorer": 0}
    behind = limit_to_slots(ranked, 1, quotas, {"surrogate": 6, "bayesian": 2})
    assert [d.experiment_id for d in behind if d.outcome.runs()] == ["b1"]
    assert all(d.decided_by == "scheduler" for d in behind if not d.outcome.runs())
    even = limit_to_slots(ranked, 1, quotas, {"surrogate": 4, "bayesian": 4})
    assert [d.experiment_id for d in even if d.outcome.runs()] == ["s1"]
    two = limit_to_slots(ranked, 2, quotas, {"surrogate": 4, "bayesian": 4})
    assert [d.experiment_id for d in two if d.outcome.runs()] == ["s1", "b1"]
    # the order of the decisions is kept; nothing beyond the slots runs
    assert [d.experiment_id for d in two] == ["s1", "s2", "b1", "b2"]
    assert sum(d.outcome.runs() for d in limit_to_slots(ranked, 9, quotas, {})) == 4


def test_a_streams_queue_hands_out_warm_trials_first_and_decided_ones_up_to_the_slots():
    """The stream's searcher: warm trials (no experiment) ahead of every decision and on
    top of the slots; decided trials no more than the slots at once; closing the stream
    drops the warm trials that never started."""
    from ray.tune.search import Searcher

    from arc_ray.executor._tune_stream import EntryQueue, QueueSearcher, register_queue, unregister_queue
    from arc_ray.executor._tune_trial import TRIAL_KEY, WARM_KEY, warm_entry

    queue = EntryQueue()
    queue.put([warm_entry(0, {"cpu": 1.0}), warm_entry(1, {"cpu": 1.0})])
    register_queue("tok-warm", queue)
    try:
        searcher = QueueSearcher("tok-warm", slots=2)
        assert searcher.suggest("w0")[TRIAL_KEY][WARM_KEY] == 0
        queue.put([{"experiment_id": e, "config": {}, "resources": {"cpu": 1.0}} for e in "abc"])
        assert searcher.suggest("w1")[TRIAL_KEY][WARM_KEY] == 1  # queued first, handed out first
        assert searcher.suggest("t1")[TRIAL_KEY]["experiment_id"] == "a"
        assert searcher.suggest("t2")[TRIAL_KEY]["experiment_id"] == "b"
        assert searcher.suggest("t3") is None  # two decided trials live: both slots taken
        searcher.on_trial_complete("w0")  # a warm trial ending frees no slot
        assert searcher.suggest("t3") is None
        searcher.on_trial_complete("t1")
        assert searcher.suggest("t3")[TRIAL_KEY]["experiment_id"] == "c"
        queue.put([warm_entry(2, {"cpu": 1.0})])
        queue.drop({"not-queued"})  # entries without an experiment are kept, not a KeyError
        queue.close()
        assert searcher.suggest("t4") == Searcher.FINISHED
    finally:
        unregister_queue("tok-warm")


def test_decided_experiments_wait_for_a_slot_only_when_decisions_are_long_against_trials(toy_study):
    """Sleep trials of seconds against a decision of 0.5 s: experiments are decided ahead
    (a burst's worth); minutes-long trials: none, the round waits for the result that
    freed its slot, which costs a slot under 1% of its time."""
    from types import SimpleNamespace

    from arc_ray.rolling import AHEAD_IDLE_SHARE, RollingLoop

    study = toy_study.model_copy(update={"max_concurrent_trials": 4})
    loop = RollingLoop(SimpleNamespace(study=study))
    assert loop.ahead() == 1  # nothing measured yet
    loop.decision_times, loop.trial_seconds = [0.5] * 5, [4.0] * 20
    assert loop.ahead() == 2  # 0.5 s x 1 end per second, plus one for bursts
    loop.trial_seconds = [1.0] * 20
    assert loop.ahead() == 3
    loop.trial_seconds = [0.5 / AHEAD_IDLE_SHARE * 1.1] * 20
    assert loop.ahead() == 0
    assert RollingLoop(SimpleNamespace(study=study), ahead=0).ahead() == 0


def test_with_pending_shows_in_flight_trials_as_running_rows():
    from arc_ray.executor import Job
    from arc_ray.historian.schema import trials_to_table

    done = trials_to_table([TrialResult(experiment_id="c0001-a", cycle_id=1, status=JobStatus.COMPLETED,
                                        config={"x": 0.5, "model": "small"}, metrics={"score": 0.7})])
    job = Job(experiment_id="c0002-b", cycle_id=2, config={"x": 0.25, "model": "large"},
              resources=Resources(cpu=1, gpu=0), status=JobStatus.RUNNING, proposer="bayesian")
    summary = HistorySummary(study="s", metric="score", mode="max", n_trials=1, n_completed=1)
    trials, seen = with_pending(done, summary, [job])
    assert seen.n_trials == 2 and summary.n_trials == 1
    rows = trials.to_pylist()
    assert [(r["experiment_id"], r["status"]) for r in rows] == [("c0001-a", "COMPLETED"), ("c0002-b", "RUNNING")]
    assert rows[1]["config.x"] == 0.25
    assert proposer_counts(trials) == {"bayesian": 1}  # the stored row names no proposer
    empty, _ = with_pending(pa.table({}), summary, [job])
    assert empty.num_rows == 1


def test_agents_see_in_flight_trials_and_learn_their_results_later(toy_study):
    """The supervisor vetoes a duplicate of a running trial; the bayesian proposer shows
    Optuna the trial as RUNNING while it runs (TPE's constant liar keeps new samples
    away from it) and tells Optuna its result once it ends (a RUNNING row is not taken
    as 'no evidence')."""
    from arc_ray.agents import BayesianProposer
    from arc_ray.agents.base import AgentContext
    from arc_ray.executor import Job
    from tests.test_agents import context, make_results

    results = make_results(toy_study, 6)
    running, done = results[-1], results[:-1]
    ctx = context(toy_study, done, quota=2)
    job = Job(experiment_id=running.experiment_id, cycle_id=running.cycle_id, config=running.config,
              resources=Resources(cpu=1, gpu=0), status=JobStatus.RUNNING)
    trials, summary = with_pending(ctx.trials, ctx.summary, [job])
    agent = BayesianProposer(toy_study)
    agent.propose(AgentContext(study=toy_study, cycle_id=5, summary=summary, strategy=ctx.strategy,
                               trials=trials, quota=2))
    assert running.experiment_id not in agent._seen
    pending = [t.user_attrs.get("experiment_id") for t in agent._optuna.trials if t.state.name == "RUNNING"]
    assert pending == [running.experiment_id]
    agent.propose(AgentContext(study=toy_study, cycle_id=6, summary=summary, strategy=ctx.strategy,
                               trials=trials, quota=2))  # still running: not added twice
    assert sum(t.user_attrs.get("experiment_id") == running.experiment_id for t in agent._optuna.trials) == 1
    later = context(toy_study, results, quota=2)
    agent.propose(later)
    told = [t.user_attrs.get("experiment_id") for t in agent._optuna.trials if t.state.name == "COMPLETE"]
    assert running.experiment_id in told
    assert not [t for t in agent._optuna.trials if t.state.name == "RUNNING"]


def test_the_surrogate_keeps_its_picks_away_from_trials_in_flight(toy_study):
    """Local penalisation counts a running trial as a pick already made: with a trial in
    flight next to the surrogate's favourite spot (another proposer's, say), the
    surrogate does not pick that spot again."""
    import numpy as np

    from arc_ray.agents.base import AgentContext
    from arc_ray.agents.surrogate import PENALTY_RADIUS, SurrogateProposer
    from arc_ray.executor import Job
    from arc_ray.space import flatten_config, unflatten_config
    from tests.test_agents import context, make_results

    ctx = context(toy_study, make_results(toy_study, 30, seed=1), quota=1)
    first = SurrogateProposer(toy_study).propose(ctx)[0]
    config = {**flatten_config(toy_study.baseline), **first.changes}
    x = toy_study.search_space["x"]
    config["x"] = x.from_unit(x.to_unit(config["x"]) + (0.01 if x.to_unit(config["x"]) < 0.5 else -0.01))
    job = Job(experiment_id=first.experiment_id, cycle_id=5, config=unflatten_config(config),
              resources=Resources(cpu=1, gpu=0), status=JobStatus.RUNNING)
    trials, summary = with_pending(ctx.trials, ctx.summary, [job])
    again = SurrogateProposer(toy_study).propose(AgentContext(study=toy_study, cycle_id=5, summary=summary,
                                                              strategy=ctx.strategy, trials=trials, quota=1))[0]
    view = ctx.history()
    axes = view.axes(toy_study.proposers.exclude)
    a, b = (view.unit(flatten_config(p.changes))[axes] for p in (first, again))
    assert np.sqrt(np.mean((a - b) ** 2)) > 0.5 * PENALTY_RADIUS


# ------------------------------------------------------------------ with Ray


def make_study(tmp_path: Path, name: str, max_trials: int = 7):
    from arc_ray.study import StudyConfig

    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(name=name, storage=tmp_path / "history", max_trials=max_trials))
    return StudyConfig.from_yaml(path)


def rows(study, table: str) -> list[dict]:
    """Every row physically stored in a history table (all parts, no de-duplication)."""
    folder = Path(study.study_dir) / table
    if not folder.is_dir():
        return []
    return ds.dataset(str(folder), format="parquet").to_table().to_pylist()


def assert_stored_once(study) -> None:
    """Each runnable decision has exactly one trial row in its round; each round one cycles row."""
    decisions = rows(study, "decisions")
    keys = [(r["cycle_id"], r["experiment_id"]) for r in decisions]
    assert len(keys) == len(set(keys)), "a decision was logged twice"
    runnable = sorted((r["cycle_id"], r["experiment_id"]) for r in decisions
                      if r["outcome"] in ("approved", "repaired"))
    trials = sorted((r["cycle_id"], r["experiment_id"]) for r in rows(study, "trials"))
    assert trials == runnable, "a result is missing, stored twice or under another round"
    cycles = [r["cycle_id"] for r in rows(study, "cycles")]
    assert sorted(cycles) == sorted({r["cycle_id"] for r in decisions}), "a round is not logged once"


def run_to_end(study) -> tuple:
    """Run the study in this process until a stop rule holds; returns (report, events)."""
    from arc_ray.orchestrator import Orchestrator

    events: list = []
    orch = Orchestrator(study, on_event=events.append)
    try:
        return orch.run(), events
    finally:
        orch.shutdown(kill_actors=True)


def kill_driver_at(study, tmp_path: Path, hold: str, after: int, timeout_s: float = 240) -> tuple[str, float]:
    import ray

    script, marker, log = tmp_path / "driver.py", tmp_path / "held", tmp_path / "driver.log"
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, str(script), study.source_path, ray.get_runtime_context().gcs_address, hold,
            str(after), str(marker)]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    try:
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"driver never reached {hold!r} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return marker.read_text(), time.time()


def finished_on_disk(study) -> set[str]:
    """Trials whose result the killed driver's executor saved (any stream or cycle folder)."""
    return {p.stem for p in Path(study.tune_dir).glob("*/arc/results/*.json")}


@pytest.mark.ray
@pytest.mark.slow
def test_rolling_run_decides_rounds_while_trials_run(ray_session, tmp_path):
    from arc_ray.orchestrator import StopReason

    study = make_study(tmp_path, "rolling_run", max_trials=6)
    report, events = run_to_end(study)
    assert report.stop_reason == StopReason.TRIAL_BUDGET and report.n_trials == 6
    assert_stored_once(study)
    assert len(list(Path(study.tune_dir).glob("stream-*"))) == 1  # one Tune experiment for every round
    trials = {r["experiment_id"]: r for r in rows(study, "trials")}
    decided_at = {}
    for r in rows(study, "decisions"):
        decided_at.setdefault(r["cycle_id"], r["logged_at"])
    # some round was decided (and logged) while a trial of an earlier round still ran
    assert any(decided_at[t["cycle_id"]] < other["ended_at"] and other["cycle_id"] < t["cycle_id"]
               for t in trials.values() for other in trials.values())
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    progress = [e for e in events if e.phase == "progress"]
    assert progress and all({"slots_busy", "slots_free"} <= set(e.counts) for e in progress)
    assert max(e.counts["slots_busy"] for e in progress) == 2


@pytest.mark.ray
@pytest.mark.slow
def test_a_streams_first_trials_run_on_workers_started_before_they_were_decided(ray_session, tmp_path):
    """A new stream starts a warm worker per slot; the first decided trials run on them
    (their processes are older than the submission) and never more at once than the
    study's slots; the warm trials leave no trace among the results."""
    import psutil

    from arc_ray.executor import TrainingExecutor
    from _executors import runnable, wait_for

    def trainable(config):
        import time

        import psutil
        from ray import tune

        start = time.time()
        time.sleep(0.5)
        tune.report({"score": 1.0, "t_start": start, "t_end": time.time(),
                     "worker_started": psutil.Process().create_time()})

    study = make_study(tmp_path, "warm_stream")
    t0 = time.time()

    def new_trial_workers() -> int:
        n = 0
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            n += "ImplicitFunc" in cmd and (proc.info["create_time"] or 0) >= t0 - 1
        return n

    executor = TrainingExecutor(study, trainable=trainable, streaming=True)
    try:
        executor.warm_up()
        deadline = time.monotonic() + 120
        while new_trial_workers() < study.max_concurrent_trials:
            assert time.monotonic() < deadline, "the warm workers never started"
            time.sleep(0.2)
        time.sleep(1.0)  # past the workers' start: Tune's import, the first warm report
        submitted = time.time()
        ids = [f"w{k}" for k in range(4)]
        executor.submit_batch([runnable(study, eid) for eid in ids], cycle_id=1)
        assert set(wait_for(executor, ids, timeout=120).values()) == {JobStatus.COMPLETED}
        results = sorted((executor.collect_results(eid) for eid in ids), key=lambda r: r.metrics["t_start"])
    finally:
        executor.shutdown()
    assert [r.experiment_id for r in results] and {r.experiment_id for r in results} == set(ids)
    assert all(r.metrics["worker_started"] < submitted for r in results[:2]), \
        [(r.metrics["worker_started"] - submitted) for r in results]
    spans = [(r.metrics["t_start"], r.metrics["t_end"]) for r in results]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= study.max_concurrent_trials
    assert not any(r.metrics.get("arc_warm") for r in results)


@pytest.mark.ray
@pytest.mark.slow
def test_rolling_asha_stopped_trial_frees_its_slot_for_a_new_round(ray_session, tmp_path):
    """With ASHA, a trial stopped at a rung is stored as stopped early, and the loop decides
    the next round as soon as it is stored, not when the trial would have ended."""
    from arc_ray.study import StudyConfig

    text = STUDY.format(name="rolling_asha", storage=tmp_path / "history", max_trials=8)
    text = text.replace("epochs: 2,", "epochs: 6,").replace("sleep_s: 0.6", "sleep_s: 0.5")
    text = text.replace("  epochs: {type: int, low: 1, high: 4}\n", "")
    text += "scheduler: {grace_period: 1, reduction_factor: 2, max_t: 6}\n"
    (tmp_path / "study.yaml").write_text(text)
    study = StudyConfig.from_yaml(tmp_path / "study.yaml")
    assert "epochs" not in study.search_space and study.scheduler is not None
    report, events = run_to_end(study)
    assert report.n_trials == 8
    assert_stored_once(study)
    trials = {r["experiment_id"]: r for r in rows(study, "trials")}
    stopped = [eid for eid, r in trials.items() if r["stopped_early"]]
    assert stopped, "ASHA stopped no trial"
    assert all(trials[e]["iterations"] < 6 and trials[e]["status"] == "COMPLETED" for e in stopped), \
        [(e, trials[e]["iterations"], trials[e]["status"]) for e in stopped]
    # the loop's next step after storing a stopped trial is a new round (unless the budget
    # is spent); only results that had already ended by then (collected in the same poll)
    # may be stored before it, never one that ended later
    steps = [(e.phase, e.message.split(":")[0]) for e in events if e.phase in ("integrating", "submitted")]
    for eid in stopped:
        at = steps.index(("integrating", eid))
        after = steps[at + 1:]
        if any(phase == "submitted" for phase, _ in after):
            first = next(i for i, (phase, _) in enumerate(after) if phase == "submitted")
            for other in (e for phase, e in after[:first] if phase == "integrating"):
                assert trials[other]["ended_at"] <= trials[eid]["integrated_at"], (eid, other, steps[at:at + 4])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("hold", ["decided", "integrating", "finished"])
def test_rolling_driver_killed_resumes_every_pending_round(ray_session, tmp_path, hold):
    """Killed while round 3 is decided (others running), mid-integration, or between rounds."""
    from arc_ray.orchestrator import Orchestrator

    study = make_study(tmp_path, f"rolling_kill_{hold}")
    held, killed_at = kill_driver_at(study, tmp_path, hold, after=3 if hold == "decided" else 1)
    done_before = finished_on_disk(study)
    orch = Orchestrator(study)
    try:
        ids = orch._get(orch.historian.cycle_ids.remote())
        pending = sorted(ids["decided"] - ids["done"])
        assert pending, held  # rounds with trials in flight were left unfinished
        report = orch.run()
        assert orch.pending_cycle() is None
    finally:
        orch.shutdown(kill_actors=True)
    assert sorted(r.cycle_id for r in report.cycles if r.resumed) == pending  # finished, not decided again
    assert_stored_once(study)
    trials = {r["experiment_id"]: r for r in rows(study, "trials")}
    assert len(trials) == 7 and all(t["status"] == "COMPLETED" for t in trials.values())
    for eid in done_before:  # finished before the kill: read back, not rerun
        assert trials[eid]["metric.t_end"] < killed_at
