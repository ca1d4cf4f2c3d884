"""Does ARC's collective, with its defaults, out-search the best single sampler on unseen problems?

Issue #12. Every sampler gets the same problems, budgets and batch protocol (ask a batch,
evaluate it, tell the results), seed by seed, runs alternating:

- **arc**: ``arc_ray.run_study(objective, ..., executor="inprocess")`` with the study
  defaults; only the batch size (``budget.trials_per_cycle``)
  and the budget (``budget.max_trials``; ``budget.max_cycles`` = the budget, a runaway
  guard) are set;
- **tpe**: Optuna ``TPESampler(constant_liar=True, seed=...)``;
- **gp**: Optuna ``GPSampler(seed=...)``;
- **random**: Optuna ``RandomSampler(seed=...)``.

``--scheduling rolling`` runs ARC with rolling decisions instead (issue #15): the batch
size becomes its trial slots, run in virtual time (``_virtual_slots.py``: trials of 1-10
units side by side, results revealed in the order they end), and a round is decided
whenever slots free up, with the trials still in flight pending for the agents. The
peers then run asynchronously too, as Ray Tune runs them under a ``ConcurrencyLimiter``:
the same number of slots in virtual time, a trial asked whenever a slot frees up, the
trials in flight RUNNING in the Optuna study (TPE's constant liar; GPSampler conditions
on them). Raw records carry their scheduling, and ``--reuse`` takes only peer runs of the
same scheduling.

A failed evaluation (the objective raises ``MemoryError`` / ``FloatingPointError``, or
returns a non-finite value) is no result for anyone; the peers are told ``FAIL``.
Problems (``_search_problems.py``): scikit-learn models tuned by 3-fold CV on the
bundled data sets, mixed-integer synthetic functions with categorical switches, and
responses with failure regions.

Budgets are prefixes of one run at the largest budget: no sampler is told the budget
except ARC, whose ``budget.max_trials`` only caps its last cycle and stops its loop
(read by the supervisor's budget check and the stop rule ``check_stop``, nowhere
else), so the first N evaluations of a 100-trial study are those of an N-trial
one. (With batches of 8 and a budget of 20, the capped cycle of an N-trial study would run the
first 4 of the vote's ranking; the prefix takes the first 4 evaluated, in the same order.)
ARC stops before the budget only if a study opts into early stopping
(``budget.stop_on_no_improvement``, off by default and here); its best would then stand
for the rest of the budget.

Report: per problem × batch × budget cell the median best value per sampler and the
best known value; per peer the share of cells where ARC's median is strictly better
(the headlines), per-seed wins / losses with a two-sided sign test, the cells where ARC
is worse than random, failed trials and median seconds per run. All raw runs go to a
JSON file (``--out``, default ``benchmarks/results/search-<time>.json``).

Run (the full suite: 27 problems, budgets 20/40/100, batches 4 and 8, 10 seeds)::

    .venv/bin/python benchmarks/bench_search.py

(``--workers`` defaults to the cores this process may use, one thread each: 2 here.)

For development: ``--quick`` (4 problems, 3 seeds, budgets 20/40); ``--problems``
takes names or family names (``sklearn``, ``synthetic``, ``failure``).

Cost: the full suite is 2,160 runs and does not fit 15 minutes on 2 cores. ARC runs
in the driver (no Ray: ``run_study`` with ``executor="inprocess"`` and no cluster), so
Optuna's GPSampler (median 7.7 s a run at 100 evaluations in batches of 4, 10.1 s in
batches of 8) dominates: 27 problems x 10 seeds at budgets 20/40/100 took 48 min wall
in batches of 4 and 56 min in batches of 8, every sampler fresh. The peers do not
change when ARC does: ``--reuse FILE`` takes their runs from an earlier raw results file
and runs only ARC's (10 min for the batches-of-4 size on 2 workers).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _search_problems import FAMILIES, PROBLEMS, Problem  # noqa: E402

SAMPLERS = ("arc", "tpe", "gp", "random")
PEERS = ("tpe", "gp", "random")
QUICK_PROBLEMS = ["svm_breast", "branin_cat", "hartmann6", "depth_lr_diverge"]
FAILURES = (MemoryError, FloatingPointError)


# ------------------------------------------------------------------ worker side


def _init_worker() -> None:
    import logging
    import warnings

    import optuna

    logging.basicConfig(level=logging.ERROR)
    for name in ("arc_ray", "ray", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")


class _Evaluations:
    """The objective's calls in order: value (None = failed) and seconds spent."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.values: list[float | None] = []
        self.seconds = 0.0

    def __call__(self, config: dict[str, Any]) -> float | None:
        t = time.perf_counter()
        try:
            value = self.problem.objective(config)
            value = value if math.isfinite(value) else None
        except FAILURES:
            value = None
        self.seconds += time.perf_counter() - t
        self.values.append(value)
        return value


