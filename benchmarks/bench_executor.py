"""Executor overhead: 16 no-op trials through TrainingExecutor vs a plain ``tune.Tuner``.

Both run the same no-op trainable (one ``tune.report`` per trial) on one local Ray
(``num_cpus=2``), 1 CPU per trial, alternating which goes first in each repetition,
after one untimed warm-up of each. The executor's time runs from ``submit_batch`` to
the last poll that finds every trial finished (config checks, manifest, result files included);
plain Tune's from building the ``Tuner`` to the end of ``fit()`` with default settings.
A third variant, the executor with ``reuse_actors=False``, shows what the executor's
own bookkeeping costs when it starts a worker per trial just as plain Tune does.

Run: ``.venv/bin/python benchmarks/bench_executor.py [--reps 3] [--trials 16]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from arc_ray.executor import TrainingExecutor
from arc_ray.records import Decision, DecisionOutcome
from arc_ray.study import StudyConfig

from _poll import wait_for

ROOT = Path(__file__).resolve().parent.parent


def noop(config: dict) -> None:
    """One report, no work: what is measured is the machinery around the trial."""
    tune.report({"score": float(config.get("x", 0.0))})


def run_executor(study: StudyConfig, n: int, cycle: int, reuse: bool) -> float:
    items = [Decision(experiment_id=f"n{i:02d}", cycle_id=cycle, outcome=DecisionOutcome.APPROVED,
                      decided_by="bench", reason="bench",
                      config={**study.baseline, "x": i / n, "experiment_id": f"n{i:02d}"})
             for i in range(n)]
    ex = TrainingExecutor(study, trainable=noop, reuse_actors=reuse)
    t0 = time.perf_counter()
    jobs = ex.submit_batch(items, cycle_id=cycle)
    statuses = wait_for(ex, [j.experiment_id for j in jobs], timeout=600)
    elapsed = time.perf_counter() - t0
    ex.shutdown()
    assert set(s.value for s in statuses.values()) == {"COMPLETED"}, statuses
    return elapsed


def run_plain(storage: str, n: int, name: str) -> float:
    t0 = time.perf_counter()
    tuner = tune.Tuner(noop, param_space={"x": tune.grid_search([i / n for i in range(n)])},
                       run_config=tune.RunConfig(storage_path=storage, name=name))
    grid = tuner.fit()
    elapsed = time.perf_counter() - t0
    assert len(grid) == n and not grid.errors
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--no-reuse-reps", type=int, default=1,
                        help="repetitions of the executor with reuse_actors=False")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tmp = tempfile.mkdtemp(prefix="bench_executor_")
    study = StudyConfig.from_yaml(ROOT / "tests" / "data" / "toy_study.yaml").model_copy(
        update={"storage": tmp, "max_concurrent_trials": 2})
    quiet = io.StringIO()  # Tune's progress tables: keep the benchmark's own output readable
    cycle = 0

    def executor(reuse: bool, n: int = args.trials) -> float:
        nonlocal cycle
        cycle += 1
        with contextlib.redirect_stdout(quiet):
            return run_executor(study, n, cycle, reuse)

    def plain(n: int = args.trials) -> float:
        nonlocal cycle
        cycle += 1
        with contextlib.redirect_stdout(quiet):
            return run_plain(tmp, n, f"plain_{cycle}")

    executor(True, 4)  # warm-up: imports, worker pool, Tune's first-use costs
    plain(4)
    times: dict[str, list[float]] = {"executor": [], "plain_tune": [], "executor_no_reuse": []}
    for rep in range(args.reps):
        order = ["executor", "plain_tune"] if rep % 2 == 0 else ["plain_tune", "executor"]
        if rep < args.no_reuse_reps:
            order.append("executor_no_reuse")
        for which in order:
            t = {"executor": lambda: executor(True), "plain_tune": plain,
                 "executor_no_reuse": lambda: executor(False)}[which]()
            times[which].append(t)
            print(f"rep {rep + 1}: {which:18s} {t:7.2f} s", flush=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"\n{args.trials} no-op trials, 1 CPU each, Ray with 2 CPUs; medians")
    for k, v in med.items():
        print(f"  {k:18s} {v:7.2f} s  ({v / args.trials * 1000:6.0f} ms per trial, {len(times[k])} reps)")
    ratio = med["executor"] / med["plain_tune"]
    print(f"  executor / plain Tune             = {ratio:.3f}")
    if "executor_no_reuse" in med:
        print(f"  executor (no reuse) / plain Tune  = {med['executor_no_reuse'] / med['plain_tune']:.3f}")
    ray.shutdown()
    print(f"headline: executor_vs_tune_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
