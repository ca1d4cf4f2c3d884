"""The supervisor: rules, duplicates, risk, budget, repairs."""

from __future__ import annotations

import json
from pathlib import Path

from test_agents import context, make_results, mixed_study  # noqa: F401  (fixture)

from arc_ray.agents import Supervisor
from arc_ray.agents.voting import Ballot
from arc_ray.records import Constraint, DecisionOutcome, Prediction, Proposal, Resources, Vote
from arc_ray.space import flatten_config, unflatten_config


def _ballots(*proposals: Proposal) -> list[Ballot]:
    return [Ballot(proposal=p, votes=[Vote(agent="critic", experiment_id=p.experiment_id, approve=True, score=0.8,
                                           weight=2.0)], approval=1.0, weighted_score=0.8 - 0.01 * i, rank=i + 1)
            for i, p in enumerate(proposals)]


def _p(eid: str, risk: float | None = None, resources: Resources | None = None, **changes) -> Proposal:
    pred = None if risk is None else Prediction(mean=0.9, std=0.01, failure_probability=risk)
    return Proposal(experiment_id=eid, changes=changes, proposer="bayesian", predicted=pred, resources=resources)


def _study(study, **updates):
    """``study`` with settings replaced: ``budget={...}``, ``supervisor={...}``, ..."""
    out = {}
    for key, value in updates.items():
        current = getattr(study, key)
        out[key] = current.model_copy(update=value) if isinstance(value, dict) else value
    return study.model_copy(update=out)


def test_approves_in_rank_order_and_writes_the_config(mixed_study):
    ctx = context(mixed_study, make_results(mixed_study, 4, objective=lambda c: {"auc": 0.8}))
    ds = Supervisor(mixed_study).review(_ballots(_p("c0005-a", learning_rate=0.01), _p("c0005-b", dropout=0.3)), ctx)
    assert [d.outcome for d in ds] == [DecisionOutcome.APPROVED] * 2
    d = ds[0]
    assert d.rank == 1 and "rank 1" in d.reason and d.votes and d.decided_by == "supervisor"
    assert d.config["learning_rate"] == 0.01 and d.config["experiment_id"] == "c0005-a"
    assert d.resources == mixed_study.resources
    on_disk = json.loads((Path(mixed_study.experiments_dir) / "c0005-a" / "config.json").read_text())
    assert on_disk == d.config
    assert "GPU-h" in d.reason  # estimated from the 30 s trials of the history


def test_vetoes_declared_and_learned_constraint_breaches(mixed_study):
    learned = Constraint(id="lr_high", parameters=["learning_rate"], low=0.5, reason="diverges", source="learned")
    ctx = context(mixed_study, make_results(mixed_study, 3, objective=lambda c: {"auc": 0.8}), constraints=[learned])
    ds = Supervisor(mixed_study).review(_ballots(
        _p("vit", model="vit_base_patch16_224", image_size=128),
        _p("lr", learning_rate=0.8),
        _p("bad", dropout=0.9)), ctx)
    assert all(d.outcome == DecisionOutcome.VETOED for d in ds)
    assert "vit_needs_224" in ds[0].reason and "lr_high" in ds[1].reason and "dropout" in ds[2].reason
    assert all(d.config is None for d in ds)


def test_vetoes_duplicates_of_history_and_of_each_other(mixed_study):
    results = make_results(mixed_study, 3, objective=lambda c: {"auc": 0.8})
    ran = flatten_config(results[1].config)
    again = {k: v for k, v in ran.items() if k in mixed_study.search_space and k not in ("train_split", "val_split")}
    near = dict(again, dropout=again["dropout"] + 1e-6)
    ctx = context(mixed_study, results)
    ds = Supervisor(mixed_study).review(_ballots(
        _p("same", **unflatten_config(again)), _p("new1", dropout=0.31), _p("new2", dropout=0.31 + 1e-5),
        _p("near", **unflatten_config(near))), ctx)
    by = {d.experiment_id: d for d in ds}
    assert by["same"].outcome == DecisionOutcome.VETOED and "duplicate of h0001" in by["same"].reason
    assert by["near"].outcome == DecisionOutcome.VETOED and "h0001" in by["near"].reason
    assert by["new1"].outcome == DecisionOutcome.APPROVED
    assert by["new2"].outcome == DecisionOutcome.VETOED and "new1" in by["new2"].reason


def test_risk_above_cap_is_vetoed_unless_an_oom_can_be_repaired(mixed_study):
    # the history: batch 128 runs out of memory everywhere
    results = make_results(mixed_study, 24, fail=lambda f: "oom" if f["batch_size"] == 128 else None,
                           objective=lambda c: {"auc": 0.8})
    ctx = context(mixed_study, results)
    oom_like = next(r for r in results if r.status.value == "FAILED")
    changes = {k: v for k, v in flatten_config(oom_like.config).items()
               if k in mixed_study.search_space and k not in ("train_split", "val_split")}
    changes["dropout"] = min(changes["dropout"] + 0.01, 0.5)
    far = {"model": "resnet18", "dropout": 0.45, "learning_rate": 0.2, "batch_size": 8}
    ds = Supervisor(mixed_study).review(_ballots(
        _p("oom", risk=0.9, **unflatten_config(changes)),
        _p("risky", risk=0.9, **far),
        _p("fine", risk=0.1, dropout=0.2)), ctx)
    by = {d.experiment_id: d for d in ds}
    assert by["oom"].outcome == DecisionOutcome.REPAIRED
    assert by["oom"].repair == {"batch_size": 64} and by["oom"].config["batch_size"] == 64
    assert "predicted OOM" in by["oom"].reason and "batch_size 128 → 64" in by["oom"].reason
    assert by["risky"].outcome == DecisionOutcome.VETOED and "0.90 is above the risk cap 0.60" in by["risky"].reason
    assert by["fine"].outcome == DecisionOutcome.APPROVED


