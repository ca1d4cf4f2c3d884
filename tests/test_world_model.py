"""The world model: calibration on a known surface, failure risk, little data, bad input."""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from sklearn.gaussian_process import GaussianProcessRegressor

from arc_ray.errors import ConfigValidationError, HistoryError
from arc_ray.records import Prediction
from arc_ray.space import SearchSpace, flatten_config
from arc_ray.world_model import WorldModel, WorldModelNotFittedError, trials_table_from_records

# ---------------------------------------------------------------- a known surface

SPACE = SearchSpace.from_mapping({
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 8},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "adamw"]},
    "augmentation": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
})
_OPTIMIZER_BONUS = {"sgd": -0.1, "adam": 0.05, "adamw": 0.08}
_BEST_LOG_LR = {"sgd": -2.5, "adam": -3.2, "adamw": -3.0}  # an lr × optimizer interaction
NOISE = 0.03  # seed-to-seed noise of one run


def surface(config: dict) -> float:
    """The true (noise-free) metric of a config: a bowl in log lr and layers, a choice bonus."""
    o = config["optimizer"]
    return (0.8 - 0.05 * (math.log10(config["lr"]) - _BEST_LOG_LR[o]) ** 2
            - 0.012 * (config["layers"] - 5) ** 2 + _OPTIMIZER_BONUS[o]
            - 0.5 * (config["augmentation"]["dropout"] - 0.2) ** 2)


def sample_configs(rng: np.random.Generator, n: int) -> list[dict]:
    """``n`` nested configs drawn uniformly (log-uniform lr) from SPACE."""
    out = []
    for _ in range(n):
        flat = SPACE.sample(rng)
        out.append({"lr": flat["lr"], "layers": flat["layers"], "optimizer": flat["optimizer"],
                    "augmentation": {"dropout": flat["augmentation.dropout"]}})
    return out


def in_failure_region(config: dict) -> bool:
    """The planted failure region: a high learning rate on a deep model diverges."""
    return config["lr"] > 0.01 and config["layers"] >= 5


def history(rng: np.random.Generator, n: int, *, metric: str = "auc", sign: float = 1.0,
            plant_failures: bool = False) -> tuple[list[dict], pa.Table]:
    configs = sample_configs(rng, n)
    records = []
    for c in configs:
        if plant_failures and in_failure_region(c):
            records.append({"config": c, "status": "FAILED", "error_class": "diverged"})
        else:
            records.append({"config": c, "metrics": {metric: sign * (surface(c) + rng.normal(0, NOISE))}})
    return configs, trials_table_from_records(records)


# ------------------------------------------------------------------ encoding


def test_the_encoding_is_log_aware_one_hot_and_ranks_numeric_choices():
    from arc_ray.world_model._encoding import SpaceEncoder

    space = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "layers": {"type": "int", "low": 1, "high": 5},
        "model": {"type": "categorical", "choices": ["a", "b", "c"]},
        "batch_size": {"type": "categorical", "choices": [64, 8, 16, 32]},
        "augmentation": {"flip": {"type": "bool"}},
    })
    encoder = SpaceEncoder(space)
    assert encoder.feature_names() == ["lr", "layers", "model=a", "model=b", "model=c",
                                       "batch_size", "augmentation.flip"]
    row = encoder.encode([{"lr": 1e-3, "layers": 2, "model": "b", "batch_size": 16,
                           "augmentation": {"flip": True}}])[0]
    np.testing.assert_allclose(row, [0.5, 0.25, 0, 1, 0, 1 / 3, 1])
    # Unset → NaN (imputed by the model); out of range → past [0, 1].
    row = encoder.encode([{"lr": 1.0}])[0]
    assert row[0] == pytest.approx(1.25) and np.isnan(row[1:]).all()


# ------------------------------------------------------------------ calibration


def test_forecasts_rank_and_cover_unseen_configs_after_40_observations():
    # Over 30 data seeds during development: Spearman 0.83-0.99, coverage 0.71-0.99 with
    # mean 0.89 (25 of 30 inside [0.80, 0.97]); seed 3 is a typical one (coverage 0.93).
    rng = np.random.default_rng(3)
    _, table = history(rng, 40)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    assert not model.is_prior and model.n_observations == 40

    unseen = sample_configs(rng, 200)
    truth = np.array([surface(c) for c in unseen])
    outcome = truth + rng.normal(0, NOISE, len(truth))  # what running each config would give
    predictions = model.predict(unseen)
    mean = np.array([p.mean for p in predictions])
    std = np.array([p.std for p in predictions])

    assert spearmanr(mean, truth).statistic >= 0.6
    coverage = np.mean(np.abs(outcome - mean) <= 1.6448536 * std)  # the central 90 % interval
    assert 0.80 <= coverage <= 0.97
    assert model.std_scale >= 1.0