_CURRENT: _Evaluations | None = None  # the evaluations of the ARC study running in this process


def arc_objective(config: dict[str, Any]) -> dict[str, float]:
    """ARC's trainable: a module-level function (a study names it ``module:function``)."""
    value = _CURRENT(config)
    if value is None:
        raise FloatingPointError("no result")  # the executor stores a failed trial
    return {"value": value}


def _run_arc(problem: Problem, batch: int, seed: int, evals: int, root: str) -> dict[str, Any]:
    import arc_ray

    global _CURRENT
    # no Ray in this process: run_study runs the agents and the historian in the driver
    _CURRENT = _Evaluations(problem)
    storage = tempfile.mkdtemp(dir=root)
    try:
        settings = dict(search_space=problem.space, metric="value", mode=problem.mode, executor="inprocess",
                        name=f"{problem.name}-b{batch}-s{seed}", storage=storage, seed=seed,
                        # max_cycles: a guard against cycles that run nothing, never reached otherwise
                        budget={"max_trials": evals, "trials_per_cycle": batch, "max_cycles": evals})
        if os.environ.get("ARC_BENCH_BASELINE", "middle") == "random":
            # --baseline random: the study declares a baseline, one uniform draw per problem
            # and seed (an arbitrary user's start, not a good one); the peers never see it
            from arc_ray.space import SearchSpace, unflatten_config

            space = SearchSpace.from_mapping(problem.space)
            import numpy as np

            draw = np.random.default_rng([seed, *problem.name.encode()]).random(len(space.names))
            settings["baseline"] = unflatten_config(space.from_unit_row(space.names, draw))
        if os.environ.get("ARC_BENCH_SCHEDULING", "batch") == "rolling":
            # --scheduling rolling: ``batch`` trial slots in virtual time (_virtual_slots.py),
            # a round decided whenever slots free up, the trials in flight pending
            from _virtual_slots import VirtualSlots

            from arc_ray.orchestrator import Orchestrator

            study = arc_ray.make_study(arc_objective, scheduling="rolling", max_concurrent_trials=batch,
                                       **settings)
            orch = Orchestrator(study, trainable=arc_objective, in_driver=True, poll_interval_s=0.05,
                                executor=VirtualSlots(study, arc_objective, batch))
            try:
                report = orch.run()
            finally:
                orch.shutdown(kill_actors=True)
        else:
            report = arc_ray.run_study(arc_objective, **settings)
        extra = {"cycles": report.n_cycles, "stop": report.stop_reason.value}
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return {"values": _CURRENT.values, "objective_s": _CURRENT.seconds, **extra}


def _distributions(problem: Problem) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, s in problem.space.items():
        if s["type"] == "float":
            out[name] = FloatDistribution(s["low"], s["high"], log=s.get("log", False))
        elif s["type"] == "int":
            out[name] = IntDistribution(s["low"], s["high"], log=s.get("log", False))
        else:
            out[name] = CategoricalDistribution(s["choices"])
    return out


