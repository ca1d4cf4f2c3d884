"""Agents one by one: registry, context, director, the four proposers, the critic.

Helpers here (``make_results``, ``history_of``) are shared by the other agent tests.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pytest

from arc_ray.agents import (
    AgentContext,
    ArchitectProposer,
    BayesianProposer,
    Critic,
    Director,
    ExplorerProposer,
    Proposer,
    RecoveryProposer,
    agent_classes,
    build_agents,
    proposer_class,
    proposer_names,
    register_proposer,
)
from arc_ray.agents._history import HistoryView, nearest_distance
from arc_ray.agents.registry import applicable
from arc_ray.agents.director import split_quota
from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import ConfigValidationError
from arc_ray.historian import Historian
from arc_ray.historian.schema import trials_to_table
from arc_ray.records import (
    ErrorClass,
    HistorySummary,
    JobStatus,
    Pattern,
    Proposal,
    StrategyMode,
    TrialResult,
)
from arc_ray.space import flatten_config, unflatten_config
from arc_ray.study import StudyConfig
from trainables.toy import objective as toy_objective

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# ------------------------------------------------------------------ helpers


def make_results(study: StudyConfig, n: int, seed: int = 0, start: int = 0,
                 fail: Callable[[dict[str, Any]], str | None] | None = None,
                 objective: Callable[[dict[str, Any]], dict[str, float]] = toy_objective,
                 cycle_size: int = 4) -> list[TrialResult]:
    """``n`` random trials of ``study`` scored by ``objective``; ``fail(flat)`` → error class or None."""
    rng = np.random.default_rng(seed)
    base = flatten_config(study.baseline)
    out = []
    for i in range(start, start + n):
        while True:  # a config the study's declared constraints allow
            flat = dict(base)
            flat.update({k: v for k, v in study.search_space.sample(rng).items()
                         if k not in ("train_split", "val_split")})
            if not any(c.forbids(flat) for c in study.constraints):
                break
        config = unflatten_config(flat)
        cls = fail(flat) if fail else None
        if cls:
            out.append(TrialResult(experiment_id=f"h{i:04d}", cycle_id=i // cycle_size, status=JobStatus.FAILED,
                                   config=config, error_class=ErrorClass(cls), duration_s=30.0))
        else:
            out.append(TrialResult(experiment_id=f"h{i:04d}", cycle_id=i // cycle_size, status=JobStatus.COMPLETED,
                                   config=config, metrics=objective(config), duration_s=30.0))
    return out


def baseline_result(study: StudyConfig, cycle_id: int = 0,
                    objective: Callable[[dict[str, Any]], dict[str, float]] = toy_objective) -> TrialResult:
    """The study's baseline, run and scored (the first cycle runs it)."""
    return TrialResult(experiment_id="base", cycle_id=cycle_id, status=JobStatus.COMPLETED, config=study.baseline,
                       metrics=objective(study.baseline), duration_s=30.0)


def history_of(study: StudyConfig, results: list[TrialResult]) -> tuple[HistorySummary, pa.Table]:
    """The real historian's summary and trials table after integrating ``results``."""
    # a fresh folder per call, so each history holds exactly ``results``
    os.makedirs(study.storage, exist_ok=True)
    h = Historian(study.model_copy(update={"storage": tempfile.mkdtemp(dir=study.storage, prefix="hist-")}))
    by_cycle: dict[int, list[TrialResult]] = {}
    for r in results:
        by_cycle.setdefault(r.cycle_id, []).append(r)
    for c, rs in sorted(by_cycle.items()):
        h.integrate_experiment_results(rs, c)
    return h.summary(), h.trials_table()


def context(study: StudyConfig, results: list[TrialResult] | None = None, cycle_id: int = 5,
            mode: StrategyMode = StrategyMode.EXPLORE, quota: int = 4, **summary_updates: Any) -> AgentContext:
    summary, table = history_of(study, results or [])
    if summary_updates:
        summary = summary.model_copy(update=summary_updates)
    strategy = Director(study).plan(summary).model_copy(update={"mode": mode})
    return AgentContext(study=study, cycle_id=cycle_id, summary=summary, strategy=strategy, trials=table, quota=quota)


def assert_valid_proposals(study: StudyConfig, proposals: list[Proposal], ids: set[str] | None = None) -> None:
    gen = ExperimentConfigGenerator(study)
    for p in proposals:
        assert len(p.experiment_id) <= 64
        gen.validate(p.changes)  # raises if invalid
        flat = flatten_config(p.changes)
        assert "train_split" not in flat and "val_split" not in flat
        if ids is not None:
            assert p.experiment_id not in ids
            ids.add(p.experiment_id)


@pytest.fixture
def single_cat_study(tmp_path):
    return StudyConfig.from_dict({
        "name": "onecat", "trainable": "trainables.toy:objective", "metric": "score", "mode": "max",
        "baseline": {"model": "small", "epochs": 1},
        "search_space": {"model": {"type": "categorical", "choices": ["small", "medium", "large"]}},
        "storage": str(tmp_path / "h"), "executor": "inprocess"})


@pytest.fixture
def mixed_study(tmp_path):
    """The flagship search space on the toy objective (no timm import), with GPUs."""
    import yaml

    space = yaml.safe_load((CONFIGS / "search_space.yaml").read_text())
    baseline = yaml.safe_load((CONFIGS / "baseline.yaml").read_text())
    return StudyConfig.from_dict({
        "name": "mixed", "trainable": "trainables.toy:objective", "metric": "auc", "mode": "max",
        "baseline": baseline, "search_space": space, "storage": str(tmp_path / "h"),
        "resources": {"cpu": 2, "gpu": 1},
        "proposers": {"exclude": ["train_split", "val_split"]},  # as configs/arc.yaml: they sum to 1
        "constraints": [{"id": "vit_needs_224", "parameters": ["image_size"], "high": 223,
                         "when": {"model": "vit_base_patch16_224"}, "reason": "ViT wants 224 px"}]})