def test_a_deterministic_response_is_resolved_close_to_its_optimum():
    """A search closing in on an optimum compares configs whose values differ by far less
    than its first trials' spread: the model must not blur those differences into noise.
    (With the noise floor at 0.1 % of the variance, the median error here was 0.04-0.08 on
    values of about 0.2; at MIN_NOISE 0.0025-0.004.)"""
    space = SearchSpace.from_mapping({f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(4)})
    weights, centre = np.array([1.0, 10.0, 100.0, 1000.0]), np.array([0.3, 0.6, 0.45, 0.55])

    def loss(x: np.ndarray) -> float:  # an ill-conditioned bowl: 0 at the centre, up to ~300
        return float(weights @ (x - centre) ** 2)

    def configs(xs: np.ndarray) -> list[dict]:
        return [{f"x{i}": float(v) for i, v in enumerate(x)} for x in xs]

    rng = np.random.default_rng(0)
    # 40 trials spread over the space, then 40 near the optimum, as a converging search runs them
    X = np.vstack([rng.random((40, 4)), np.clip(centre + rng.normal(0, 0.03, (40, 4)), 0, 1)])
    table = trials_table_from_records([{"config": c, "metrics": {"loss": loss(x)}}
                                       for c, x in zip(configs(X), X)])
    model = WorldModel(seed=0).fit(table, space, "loss", -1.0)
    near = np.clip(centre + rng.normal(0, 0.02, (100, 4)), 0, 1)
    truth = np.array([loss(x) for x in near])
    mean, _ = model.predict_mean_std(configs(near))
    assert np.median(np.abs(mean - truth)) < 0.05 * np.median(truth)
    assert spearmanr(mean, truth).statistic > 0.99


def test_few_trials_per_parameter_keep_the_small_data_noise_floor():
    """Below RICH_OBSERVATIONS trials per parameter the noise may not fall under
    SMALL_DATA_NOISE (few points in many dimensions interpolate); from there MIN_NOISE."""
    from arc_ray.world_model._model import MIN_NOISE, RICH_OBSERVATIONS, SMALL_DATA_NOISE

    n_params = len(SPACE.names)
    rng = np.random.default_rng(5)
    configs = sample_configs(rng, RICH_OBSERVATIONS * n_params)
    records = [{"config": c, "metrics": {"auc": surface(c)}} for c in configs]  # no noise at all
    few = WorldModel(seed=0).fit(trials_table_from_records(records[:RICH_OBSERVATIONS * n_params - 1]),
                                 SPACE, "auc", 1.0)
    rich = WorldModel(seed=0).fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    assert few._gp.kernel_.k2.noise_level >= SMALL_DATA_NOISE * 0.999
    assert MIN_NOISE * 0.999 <= rich._gp.kernel_.k2.noise_level < SMALL_DATA_NOISE


def test_std_is_not_rescaled_from_a_handful_of_trials(monkeypatch):
    """Leave-one-out on 3-7 trials (folds of 2-6 in a 7-column space) measures nothing
    about calibration: such a scale made the critic's EI chase the farthest configs."""
    from arc_ray.world_model._model import _MIN_CALIBRATION

    rng = np.random.default_rng(3)
    for n in (3, 5, _MIN_CALIBRATION - 1):
        _, table = history(rng, n)
        model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
        assert not model.is_prior and model.std_scale == 1.0
    folds = []  # from _MIN_CALIBRATION trials on, the scale is measured by cross-validation again
    fit = GaussianProcessRegressor.fit
    monkeypatch.setattr(GaussianProcessRegressor, "fit", lambda self, X, y: (folds.append(len(y)), fit(self, X, y))[1])
    _, table = history(rng, _MIN_CALIBRATION)
    assert WorldModel(seed=0).fit(table, SPACE, "auc", 1.0).std_scale >= 1.0
    assert folds.count(_MIN_CALIBRATION - 1) == _MIN_CALIBRATION  # leave-one-out: a fit per held-out trial


