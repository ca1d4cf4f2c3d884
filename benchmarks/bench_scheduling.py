"""Slot utilisation: ARC with rolling decisions, ARC in batch cycles, Ray Tune + OptunaSearch.

Workload: a sleep trainable whose length depends on its config (a hash of the config
mapped log-uniformly onto 1–10 s, so that no searcher can pick short trials on
purpose), 4 slots (``ray.init(num_cpus=4)``, 1 CPU per trial), 48 trials per run. The
three methods alternate for ``--reps`` repetitions in one Ray session:

- **ARC rolling**: ``scheduling: rolling``: a decision round (director, proposers with
  the in-flight trials as pending, critic, vote, supervisor) whenever a slot frees up;
- **ARC batch**: ``scheduling: batch``: 4 trials a cycle, the next cycle after the last;
- **Tune + OptunaSearch**: ``OptunaSearch`` under a ``ConcurrencyLimiter`` of 4.

Printed per run and as medians over the reps: slot utilisation (busy slot-seconds,
from the trainable's own start / end timestamps, over slots × the wall from the first
submission to the last result), wall time, the work (sum of trial seconds: the
searchers pick different configs, hence different lengths), the wall normalised to the
same work (wall × median work / own work) and ARC's decision overhead per round (from
a round's start to its trials' submission), and the *ideal* utilisation of each run:
the same trial lengths, in the same order, on the same slots with no overhead at all
(each trial starts the instant a slot frees), which loses only the tail after the last
start. Last line: ``headline: slot_utilisation=`` (ARC rolling's median).

Run: ``.venv/bin/python benchmarks/bench_scheduling.py`` (``--reps 1 --trials 16`` for a
quick look; ``--figures DIR`` writes ARC's slot timelines). The machine may be shared:
compare medians of several reps.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SLOTS = 4
SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0},
         "y": {"type": "float", "low": 0.0, "high": 1.0}}


def trial_length(config: dict[str, Any]) -> float:
    """1–10 s, log-uniform over configs: a hash of the rounded config, not its quality."""
    key = json.dumps({k: round(float(config[k]), 6) for k in ("x", "y")}, sort_keys=True)
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 10.0 ** u


def sleep_trainable(config: dict[str, Any]) -> None:
    """Sleeps its config's length, then reports a smooth score and its own start / end."""
    from ray import tune

    t_start = time.time()
    time.sleep(trial_length(config))
    score = 1.0 - (config["x"] - 0.3) ** 2 - (config["y"] - 0.7) ** 2
    tune.report({"score": score, "t_start": t_start, "t_end": time.time()})


def utilisation(spans: list[tuple[float, float]], t_first: float, t_last: float) -> float:
    busy = sum(e - s for s, e in spans)
    return busy / (SLOTS * (t_last - t_first))


def ideal_utilisation(spans: list[tuple[float, float]]) -> float:
    """The utilisation of the same trials (lengths, start order) with no overhead: greedy
    list scheduling, each trial on the first slot to free up; only the tail idles."""
    lengths = [e - s for s, e in sorted(spans)]
    free = [0.0] * SLOTS
    for length in lengths:
        heapq.heappush(free, heapq.heappop(free) + length)
    return sum(lengths) / (SLOTS * max(free))


def idle_parts(spans: list[tuple[float, float]], t_first: float, t_last: float) -> dict[str, float]:
    """Idle slot-seconds as shares of slots × wall: before the first trial starts
    (``start``), between the first and the last trial start (``between``: what the
    scheduling controls) and after the last start (``tail``: nothing left to run)."""
    first_start, last_start = min(s for s, _ in spans), max(s for s, _ in spans)
    edges = sorted({t_first, t_last, first_start, last_start, *(x for sp in spans for x in sp)})
    parts = {"start": 0.0, "between": 0.0, "tail": 0.0}
    for a, b in zip(edges, edges[1:]):
        if b <= t_first or a >= t_last:
            continue
        mid = (a + b) / 2
        running = sum(1 for s, e in spans if s <= mid < e)
        key = "start" if mid < first_start else "tail" if mid >= last_start else "between"
        parts[key] += max(SLOTS - running, 0) * (b - a)
    return {k: v / (SLOTS * (t_last - t_first)) for k, v in parts.items()}


# ------------------------------------------------------------------ the methods


