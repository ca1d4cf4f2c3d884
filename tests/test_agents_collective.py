"""The collective end to end: decisions for everything, bad agents, odd histories, Ray actors."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_agents import history_of, make_results, single_cat_study  # noqa: F401  (fixture)

from arc_ray.agents import (
    BayesianProposer,
    Collective,
    Director,
    Proposer,
    build_agents,
    build_roster,
)
from arc_ray.errors import ConfigValidationError
from arc_ray.executor import InProcessExecutor
from arc_ray.historian import Historian
from arc_ray.records import DecisionOutcome, Strategy, StrategyMode
from arc_ray.space import flatten_config
from trainables.toy import objective as toy_objective

from _executors import wait_for


class FixedDirector(Director):
    """Explores with the quotas it is given."""

    def __init__(self, study, quotas, name=None):
        super().__init__(study, name)
        self._quotas = quotas

    def plan(self, summary, cycle_id=None):
        return Strategy(mode=StrategyMode.EXPLORE, reason="fixed for the test", quotas=dict(self._quotas))


class Raiser(Proposer):
    def propose(self, ctx):
        raise RuntimeError("boom in propose")

    def vote(self, proposals, ctx):
        raise RuntimeError("boom in vote")


class Garbage(Proposer):
    def propose(self, ctx):
        return "not a list"

    def vote(self, proposals, ctx):
        return [42, {"agent": "x"}]


class Junk(Proposer):
    def propose(self, ctx):
        good = self.proposal(ctx, 1, {"x": 0.1}, "fine")
        return [
            good,
            7,  # not a proposal
            {"experiment_id": "../escape", "changes": {}},  # unsafe id
            self.proposal(ctx, 2, {"lr": 50.0}, "out of range"),
            self.proposal(ctx, 3, {"layers": "many"}, "wrong type"),
            self.proposal(ctx, 1, {"x": 0.2}, "same id again"),
            self.proposal(ctx, 4, {"nonsense": 1}, "unknown key"),
            self.proposal(ctx, 5, {"x": 0.3}, "over quota"),
        ]


def _decide(study, results=(), agents=None, cycle_id=3):
    summary, table = history_of(study, list(results))
    return Collective(study, agents).decide(cycle_id, summary, table)


def _check_complete(cd, study):
    """Every well-formed proposal has exactly one decision, with its votes and forecast."""
    by_id = {}
    for d in cd.decisions:
        assert d.experiment_id not in by_id, f"two decisions for {d.experiment_id}"
        by_id[d.experiment_id] = d
    for p in cd.proposals:
        assert p.experiment_id in by_id
    ran = cd.approved
    assert len(ran) <= study.budget.trials_per_cycle
    for d in ran:
        assert d.config is not None and d.resources is not None and d.rank is not None
        assert d.config["experiment_id"] == d.experiment_id
    return by_id


def test_decide_records_every_proposal_vote_and_forecast(toy_study):
    results = make_results(toy_study, 12)
    cd = _decide(toy_study, results)
    by_id = _check_complete(cd, toy_study)
    assert len(cd.proposals) == toy_study.proposers.proposals_per_cycle
    assert len(cd.approved) == toy_study.budget.trials_per_cycle
    for p in cd.proposals:
        assert p.predicted is not None and by_id[p.experiment_id].prediction == p.predicted
        voters = {v.agent for v in by_id[p.experiment_id].votes}
        assert {"critic", "director"} <= voters and p.proposer not in voters
    assert [d.rank for d in cd.approved] == sorted(d.rank for d in cd.approved)
    assert set(cd.timings) == {"plan", "propose", "forecast", "vote", "supervise"}
    # the historian stores them all, and gives them back
    h = Historian(toy_study)
    assert h.log_decisions(cd.decisions) == len(cd.decisions)
    back = h.decisions_for_cycle(3)
    assert {d.experiment_id for d in back} == set(by_id)


def test_bad_proposers_cost_only_their_own_proposals(toy_study):
    quotas = {"bayesian": 2, "raiser": 2, "garbage": 2, "junk": 7}
    agents = {k: v for k, v in build_agents(toy_study).items() if k in ("critic", "supervisor", "bayesian")}
    agents["director"] = FixedDirector(toy_study, quotas)
    agents.update(raiser=Raiser(toy_study, "raiser"), garbage=Garbage(toy_study, "garbage"), junk=Junk(toy_study, "junk"))
    cd = _decide(toy_study, make_results(toy_study, 8), agents)
    by_id = _check_complete(cd, toy_study)
    reasons = {eid: d.reason for eid, d in by_id.items()}
    assert "boom in propose" in reasons["c0003-raiser-error"]
    assert "returned str" in reasons["c0003-garbage-garbage"]
    junk = {eid: r for eid, r in reasons.items() if eid.startswith("c0003-junk")}
    text = "\n".join(junk.values())
    assert "malformed proposal (int)" in text and "'../escape'" in text  # 7 and the unsafe id
    assert "lr=50.0" in text and "layers='many'" in text and "nonsense" in text
    assert "already used" in text and "over junk's quota of 7" in text
    assert all(by_id[e].outcome == DecisionOutcome.REJECTED for e in junk if e != "c0003-junk-01")
    # the cycle went on: the good ones were voted on and some run
    assert {p.proposer for p in cd.proposals} == {"bayesian", "junk"}
    assert cd.approved and all(v.agent not in ("raiser", "garbage") for v in cd.votes)


def test_failing_director_critic_and_supervisor(toy_study):
    results = make_results(toy_study, 8)

    class BadDirector(Director):
        def plan(self, summary, cycle_id=None):
            raise ValueError("no plan")

    class BadCritic(BayesianProposer):
        def assess(self, proposals, ctx):
            return ["not a prediction"]

    agents = build_agents(toy_study)
    agents["director"] = BadDirector(toy_study)
    agents["critic"] = BadCritic(toy_study, "critic")
    cd = _decide(toy_study, results, agents)
    assert cd.strategy.mode == StrategyMode.EXPLORE and "director failed" in cd.strategy.reason
    assert sum(cd.strategy.quotas.values()) == toy_study.proposers.proposals_per_cycle
    assert all(p.predicted is None for p in cd.proposals) and cd.approved

    class BadSupervisor:
        name = "supervisor"

        def review(self, ranked, ctx):
            raise RuntimeError("asleep")

    agents = build_agents(toy_study)
    agents["supervisor"] = BadSupervisor()
    cd = _decide(toy_study, results, agents)
    assert cd.approved == []
    vetoed = [d for d in cd.decisions if d.outcome == DecisionOutcome.VETOED]
    assert vetoed and all("supervisor failed" in d.reason and "asleep" in d.reason for d in vetoed)
    with pytest.raises(ConfigValidationError, match="supervisor"):
        Collective(toy_study, {"director": Director(toy_study)})


def test_empty_history(toy_study):
    cd = _decide(toy_study, [])
    _check_complete(cd, toy_study)
    assert cd.strategy.mode == StrategyMode.EXPLORE and len(cd.approved) == toy_study.budget.trials_per_cycle
    assert all(p.predicted.is_prior for p in cd.proposals)


def test_the_first_cycle_runs_the_baseline_once(toy_study):
    """The surrogate's start-up design starts at the study's baseline and the director votes
    it first, so the first cycle measures the reference; once it ran, nobody proposes it again."""
    base = {k: v for k, v in flatten_config(toy_study.baseline).items() if k in toy_study.searched_names}

    def is_base(decision):
        flat = flatten_config(decision.config)
        return all(flat.get(k) == pytest.approx(v) if isinstance(v, float) else flat.get(k) == v
                   for k, v in base.items())

    cd = _decide(toy_study, [], cycle_id=1)
    _check_complete(cd, toy_study)
    first = [d for d in cd.approved if is_base(d)]
    assert len(first) == 1 and first[0].rank == 1 and first[0].proposal.proposer == "surrogate"
    assert "baseline" in first[0].proposal.rationale
    director = next(v for v in first[0].votes if v.agent == "director")
    assert director.score == 1.0 and "baseline" in director.rationale
    # the baseline ran: no proposal of it again
    ran = make_results(toy_study, 1, seed=3)[0].model_copy(update={"config": toy_study.baseline})
    again = _decide(toy_study, [ran], cycle_id=2)
    _check_complete(again, toy_study)
    assert again.approved and not any(is_base(d) for d in again.approved)
    assert not any("baseline, not run yet" in p.rationale for p in again.proposals)


def test_history_of_only_failures(toy_study):
    results = make_results(toy_study, 8, fail=lambda f: "diverged")
    cd = _decide(toy_study, results)
    _check_complete(cd, toy_study)
    assert cd.strategy.mode == StrategyMode.RECOVER
    assert cd.approved and any(d.proposal.proposer == "recovery" for d in cd.approved)


def test_single_categorical_space(single_cat_study):
    s = single_cat_study
    cd = _decide(s, [])
    _check_complete(cd, s)
    models = [d.config["model"] for d in cd.approved]
    assert 1 <= len(models) <= 3 and len(set(models)) == len(models)  # no duplicates of each other


def test_in_process_loop_improves_and_never_repeats(toy_study):
    toy_study = toy_study.model_copy(update={"trainable": "trainables.toy:objective", "executor": "inprocess"})
    h = Historian(toy_study)
    col = Collective(toy_study)
    ex = InProcessExecutor(toy_study)
    seen, bests = set(), []
    try:
        for cycle in range(4):
            cd = col.decide(cycle, h.summary(), h.trials_table())
            ids = [d.experiment_id for d in cd.approved]
            assert ids and not seen & set(ids)
            seen |= set(ids)
            ex.submit_batch(cd.approved, cycle)
            wait_for(ex, ids, timeout=30)
            h.integrate_experiment_results([ex.collect_results(i) for i in ids], cycle)
            h.log_decisions(cd.decisions)
            bests.append(h.summary().best_value)
    finally:
        ex.shutdown()
    s = h.summary()
    assert s.n_trials == len(seen) == 16
    configs = {tuple(sorted(flatten_config({k: v for k, v in r.items() if k != "experiment_id"}).items()))
               for r in (ex.collect_results(i).config for i in seen)}
    assert len(configs) == 16
    baseline = toy_objective(toy_study.baseline)["score"]  # 0.80; the optimum is 1.0
    assert s.best_value == bests[-1] > bests[0] > baseline


@pytest.mark.ray
@pytest.mark.slow
def test_collective_with_ray_actor_handles(toy_study, ray_session):
    """Actors and plain objects in one collective: the same code path serves both."""
    import sys

    ray = ray_session
    # the workers cannot import this test module: ship its classes by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    roster = build_roster(toy_study)
    agents = build_agents(toy_study)
    actor = {name: ray.remote(cls).options(num_cpus=0).remote(*args, **kwargs)
             for name, (cls, args, kwargs) in roster.items() if name in ("critic", "bayesian", "supervisor")}
    actor["raiser"] = ray.remote(Raiser).options(num_cpus=0).remote(toy_study, "raiser")
    mixed = {"director": FixedDirector(toy_study, {"bayesian": 2, "explorer": 2, "raiser": 1}),
             "explorer": agents["explorer"], **actor}
    try:
        summary, table = history_of(toy_study, make_results(toy_study, 10))
        cd = Collective(toy_study, mixed, timeout_s=120).decide(2, summary, table)
        by_id = _check_complete(cd, toy_study)
        assert "boom in propose" in by_id["c0002-raiser-error"].reason
        assert len(cd.proposals) == 4 and cd.approved
        assert all(p.predicted is not None for p in cd.proposals)  # the critic actor forecast them
        assert {p.proposer for p in cd.proposals} == {"bayesian", "explorer"}
        voters = {v.agent for v in cd.votes}
        assert {"critic", "director", "bayesian", "explorer"} <= voters and "raiser" not in voters
        # the supervisor actor wrote the approved configs where the driver can read them
        for d in cd.approved:
            assert (Path(toy_study.experiments_dir) / d.experiment_id / "config.yaml").is_file()
    finally:
        for h in actor.values():
            ray.kill(h)


class DiesOnce:
    """A proposer whose process dies in its first ``propose`` (its node went away);
    Ray restarts the actor, and the restarted one proposes."""

    def __init__(self, study, marker: str) -> None:
        from arc_ray.agents.explorer import ExplorerProposer

        self.inner = ExplorerProposer(study, name="diesonce")
        self.marker = Path(marker)

    def propose(self, ctx):
        import os

        if not self.marker.exists():
            self.marker.write_text("died")
            os._exit(1)
        return self.inner.propose(ctx)

    def vote(self, proposals, ctx):
        return []


@pytest.mark.ray
def test_an_agent_whose_actor_dies_is_called_again_once_it_restarts(toy_study, ray_session, tmp_path):
    """Ray's task retries can run out before a dead actor is back (the chaos test's
    nodes: a cycle lost a proposer's proposals and ran 2 trials instead of 4). The
    collective calls a restarted agent again, so its proposals are not lost."""
    import sys

    ray = ray_session
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    agents = build_agents(toy_study)
    dies = ray.remote(DiesOnce).options(num_cpus=0, max_restarts=1, max_task_retries=0).remote(
        toy_study, str(tmp_path / "died"))
    mixed = {"director": FixedDirector(toy_study, {"diesonce": 2, "explorer": 1}), "explorer": agents["explorer"],
             "critic": agents["critic"], "supervisor": agents["supervisor"], "diesonce": dies}
    try:
        summary, table = history_of(toy_study, make_results(toy_study, 6))
        cd = Collective(toy_study, mixed, timeout_s=120).decide(2, summary, table)
        assert (tmp_path / "died").exists()  # it did die
        assert sum(p.proposer == "diesonce" for p in cd.proposals) == 2, [d.reason for d in cd.decisions]
    finally:
        ray.kill(dies)