def _run_optuna(problem: Problem, sampler: str, batch: int, seed: int, evals: int) -> dict[str, Any]:
    import optuna

    make = {"tpe": lambda: optuna.samplers.TPESampler(constant_liar=True, seed=seed),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[sampler]
    study = optuna.create_study(direction="minimize" if problem.mode == "min" else "maximize", sampler=make())
    dists = _distributions(problem)
    evaluations = _Evaluations(problem)

    def tell(trial: Any, value: float | None) -> None:
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)

    if os.environ.get("ARC_BENCH_SCHEDULING", "batch") == "rolling":
        # asynchronous, as Tune's ConcurrencyLimiter over OptunaSearch runs it: ``batch``
        # slots in virtual time, trials of 1-10 units (as _virtual_slots.py gives ARC's);
        # a slot that frees up asks for the next trial with the others RUNNING (pending)
        running: list[tuple[float, int, Any, float | None]] = []

        def start(now: float) -> None:
            n = len(evaluations.values)
            trial = study.ask(dists)
            value = evaluations(trial.params)
            length = math.exp(random.Random(f"{problem.name}-{seed}-{n}").uniform(0.0, math.log(10.0)))
            heapq.heappush(running, (now + length, n, trial, value))

        while len(evaluations.values) < min(batch, evals):
            start(0.0)
        while running:
            end, _, trial, value = heapq.heappop(running)
            tell(trial, value)
            if len(evaluations.values) < evals:
                start(end)
        return {"values": evaluations.values, "objective_s": evaluations.seconds}
    while len(evaluations.values) < evals:
        trials = [study.ask(dists) for _ in range(min(batch, evals - len(evaluations.values)))]
        for trial in trials:
            tell(trial, evaluations(trial.params))
    return {"values": evaluations.values, "objective_s": evaluations.seconds}


def run_task(task: tuple[str, str, int, int, int, str]) -> dict[str, Any]:
    """One run: ``(problem, sampler, batch, seed, evaluations, temp root)`` → its record."""
    name, sampler, batch, seed, evals, root = task
    problem = PROBLEMS[name]
    t = time.perf_counter()
    record: dict[str, Any] = {"problem": name, "sampler": sampler, "batch": batch, "seed": seed,
                              "scheduling": os.environ.get("ARC_BENCH_SCHEDULING", "batch")}
    try:
        out = (_run_arc(problem, batch, seed, evals, root) if sampler == "arc"
               else _run_optuna(problem, sampler, batch, seed, evals))
        record.update(out, error=None)
    except Exception as exc:  # noqa: BLE001 - a broken run is reported, not fatal
        record.update(values=[], objective_s=0.0, error=f"{type(exc).__name__}: {exc}"[:300])
    record["seconds"] = time.perf_counter() - t
    return record


# ------------------------------------------------------------------ report


def best_of(values: list[float | None], n: int, mode: str) -> float:
    """The best of the first ``n`` evaluations (±inf when none succeeded)."""
    ok = [v for v in values[:n] if v is not None]
    if not ok:
        return math.inf if mode == "min" else -math.inf
    return min(ok) if mode == "min" else max(ok)


def better(a: float, b: float, mode: str) -> bool:
    """``a`` strictly better than ``b`` (beyond float noise)."""
    if a == b or (math.isinf(a) and math.isinf(b) and (a > 0) == (b > 0)):
        return False
    sign = -1.0 if mode == "min" else 1.0
    return sign * (a - b) > 1e-9 * max(1.0, abs(b) if math.isfinite(b) else 1.0)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else ("fail" if not math.isnan(x) else "-")


