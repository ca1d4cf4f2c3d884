"""World model: fit on 500 trials + forecast 1,000 candidates, and how well it forecasts.

The history is synthetic but shaped like the fundus study: its real search space
(``configs/search_space.yaml``: 15 parameters, 31 encoded columns), an AUC surface with
an lr × optimizer interaction, a model and image-size effect and several parameters that
do nothing, seed noise, and planted failures (big model at big image size runs out of
memory; a learning rate above 0.3 diverges).

Timed: ``WorldModel().fit(500 trials)`` then ``predict(1,000 candidates)`` (mean, std,
failure probability, expected improvement), median of ``--repeats`` (wall and CPU time).
The peer, alternated with it for the first ``--peer-repeats`` runs (it is slow), is the
plain scikit-learn recipe: the same kernel, hyperparameters fitted on all the completed
trials by scikit-learn's default optimizer (one start, no iteration cap), no subset and
no calibration, then ``predict(return_std=True)``. scikit-learn's default GP (fixed
RBF, no noise term) is scored too. All are scored on the same candidates: Spearman of
forecast mean vs the true surface, and coverage of the 90 % interval by a fresh noisy
run. The small-data case (40 observations, 200 unseen configs) is reported over
``--seeds`` data seeds.

    .venv/bin/python benchmarks/bench_world_model.py [--trials 500] [--candidates 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from threadpoolctl import threadpool_limits

from arc_ray.space import SearchSpace
from arc_ray.world_model import WorldModel, trials_table_from_records
from arc_ray.world_model._encoding import SpaceEncoder

ROOT = Path(__file__).resolve().parent.parent
NOISE = 0.01
Z90 = 1.6448536
_BEST_LOG_LR = {"adam": -3.5, "adamw": -3.3, "sgd": -2.0}
_MODEL = {"efficientnet_b0": 0.02, "efficientnet_b3": 0.04, "efficientnet_b5": 0.05,
          "resnet50": 0.03, "vit_base_patch16_224": 0.0, "resnet18": 0.0}


def surface(c: dict) -> float:
    """True AUC of a flat config: a bowl in log lr per optimizer, model and size effects."""
    lr = math.log10(c["learning_rate"]) - _BEST_LOG_LR[c["optimizer"]]
    size = math.log2(c["image_size"] / 224)
    return (0.88 - 0.02 * lr**2 + _MODEL[c["model"]] - 0.015 * size**2
            - 0.004 * (math.log10(c["weight_decay"]) + 4) ** 2 - 0.2 * (c["dropout"] - 0.2) ** 2
            + 0.01 * c["augmentation.flip"] - 0.00002 * (c["epochs"] - 30) ** 2)


def fails(c: dict) -> bool:
    big = c["model"] in ("efficientnet_b5", "vit_base_patch16_224") and c["image_size"] >= 320
    return big or c["learning_rate"] > 0.3


def make_history(space: SearchSpace, rng: np.random.Generator, n: int) -> tuple[list[dict], list[dict]]:
    configs = [space.sample(rng) for _ in range(n)]
    records = []
    for i, c in enumerate(configs):
        record = {"config": c, "ended_at": float(i), "cycle_id": i // 8}
        if fails(c):
            record.update(status="FAILED", error_class="oom")
        else:
            record["metrics"] = {"auc": surface(c) + rng.normal(0, NOISE)}
        records.append(record)
    return configs, records


def ours(table, space, candidates) -> tuple[np.ndarray, np.ndarray]:
    model = WorldModel(seed=0).fit(table, space, "auc", 1.0)
    predictions = model.predict(candidates)
    return np.array([p.mean for p in predictions]), np.array([p.std for p in predictions])


def peer(X: np.ndarray, y: np.ndarray, Xc: np.ndarray, kernel=None) -> tuple[np.ndarray, np.ndarray]:
    # The textbook way: every completed trial, default optimizer, no calibration; BLAS on
    # one thread as in WorldModel, so only the method differs. kernel=None: sklearn's defaults.
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp = GaussianProcessRegressor(kernel, normalize_y=kernel is not None, random_state=0).fit(X, y)
        mean, std = gp.predict(Xc, return_std=True)
    return mean, std


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def scores(mean, std, truth, outcome) -> tuple[float, float]:
    return float(spearmanr(mean, truth).statistic), float(np.mean(np.abs(outcome - mean) <= Z90 * std))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    space = SearchSpace.from_mapping(yaml.safe_load((ROOT / "configs" / "search_space.yaml").read_text()))
    rng = np.random.default_rng(0)
    _, records = make_history(space, rng, args.trials)
    table = trials_table_from_records(records)
    candidates = [space.sample(rng) for _ in range(args.candidates)]
    usable = [i for i, c in enumerate(candidates) if not fails(c)]
    truth = np.array([surface(candidates[i]) for i in usable])
    outcome = truth + rng.normal(0, NOISE, len(truth))
    n_failed = sum(r.get("status") == "FAILED" for r in records)
    print(f"history: {args.trials} trials ({n_failed} failed), {len(space)} parameters, "
          f"{SpaceEncoder(space).n_features} encoded columns; {args.candidates} candidates")

    # The peer sees the same encoding and the same completed trials.
    encoder = SpaceEncoder(space)
    done = [r for r in records if "metrics" in r]
    X = encoder.encode([r["config"] for r in done])
    y = np.array([r["metrics"]["auc"] for r in done])
    Xc = encoder.encode(candidates)

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    kernel = WorldModel()._kernel(X.shape[1])
    ours_wall, ours_cpu, peer_wall, peer_cpu = [], [], [], []
    for rep in range(args.repeats):
        (mean, std), wall, cpu = timed(ours, table, space, candidates)
        ours_wall.append(wall)
        ours_cpu.append(cpu)
        line = f"  run {rep + 1}: world model {wall:.2f} s (cpu {cpu:.2f} s)"
        if rep < args.peer_repeats:
            (p_mean, p_std), wall, cpu = timed(peer, X, y, Xc, kernel)
            peer_wall.append(wall)
            peer_cpu.append(cpu)
            line += f", peer {wall:.2f} s (cpu {cpu:.2f} s)"
        print(line, flush=True)
    (d_mean, d_std), d_wall, _ = timed(peer, X, y, Xc, None)
    ours_med, peer_med = statistics.median(ours_wall), statistics.median(peer_wall)
    rho, cov = scores(mean[usable], std[usable], truth, outcome)
    p_rho, p_cov = scores(p_mean[usable], p_std[usable], truth, outcome)
    d_rho, d_cov = scores(d_mean[usable], d_std[usable], truth, outcome)
    print(f"world model  fit {args.trials} + predict {args.candidates}: median {ours_med:.3f} s wall, "
          f"{statistics.median(ours_cpu):.3f} s cpu (target < 2 s); Spearman {rho:.3f}, 90% coverage {cov:.3f}")
    print(f"peer: same kernel, all {len(y)} completed trials, default optimizer: median {peer_med:.3f} s wall, "
          f"{statistics.median(peer_cpu):.3f} s cpu; Spearman {p_rho:.3f}, 90% coverage {p_cov:.3f}")
    print(f"sklearn default GP (fixed RBF, no noise): {d_wall:.3f} s; Spearman {d_rho:.3f}, 90% coverage {d_cov:.3f}")
    print(f"ratio peer / world model: {peer_med / ours_med:.2f}x wall, "
          f"{statistics.median(peer_cpu) / statistics.median(ours_cpu):.2f}x cpu")

    # Small data: 40 observations, 200 unseen configs, several data seeds.
    small = []
    for seed in range(args.seeds):
        srng = np.random.default_rng(100 + seed)
        configs = [c for c in (space.sample(srng) for _ in range(400)) if not fails(c)]
        seen, unseen = configs[:40], configs[40:240]
        hist = trials_table_from_records(
            [{"config": c, "metrics": {"auc": surface(c) + srng.normal(0, NOISE)}} for c in seen])
        model = WorldModel(seed=0).fit(hist, space, "auc", 1.0)
        m, s = model.predict_mean_std(unseen)
        t = np.array([surface(c) for c in unseen])
        small.append(scores(m, s, t, t + srng.normal(0, NOISE, len(t))))
    rhos, covs = zip(*small)
    inside = sum(0.80 <= c <= 0.97 for c in covs)
    print(f"40 observations, {args.seeds} seeds: Spearman median {statistics.median(rhos):.3f} "
          f"(min {min(rhos):.3f}); 90% coverage median {statistics.median(covs):.3f} "
          f"(range {min(covs):.3f}-{max(covs):.3f}, {inside}/{args.seeds} in [0.80, 0.97])")
    print(f"headline: world_model_fit_predict_s={ours_med:.3f}")


if __name__ == "__main__":
    main()