def run_arc(scheduling: str, trials: int, root: Path, rep: int, figures: Path | None = None) -> dict[str, Any]:
    from arc_ray.api import make_study
    from arc_ray.orchestrator import Orchestrator

    study = make_study("benchmarks.bench_scheduling:sleep_trainable", SPACE, "score", mode="max",
                       name=f"sched_{scheduling}_{rep}", storage=str(root / "history"),
                       scheduling=scheduling, max_concurrent_trials=SLOTS,
                       resources={"cpu": 1, "gpu": 0},
                       budget={"trials_per_cycle": SLOTS, "max_trials": trials},
                       proposers={"enabled": ["bayesian", "explorer"], "proposals_per_cycle": SLOTS})
    marks: dict[str, float] = {}

    def on_event(event: Any) -> None:
        if event.phase == "submitted" and event.counts.get("total"):
            marks.setdefault("first_submit", time.time())
        if event.phase == "integrated":
            marks["last_result"] = time.time()

    orch = Orchestrator(study, trainable=sleep_trainable, on_event=on_event, dashboard=False)
    try:
        t0 = time.perf_counter()
        report = orch.run()
        wall_total = time.perf_counter() - t0
        table = orch._get(orch.historian.trials_table.remote())
        rounds = len(report.cycles)
        decide = [c.decision_time_s for c in report.cycles]
    finally:
        orch.shutdown(kill_actors=True)
    if figures is not None:  # the report's slot timeline of this run
        from arc_ray._timeline import plot_timeline
        from arc_ray.report import load_report_data

        figures.mkdir(parents=True, exist_ok=True)
        plot_timeline(load_report_data(study), figures / f"timeline_{scheduling}.png")
    rows = table.to_pylist()
    spans = [(r["metric.t_start"], r["metric.t_end"]) for r in rows if r.get("metric.t_end") is not None]
    wall = marks["last_result"] - marks["first_submit"]
    return {"util": utilisation(spans, marks["first_submit"], marks["last_result"]), "wall": wall,
            "ideal": ideal_utilisation(spans),
            "idle": idle_parts(spans, marks["first_submit"], marks["last_result"]),
            "work": sum(e - s for s, e in spans), "n": len(spans), "rounds": rounds,
            "overhead": statistics.median(decide) if decide else float("nan"), "wall_total": wall_total,
            "stop": report.stop_reason.value}


def run_tune(trials: int, root: Path, rep: int) -> dict[str, Any]:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    search = ConcurrencyLimiter(OptunaSearch(metric="score", mode="max", seed=rep), max_concurrent=SLOTS)
    tuner = tune.Tuner(
        tune.with_resources(sleep_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 1.0), "y": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(search_alg=search, num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(name=f"tune_{rep}", storage_path=str(root / "tune"), verbose=0),
    )
    t0 = time.time()
    grid = tuner.fit()
    t1 = time.time()
    spans = [(r.metrics["t_start"], r.metrics["t_end"]) for r in grid if r.metrics and "t_end" in r.metrics]
    return {"util": utilisation(spans, t0, t1), "idle": idle_parts(spans, t0, t1), "wall": t1 - t0,
            "ideal": ideal_utilisation(spans),
            "work": sum(e - s for s, e in spans),
            "n": len(spans), "rounds": 0, "overhead": float("nan"), "wall_total": t1 - t0, "stop": "done"}


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--figures", type=Path, help="write ARC's slot timelines (last rep) here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    ray.init(num_cpus=SLOTS, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="bench_sched_"))
    last = args.reps - 1
    methods = {"ARC rolling": lambda r: run_arc("rolling", args.trials, root, r, args.figures if r == last else None),
               "ARC batch": lambda r: run_arc("batch", args.trials, root, r, args.figures if r == last else None),
               "Tune+OptunaSearch": lambda r: run_tune(args.trials, root, r)}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    try:
        for rep in range(args.reps):
            for name, fn in methods.items():
                out = fn(rep)
                runs[name].append(out)
                print(f"rep {rep} {name:18s} util={out['util']:.3f} ideal={out['ideal']:.3f} wall={out['wall']:6.1f}s "
                      f"work={out['work']:6.1f}s trials={out['n']} rounds={out['rounds']} "
                      f"decision/round={out['overhead']:.3f}s stop={out['stop']} idle: "
                      + " ".join(f"{k}={v:.3f}" for k, v in out["idle"].items()), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("util", "ideal", "wall", "work", "overhead")}
           for m, rs in runs.items()}
    ref_work = statistics.median(v["work"] for v in med.values())
    print(f"\nmedians over {args.reps} rep(s), {args.trials} trials, {SLOTS} slots:")
    print(f"{'method':18s} {'util':>6s} {'ideal':>6s} {'wall_s':>7s} {'work_s':>7s} {'wall@same_work':>15s} "
          f"{'decide/round_s':>15s}")
    for m, v in med.items():
        norm = v["wall"] * ref_work / v["work"]
        v["norm"] = norm
        print(f"{m:18s} {v['util']:6.3f} {v['ideal']:6.3f} {v['wall']:7.1f} {v['work']:7.1f} {norm:15.1f} "
              f"{v['overhead']:15.3f}")
    rolling = runs["ARC rolling"]
    print("ARC rolling utilisation / ideal (median over reps): "
          f"{statistics.median(r['util'] / r['ideal'] for r in rolling):.3f}")
    ratio = med["ARC rolling"]["norm"] / med["Tune+OptunaSearch"]["norm"]
    print(f"ARC rolling wall / Tune+OptunaSearch wall (same work): {ratio:.3f}")
    print(f"headline: slot_utilisation={med['ARC rolling']['util']:.3f}")
    if not all(math.isfinite(v["util"]) for v in med.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