def test_predictions_carry_risk_and_expected_improvement():
    rng = np.random.default_rng(0)
    _, table = history(rng, 20)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    configs = sample_configs(rng, 5)
    predictions = model.predict(configs)
    assert len(predictions) == 5 and all(isinstance(p, Prediction) for p in predictions)
    assert all(p.failure_probability is not None and 0 <= p.failure_probability <= 1 for p in predictions)
    np.testing.assert_allclose([p.expected_improvement for p in predictions],
                               model.expected_improvement(configs), rtol=1e-9, atol=1e-12)
    assert model.predict([]) == []


def test_nested_and_flat_dotted_configs_are_the_same_forecast():
    rng = np.random.default_rng(1)
    _, table = history(rng, 15)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    nested = {"lr": 1e-3, "layers": 4, "optimizer": "adam", "augmentation": {"dropout": 0.1},
              "experiment_id": "ignored", "data_dir": "/x"}
    flat = {"lr": 1e-3, "layers": 4, "optimizer": "adam", "augmentation.dropout": 0.1}
    a, b = model.predict([nested, flat])
    assert (a.mean, a.std) == pytest.approx((b.mean, b.std))


# ------------------------------------------------------------------ acquisitions


def test_acquisitions_follow_the_study_direction():
    # The same history as a loss (negated) in mode "min" must score every candidate as
    # the original does in mode "max": improvement means lower for "min".
    _, table_max = history(np.random.default_rng(5), 25, sign=1.0)
    _, table_min = history(np.random.default_rng(5), 25, sign=-1.0)
    up = WorldModel(seed=0).fit(table_max, SPACE, "auc", 1.0)
    down = WorldModel(seed=0).fit(table_min, SPACE, "auc", -1.0)
    assert down.best == pytest.approx(-up.best)
    candidates = sample_configs(np.random.default_rng(6), 50)
    for name in ("expected_improvement", "probability_of_improvement", "upper_confidence_bound"):
        np.testing.assert_allclose(getattr(down, name)(candidates), getattr(up, name)(candidates),
                                   rtol=1e-4, atol=1e-6, err_msg=name)

    mean, std = up.predict_mean_std(candidates)
    np.testing.assert_allclose(up.upper_confidence_bound(candidates, beta=1.5), mean + 1.5 * std)
    ei = up.expected_improvement(candidates)
    pi = up.probability_of_improvement(candidates)
    assert (ei >= 0).all() and ((pi >= 0) & (pi <= 1)).all()
    # A candidate forecast well above the incumbent is a likelier improvement.
    assert pi[np.argmax(mean)] > pi[np.argmin(mean)]
    # A higher incumbent leaves less to gain.
    assert (up.expected_improvement(candidates, best=up.best + 0.2) <= ei + 1e-12).all()


# ------------------------------------------------------------------ failure risk


def test_column_wise_forecasts_are_the_per_config_forecasts():
    """The surrogate's fast path (columns in, arrays out) forecasts what predict() does,
    failure risk included, with a parameter left unset."""
    rng = np.random.default_rng(4)
    _, table = history(rng, 50, plant_failures=True)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    configs = [flatten_config(c) for c in sample_configs(np.random.default_rng(5), 30)]
    for c in configs[:10]:
        c.pop("lr")
    names = sorted({k for c in configs for k in c})
    mean, std, risk = model.predict_columns({k: [c.get(k) for c in configs] for k in names}, len(configs))
    predictions = model.predict(configs)
    np.testing.assert_allclose(mean, [p.mean for p in predictions], rtol=1e-12)
    np.testing.assert_allclose(std, [p.std for p in predictions], rtol=1e-12)
    np.testing.assert_allclose(risk, [p.failure_probability for p in predictions], rtol=1e-9)
    assert model.n_failures >= 4 and risk.max() > 2 * risk.min()


