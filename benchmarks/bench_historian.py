"""Historian at 100,000 trials: integrate 100 results + summary(), against one JSON file.

The peer is the seed's approach: the whole history in one ``training_history.json``,
loaded, appended to and rewritten whole at each integration, then summarised in
Python (best, trend, stagnation, failures by class, GPU hours: less than the
historian's summary, which also mines patterns and learns constraints).

The 100,000-trial history is written straight to Parquet (one file, as after a
compaction) and to JSON, with the flagship study's config keys and metrics. Both
sides then integrate the same kind of batches, alternating, and the medians are
compared.

Run: ``.venv/bin/python benchmarks/bench_historian.py [--trials 100000] [--reps 5]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from arc_ray.historian import Historian
from arc_ray.historian.schema import trials_to_table
from arc_ray.historian.store import ParquetStore
from arc_ray.records import TrialResult
from arc_ray.study import StudyConfig

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["efficientnet_b0", "efficientnet_b3", "resnet50", "resnet18", "vit_base_patch16_224"]
OPTIMIZERS = ["adam", "adamw", "sgd"]
BATCHES = [8, 16, 32, 64, 128]
SIZES = [64, 128, 224, 256, 320]


def make_results(rng: np.random.Generator, start: int, n: int, cycle: int) -> list[TrialResult]:
    """``n`` plausible fundus results: ~85% completed, the rest failed by class."""
    out = []
    for i in range(start, start + n):
        cfg = {"model": MODELS[rng.integers(5)], "optimizer": OPTIMIZERS[rng.integers(3)],
               "learning_rate": float(10 ** rng.uniform(-5, -0.5)), "batch_size": int(BATCHES[rng.integers(5)]),
               "image_size": int(SIZES[rng.integers(5)]), "weight_decay": float(10 ** rng.uniform(-6, -1)),
               "epochs": int(rng.integers(1, 50)), "dropout": float(rng.uniform(0, 0.5)),
               "schedule": "cosine", "pretrained": False, "train_split": 0.8, "val_split": 0.2, "seed": 0,
               "augmentation": {"flip": bool(rng.integers(2)), "rotate": float(rng.uniform(0, 30)),
                                "crop": float(rng.uniform(0, 0.3)), "color_jitter": float(rng.uniform(0, 0.4))}}
        roll = rng.random()
        if roll < 0.85:
            auc = float(np.clip(0.7 + 0.2 * rng.random() - 0.02 * abs(np.log10(cfg["learning_rate"]) + 3), 0, 1))
            metrics = {"auc": auc, "sensitivity": auc - 0.05, "specificity": auc - 0.03, "threshold": 0.5,
                       "val_loss": 1 - auc, "train_loss": 0.9 - auc, "epoch": cfg["epochs"], "samples_per_s": 300.0}
            kw = {"status": "COMPLETED", "metrics": metrics}
        else:
            err = ["diverged", "oom", "timeout", "crash"][int(rng.integers(4))]
            kw = {"status": "FAILED", "error_class": err, "error_message": f"{err} in epoch 1"}
        out.append(TrialResult(experiment_id=f"exp-{i:07d}", cycle_id=cycle, config=cfg, duration_s=float(
            rng.uniform(60, 3600)), node_ip="10.0.0.2", iterations=cfg["epochs"], started_at=1.7e9 + i,
            ended_at=1.7e9 + i + 100, proposer="bayesian", proposal_type="hyperparameter_tuning",
            risk_level="low", **kw))
    return out


# ---------------------------------------------------------------- the peer


def json_integrate_and_summarise(path: Path, results: list[TrialResult], metric: str) -> dict:
    """The seed's way: read everything, append, rewrite everything, summarise in Python."""
    history = json.loads(path.read_text())
    known = {e["experiment_id"] for e in history["experiments"]}
    for r in results:
        if r.experiment_id not in known:
            history["experiments"].append(r.model_dump(mode="json"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(history))
    tmp.replace(path)
    done = [e for e in history["experiments"] if e["status"] == "COMPLETED" and metric in e["metrics"]]
    values = [e["metrics"][metric] for e in done]
    best = max(done, key=lambda e: e["metrics"][metric]) if done else None
    recent = values[-8:]
    slope = float(np.polyfit(range(len(recent)), recent, 1)[0]) if len(recent) > 1 else None
    stagnating = len(values) > 8 and max(values[-8:]) - max(values[:-8]) < 0.002
    failures: dict[str, int] = {}
    gpu_hours = 0.0
    for e in history["experiments"]:
        if e["status"] == "FAILED":
            failures[e["error_class"]] = failures.get(e["error_class"], 0) + 1
        gpu_hours += (e.get("duration_s") or 0) * ((e.get("resources") or {}).get("gpu", 1.0)) / 3600
    return {"best": best["experiment_id"] if best else None, "trend": slope, "stagnating": stagnating,
            "failures": failures, "gpu_hours": gpu_hours, "n": len(history["experiments"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    study = StudyConfig.from_yaml(ROOT / "configs" / "arc.yaml")
    tmp = Path(tempfile.mkdtemp(prefix="bench_historian_"))
    study = study.model_copy(update={"storage": str(tmp / "history")})
    rng = np.random.default_rng(0)
    try:
        t0 = time.perf_counter()
        base = make_results(rng, 0, args.trials, cycle=0)
        for i, r in enumerate(base):
            r.cycle_id = i // 100
        t1 = time.perf_counter()
        store = ParquetStore(study.study_dir)
        store.check_writable()
        table = trials_to_table(base, integrated_at=1.7e9, default_resources=study.resources)
        store.write("trials", table)
        t2 = time.perf_counter()
        json_path = tmp / "training_history.json"
        json_path.write_text(json.dumps({"experiments": [r.model_dump(mode="json") for r in base]}))
        t3 = time.perf_counter()
        del base
        print(f"history: {args.trials} trials, {table.num_columns} columns; made in {t1 - t0:.1f}s, "
              f"Parquet written in {t2 - t1:.2f}s "
              f"({sum(p.stat().st_size for p in (Path(study.study_dir) / 'trials').iterdir()) / 1e6:.1f} MB), "
              f"JSON written in {t3 - t2:.2f}s ({json_path.stat().st_size / 1e6:.1f} MB)")

        t0 = time.perf_counter()
        historian = Historian(study)
        print(f"Historian start (rebuild from Parquet): {(time.perf_counter() - t0) * 1e3:.0f} ms")

        hist_times, json_times, integrate_times, cold_summary, cold_cpu = [], [], [], [], []
        next_id = args.trials
        for rep in range(args.reps):
            batch = make_results(rng, next_id, args.batch, cycle=1000 + rep)
            next_id += args.batch
            # alternate which side goes first, so neither always runs on a warmer cache
            order = ("historian", "json") if rep % 2 == 0 else ("json", "historian")
            for side in order:
                if side == "historian":
                    t0 = time.perf_counter()
                    s = historian.integrate_experiment_results(batch, 1000 + rep)
                    t1 = time.perf_counter()
                    summary = historian.summary()
                    t2 = time.perf_counter()
                    assert s.successful + s.failed == args.batch and summary.n_trials == next_id
                    hist_times.append(t2 - t0)
                    integrate_times.append(t1 - t0)
                else:
                    t0 = time.perf_counter()
                    out = json_integrate_and_summarise(json_path, batch, study.metric)
                    json_times.append(time.perf_counter() - t0)
                    assert out["n"] == next_id
            # summary() with every analysis recomputed over the whole history (only the
            # frame's quartile edges stay cached, as they do between real integrations)
            historian._cache_key = None
            historian._frame._memo.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            summary = historian.summary()
            cold_summary.append(time.perf_counter() - t0)
            cold_cpu.append(time.process_time() - c0)
        assert summary.best_value is not None

        h, j = statistics.median(hist_times), statistics.median(json_times)
        print(f"integrate {args.batch} + summary(), median of {args.reps}:")
        integrate = statistics.median(integrate_times)
        print(f"  historian (Parquet): {h * 1e3:8.1f} ms   (integrate {integrate * 1e3:.1f} ms)")
        print(f"  seed (one JSON)    : {j * 1e3:8.1f} ms")
        print(f"  speedup            : {j / h:8.1f}x   (target >= 20x)")
        print(f"summary() alone, analyses recomputed: median {statistics.median(cold_summary) * 1e3:.1f} ms, "
              f"max {max(cold_summary) * 1e3:.1f} ms   (target < 100 ms); CPU time median "
              f"{statistics.median(cold_cpu) * 1e3:.1f} ms (process CPU time: wall time also counts waiting for a CPU on a shared machine)")
        print(f"summary: best {summary.best_value:.4f} ({summary.best_experiment_id}), "
              f"{len(summary.patterns)} patterns, {len(summary.constraints)} learned constraints, "
              f"{summary.gpu_hours_used:.0f} GPU hours")
        print(f"headline: historian_speedup_vs_json={j / h:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
