"""What one in-process study of 40 cheap evaluations costs, against Optuna doing the same.

``arc_ray.run_study(objective, ..., executor="inprocess")`` with the study defaults
(batches of 4, ``budget.max_trials=40``) on a trivial objective, timed wall-clock around
the call: whatever the call does (starting Ray when none is running, its actors, the
historian's files) counts. Ray is shut down after each ARC rep, so every rep pays what a
fresh ``run_study`` in a new script pays (imports excepted). Optuna's TPESampler
(constant liar) and GPSampler do the same 40 evaluations in batches of 4 (ask 4, tell 4).
Reps alternate ARC, TPE, GP; medians are printed. The target for ARC is under 3 s.

Run: ``.venv/bin/python benchmarks/bench_inprocess.py`` (``--reps 5`` by default).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EVALS, BATCH = 40, 4
SPACE = {"x": {"type": "float", "low": -1.0, "high": 1.0}, "y": {"type": "float", "low": -1.0, "high": 1.0},
         "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}}


def objective(config: dict[str, Any]) -> dict[str, float]:
    """A trivial bowl: microseconds per call, so the timing is the framework's."""
    return {"score": -(config["x"] - 0.3) ** 2 - (config["y"] + 0.2) ** 2 - 0.01 * abs(config["lr"] - 0.01)}


def time_arc(rep: int, root: str) -> float:
    import arc_ray
    import ray

    t = time.perf_counter()
    report = arc_ray.run_study(objective, search_space=SPACE, metric="score", mode="max", executor="inprocess",
                               name=f"inprocess{rep}", storage=root, seed=rep, budget={"max_trials": EVALS})
    seconds = time.perf_counter() - t
    if report.n_trials != EVALS:
        raise RuntimeError(f"ARC ran {report.n_trials} trials, not {EVALS} ({report.stop_message})")
    ray.shutdown()
    return seconds


def time_optuna(kind: str, rep: int) -> float:
    import optuna

    dists = {"x": optuna.distributions.FloatDistribution(-1, 1), "y": optuna.distributions.FloatDistribution(-1, 1),
             "lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)}
    t = time.perf_counter()
    sampler = (optuna.samplers.TPESampler(constant_liar=True, seed=rep) if kind == "tpe"
               else optuna.samplers.GPSampler(seed=rep))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(EVALS // BATCH):
        trials = [study.ask(dists) for _ in range(BATCH)]
        for trial in trials:
            study.tell(trial, objective(trial.params)["score"])
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    import optuna

    logging.basicConfig(level=logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    root = tempfile.mkdtemp(prefix="arc-bench-inprocess-")
    times: dict[str, list[float]] = {"arc": [], "tpe": [], "gp": []}
    try:
        for rep in range(args.reps):
            times["arc"].append(time_arc(rep, root))
            times["tpe"].append(time_optuna("tpe", rep))
            times["gp"].append(time_optuna("gp", rep))
            print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{EVALS} evaluations in batches of {BATCH}, median of {args.reps}: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()) + " (target for ARC: < 3 s)")
    print(f"headline: inprocess_40_evals_s={med['arc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
