"""Which proposer's trials pay, cycle phase by cycle phase, on bench_search's problems.

An analysis, not a race: ARC runs each problem (``run_study``, ``executor="inprocess"``,
the study defaults) and every trial is scored two ways, grouped by the proposer that made
it and the phase of the run (cycle 1, 2-3, 4-6, 7 on):

- **percentile**: the trial's value among random draws on the same problem (0 = better
  than every draw, 0.5 = a typical random draw, 1 = worse than all; a failed trial 1).
  The draws are Optuna ``RandomSampler`` runs (``--draw-seeds`` runs of ``--evals``
  each), or the random sampler's runs in a bench_search raw results file (``--random``);
- **new best**: the share of the proposer's trials that beat the run's best so far.

Run::

    .venv/bin/python benchmarks/proposer_yield.py --batch 4 --evals 40 --seeds 3 \\
        --random benchmarks/results/<a bench_search results file>.json

It ends with ``headline: early_batch_percentile=<x>``: the median percentile of the
trials of cycles 2 and 3, where the model has a few trials to go on (0.5 is no better
than random draws).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_search as bs  # noqa: E402
from _search_problems import PROBLEMS  # noqa: E402

PHASES = ((1, 1, "1"), (2, 3, "2-3"), (4, 6, "4-6"), (7, 10**9, "7 on"))


def _phase(cycle: int) -> str:
    return next(label for lo, hi, label in PHASES if lo <= cycle <= hi)


def _random_draws(names: list[str], batch: int, evals: int, seeds: int, path: Path | None) -> dict[str, np.ndarray]:
    draws: dict[str, list[float]] = defaultdict(list)
    if path is not None:
        for r in json.loads(path.read_text())["runs"]:
            if r["sampler"] == "random" and r["problem"] in names and not r["error"]:
                draws[r["problem"]] += [v for v in r["values"] if v is not None]
    for name in names:
        if not draws[name]:
            for seed in range(seeds):
                out = bs._run_optuna(PROBLEMS[name], "random", batch, 1000 + seed, evals)
                draws[name] += [v for v in out["values"] if v is not None]
    # in the minimising direction, sorted, for percentiles
    return {n: np.sort(np.array(v) * (1.0 if PROBLEMS[n].mode == "min" else -1.0)) for n, v in draws.items()}


def tally(names: list[str], batch: int, evals: int, seeds: int, draws: dict[str, np.ndarray]
          ) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], list[int]]]:
    """ARC's runs of each problem; per (phase, proposer) every trial's percentile among
    ``draws`` (minimising direction, sorted) and whether it set a new best (1 / 0)."""
    import arc_ray
    from arc_ray.historian import HistoryReader

    pct: dict[tuple[str, str], list[float]] = defaultdict(list)
    new_best: dict[tuple[str, str], list[int]] = defaultdict(list)
    for name in names:
        problem, dist = PROBLEMS[name], draws[name]
        sign = 1.0 if problem.mode == "min" else -1.0
        for seed in range(seeds):
            bs._CURRENT = bs._Evaluations(problem)
            storage = tempfile.mkdtemp(prefix="arc-yield-")
            try:
                study = arc_ray.make_study(bs.arc_objective, problem.space, "value", mode=problem.mode,
                                           executor="inprocess", name=f"{name}-{seed}", storage=storage, seed=seed,
                                           budget={"max_trials": evals, "trials_per_cycle": batch,
                                                   "max_cycles": evals})
                arc_ray.run_study(study)
                table = HistoryReader(study).trials_table().to_pandas().sort_values("cycle_id", kind="stable")
            finally:
                shutil.rmtree(storage, ignore_errors=True)
            best = math.inf
            for cycle, proposer, value in zip(table["cycle_id"], table["proposer"], table["metric.value"]):
                ok = value is not None and math.isfinite(value)
                v = sign * value if ok else math.inf
                key = (_phase(int(cycle)), str(proposer))
                pct[key].append(float(np.searchsorted(dist, v) / len(dist)) if ok else 1.0)
                new_best[key].append(int(ok and best < math.inf and v < best))
                best = min(best, v)
        print(f"  {name}: {seeds} runs", flush=True)
    return pct, new_best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="trials per cycle (default 4)")
    parser.add_argument("--evals", type=int, default=40, help="evaluations per run (default 40)")
    parser.add_argument("--seeds", type=int, default=3, help="ARC runs per problem (default 3)")
    parser.add_argument("--problems", nargs="+", help="problem or family names (default: all)")
    parser.add_argument("--random", type=Path, help="a bench_search raw results file to take random draws from")
    parser.add_argument("--draw-seeds", type=int, default=5, help="random runs per problem when drawn here")
    args = parser.parse_args(argv)
    names = bs._problem_names(args.problems or list(PROBLEMS))
    draws = _random_draws(names, args.batch, args.evals, args.draw_seeds, args.random)
    pct, new_best = tally(names, args.batch, args.evals, args.seeds, draws)
    proposers = sorted({p for _, p in pct})
    print(f"\n{len(names)} problems x {args.seeds} seeds, {args.evals} evaluations in batches of {args.batch}; "
          "per phase and proposer: trials, median percentile among random draws, share of new bests")
    print(f"{'cycles':<6} " + " ".join(f"{p:>24}" for p in proposers))
    for _, _, phase in PHASES:
        cells = []
        for p in proposers:
            xs = pct.get((phase, p))
            cells.append(f"{len(xs):>5} {np.median(xs):6.2f} {np.mean(new_best[(phase, p)]):6.3f}" if xs else "-")
        print(f"{phase:<6} " + " ".join(f"{c:>24}" for c in cells))
    early = [x for (phase, _), xs in pct.items() if phase == "2-3" for x in xs]
    print(f"headline: early_batch_percentile={np.median(early):.3f}" if early else "headline: early_batch_percentile=nan")
    return 0


if __name__ == "__main__":
    # quiet logs for a command-line run only: main() called in a process (the tests) leaves
    # that process's logging as it was
    bs._init_worker()
    warnings.filterwarnings("ignore")
    logging.getLogger("arc_ray").setLevel(logging.ERROR)
    sys.exit(main())