def test_failure_probability_is_higher_near_a_planted_failure_region():
    rng = np.random.default_rng(1)
    _, table = history(rng, 60, plant_failures=True)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    assert model.n_failures >= 4 and not model.is_prior

    candidates = sample_configs(np.random.default_rng(11), 400)
    inside = [c for c in candidates if in_failure_region(c)]
    far = [c for c in candidates if c["lr"] < 1e-3 and c["layers"] <= 3]
    p_inside = model.failure_probability(inside)
    p_far = model.failure_probability(far)
    assert len(inside) >= 20 and len(far) >= 20
    assert p_inside.mean() > p_far.mean() + 0.25
    assert p_far.mean() < 0.15
    # Over 12 data seeds: inside 0.31-0.72 on average, far 0.03-0.10; seed 1: 0.54 vs 0.04.
    deep_and_fast = {"lr": 0.08, "layers": 8, "optimizer": "adam", "augmentation": {"dropout": 0.2}}
    shallow_and_slow = {**deep_and_fast, "lr": 1e-4, "layers": 2}
    risky, safe = model.failure_probability([deep_and_fast, shallow_and_slow])
    assert risky > 5 * safe


def test_failure_risk_extends_a_boundary_into_regions_no_trial_reached():
    """Trials only in the middle of the lr range, failing above 1e-3 (a divergence
    line): beyond the tried range the risk follows the boundary's direction — high at
    lr 0.08, low at 2e-5 — where the kernel alone would return the base rate."""
    rng = np.random.default_rng(6)
    records = []
    for c in sample_configs(rng, 24):
        c["lr"] = float(10 ** rng.uniform(-4, -2))
        failed = c["lr"] > 1e-3
        records.append({"config": c, "status": "FAILED"} if failed else {"config": c, "metrics": {"auc": surface(c)}})
    n_failed = sum(r.get("status") == "FAILED" for r in records)
    assert 6 <= n_failed <= 18
    model = WorldModel(seed=0).fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    probe = sample_configs(np.random.default_rng(7), 40)
    high = model.failure_probability([{**c, "lr": 0.08} for c in probe])
    low = model.failure_probability([{**c, "lr": 2e-5} for c in probe])
    base = (n_failed + 1) / (len(records) + 4)
    assert high.min() > max(0.75, base + 0.3), high.min()
    assert low.max() < min(0.15, base - 0.2), low.max()


def test_failure_probability_without_failures_stays_near_a_small_base_rate():
    _, table = history(np.random.default_rng(2), 30)
    model = WorldModel(seed=0).fit(table, SPACE, "auc", 1.0)
    risk = model.failure_probability(sample_configs(np.random.default_rng(3), 50))
    # No failure in 30 trials: the shrunk base rate is 1/34, and nearby successes lower it.
    assert ((risk > 0) & (risk <= 1 / 34 + 1e-12)).all()


def test_one_failure_among_many_successes_is_shrunk_towards_the_base_rate():
    rng = np.random.default_rng(3)
    configs = sample_configs(rng, 31)
    records = [{"config": c, "metrics": {"auc": surface(c)}} for c in configs[1:]]
    records.append({"config": configs[0], "status": "FAILED"})
    model = WorldModel().fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    at_failure = model.failure_probability([configs[0]])[0]
    base_rate = 2 / 35  # (1 failure + 1) / (31 trials + 4), the shrunk overall rate
    assert base_rate < at_failure < 0.5  # one crash raises the risk; it does not make it certain


# ------------------------------------------------------------------ little data


def test_no_history_forecasts_the_baseline_with_a_wide_std(caplog):
    with caplog.at_level(logging.INFO, logger="arc_ray.world_model._model"):
        model = WorldModel().fit(pa.table({}), SPACE, "auc", 1.0, baseline_metric=0.8)
    assert "forecasting the prior" in caplog.text
    [p] = model.predict(sample_configs(np.random.default_rng(0), 1))
    assert model.is_prior and p.is_prior and model.n_observations == 0
    assert p.mean == 0.8 and p.std >= 0.2
    assert 0 < p.failure_probability < 0.5  # the prior failure rate, 1/4
    assert model.best == 0.8

    unknown = WorldModel().fit(pa.table({}), SPACE, "auc", 1.0)
    [q] = unknown.predict(sample_configs(np.random.default_rng(0), 1))
    assert (q.mean, q.std) == (0.0, 1.0) and unknown.best is None
    assert np.isfinite(unknown.expected_improvement([{"lr": 1e-3}])).all()


