"""ARC's collective against Optuna TPE and random search on synthetic problems.

Every method gets 40 evaluations in batches of 4 on each problem, for 10 seeds:

- **ARC**: the whole collective (director, bayesian/explorer/architect/recovery
  proposers, critic with the world model, vote, supervisor) deciding each cycle from the
  real historian's summary and trials table, trials run by the in-process executor;
- **TPE**: Optuna's TPESampler (multivariate, constant liar), 4 asks per batch, failures
  told as FAIL;
- **random**: uniform samples of the search space.

The runs alternate (ARC, TPE, random for each seed). Problems: Branin and Hartmann-6
(continuous, minimised), the toy trainable's response (float, log-float, categorical,
int), a mixed optimiser space with a region where training diverges (categorical +
log-float + int + bool), and a memory-bound space where large batch × image size runs out
of memory next to the optimum. Prints the median best per problem and method, ARC's
per-seed wins, and ends with the share of problems where ARC's median beats TPE's.

Run: ``.venv/bin/python benchmarks/bench_search.py`` (``--seeds 3`` for a quick look).
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arc_ray.agents import Collective  # noqa: E402
from arc_ray.agents.bayesian import distributions_for  # noqa: E402
from arc_ray.errors import TrainingDivergedError, TrainingOutOfMemoryError  # noqa: E402
from arc_ray.executor import InProcessExecutor  # noqa: E402
from arc_ray.historian import Historian  # noqa: E402
from arc_ray.records import CycleReport, JobStatus  # noqa: E402
from arc_ray.space import flatten_config, unflatten_config  # noqa: E402
from arc_ray.study import StudyConfig  # noqa: E402

from _poll import wait_for  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
EVALS, BATCH = 40, 4
# ARC's study settings here: 12 proposals a cycle for the vote to choose 4 from, and the
# critic's world-model judgement weighing 6 against 1 for each other voter.
ARC_PROPOSALS = 12
ARC_WEIGHTS = {"critic": 6.0, "director": 1.0}


# ------------------------------------------------------------------ problems


def branin(c: dict[str, Any]) -> dict[str, float]:
    x1, x2 = c["x1"], c["x2"]
    b, cc, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return {"value": (x2 - b * x1**2 + cc * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s}


_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(c: dict[str, Any]) -> dict[str, float]:
    x = np.array([c[f"x{i}"] for i in range(1, 7)])
    return {"value": float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))}


def toy(c: dict[str, Any]) -> dict[str, float]:
    from trainables.toy import objective

    return {"value": objective(c)["score"]}


_OPT = {"sgd": (-1.0, -0.02, 0.2), "adam": (-3.0, 0.01, 0.02), "adamw": (-2.7, 0.02, 0.02), "rmsprop": (-3.3, 0.0, 0.01)}


def mixed_fail(c: dict[str, Any]) -> dict[str, float]:
    """A training-like response; a too-high learning rate for the optimiser diverges."""
    centre, bonus, limit = _OPT[c["optimizer"]]
    lr = c["learning_rate"]
    if lr > limit:
        raise TrainingDivergedError(f"loss is nan at lr={lr:.3g} with {c['optimizer']}")
    acc = (0.9 + bonus - 0.03 * (math.log10(lr) - centre) ** 2 - 0.004 * (c["layers"] - 5) ** 2
           - 0.3 * (c["dropout"] - 0.15) ** 2 + (0.01 if c["augment"] else 0.0)
           + 0.01 * math.log2(c["width"] / 32) / 3)
    return {"value": acc}


_MEM = {"small": 1.0, "medium": 2.0, "large": 4.0}
_BASE = {"small": 0.80, "medium": 0.84, "large": 0.87}


def memory(c: dict[str, Any]) -> dict[str, float]:
    """Bigger inputs and batches help until they run out of memory."""
    use = c["batch_size"] * c["image_size"] * _MEM[c["model"]]
    if use > 16384:
        raise TrainingOutOfMemoryError(f"CUDA out of memory ({use:.0f} units)")
    acc = (_BASE[c["model"]] + 0.03 * math.log2(c["image_size"] / 32) + 0.01 * math.log2(c["batch_size"] / 8)
           - 0.02 * (math.log10(c["learning_rate"]) + 3) ** 2)
    return {"value": acc}


@dataclass
class Problem:
    name: str
    objective: Callable[[dict[str, Any]], dict[str, float]]
    mode: str
    space: dict[str, Any]
    baseline: dict[str, Any]
    scale: float  # a typical spread of the value: sets the director's thresholds

    def study(self, seed: int, storage: str) -> StudyConfig:
        d = dict(name=f"bench_{self.name}", trainable="trainables.toy:objective", metric="value",
                 mode=self.mode, baseline=self.baseline, search_space=self.space, storage=storage,
                 executor="inprocess", seed=seed,
                 budget={"trials_per_cycle": BATCH},
                 voting={"max_approved": BATCH, "weights": ARC_WEIGHTS},
                 proposers={"proposals_per_cycle": ARC_PROPOSALS},
                 director={"exploit_threshold": 0.01 * self.scale, "stagnation_threshold": 0.002 * self.scale})
        return StudyConfig.from_dict(d)


def _f(low: float, high: float, log: bool = False) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high, "log": log}


PROBLEMS = [
    Problem("branin", branin, "min", {"x1": _f(-5, 10), "x2": _f(0, 15)}, {"x1": 2.5, "x2": 7.5}, 50.0),
    Problem("hartmann6", hartmann6, "min", {f"x{i}": _f(0, 1) for i in range(1, 7)},
            {f"x{i}": 0.5 for i in range(1, 7)}, 1.0),
    Problem("toy", toy, "max",
            {"x": _f(-1, 1), "lr": _f(1e-5, 1, True), "model": {"type": "categorical", "choices": ["small", "medium", "large"]},
             "layers": {"type": "int", "low": 1, "high": 6}},
            {"x": 0.0, "lr": 0.01, "model": "small", "layers": 2, "epochs": 1, "train_split": 0.8, "val_split": 0.2}, 0.3),
    Problem("mixed_fail", mixed_fail, "max",
            {"optimizer": {"type": "categorical", "choices": ["sgd", "adam", "adamw", "rmsprop"]},
             "learning_rate": _f(1e-5, 1, True), "layers": {"type": "int", "low": 1, "high": 8},
             "width": {"type": "categorical", "choices": [32, 64, 128, 256]}, "dropout": _f(0, 0.5),
             "augment": {"type": "bool"}},
            {"optimizer": "adam", "learning_rate": 1e-4, "layers": 2, "width": 32, "dropout": 0.4, "augment": False}, 0.2),
    Problem("memory", memory, "max",
            {"model": {"type": "categorical", "choices": ["small", "medium", "large"]},
             "batch_size": {"type": "categorical", "choices": [8, 16, 32, 64, 128, 256]},
             "image_size": {"type": "categorical", "choices": [32, 64, 128, 224, 320]},
             "learning_rate": _f(1e-5, 1, True)},
            {"model": "small", "batch_size": 16, "image_size": 64, "learning_rate": 1e-2}, 0.2),
]


# ------------------------------------------------------------------ methods


def _evaluate(problem: Problem, config: dict[str, Any]) -> float | None:
    try:
        value = problem.objective(config)["value"]
    except (TrainingDivergedError, TrainingOutOfMemoryError):
        return None
    return value if math.isfinite(value) else None


def _best(values: list[float | None], mode: str) -> float:
    ok = [v for v in values if v is not None]
    if not ok:
        return math.inf if mode == "min" else -math.inf
    return min(ok) if mode == "min" else max(ok)


def run_arc(problem: Problem, seed: int, root: str) -> tuple[float, float, int]:
    """Best value, mean decision seconds per cycle, failed trials."""
    study = problem.study(seed, storage=tempfile.mkdtemp(dir=root))
    historian = Historian(study, compact_every=None)
    collective = Collective(study)
    executor = InProcessExecutor(study, trainable=problem.objective)
    values: list[float | None] = []
    decide_s: list[float] = []
    failed = 0
    cycle = 0
    try:
        while len(values) < EVALS and cycle < 3 * EVALS // BATCH:
            cd = collective.decide(cycle, historian.summary(), historian.trials_table())
            decide_s.append(cd.decision_time_s)
            run = cd.approved[: EVALS - len(values)]
            if run:
                executor.submit_batch(run, cycle)
                ids = [d.experiment_id for d in run]
                wait_for(executor, ids, timeout=60)
                results = [executor.collect_results(i) for i in ids]
                historian.integrate_experiment_results(results, cycle)
                for r in results:
                    values.append(r.metric("value") if r.status == JobStatus.COMPLETED else None)
                    failed += r.status == JobStatus.FAILED
            historian.log_cycle(CycleReport(study=study.name, cycle_id=cycle, strategy=cd.strategy))
            cycle += 1
    finally:
        executor.shutdown()
    return _best(values, problem.mode), statistics.mean(decide_s), failed


def _space_study(problem: Problem) -> StudyConfig:
    return problem.study(0, storage=tempfile.gettempdir())


def run_tpe(problem: Problem, seed: int) -> tuple[float, int]:
    study = _space_study(problem)
    dists = distributions_for(study.search_space, study.search_space.names)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    opt = optuna.create_study(direction="minimize" if problem.mode == "min" else "maximize", sampler=sampler)
    base = flatten_config(problem.baseline)
    values, failed = [], 0
    while len(values) < EVALS:
        trials = [opt.ask(dists) for _ in range(min(BATCH, EVALS - len(values)))]
        for t in trials:
            v = _evaluate(problem, unflatten_config({**base, **t.params}))
            values.append(v)
            if v is None:
                failed += 1
                opt.tell(t, state=optuna.trial.TrialState.FAIL)
            else:
                opt.tell(t, v)
    return _best(values, problem.mode), failed


def run_random(problem: Problem, seed: int) -> tuple[float, int]:
    study = _space_study(problem)
    rng = np.random.default_rng(seed)
    base = flatten_config(problem.baseline)
    values = [_evaluate(problem, unflatten_config({**base, **study.search_space.sample(rng)})) for _ in range(EVALS)]
    return _best(values, problem.mode), sum(v is None for v in values)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--problems", nargs="*", default=[p.name for p in PROBLEMS])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    problems = [p for p in PROBLEMS if p.name in args.problems]
    root = tempfile.mkdtemp(prefix="arc-bench-search-")
    t_start = time.perf_counter()
    beats_tpe = beats_random = 0
    try:
        print(f"{EVALS} evaluations in batches of {BATCH}, {args.seeds} seeds per problem "
              "(median best; 'wins' = seeds where ARC is strictly better)")
        print(f"ARC: proposals_per_cycle={ARC_PROPOSALS}, vote weights {ARC_WEIGHTS} (others 1), "
              f"quorum 0.5; TPE: multivariate, constant liar, 10 start-up trials")
        print(f"{'problem':<11} {'mode':<4} {'ARC':>10} {'TPE':>10} {'random':>10}   "
              f"{'wins/TPE':>8} {'wins/rand':>9}  {'fails A/T/R':>12} {'decide s':>8}")
        for problem in problems:
            arc, tpe, rnd, decide, fails = [], [], [], [], np.zeros(3, dtype=int)
            for seed in range(args.seeds):  # alternate the methods seed by seed
                a, d, fa = run_arc(problem, seed, root)
                t, ft = run_tpe(problem, seed)
                r, fr = run_random(problem, seed)
                arc.append(a), tpe.append(t), rnd.append(r), decide.append(d)
                fails += (fa, ft, fr)
            sign = -1.0 if problem.mode == "min" else 1.0
            wins_t = sum(sign * (a - t) > 1e-12 for a, t in zip(arc, tpe))
            wins_r = sum(sign * (a - r) > 1e-12 for a, r in zip(arc, rnd))
            ma, mt, mr = statistics.median(arc), statistics.median(tpe), statistics.median(rnd)
            beats_tpe += sign * (ma - mt) > 0
            beats_random += sign * (ma - mr) > 0
            print(f"{problem.name:<11} {problem.mode:<4} {ma:>10.4f} {mt:>10.4f} {mr:>10.4f}   "
                  f"{wins_t:>3}/{args.seeds:<4} {wins_r:>4}/{args.seeds:<4}  "
                  f"{'/'.join(str(x) for x in fails):>12} {statistics.mean(decide):>8.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(problems)
    print(f"ARC's median beats TPE's on {beats_tpe}/{n} problems and random's on {beats_random}/{n} "
          f"({time.perf_counter() - t_start:.0f} s)")
    print(f"headline: search_tpe_win_fraction={beats_tpe / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