def auc_objective(config: dict[str, Any]) -> dict[str, float]:
    """A response over the flagship space (for tests only)."""
    f = flatten_config(config)
    lr = math.log10(f["learning_rate"])
    auc = 0.95 - 0.02 * (lr + 3) ** 2 - 0.2 * (f["dropout"] - 0.2) ** 2 \
        + {"resnet50": 0.02, "efficientnet_b3": 0.03}.get(f["model"], 0.0)
    return {"auc": auc}


# ------------------------------------------------------------------ registry


def test_registry_maps_names_and_names_the_valid_ones_for_an_unknown(toy_study):
    assert proposer_class("bayesian") is BayesianProposer
    with pytest.raises(ConfigValidationError, match="valid names are: architect, bayesian, explorer, recovery"):
        proposer_class("genetic")
    bad = toy_study.model_copy(update={"proposers": toy_study.proposers.model_copy(
        update={"enabled": ["bayesian", "genetic", "bayesian", "critic"]})})
    with pytest.raises(ConfigValidationError) as err:
        agent_classes(bad)
    text = str(err.value)
    assert "genetic" in text and "listed twice" in text and "fixed role" in text
    agents = build_agents(toy_study)
    assert list(agents) == ["director", "critic", "bayesian", "surrogate", "explorer", "architect", "recovery",
                            "supervisor"]
    assert all(a.name == n for n, a in agents.items())


def test_register_proposer_makes_a_new_name_available(toy_study):
    @register_proposer("baseline_only")
    class BaselineOnly(Proposer):
        def propose(self, ctx):
            return [self.proposal(ctx, 1, {}, "the baseline")]

    try:
        study = toy_study.model_copy(update={"proposers": toy_study.proposers.model_copy(
            update={"enabled": ["baseline_only"]})})
        assert agent_classes(study)["baseline_only"] is BaselineOnly
        with pytest.raises(ValueError, match="fixed role"):
            register_proposer("critic")(BaselineOnly)
    finally:
        from arc_ray.agents import registry

        registry._PROPOSERS.pop("baseline_only", None)


# ------------------------------------------------------------------ context and history view


def test_context_pickles_with_its_history_view(toy_study):
    ctx = context(toy_study, make_results(toy_study, 6))
    view = ctx.history()
    assert view.n == 6 and view.X.shape == (6, len(toy_study.search_space))
    copy = ctx.model_copy(update={"quota": 2})
    assert copy.history() is view  # the copy per proposer shares the computed view
    back = pickle.loads(pickle.dumps(ctx))
    assert back.trials.num_rows == 6 and np.allclose(back.history().X, view.X)


def test_history_view_reads_config_json_when_columns_are_missing(toy_study):
    table = trials_to_table(make_results(toy_study, 5))
    slim = table.select([c for c in table.column_names if not c.startswith("config.")])
    a = HistoryView(table, toy_study.search_space, "score", 1.0, toy_study.baseline)
    b = HistoryView(slim, toy_study.search_space, "score", 1.0, toy_study.baseline)
    assert np.allclose(a.X, b.X)
    empty = HistoryView(pa.table({}), toy_study.search_space, "score", 1.0, toy_study.baseline)
    assert empty.n == 0 and empty.best_index() is None


# ------------------------------------------------------------------ director


def _summary(**kw: Any) -> HistorySummary:
    base = dict(study="toy", metric="score", mode="max", n_trials=40, n_completed=40, n_cycles=3, metric_spread=0.2)
    base.update(kw)
    return HistorySummary(**base)


def test_director_rules(toy_study):
    d = Director(toy_study)
    assert d.plan(_summary(n_trials=0, n_completed=0, n_cycles=0)).mode == StrategyMode.EXPLORE
    first = d.plan(_summary(n_cycles=0))
    assert first.mode == StrategyMode.EXPLORE and "first" in first.reason
    failed = d.plan(_summary(n_completed=0, n_failed=8))
    assert failed.mode == StrategyMode.RECOVER and "failed" in failed.reason
    stag = d.plan(_summary(stagnating=True, experiments_since_improvement=9))
    assert stag.mode == StrategyMode.RECOVER and "stagnating" in stag.reason
    assert stag.quotas["recovery"] > 0
    limit = toy_study.budget.max_recover_cycles_without_improvement
    tired = d.plan(_summary(stagnating=True, modes=["explore"] + ["recover"] * limit))
    assert tired.mode == StrategyMode.EXPLORE and "did not help" in tired.reason
    gain = d.plan(_summary(recent_improvement=0.05))
    assert gain.mode == StrategyMode.EXPLOIT and "0.05" in gain.reason
    # by default any new best is a gain (ranks, not units); none → explore
    assert d.plan(_summary(recent_improvement=0.001)).mode == StrategyMode.EXPLOIT
    none = d.plan(_summary(recent_improvement=0.0))
    assert none.mode == StrategyMode.EXPLORE and "no new best" in none.reason
    # fewer completed trials than the world model needs: around a declared baseline the
    # director exploits; around the space's middle (no one's start) it explores
    from arc_ray.agents.surrogate import startup_size
    from arc_ray.api import default_baseline

    need = startup_size(len(toy_study.searched_names))
    early = d.plan(_summary(recent_improvement=0.0, n_trials=need - 1, n_completed=need - 1))
    assert early.mode == StrategyMode.EXPLOIT and "declared its baseline" in early.reason
    assert d.plan(_summary(recent_improvement=0.0, n_trials=need, n_completed=need)).mode == StrategyMode.EXPLORE
    middle = toy_study.model_copy(update={"baseline": {**toy_study.baseline, **default_baseline(toy_study.search_space)}})
    assert Director(middle).plan(_summary(recent_improvement=0.0, n_trials=need - 1,
                                          n_completed=need - 1)).mode == StrategyMode.EXPLORE
    for s in (first, failed, stag, gain):
        assert sum(s.quotas.values()) == toy_study.proposers.proposals_per_cycle
    assert first.quotas["recovery"] == 0 and gain.quotas["recovery"] == 0