def report(runs: list[dict[str, Any]], budgets: list[int], batches: list[int]) -> dict[str, Any]:
    """Print the tables and the headlines; return the summary that goes into the JSON."""
    from scipy.stats import binomtest

    ok = [r for r in runs if r["error"] is None]
    by: dict[tuple, dict[int, list]] = defaultdict(dict)
    for r in ok:
        by[(r["problem"], r["batch"], r["sampler"])][r["seed"]] = r["values"]
    problems = [p for p in PROBLEMS if any(k[0] == p for k in by)]
    best_known = {}
    for p in problems:
        prob = PROBLEMS[p]
        seen = [best_of(v, len(v), prob.mode) for k, d in by.items() if k[0] == p for v in d.values()]
        found = (min if prob.mode == "min" else max)(seen)
        best_known[p] = prob.optimum if prob.optimum is not None else found

    cells, seed_cmp = [], {peer: [] for peer in PEERS}
    print(f"\n{'problem':<18} {'B':>2} {'N':>4} {'best known':>10} " + " ".join(f"{s:>9}" for s in SAMPLERS))
    for p in problems:
        mode = PROBLEMS[p].mode
        for batch in batches:
            for n in budgets:
                seeds = sorted(set.intersection(*(set(by.get((p, batch, s), {})) for s in SAMPLERS)))
                if not seeds:
                    continue
                best = {s: [best_of(by[(p, batch, s)][i], n, mode) for i in seeds] for s in SAMPLERS}
                med = {s: statistics.median(best[s]) for s in SAMPLERS}
                cells.append({"problem": p, "family": PROBLEMS[p].family, "batch": batch, "budget": n,
                              "seeds": seeds, "median": med, "best_known": best_known[p],
                              "gap": {s: abs(med[s] - best_known[p]) if math.isfinite(med[s]) else None
                                      for s in SAMPLERS}})
                for peer in PEERS:
                    for a, b in zip(best["arc"], best[peer]):
                        seed_cmp[peer].append((n, PROBLEMS[p].family,
                                               1 if better(a, b, mode) else -1 if better(b, a, mode) else 0))
                top = [s for s in SAMPLERS if not any(better(med[o], med[s], mode) for o in SAMPLERS)]
                print(f"{p:<18} {batch:>2} {n:>4} {_fmt(best_known[p]):>10} "
                      + " ".join(f"{_fmt(med[s]) + ('*' if s in top else ' '):>9}" for s in SAMPLERS))
    print("(median best over seeds; * = best median of the cell; B = batch, N = evaluations)")

    summary: dict[str, Any] = {"cells": cells, "win_fraction": {}, "sign_test": {}}
    print("\nARC against each peer: cells where ARC's median is better / worse / equal; "
          "per seed: wins-losses-ties, two-sided sign test")
    for peer in PEERS:
        w = sum(better(c["median"]["arc"], c["median"][peer], PROBLEMS[c["problem"]].mode) for c in cells)
        lo = sum(better(c["median"][peer], c["median"]["arc"], PROBLEMS[c["problem"]].mode) for c in cells)
        summary["win_fraction"][peer] = w / len(cells) if cells else 0.0
        line = f"  vs {peer:<6} cells {w}/{lo}/{len(cells) - w - lo} of {len(cells)}"
        for label, keep in [("all", lambda n, f: True), *[(f"N={b}", lambda n, f, b=b: n == b) for b in budgets],
                            *[(f, lambda n, f2, f=f: f2 == f) for f in FAMILIES]]:
            xs = [x for n, f, x in seed_cmp[peer] if keep(n, f)]
            wins, losses = xs.count(1), xs.count(-1)
            pval = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
            summary["sign_test"][f"{peer}/{label}"] = {"wins": wins, "losses": losses, "ties": xs.count(0), "p": pval}
            if label in ("all", *[f"N={b}" for b in budgets]):
                line += f" | {label} {wins}-{losses}-{xs.count(0)} p={pval:.2g}"
        print(line)
    for f in FAMILIES:
        parts = []
        for peer in PEERS:
            st = summary["sign_test"][f"{peer}/{f}"]
            parts.append(f"vs {peer} {st['wins']}-{st['losses']}-{st['ties']} p={st['p']:.2g}")
        print(f"  {f:<9} per seed: " + "; ".join(parts))

    worse = [c for c in cells if better(c["median"]["random"], c["median"]["arc"], PROBLEMS[c["problem"]].mode)]
    summary["arc_worse_than_random"] = [(c["problem"], c["batch"], c["budget"]) for c in worse]
    print(f"\nARC never worse than random: {'yes' if not worse else 'NO'} "
          f"({len(worse)} of {len(cells)} cells worse: "
          + ", ".join(f"{c['problem']}/B{c['batch']}/N{c['budget']}" for c in worse[:12])
          + (" ..." if len(worse) > 12 else "") + ")")

    nmax = max(budgets)
    fails = {s: sum(v is None for r in ok if r["sampler"] == s for v in r["values"][:nmax]) for s in SAMPLERS}
    evals = {s: sum(len(r["values"][:nmax]) for r in ok if r["sampler"] == s) for s in SAMPLERS}
    summary["failed_trials"], summary["evaluations"] = fails, evals
    print("failed trials / evaluations: " + ", ".join(f"{s} {fails[s]}/{evals[s]}" for s in SAMPLERS))
    fail_probs = [p for p in problems if PROBLEMS[p].family == "failure"]
    for p in fail_probs:
        counts = {s: sum(v is None for r in ok if r["problem"] == p and r["sampler"] == s for v in r["values"][:nmax])
                  for s in SAMPLERS}
        print(f"  {p:<18} " + " ".join(f"{s} {counts[s]:>4}" for s in SAMPLERS))
    arc_runs = [r for r in ok if r["sampler"] == "arc"]
    short = [r for r in arc_runs if len(r["values"]) < nmax]
    if arc_runs:
        print(f"ARC runs stopped before {nmax} evaluations: {len(short)}/{len(arc_runs)} "
              f"(median {statistics.median([len(r['values']) for r in arc_runs]):.0f} evaluations; "
              f"stop reasons {sorted({r['stop'] for r in arc_runs})})")
        # the vote approves at most proposals_per_cycle (default 6): a batch of 8 is not filled
        per_cycle = {b: statistics.mean(len(r["values"]) / max(r["cycles"], 1) for r in arc_runs if r["batch"] == b)
                     for b in batches if any(r["batch"] == b for r in arc_runs)}
        summary["arc_trials_per_cycle"] = per_cycle
        print("ARC's mean trials per cycle: " + ", ".join(f"batch {b}: {v:.1f}" for b, v in per_cycle.items()))
    secs = {}
    for s in SAMPLERS:
        rs = [r for r in ok if r["sampler"] == s]
        if rs:
            secs[s] = {"run_s": statistics.median(r["seconds"] for r in rs),
                       "overhead_s": statistics.median(r["seconds"] - r["objective_s"] for r in rs)}
    summary["seconds"] = secs
    print(f"median seconds per run ({nmax} evaluations; overhead = without the objective): "
          + ", ".join(f"{s} {v['run_s']:.2f} ({v['overhead_s']:.2f})" for s, v in secs.items()))
    errors = [r for r in runs if r["error"] is not None]
    if errors:
        print(f"runs that raised ({len(errors)}), left out: "
              + "; ".join(f"{r['sampler']}/{r['problem']}/s{r['seed']}: {r['error'][:80]}" for r in errors[:5]))
    return summary