def test_two_completed_trials_forecast_their_mean():
    records = [{"config": {"lr": 1e-3, "layers": 2, "optimizer": "sgd"}, "metrics": {"auc": 0.70}},
               {"config": {"lr": 1e-2, "layers": 4, "optimizer": "adam"}, "metrics": {"auc": 0.80}},
               {"config": {"lr": 1e-4, "layers": 4, "optimizer": "adam"}, "status": "CANCELLED"}]
    model = WorldModel().fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    assert model.is_prior and model.n_observations == 2 and model.best == 0.80
    [p] = model.predict([{"lr": 1e-3, "layers": 2, "optimizer": "sgd"}])
    assert p.is_prior and p.mean == pytest.approx(0.75) and p.std >= 0.15


def test_a_history_of_only_failures_works_and_scores_risky():
    records = [{"config": c, "status": "FAILED", "error_class": "oom"}
               for c in sample_configs(np.random.default_rng(0), 8)]
    table = trials_table_from_records(records)
    assert not any(name.startswith("metric.") for name in table.column_names)
    model = WorldModel().fit(table, SPACE, "auc", 1.0, baseline_metric=0.7)
    assert model.is_prior and model.n_failures == 8
    predictions = model.predict(sample_configs(np.random.default_rng(1), 10))
    assert all(p.is_prior and p.mean == 0.7 for p in predictions)
    assert all(p.failure_probability > 0.6 for p in predictions)


def test_a_history_with_identical_metrics_still_fits():
    records = [{"config": c, "metrics": {"auc": 0.5}} for c in sample_configs(np.random.default_rng(0), 6)]
    model = WorldModel().fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    mean, std = model.predict_mean_std(sample_configs(np.random.default_rng(1), 4))
    np.testing.assert_allclose(mean, 0.5, atol=1e-6)
    assert np.isfinite(std).all()


# ------------------------------------------------------------------ table reading


def test_config_json_fills_missing_columns_and_nulls():
    rng = np.random.default_rng(4)
    _, table = history(rng, 12)
    reference = WorldModel().fit(table, SPACE, "auc", 1.0)
    # No lr column at all, and a null layers value in one row: both come from config_json.
    layers = table.column("config.layers").to_pylist()
    layers[0] = None
    stripped = table.drop_columns(["config.lr"])
    stripped = stripped.set_column(stripped.schema.get_field_index("config.layers"), "config.layers",
                                   pa.array(layers, pa.int64()))
    model = WorldModel().fit(stripped, SPACE, "auc", 1.0)
    candidates = sample_configs(rng, 10)
    np.testing.assert_allclose(model.predict_mean_std(candidates), reference.predict_mean_std(candidates))


def test_a_pandas_dataframe_is_accepted():
    rng = np.random.default_rng(4)
    _, table = history(rng, 12)
    candidates = sample_configs(rng, 10)
    from_arrow = WorldModel().fit(table, SPACE, "auc", 1.0)
    from_pandas = WorldModel().fit(table.to_pandas(), SPACE, "auc", 1.0)
    np.testing.assert_allclose(from_pandas.predict_mean_std(candidates), from_arrow.predict_mean_std(candidates))


def test_unset_parameters_take_the_baseline():
    _, table = history(np.random.default_rng(6), 20)
    baseline = {"lr": 1e-3, "layers": 6, "optimizer": "adamw", "augmentation": {"dropout": 0.3}}
    model = WorldModel().fit(table, SPACE, "auc", 1.0, baseline_config=baseline)
    partial, full = model.predict([{"lr": 1e-2}, {**baseline, "lr": 1e-2}])
    assert (partial.mean, partial.std) == pytest.approx((full.mean, full.std))


def test_recency_comes_from_ended_at_not_row_order():
    rng = np.random.default_rng(0)
    # Row 0 ended last: the most recent trials are the first rows.
    records = [{"config": c, "metrics": {"auc": surface(c)}, "ended_at": 1000.0 - i}
               for i, c in enumerate(sample_configs(rng, 12))]
    model = WorldModel(max_fit_size=6).fit(trials_table_from_records(records), SPACE, "auc", 1.0)
    best_row = int(np.argmax([r["metrics"]["auc"] for r in records]))
    # The best quarter (one row) plus the most recent.
    assert len(model.fit_rows) == 6 and best_row in model.fit_rows
    assert set(model.fit_rows.tolist()) - {best_row} <= set(range(6))