def test_director_counts_rolling_rounds_as_cycles(toy_study):
    """Rolling rounds hold about one trial: the recover limit counts trials_per_cycle
    rounds for a cycle, and the exploit reason names the results window."""
    rolling = toy_study.model_copy(update={"scheduling": "rolling"})
    d = Director(rolling)
    limit = rolling.budget.max_recover_cycles_without_improvement
    per = rolling.budget.trials_per_cycle
    assert per > 1
    few = d.plan(_summary(stagnating=True, modes=["explore"] + ["recover"] * limit))
    assert few.mode == StrategyMode.RECOVER
    tired = d.plan(_summary(stagnating=True, modes=["explore"] + ["recover"] * (limit * per)))
    assert tired.mode == StrategyMode.EXPLORE and "did not help" in tired.reason
    gain = d.plan(_summary(recent_improvement=0.05))
    assert gain.mode == StrategyMode.EXPLOIT and f"last {per} results" in gain.reason


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_director_thresholds_are_scale_free_unless_given_in_metric_units(toy_study, scale):
    """The same history in other units (a residual near 1e-6, a loss in the thousands)
    gets the same plans, by default (any new best) and with gains set as shares of the
    spread; thresholds set in the metric's units still win."""
    d = Director(toy_study)
    spread = 0.2 * scale
    assert toy_study.director.gains(spread) == (0.0, 0.0)  # default: any new best is a gain
    assert d.plan(_summary(recent_improvement=1e-6 * scale, metric_spread=spread)).mode == StrategyMode.EXPLOIT
    assert d.plan(_summary(recent_improvement=0.0, metric_spread=spread)).mode == StrategyMode.EXPLORE
    shares = toy_study.model_copy(update={"director": toy_study.director.model_copy(
        update={"stagnation_share": 0.05, "exploit_share": 0.1})})
    ds = Director(shares)
    assert ds.plan(_summary(recent_improvement=0.05 * scale, metric_spread=spread)).mode == StrategyMode.EXPLOIT
    low = ds.plan(_summary(recent_improvement=0.001 * scale, metric_spread=spread))
    assert low.mode == StrategyMode.EXPLORE and "below the exploit threshold" in low.reason
    assert ds.plan(_summary(recent_improvement=0.0, metric_spread=0.0)).mode == StrategyMode.EXPLORE
    assert shares.director.gains(spread) == pytest.approx((0.05 * spread, 0.1 * spread))
    fixed = toy_study.model_copy(update={"director": toy_study.director.model_copy(
        update={"exploit_threshold": 0.01 * scale})})
    plan = Director(fixed).plan(_summary(recent_improvement=0.02 * scale, metric_spread=100 * scale))
    assert plan.mode == StrategyMode.EXPLOIT and f"{0.01 * scale:.3g}" in plan.reason
    assert Director(fixed).plan(_summary(recent_improvement=0.005 * scale)).mode == StrategyMode.EXPLORE
    assert toy_study.director.gains(None) == (0.0, 0.0)


def test_director_gives_the_surrogate_more_once_the_history_is_rich(toy_study):
    """From RICH_HISTORY completed trials per searched parameter the world model's own
    acquisition gets a larger share of every mode's proposals; before, the mode's mix."""
    from arc_ray.agents.surrogate import RICH_HISTORY

    d = Director(toy_study)
    rich = RICH_HISTORY * len(toy_study.searched_names)
    for mode in StrategyMode:
        before, after = d.quotas(mode, rich - 1), d.quotas(mode, rich)
        assert before == d.quotas(mode)
        assert after["surrogate"] > before["surrogate"]
        assert sum(after.values()) == sum(before.values()) == toy_study.proposers.proposals_per_cycle
    plan = d.plan(_summary(recent_improvement=0.05, n_completed=rich, n_trials=rich))
    assert plan.quotas == d.quotas(StrategyMode.EXPLOIT, rich)


def test_split_quota_is_exact_and_deterministic():
    assert split_quota(6, {"a": 0.5, "b": 0.3, "c": 0.2, "d": 0.0}) == {"a": 3, "b": 2, "c": 1, "d": 0}
    assert sum(split_quota(7, {"a": 1, "b": 1, "c": 1}).values()) == 7
    assert split_quota(0, {"a": 1}) == {"a": 0}


# ------------------------------------------------------------------ bayesian