# ------------------------------------------------------------------ main


def _problem_names(selected: list[str]) -> list[str]:
    names: list[str] = []
    for s in selected:
        if s in FAMILIES:
            names += [p.name for p in PROBLEMS.values() if p.family == s]
        elif s in PROBLEMS:
            names.append(s)
        else:
            raise SystemExit(f"unknown problem {s!r}; choose from {', '.join([*FAMILIES, *PROBLEMS])}")
    return list(dict.fromkeys(names))


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 problems, 3 seeds, budgets 20 and 40")
    parser.add_argument("--problems", nargs="+", help="problem or family names (default: all)")
    parser.add_argument("--seeds", type=int, help="seeds per problem (default 10)")
    parser.add_argument("--budgets", type=int, nargs="+", help="evaluations (default 20 40 100)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="batch sizes (default 4 8)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS,
                        help="run only these (the report needs all four; for timing)")
    parser.add_argument("--workers", type=int, default=_cores(),
                        help=f"processes, one thread each (default: the cores this process may use, {_cores()} here)")
    parser.add_argument("--out", type=Path, help="raw results JSON (default benchmarks/results/search-<time>.json)")
    parser.add_argument("--reuse", type=Path, help="take the peers' runs (tpe, gp, random: they do not change "
                        "with ARC) from this earlier raw results JSON where it has them; run only the rest")
    parser.add_argument("--scheduling", choices=["batch", "rolling"], default="batch",
                        help="ARC's scheduling (rolling: a round per freed slot, the batch size as slots)")
    parser.add_argument("--baseline", choices=["middle", "random"], default="middle",
                        help="ARC's baseline: the space's middle (make_study's default, as declared by no "
                             "one) or a declared one drawn at random per problem and seed")
    args = parser.parse_args(argv)
    os.environ["ARC_BENCH_SCHEDULING"] = args.scheduling  # the spawned workers inherit it
    os.environ["ARC_BENCH_BASELINE"] = args.baseline
    problems = _problem_names(args.problems or (QUICK_PROBLEMS if args.quick else list(PROBLEMS)))
    seeds = args.seeds or (3 if args.quick else 10)
    budgets = sorted(args.budgets or ([20, 40] if args.quick else [20, 40, 100]))
    out = args.out or Path(__file__).parent / "results" / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers inherit it: one thread per process
    root = tempfile.mkdtemp(prefix="arc-bench-search-")
    # alternate the samplers run by run; the largest budget's run gives every smaller one
    tasks = [(p, s, b, seed, budgets[-1], root) for seed in range(seeds) for p in problems
             for b in args.batches for s in args.samplers]
    runs: list[dict[str, Any]] = []
    if args.reuse:
        stored = {(r["problem"], r["sampler"], r["batch"], r["seed"]): r
                  for r in json.loads(args.reuse.read_text())["runs"]
                  if r["sampler"] in PEERS and r["error"] is None and len(r["values"]) >= budgets[-1]
                  and r.get("scheduling", "batch") == args.scheduling}
        runs = [stored[t[:4]] for t in tasks if t[:4] in stored]
        tasks = [t for t in tasks if t[:4] not in stored]
        print(f"reusing {len(runs)} peer runs from {args.reuse}")
    print(f"{len(problems)} problems x batches {args.batches} x {seeds} seeds x {args.samplers}: "
          f"{len(tasks)} runs of {budgets[-1]} evaluations on {args.workers} workers", flush=True)
    t0 = time.perf_counter()
    # Ctrl-C or `kill -INT` reports the runs done so far, even where the shell started the
    # benchmark in the background with SIGINT ignored (a run of an hour was lost to that)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = mp.get_context("spawn").Pool(args.workers, initializer=_init_worker)
    try:
        for i, record in enumerate(pool.imap_unordered(run_task, tasks), 1):
            runs.append(record)
            if i % max(1, len(tasks) // 20) == 0:
                print(f"  {i}/{len(tasks)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
        pool.close()
    except KeyboardInterrupt:  # Ctrl-C: report the runs done so far
        print(f"interrupted: reporting the {len(runs)} runs done", flush=True)
        pool.terminate()
    finally:
        pool.join()
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t0
    complete = set(args.samplers) == set(SAMPLERS)
    summary = report(runs, budgets, args.batches) if complete else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "problems": problems,
                               "seeds": seeds, "budgets": budgets, "wall_s": wall, "runs": runs,
                               "summary": summary}, default=str))
    print(f"\n{len(runs)} runs in {wall:.0f} s wall on {args.workers} workers; raw results: {out}")
    if not complete:
        for s in args.samplers:
            rs = [r["seconds"] for r in runs if r["sampler"] == s]
            print(f"  {s}: median {statistics.median(rs):.2f} s per run" if rs else f"  {s}: no run done")
        return 0
    print(f"headline: search_gp_win_fraction={summary['win_fraction']['gp']:.2f}")
    print(f"headline: search_tpe_win_fraction={summary['win_fraction']['tpe']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
