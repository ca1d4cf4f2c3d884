"""The orchestrator end to end on a cheap objective: named actors, offline cycles, the CLI's
``run`` / ``cycle`` in this process, stop rules, and stale actors of a changed study.

The tests run in order on one study (the in-process executor over ``trainables.toy``),
so the agent actors are started once for the module.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from arc_ray.cli import main
from arc_ray.orchestrator import Orchestrator, StopReason
from arc_ray.records import DecisionOutcome, JobStatus
from arc_ray.study import StudyConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

AGENTS = ["director", "critic", "bayesian", "explorer", "supervisor", "historian"]

STUDY = """\
name: orch_toy
trainable: trainables.toy:objective
metric: score
mode: max
executor: inprocess
baseline: {{x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 2, train_split: 0.8, val_split: 0.2}}
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
  model: {{type: categorical, choices: [small, medium, large]}}
  layers: {{type: int, low: 1, high: 4}}
storage: {storage}
budget: {{trials_per_cycle: 4, max_trials: 6}}
proposers: {{enabled: [bayesian, explorer], proposals_per_cycle: 6}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orch")
    path = folder / "study.yaml"
    path.write_text(STUDY.format(storage=folder / "history"))
    return StudyConfig.from_yaml(path)


@pytest.fixture(scope="module")
def orch(ray_session, study):
    o = Orchestrator(study)
    # the tests drive this study from several drivers (the CLI, an offline orchestrator,
    # driver processes) while this one lives: it lends them the lease (tests/test_drivers.py
    # and tests/test_lease.py test the lease itself)
    o.lease.release()
    yield o
    o.shutdown(kill_actors=True)


def test_agents_are_named_actors_in_the_study_namespace(orch, study):
    import ray

    assert orch.namespace == "arc-orch_toy"
    for name in AGENTS:
        handle = ray.get_actor(name, namespace=orch.namespace)
        assert handle._actor_id == (orch.historian if name == "historian" else orch.agents[name])._actor_id
    bayesian = ray.get_actor("bayesian", namespace=orch.namespace)
    assert ray.get(bayesian.__ray_ready__.remote())  # alive and answering
    assert bayesian._ray_actor_creation_function_descriptor.class_name == "BayesianProposer"


def test_offline_cycle_logs_decisions_and_runs_nothing(orch, study):
    offline = Orchestrator(study, offline_mode=True)
    assert offline.agents["director"]._actor_id == orch.agents["director"]._actor_id  # reused by name
    report = offline.run_autonomous_cycle()
    assert report.offline and report.cycle_id == 1 and report.results == []
    assert any(d.outcome.runs() for d in report.decisions)
    h = offline.historian
    import ray

    assert ray.get(h.trials_table.remote()).num_rows == 0
    assert len(ray.get(h.decisions_for_cycle.remote(1))) == len(report.decisions)
    cycles = ray.get(h.cycles_table.remote()).to_pylist()
    assert [(c["cycle_id"], c["offline"]) for c in cycles] == [(1, True)]
    assert offline._executor is None  # an offline study never builds an executor
    offline.shutdown()
    assert orch.pending_cycle() is None and orch.next_cycle_id() == 2


def test_cli_cycle_runs_exactly_one_cycle(study, capsys):
    out = io.StringIO()
    assert main(["cycle", study.source_path], out=out) == 0
    text = out.getvalue()
    assert "cycle 2: deciding" in text and "cycle 2: finished" in text
    assert "cycle 2 done: 4 result(s); best score" in text
    assert "\r" not in text  # not a terminal: plain progress lines


def test_cli_run_stops_at_the_trial_budget_and_writes_the_report(study, orch, capsys, tmp_path):
    out = io.StringIO()
    assert main(["run", study.source_path, "--cycles", "5", "--report-dir", str(tmp_path / "rep")],
                out=out) == 0
    text = out.getvalue()
    assert "stopped: the study's budget of 6 trials is spent (6 run)" in text
    assert "3 cycle(s), 6 trial(s) in the history (1 cycle(s) this run" in text
    assert (tmp_path / "rep" / "report.html").is_file() and f"report: {tmp_path / 'rep'}" in text
    import ray

    cycle3 = ray.get(orch.historian.decisions_for_cycle.remote(3))
    ran = [d for d in cycle3 if d.outcome.runs()]
    over = [d for d in cycle3 if "budget.max_trials=6" in d.reason]
    assert len(ran) == 2 and over and all(d.outcome == DecisionOutcome.VETOED for d in over)
    # configs are written only for decisions that run: none for the ones over the budget
    experiments = Path(study.experiments_dir)
    assert all((experiments / d.experiment_id / "config.yaml").is_file() for d in ran)
    assert not any((experiments / d.experiment_id).exists() for d in cycle3 if not d.outcome.runs())
    summary = ray.get(orch.historian.summary.remote())
    assert f"best score: {summary.best_value:.4f} (experiment {summary.best_experiment_id})" in text


def test_run_stops_at_once_when_the_budget_is_spent(orch):
    result = orch.run(max_cycles=3)
    assert result.stop_reason == StopReason.TRIAL_BUDGET and result.cycles == []
    assert result.n_trials == 6 and result.n_cycles == 3


def test_results_carry_the_proposer(orch):
    import ray

    trials = ray.get(orch.historian.trials_table.remote()).to_pylist()
    assert trials and all(t["proposer"] in ("bayesian", "explorer") for t in trials)
    assert all(t["status"] == JobStatus.COMPLETED.value for t in trials)


def test_run_stops_at_the_target_and_says_so(orch, study):
    import ray

    best = ray.get(orch.historian.summary.remote()).best_value
    reached = study.model_copy(update={"target": best - 1e-9})
    o = Orchestrator(reached)  # last test of the module: it replaces orch's actors
    result = o.run(max_cycles=2)
    assert result.stop_reason == StopReason.TARGET_REACHED and "target reached" in result.stop_message
    # a changed study config is served by fresh actors, not by the old ones
    assert o.agents["director"]._actor_id != orch.agents["director"]._actor_id
    served = ray.get(o.agents["director"].__ray_call__.remote(lambda a: a.study.target))
    assert served == reached.target