def test_bayesian_batch_is_valid_diverse_and_warm_started(toy_study):
    results = make_results(toy_study, 12, fail=lambda f: "diverged" if f["lr"] > 0.3 else None)
    ctx = context(toy_study, results, quota=5)
    agent = BayesianProposer(toy_study)
    props = agent.propose(ctx)
    assert len(props) == 5
    assert_valid_proposals(toy_study, props, set())
    assert props[0].experiment_id == "c0005-bayesian-01"
    keys = {tuple(sorted(p.changes.items())) for p in props}
    assert len(keys) == 5
    states = [t.state.name for t in agent._optuna.trials]
    n_fail = sum(r.status == JobStatus.FAILED for r in results)
    assert states.count("COMPLETE") == 12 - n_fail and n_fail > 0
    # the asked trials never linger as pending
    assert "RUNNING" not in states
    # same history and cycle → same batch (a fresh sampler seeded by the cycle)
    again = BayesianProposer(toy_study).propose(ctx)
    assert [p.changes for p in again] == [p.changes for p in props]


def test_bayesian_beats_random_on_the_toy_response(toy_study):
    results = make_results(toy_study, 30, seed=1)
    ctx = context(toy_study, results, quota=8)
    props = BayesianProposer(toy_study).propose(ctx)
    base = flatten_config(toy_study.baseline)
    tpe = np.mean([toy_objective(unflatten_config({**base, **flatten_config(p.changes)}))["score"] for p in props])
    rand = np.mean([r.metrics["score"] for r in make_results(toy_study, 200, seed=9)])
    assert tpe > rand


def test_bayesian_gp_sampler_and_empty_history(toy_study):
    study = toy_study.model_copy(update={"proposers": toy_study.proposers.model_copy(
        update={"sampler": "gp", "startup_trials": 3})})
    assert len(BayesianProposer(study).propose(context(study, [], quota=3))) == 3
    props = BayesianProposer(study).propose(context(study, make_results(study, 6), quota=2))
    assert len(props) == 2 and "GP" in props[0].rationale
    assert_valid_proposals(study, props)


# ------------------------------------------------------------------ surrogate


def test_agents_of_one_cycle_share_one_world_model_fit(toy_study):
    """The critic and the surrogate ask for the same model on a cycle's table: one fit,
    the same forecasts as a fit of their own; another table or other options refit."""
    from arc_ray.agents.base import world_model_for
    from arc_ray.world_model import WorldModel

    ctx = context(toy_study, make_results(toy_study, 20, seed=3), quota=4)
    critic_wm = world_model_for(ctx, seed=toy_study.seed, n_restarts=2)
    copy = ctx.model_copy(update={"quota": 2})  # what each agent receives: the same table
    assert world_model_for(copy, seed=toy_study.seed, max_fit_size=300, n_restarts=2) is critic_wm
    assert world_model_for(ctx, seed=toy_study.seed, n_restarts=0) is not critic_wm
    assert world_model_for(ctx, seed=toy_study.seed, max_fit_size=10, n_restarts=2) is not critic_wm
    other = context(toy_study, make_results(toy_study, 20, seed=3), quota=4)  # equal rows, new table
    assert world_model_for(other, seed=toy_study.seed, n_restarts=2) is not critic_wm
    own = WorldModel(seed=toy_study.seed, n_restarts=2, max_fit_size=300).fit(
        ctx.trials, toy_study.search_space, toy_study.metric, toy_study.sign, baseline_config=toy_study.baseline)
    configs = [flatten_config(r.config) for r in make_results(toy_study, 5, seed=9)]
    np.testing.assert_allclose(own.predict_mean_std(configs), critic_wm.predict_mean_std(configs))


def test_surrogate_start_up_moves_one_parameter_of_the_best_only_for_a_declared_baseline(toy_study):
    from arc_ray.agents.surrogate import SurrogateProposer
    from arc_ray.api import default_baseline

    results = make_results(toy_study, 3, seed=4) + [baseline_result(toy_study)]
    ctx = context(toy_study, results, quota=4)
    view = ctx.history()
    best = view.flat_config(view.best_index())
    props = SurrogateProposer(toy_study).propose(ctx)
    near = [p for p in props if "near the best config" in p.rationale]
    assert len(near) == 4 and len(props) == 4
    changed_params = set()
    for p in near:
        flat = {**flatten_config(toy_study.baseline), **flatten_config(p.changes)}
        changed = [k for k in best if flat[k] != best[k]]
        assert len(changed) == 1, changed  # exactly one parameter of the best moved
        changed_params.add(changed[0])
    assert len(changed_params) == 4  # never the same parameter twice in a round
    assert_valid_proposals(toy_study, props)
    # those four ran and lost to the best: the next round moves the three others first
    worst = min(r.metrics["score"] for r in results)
    ran = [TrialResult(experiment_id=f"n{i}", cycle_id=1, status=JobStatus.COMPLETED, duration_s=30.0,
                       config=unflatten_config({**flatten_config(toy_study.baseline), **flatten_config(p.changes)}),
                       metrics={"score": worst - 1.0}) for i, p in enumerate(props)]
    again = SurrogateProposer(toy_study).propose(context(toy_study, results + ran, quota=3, cycle_id=6))
    moved = set()
    for p in again:
        flat = {**flatten_config(toy_study.baseline), **flatten_config(p.changes)}
        moved.update(k for k in best if flat[k] != best[k])
    assert len(again) == 3 and moved == set(best) - set(toy_study.proposers.exclude) - changed_params
    # the space's middle as the baseline (make_study's default) is no declared start: all Sobol
    middle = toy_study.model_copy(update={"baseline": {**toy_study.baseline, **default_baseline(toy_study.search_space)}})
    props = SurrogateProposer(middle).propose(context(middle, make_results(middle, 3, seed=4), quota=4))
    assert len(props) == 4 and all("start-up design (Sobol)" in p.rationale for p in props[1:])
    # ... which, not run yet, is the design's first point (the first cycle measures it)
    assert "the study's baseline, not run yet" in props[0].rationale
    assert {k: v for k, v in flatten_config(props[0].changes).items()} == \
        {k: v for k, v in flatten_config(middle.baseline).items() if k in middle.searched_names}