def test_oom_at_the_smallest_batch_gets_more_gpu(mixed_study):
    results = make_results(mixed_study, 24, fail=lambda f: "oom" if f["batch_size"] == 8 else None,
                           objective=lambda c: {"auc": 0.8})
    ctx = context(mixed_study, results)
    failed = next(r for r in results if r.status.value == "FAILED")
    changes = {k: v for k, v in flatten_config(failed.config).items()
               if k in mixed_study.search_space and k not in ("train_split", "val_split")}
    changes["dropout"] = min(changes["dropout"] + 0.01, 0.5)
    (d,) = Supervisor(mixed_study).review(_ballots(_p("tight", risk=0.8, **unflatten_config(changes))), ctx)
    assert d.outcome == DecisionOutcome.REPAIRED and d.resources.gpu == 2.0
    assert d.repair == {"resources.gpu": 2.0} and "GPU per trial 1 → 2" in d.reason
    cpu = _study(mixed_study, resources=Resources(cpu=1, gpu=0))
    (d,) = Supervisor(cpu).review(_ballots(_p("tight", risk=0.8, **unflatten_config(changes))),
                                  context(cpu, results))
    assert d.outcome == DecisionOutcome.VETOED and "no smaller batch or more GPU" in d.reason


def test_a_learned_memory_constraint_is_repaired_with_a_smaller_batch(mixed_study):
    mem = Constraint(id="oom_mem", parameters=["batch_size", "image_size"], low=64 * 224, reason="OOM",
                     error_class="oom", source="learned")
    ctx = context(mixed_study, [], constraints=[mem])
    (d,) = Supervisor(mixed_study).review(_ballots(_p("big", batch_size=128, image_size=224)), ctx)
    assert d.outcome == DecisionOutcome.REPAIRED and d.repair == {"batch_size": 32}
    assert "oom_mem" in d.reason and d.config["batch_size"] == 32


def test_budgets(mixed_study):
    results = make_results(mixed_study, 4, objective=lambda c: {"auc": 0.8})  # 30 s per trial, 1 GPU
    props = [_p(f"p{i}", dropout=0.1 + 0.05 * i) for i in range(5)]
    capped = _study(mixed_study, budget={"trials_per_cycle": 2})
    ds = Supervisor(capped).review(_ballots(*props), context(capped, results))
    assert [d.outcome.runs() for d in ds] == [True, True, False, False, False]
    assert "budget.trials_per_cycle=2" in ds[2].reason
    study_cap = _study(mixed_study, budget={"max_trials": 5})
    ds = Supervisor(study_cap).review(_ballots(*props), context(study_cap, results))
    assert sum(d.outcome.runs() for d in ds) == 1 and "max_trials=5" in ds[1].reason
    # 30 s × 1 GPU = 1/120 GPU-h per trial: 2.5 trials fit in 1/48 GPU-h
    gpu = _study(mixed_study, budget={"gpu_hours_per_cycle": 1 / 48})
    ds = Supervisor(gpu).review(_ballots(*props), context(gpu, results))
    assert sum(d.outcome.runs() for d in ds) == 2 and "gpu_hours_per_cycle" in ds[2].reason
    spent = _study(mixed_study, budget={"max_gpu_hours": 1.0})
    ds = Supervisor(spent).review(_ballots(*props), context(spent, results, gpu_hours_used=1.0 - 1 / 100))
    assert sum(d.outcome.runs() for d in ds) == 1 and "max_gpu_hours" in ds[1].reason


def test_gpu_per_trial_is_capped(mixed_study):
    (d,) = Supervisor(mixed_study).review(_ballots(_p("greedy", resources=Resources(cpu=1, gpu=64), dropout=0.2)),
                                          context(mixed_study, []))
    assert d.outcome == DecisionOutcome.REPAIRED and d.resources.gpu == mixed_study.supervisor.max_gpu_per_trial
    assert "supervisor cap" in d.reason


def test_an_empty_ranking_decides_nothing(mixed_study):
    assert Supervisor(mixed_study).review([], context(mixed_study, [])) == []


def test_decisions_have_a_named_constructor_per_outcome():
    from arc_ray.records import Decision, Prediction, Proposal

    p = Proposal(experiment_id="e1", changes={"x": 0.1}, predicted=Prediction(mean=0.5, std=0.1))
    common = dict(cycle_id=2, decided_by="supervisor", reason="why")
    ok = Decision.approved(p, config={"x": 0.1}, **common)
    fixed = Decision.repaired(p, config={"x": 0.1}, repair={"batch_size": 16}, **common)
    no = Decision.vetoed(p, rank=3, **common)
    bad = Decision.rejected("e1-bad01", proposal=p, **common)
    lost = Decision.rejected("c0002-x-error", **common)
    assert [d.outcome for d in (ok, fixed, no, bad, lost)] == [
        DecisionOutcome.APPROVED, DecisionOutcome.REPAIRED, DecisionOutcome.VETOED,
        DecisionOutcome.REJECTED, DecisionOutcome.REJECTED]
    assert ok.experiment_id == no.experiment_id == "e1" and bad.experiment_id == "e1-bad01"
    assert ok.prediction == p.predicted == bad.prediction and lost.prediction is None and lost.proposal is None
    assert fixed.repair == {"batch_size": 16} and no.rank == 3 and ok.outcome.runs() and not no.outcome.runs()