def test_past_max_fit_size_it_conditions_on_the_best_and_the_most_recent():
    rng = np.random.default_rng(8)
    configs, table = history(rng, 150)
    values = table.column("metric.auc").to_numpy()
    model = WorldModel(max_fit_size=60, seed=0).fit(table, SPACE, "auc", 1.0)
    assert model.n_observations == 150 and len(model.fit_rows) == 60
    best_15 = set(np.argsort(-values)[:15].tolist())
    assert best_15 <= set(model.fit_rows.tolist())
    assert set(range(150 - 45, 150)) <= set(model.fit_rows.tolist())  # the most recent rest
    unseen = sample_configs(rng, 100)
    mean, _ = model.predict_mean_std(unseen)
    assert spearmanr(mean, [surface(c) for c in unseen]).statistic >= 0.6


def test_the_real_historians_table_fits(toy_study):
    from arc_ray.historian import Historian
    from arc_ray.records import JobStatus, TrialResult
    from arc_ray.space import unflatten_config
    from trainables.toy import objective

    rng = np.random.default_rng(0)
    results = []
    for i in range(12):
        config = unflatten_config({**toy_study.search_space.sample(rng), "epochs": 2})
        if i % 4 == 3:
            results.append(TrialResult(experiment_id=f"e{i}", cycle_id=i // 4, status=JobStatus.FAILED,
                                       config=config, error_class="crash", error_message="boom"))
        else:
            results.append(TrialResult(experiment_id=f"e{i}", cycle_id=i // 4, status=JobStatus.COMPLETED,
                                       config=config, metrics=objective(config)))
    historian = Historian(toy_study)
    historian.integrate_experiment_results(results, 0)
    model = WorldModel().fit(historian.trials_table(), toy_study.search_space, toy_study.metric,
                             toy_study.sign, baseline_config=toy_study.baseline)
    assert model.n_observations == 9 and model.n_failures == 3 and not model.is_prior
    [p] = model.predict([toy_study.baseline])
    assert np.isfinite(p.mean) and p.std > 0 and 0 < p.failure_probability < 1


def test_a_fitted_model_pickles():
    rng = np.random.default_rng(2)
    _, table = history(rng, 20, plant_failures=True)
    model = WorldModel().fit(table, SPACE, "auc", 1.0)
    clone = pickle.loads(pickle.dumps(model))
    candidates = sample_configs(rng, 5)
    np.testing.assert_allclose(clone.predict_mean_std(candidates), model.predict_mean_std(candidates))
    np.testing.assert_allclose(clone.failure_probability(candidates), model.failure_probability(candidates))


def test_fits_are_repeatable_with_a_seed():
    _, table = history(np.random.default_rng(9), 30)
    candidates = sample_configs(np.random.default_rng(10), 20)
    a = WorldModel(seed=3).fit(table, SPACE, "auc", 1.0).predict_mean_std(candidates)
    b = WorldModel(seed=3).fit(table, SPACE, "auc", 1.0).predict_mean_std(candidates)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_fit_size": 0}, "max_fit_size"),
    ({"hyperparameter_fit_size": 1}, "hyperparameter_fit_size"),
    ({"n_restarts": -1}, "n_restarts"),
    ({"min_observations": 0}, "min_observations"),
    ({"prior_strength": 0}, "prior_strength"),
    ({"calibration_folds": 1}, "calibration_folds"),
    ({"blas_threads": 0}, "blas_threads"),
])
def test_bad_settings_are_named(kwargs, field):
    with pytest.raises(ConfigValidationError) as info:
        WorldModel(**kwargs)
    assert info.value.fields == [field]


@pytest.mark.parametrize(("args", "field"), [
    ((SPACE, "auc", "up"), "sign"),
    ((SPACE, "", 1.0), "metric"),
    (({"lr": {"type": "float"}}, "auc", 1.0), "space"),
])
def test_bad_fit_arguments_are_named(args, field):
    with pytest.raises(ConfigValidationError) as info:
        WorldModel().fit(pa.table({}), *args)
    assert info.value.fields == [field]


def test_a_non_finite_baseline_metric_is_rejected():
    with pytest.raises(ConfigValidationError, match="baseline_metric"):
        WorldModel().fit(pa.table({}), SPACE, "auc", 1.0, baseline_metric=float("nan"))


def test_bad_tables_raise_history_errors():
    with pytest.raises(HistoryError, match="pyarrow Table or pandas DataFrame"):
        WorldModel().fit([{"status": "COMPLETED"}], SPACE, "auc", 1.0)
    with pytest.raises(HistoryError, match="no 'status' column"):
        WorldModel().fit(pa.table({"metric.auc": [0.5]}), SPACE, "auc", 1.0)
    broken = pa.table({"status": ["COMPLETED"], "config_json": ["{not json"], "metric.auc": [0.5]})
    with pytest.raises(HistoryError, match="row 0: config_json is not valid JSON"):
        WorldModel().fit(broken, SPACE, "auc", 1.0)