def test_surrogate_maximises_the_world_model_and_spreads_its_batch(toy_study):
    from arc_ray.agents.surrogate import MIN_OBSERVATIONS, SurrogateProposer

    early = SurrogateProposer(toy_study).propose(context(
        toy_study, make_results(toy_study, MIN_OBSERVATIONS - 2) + [baseline_result(toy_study)], quota=3))
    # too few trials for the model: its share is a start-up design, not lost; the toy
    # study declares its baseline, so it changes one parameter of the best at a time
    assert len(early) == 3 and all("near the best config" in p.rationale for p in early)
    assert_valid_proposals(toy_study, early)
    results = make_results(toy_study, 30, seed=1)
    ctx = context(toy_study, results, quota=4)
    props = SurrogateProposer(toy_study).propose(ctx)
    assert len(props) == 4 and all("EI" in p.rationale and "local penalisation" in p.rationale for p in props)
    assert_valid_proposals(toy_study, props)
    view = ctx.history()
    axes = view.axes(toy_study.proposers.exclude)
    pts = np.array([view.unit(flatten_config(p.changes))[axes] for p in props])
    for i in range(len(pts)):  # no two picks on the same spot
        assert nearest_distance(pts[i:i + 1], np.delete(pts, i, axis=0)).min() > 1e-6
    base = flatten_config(toy_study.baseline)
    got = np.mean([toy_objective(unflatten_config({**base, **flatten_config(p.changes)}))["score"] for p in props])
    rand = np.mean([r.metrics["score"] for r in make_results(toy_study, 200, seed=9)])
    assert got > rand


def test_surrogate_exploits_inside_its_trust_region_only(toy_study):
    """In exploit mode the surrogate maximises EI over moves around the best trials only;
    in explore mode over the whole space (Sobol) as well."""
    import re

    from arc_ray.agents.surrogate import (
        LOCAL_CANDIDATES, LOCAL_CENTRES, LOCAL_STEPS, SOBOL_CANDIDATES, SurrogateProposer)

    results = make_results(toy_study, 30, seed=1)
    local = LOCAL_CENTRES * len(LOCAL_STEPS) * LOCAL_CANDIDATES
    for mode, sobol in [(StrategyMode.EXPLOIT, False), (StrategyMode.EXPLORE, True)]:
        props = SurrogateProposer(toy_study).propose(context(toy_study, results, mode=mode, quota=3))
        assert len(props) == 3
        assert_valid_proposals(toy_study, props)
        for p in props:
            assert ("trust region only" in p.rationale) != sobol and ("Sobol" in p.rationale) == sobol
            pool = int(re.search(r"best of (\d+) candidates", p.rationale).group(1))
            assert (pool >= SOBOL_CANDIDATES + local) == sobol and pool >= local


def test_surrogate_polishes_the_best_trial_once_the_history_is_rich(toy_study):
    """With RICH_HISTORY completed trials per searched parameter, all the batch's slots
    but one (at most POLISH_MAX) go to polish: EI's best moves within a hair of the best
    trial, apart from each other; the surrogate's other picks (first) maximise the
    acquisition over its whole pool. With fewer trials every pick comes from the whole pool."""
    from arc_ray.agents.surrogate import (
        POLISH_MAX, POLISH_RADIUS, POLISH_STEPS, RICH_HISTORY, SurrogateProposer)

    rich = RICH_HISTORY * len(toy_study.searched_names)
    slots = toy_study.budget.trials_per_cycle
    quota = slots + 2
    for n, polished in [(rich - 1, False), (rich + 5, True)]:
        ctx = context(toy_study, make_results(toy_study, n, seed=1), quota=quota)
        props = SurrogateProposer(toy_study).propose(ctx)
        assert len(props) == quota
        assert_valid_proposals(toy_study, props)
        polish = ["polish" in p.rationale for p in props]
        if not polished:
            assert not any(polish)
            continue
        assert polish == [False] * (quota - slots + 1) + [True] * (slots - 1)
        view = ctx.history()
        axes = view.axes(toy_study.proposers.exclude)
        best = view.X[view.best_index(), axes]
        pts = np.array([view.unit(flatten_config(p.changes))[axes] for p in props])
        near = nearest_distance(pts, best[None, :])
        assert (near[polish] < 3 * POLISH_STEPS[0]).all() and (near > 1e-9).all()
        assert (near[~np.array(polish)] > 3 * POLISH_STEPS[0]).any()
        fine = pts[polish]
        for i in range(len(fine)):  # polish picks apart from each other
            assert nearest_distance(fine[i:i + 1], np.delete(fine, i, axis=0))[0] > 0.1 * POLISH_RADIUS
    # a large batch: at most POLISH_MAX polish picks, the other slots from the whole pool
    wide = toy_study.model_copy(update={"budget": toy_study.budget.model_copy(update={"trials_per_cycle": 8})})
    props = SurrogateProposer(wide).propose(context(wide, make_results(wide, rich + 5, seed=1), quota=10))
    assert len(props) == 10
    assert sum("polish" in p.rationale for p in props) == POLISH_MAX


@pytest.fixture
def narrow_study(tmp_path):
    """One float and two discrete parameters (the toy trainable): a polish moves one axis."""
    return StudyConfig.from_dict({
        "name": "narrow", "trainable": "trainables.toy:objective", "metric": "score", "mode": "max",
        "baseline": {"x": 0.0, "model": "small", "layers": 2, "epochs": 1},
        "search_space": {"x": {"type": "float", "low": -1.0, "high": 1.0},
                         "model": {"type": "categorical", "choices": ["small", "medium", "large"]},
                         "layers": {"type": "int", "low": 1, "high": 6}},
        "storage": str(tmp_path / "h"), "executor": "inprocess"})


def test_surrogate_never_proposes_a_config_the_supervisor_refuses_as_a_duplicate(narrow_study):
    """A search converged on its best (three rounds of moves 0.01 around it in its one
    float): the surrogate's picks are all farther than the supervisor's duplicate tolerance
    from every config run and from each other (the polish's finest moves, and snapped
    discrete axes, used to land within it: a slot lost to a veto)."""
    from arc_ray.agents.surrogate import SurrogateProposer

    s = narrow_study
    tol = s.supervisor.same_config_distance
    for seed in range(4):
        results = make_results(s, 15, seed=seed)
        rng = np.random.default_rng(seed)
        for r in range(3):
            best = flatten_config(results[context(s, results).history().best_index()].config)
            for i in range(4):
                config = unflatten_config(dict(best, x=float(np.clip(best["x"] + rng.normal(0, 0.01), -1, 1))))
                results.append(TrialResult(experiment_id=f"p{r}{i}", cycle_id=10 + r, status=JobStatus.COMPLETED,
                                           config=config, metrics=toy_objective(config), duration_s=30.0))
        ctx = context(s, results, quota=6)
        props = SurrogateProposer(s).propose(ctx)
        assert len(props) == 6
        view = ctx.history()
        pts = np.array([view.unit(flatten_config(p.changes)) for p in props])
        assert nearest_distance(pts, view.X).min() > tol, seed
        for i in range(len(pts)):
            assert nearest_distance(pts[i:i + 1], np.delete(pts, i, axis=0))[0] > tol, seed


def test_surrogate_proposes_nothing_over_the_risk_cap(narrow_study):
    """Failures just past the optimum (x > 0.35; the best is near 0.3): the GP, fitted on
    completed trials only, extrapolates high values into the failing region, but none of
    the surrogate's picks is forecast to fail above the risk cap, which the critic and
    the supervisor refuse (such picks used to be most of what the surrogate offered
    around an optimum on a failure edge)."""
    from arc_ray.agents.base import risk_cap, world_model_for
    from arc_ray.agents.surrogate import SurrogateProposer

    s = narrow_study
    base = flatten_config(s.baseline)
    for seed in range(4):
        results = make_results(s, 20, seed=seed, fail=lambda f: "diverged" if f["x"] > 0.35 else None)
        ctx = context(s, results, quota=6)
        props = SurrogateProposer(s).propose(ctx)
        assert props
        risk = world_model_for(ctx, seed=s.seed).failure_probability(
            [{**base, **flatten_config(p.changes)} for p in props])
        assert (risk <= risk_cap(s, ctx.history())).all(), (seed, risk)


# ------------------------------------------------------------------ explorer


def test_explorer_keeps_its_distance(toy_study):
    results = make_results(toy_study, 20)
    ctx = context(toy_study, results, quota=4)
    props = ExplorerProposer(toy_study).propose(ctx)
    assert len(props) == 4
    assert_valid_proposals(toy_study, props)
    view = ctx.history()
    axes = view.axes(toy_study.proposers.exclude)
    pts = np.array([view.unit(flatten_config(p.changes))[axes] for p in props])
    md = toy_study.proposers.min_distance
    assert nearest_distance(pts, view.X[:, axes]).min() >= md
    for i in range(len(pts)):
        assert nearest_distance(pts[i:i + 1], np.delete(pts, i, axis=0)).min() >= md


def test_explorer_and_others_on_a_single_categorical_space(single_cat_study):
    s = single_cat_study
    ran = [TrialResult(experiment_id="a", cycle_id=0, status=JobStatus.COMPLETED,
                       config={"model": "small", "epochs": 1}, metrics={"score": 0.5})]
    ctx = context(s, ran, quota=4)
    props = ExplorerProposer(s).propose(ctx)
    assert {p.changes["model"] for p in props} <= {"medium", "large"} and props
    all_run = [TrialResult(experiment_id=m, cycle_id=0, status=JobStatus.COMPLETED,
                           config={"model": m, "epochs": 1}, metrics={"score": 0.5}) for m in ("small", "medium", "large")]
    ctx = context(s, all_run, quota=4)
    assert ExplorerProposer(s).propose(ctx) == []  # nowhere new to go
    for cls in (BayesianProposer, ArchitectProposer, RecoveryProposer):
        for p in cls(s).propose(ctx):
            assert p.changes["model"] in ("small", "medium", "large")


# ------------------------------------------------------------------ architect