def test_a_failed_fit_keeps_the_previous_one():
    _, table = history(np.random.default_rng(0), 10)
    model = WorldModel().fit(table, SPACE, "auc", 1.0)
    before = model.predict_mean_std([{"lr": 1e-3}])
    with pytest.raises(ConfigValidationError, match="baseline_config.optimizer"):
        model.fit(table, SPACE, "auc", 1.0, baseline_config={"optimizer": "rmsprop"})
    np.testing.assert_array_equal(model.predict_mean_std([{"lr": 1e-3}]), before)
    assert model.n_observations == 10


def test_bad_candidates_are_named():
    _, table = history(np.random.default_rng(0), 10)
    model = WorldModel().fit(table, SPACE, "auc", 1.0)
    with pytest.raises(ConfigValidationError) as info:
        model.predict([{"lr": 1e-3}, {"optimizer": "rmsprop", "lr": -1.0}, "not a config"])
    assert info.value.fields == ["configs[1].lr", "configs[1].optimizer", "configs[2]"]
    with pytest.raises(ConfigValidationError, match="single mapping"):
        model.predict({"lr": 1e-3})
    # Out of range is the config generator's rule: the model extrapolates instead.
    assert len(model.predict([{"lr": 0.5, "layers": 12}])) == 1


def test_forecasts_before_fit_raise():
    with pytest.raises(WorldModelNotFittedError, match="call fit"):
        WorldModel().predict([{"lr": 1e-3}])
    with pytest.raises(WorldModelNotFittedError):
        WorldModel().failure_probability([{"lr": 1e-3}])


def test_table_rows_with_values_the_space_cannot_encode_are_imputed(caplog):
    rng = np.random.default_rng(0)
    records = [{"config": c, "metrics": {"auc": surface(c)}} for c in sample_configs(rng, 6)]
    records[0]["config"]["optimizer"] = "rmsprop"  # a choice since removed from the space
    table = trials_table_from_records(records)
    with caplog.at_level(logging.WARNING, logger="arc_ray.world_model._encoding"):
        model = WorldModel().fit(table, SPACE, "auc", 1.0)
    assert "cannot encode" in caplog.text and model.n_observations == 6


def test_pandas_nan_in_a_config_column_falls_back_to_json():
    rng = np.random.default_rng(4)
    _, table = history(rng, 12)
    frame = table.to_pandas()
    frame.loc[0, "config.lr"] = np.nan
    candidates = sample_configs(rng, 5)
    np.testing.assert_allclose(WorldModel().fit(frame, SPACE, "auc", 1.0).predict_mean_std(candidates),
                               WorldModel().fit(table, SPACE, "auc", 1.0).predict_mean_std(candidates))
    assert isinstance(frame, pd.DataFrame)


def test_the_closed_form_likelihood_is_scikit_learns():
    """The hyperparameter fit's own likelihood and gradient equal scikit-learn's
    log_marginal_likelihood for the world model's kernel, anywhere in its bounds."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    from arc_ray.world_model._likelihood import negative_log_likelihood, standardise

    rng = np.random.default_rng(3)
    for n, d in [(2, 1), (15, 3), (60, 12)]:
        X = rng.random((n, d))
        y = np.sin(3 * X[:, 0]) + 0.1 * rng.normal(size=n)
        gp = GaussianProcessRegressor(WorldModel()._kernel(d), normalize_y=True, optimizer=None).fit(X, y)
        for _ in range(4):
            theta = rng.uniform(gp.kernel_.bounds[:, 0], gp.kernel_.bounds[:, 1])
            ref, ref_grad = gp.log_marginal_likelihood(theta, eval_gradient=True)
            value, grad = negative_log_likelihood(theta, X, standardise(y))
            assert -value == pytest.approx(ref, rel=1e-9, abs=1e-9)
            np.testing.assert_allclose(-grad, ref_grad, rtol=1e-7, atol=1e-9)
    # a constant metric standardises as scikit-learn does (std 1), not to NaN
    assert np.all(standardise(np.full(5, 0.7)) == 0)