def test_architect_follows_patterns_and_asks_gpu_for_large_models(mixed_study):
    results = make_results(mixed_study, 16, objective=auc_objective)
    pattern = Pattern(parameter="model", value="efficientnet_b5", support=4, lift=2.0)
    ctx = context(mixed_study, results, quota=4, patterns=[pattern])
    props = ArchitectProposer(mixed_study).propose(ctx)
    assert props and all(p.type.value == "architecture_change" for p in props)
    assert_valid_proposals(mixed_study, props)
    b5 = [p for p in props if p.changes.get("model") == "efficientnet_b5"]
    assert b5 and "lift 2.00" in b5[0].rationale
    assert b5[0].resources is not None and b5[0].resources.gpu == 2.0
    # a ViT gets the image size its constraint asks for
    vit = Pattern(parameter="model", value="vit_base_patch16_224", support=3, lift=3.0)
    best = ctx.summary.best_config
    small_img = {**flatten_config(best), "image_size": 64}
    res2 = [r.model_copy(update={"config": unflatten_config(small_img) if i == 0 else r.config,
                                 "metrics": {"auc": 0.99} if i == 0 else r.metrics})
            for i, r in enumerate(results)]
    ctx2 = context(mixed_study, res2, quota=3, patterns=[vit])
    (p,) = [p for p in ArchitectProposer(mixed_study).propose(ctx2) if p.changes["model"] != best["model"]]
    assert p.changes["model"] == "vit_base_patch16_224" and p.changes["image_size"] >= 224
    assert "vit_needs_224" in p.rationale
    # no GPUs in the study → no GPU asked
    cpu = mixed_study.model_copy(update={"resources": mixed_study.resources.model_copy(update={"gpu": 0.0})})
    assert all(p.resources is None for p in ArchitectProposer(cpu).propose(context(cpu, results, quota=4, patterns=[pattern])))


# ------------------------------------------------------------------ recovery


def test_recovery_from_all_failures_restarts_safer(mixed_study):
    results = make_results(mixed_study, 6, fail=lambda f: "oom")
    ctx = context(mixed_study, results, mode=StrategyMode.RECOVER, quota=3)
    props = RecoveryProposer(mixed_study).propose(ctx)
    assert len(props) == 3
    assert_valid_proposals(mixed_study, props)
    base = flatten_config(mixed_study.baseline)
    safer = props[0]
    assert "safer" in safer.rationale
    assert safer.changes["learning_rate"] < base["learning_rate"] and safer.changes["batch_size"] < base["batch_size"]
    assert any("restart from the baseline" in p.rationale for p in props)


def test_recovery_works_around_the_best(toy_study):
    results = make_results(toy_study, 12)
    ctx = context(toy_study, results, mode=StrategyMode.RECOVER, quota=4)
    props = RecoveryProposer(toy_study).propose(ctx)
    assert len(props) == 4 and all(ctx.summary.best_experiment_id in p.rationale for p in props[:2])
    assert_valid_proposals(toy_study, props)


# ------------------------------------------------------------------ critic and votes


def test_critic_forecasts_and_rejects_high_risk_with_numbers(toy_study):
    # the region x > 0.5 always fails
    results = make_results(toy_study, 40, fail=lambda f: "crash" if f["x"] > 0.5 else None)
    ctx = context(toy_study, results, mode=StrategyMode.EXPLOIT)
    good = Proposal(experiment_id="good", changes={"x": 0.3, "lr": 0.01, "model": "medium", "layers": 3}, proposer="t")
    risky = Proposal(experiment_id="risky", changes={"x": 0.95, "lr": 0.01, "model": "medium", "layers": 3}, proposer="t")
    preds = Critic(toy_study).assess([good, risky], ctx)
    assert preds[1].failure_probability > preds[0].failure_probability
    assert not preds[0].is_prior and preds[0].mean > preds[1].mean
    # a risk cap between the two forecasts: the risky one is rejected, with its numbers
    cap = (preds[0].failure_probability + preds[1].failure_probability) / 2
    capped = toy_study.model_copy(update={"supervisor": toy_study.supervisor.model_copy(
        update={"max_failure_probability": cap})})
    votes = {v.experiment_id: v for v in Critic(capped).vote([good, risky], ctx)}
    assert votes["good"].approve and votes["good"].score > votes["risky"].score
    assert not votes["risky"].approve
    assert "risk cap" in votes["risky"].rationale
    assert f"P(fail) {preds[1].failure_probability:.2f}" in votes["risky"].rationale
    assert f"predicted score {preds[1].mean:.4g}" in votes["risky"].rationale


def test_proposers_vote_on_others_only(toy_study):
    results = make_results(toy_study, 16, fail=lambda f: "oom" if f["layers"] >= 6 else None)
    ctx = context(toy_study, results)
    mine = Proposal(experiment_id="m", changes={"x": 0.1}, proposer="bayesian")
    theirs = Proposal(experiment_id="t", changes={"x": 0.2}, proposer="explorer")
    for cls in (BayesianProposer, ExplorerProposer, RecoveryProposer):
        agent = cls(toy_study)
        votes = agent.vote([mine, theirs], ctx)
        assert all(v.experiment_id != "m" or agent.name != "bayesian" for v in votes)
        assert all(0 <= v.score <= 1 and v.rationale for v in votes)
    assert [v.experiment_id for v in BayesianProposer(toy_study).vote([mine, theirs], ctx)] == ["t"]
    d = Director(toy_study)
    for mode in StrategyMode:
        c = ctx.model_copy(update={"strategy": ctx.strategy.model_copy(update={"mode": mode})})
        assert len(d.vote([mine, theirs], c)) == 2


def test_director_gives_no_quota_to_a_proposer_with_nothing_to_propose(tmp_path):
    continuous = StudyConfig.from_dict({
        "name": "cont", "trainable": "trainables.toy:objective", "metric": "score",
        "baseline": {"x": 0.0, "y": 0.0}, "storage": str(tmp_path),
        "search_space": {"x": {"type": "float", "low": -1, "high": 1}, "y": {"type": "float", "low": -1, "high": 1}}})
    for mode in StrategyMode:
        quotas = Director(continuous, applicable=applicable(continuous)).quotas(mode)
        assert quotas["architect"] == 0 and sum(quotas.values()) == continuous.proposers.proposals_per_cycle
    assert not ArchitectProposer.applies_to(continuous) and BayesianProposer.applies_to(continuous)


# ------------------------------------------------------------------ constraints and risk


def test_forbidden_samples_are_moved_just_outside(mixed_study):
    from arc_ray.agents._constraints import project_out
    from arc_ray.records import Constraint

    space = mixed_study.search_space
    lr = Constraint(id="lr_high", parameters=["learning_rate"], low=0.01, reason="diverges", source="learned")
    mem = Constraint(id="mem", parameters=["batch_size", "image_size"], low=64 * 224, reason="oom", source="learned")
    flat = {**flatten_config(mixed_study.baseline), "learning_rate": 0.05, "batch_size": 128, "image_size": 224}
    moved, notes = project_out(flat, [lr, mem], space)
    assert not lr.forbids(moved) and not mem.forbids(moved)
    assert 0.005 < moved["learning_rate"] < 0.01  # just below the bound, in the log scale
    assert moved["batch_size"] == 32 and moved["image_size"] == 224  # the batch gives way
    assert any("lr_high" in n for n in notes) and any("mem" in n for n in notes)
    # a parameter that must not move is left alone (the caller's validation then fails)
    kept, _ = project_out(flat, [lr], space, fixed=["learning_rate"])
    assert kept["learning_rate"] == 0.05


def test_proposers_respect_learned_constraints(toy_study):
    # everything with lr ≥ 1e-4 diverged: the historian learns it, proposers stay below
    results = make_results(toy_study, 10, fail=lambda f: "diverged" if f["lr"] >= 1e-4 else None)
    ctx = context(toy_study, results, mode=StrategyMode.RECOVER, quota=3)
    learned = [c for c in ctx.summary.constraints if "lr" in c.parameters]
    assert learned, "the historian should learn an lr bound from these failures"
    for cls in (BayesianProposer, ExplorerProposer, RecoveryProposer):
        for p in cls(toy_study).propose(ctx):
            flat = {**flatten_config(toy_study.baseline), **flatten_config(p.changes)}
            assert not any(c.forbids(flat) for c in learned), (cls.__name__, p.changes)


def test_risk_cap_follows_a_failing_history(toy_study):
    from arc_ray.agents.base import RISK_MARGIN, risk_cap

    cap = toy_study.supervisor.max_failure_probability
    assert risk_cap(toy_study, context(toy_study, make_results(toy_study, 8)).history()) == cap
    failing = context(toy_study, make_results(toy_study, 8, fail=lambda f: "crash")).history()
    assert risk_cap(toy_study, failing) == pytest.approx(failing.failure_rate() + RISK_MARGIN)
    assert failing.failure_rate() == pytest.approx(9 / 12)


def test_critic_refits_as_the_history_grows_and_uses_the_current_best(toy_study):
    results = make_results(toy_study, 44)
    critic = Critic(toy_study)
    p = [Proposal(experiment_id="p", changes={"x": 0.3}, proposer="t")]
    first = critic.model(context(toy_study, results[:40]))
    ctx41 = context(toy_study, results[:41])
    assert critic.model(ctx41) is first  # 1 new trial < 5% of 40
    assert critic.model(context(toy_study, results[:42])) is not first  # 2 new trials: refit
    # the incumbent of expected improvement is the summary's best, not the one at fit time
    low = critic.assess(p, ctx41)[0].expected_improvement
    high_bar = ctx41.model_copy(update={"summary": ctx41.summary.model_copy(update={"best_value": 5.0})})
    assert critic.assess(p, high_bar)[0].expected_improvement < low


def test_searching_the_splits_proposes_only_what_the_trainables_config_accepts(toy_study):
    # The split rule is the toy trainable's own (its Config); the agents know nothing of
    # it, yet never propose a config that breaks it.
    study = toy_study.model_copy(update={"proposers": toy_study.proposers.model_copy(update={"exclude": []})})
    ctx = context(study, make_results(study, 10), quota=4)
    props = BayesianProposer(study).propose(ctx) + ExplorerProposer(study).propose(ctx)
    gen = ExperimentConfigGenerator(study)
    for p in props:
        assert "train_split" in p.changes
        gen.validate(p.changes)
    with pytest.raises(ConfigValidationError, match="train_split \\+ val_split must equal 1"):
        gen.validate({"train_split": 0.7})


def test_explorer_by_world_model_uncertainty(toy_study):
    study = toy_study.model_copy(update={"proposers": toy_study.proposers.model_copy(update={"explorer": "uncertainty"})})
    ctx = context(study, make_results(study, 12), quota=3)
    props = ExplorerProposer(study).propose(ctx)
    assert len(props) == 3 and all("world-model std" in p.rationale for p in props)
    assert_valid_proposals(study, props)


def test_the_registry_imports_no_concrete_agent_and_the_director_not_the_registry():
    import ast
    import inspect

    from arc_ray.agents import director, registry

    def imported(module):
        tree = ast.parse(inspect.getsource(module))
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert {m for m in imported(registry) if m.startswith("arc_ray.agents")} == {"arc_ray.agents.base"}
    assert "arc_ray.agents.registry" not in imported(director)
    assert set(proposer_names()) >= {"bayesian", "explorer", "architect", "recovery"}  # registered themselves
