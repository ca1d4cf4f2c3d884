"""Decision time per cycle — historian summary to approved decisions — with a 1,000-trial history.

The flagship study (``configs/arc.yaml``: its search space, baseline, constraints and
the timm trainable's ``Config``) gets a synthetic history of 1,000 trials (about one in
seven failing: out of memory at large batch × image size, diverging at high learning
rates; 1–10 minutes each, so the study's GPU-hour budget is not spent) in the real
historian. Then cycles run: ``historian.summary()`` and
``trials_table()``, ``Collective.decide`` (director, four proposers, critic with the
world model, vote, supervisor writing the approved configs), and the approved
experiments are scored by the synthetic response and integrated, so the history grows
as in a real study. Timed: summary → approved decisions.

Two ways of holding the agents alternate cycle by cycle:

- **warm**: one set of agents for the whole run, as the orchestrator's actors are (the
  Bayesian proposer keeps its Optuna study, the critic its world model between
  refits);
- **cold**: agents built afresh every cycle (every cache rebuilt from the history).

Agents run as plain objects in this process, one after another (with Ray actors the
proposers and voters run in parallel, so this is the slower bound). Prints medians,
the phase breakdown and the ratio, and ends with the warm median.

Run: ``.venv/bin/python benchmarks/bench_decision.py`` (``--cycles 4`` for a quick look).
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
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arc_ray.agents import Collective, build_agents  # noqa: E402
from arc_ray.errors import TrainingDivergedError, TrainingOutOfMemoryError  # noqa: E402
from arc_ray.executor import InProcessExecutor  # noqa: E402
from arc_ray.historian import Historian  # noqa: E402
from arc_ray.records import ErrorClass, JobStatus, TrialResult  # noqa: E402
from arc_ray.space import flatten_config, unflatten_config  # noqa: E402
from arc_ray.study import StudyConfig  # noqa: E402

from _poll import wait_for  # noqa: E402

HISTORY = 1000
_MODEL = {"efficientnet_b0": 0.0, "efficientnet_b3": 0.02, "efficientnet_b5": 0.03, "resnet50": 0.01,
          "vit_base_patch16_224": 0.025, "resnet18": -0.02}
_MEM = {"efficientnet_b0": 1.0, "efficientnet_b3": 2.0, "efficientnet_b5": 4.0, "resnet50": 2.0,
        "vit_base_patch16_224": 4.0, "resnet18": 0.7}


def response(config: dict[str, Any]) -> dict[str, float]:
    """A glaucoma-screening-like AUC over the flagship space, with OOM and divergence regions."""
    f = flatten_config(config)
    if f["batch_size"] * f["image_size"] * _MEM[f["model"]] > 80000:
        raise TrainingOutOfMemoryError("CUDA out of memory")
    if f["learning_rate"] > (0.8 if f["optimizer"] == "sgd" else 0.3):
        raise TrainingDivergedError("loss is nan")
    auc = (0.86 + _MODEL[f["model"]] - 0.02 * (math.log10(f["learning_rate"]) + 3) ** 2
           + 0.02 * math.log2(f["image_size"] / 32) / 3.6 - 0.1 * (f["dropout"] - 0.2) ** 2
           - 0.01 * abs(math.log10(f["weight_decay"]) + 4) / 2 + 0.005 * f["augmentation.flip"])
    return {"auc": min(auc, 0.999)}


def synthetic_history(study: StudyConfig, n: int, seed: int = 0) -> list[TrialResult]:
    rng = np.random.default_rng(seed)
    base = flatten_config(study.baseline)
    out = []
    while len(out) < n:
        flat = {**base, **{k: v for k, v in study.search_space.sample(rng).items()
                           if k not in study.proposers.exclude}}
        if any(c.forbids(flat) for c in study.constraints):
            continue
        config, i = unflatten_config(flat), len(out)
        common = dict(experiment_id=f"hist-{i:04d}", cycle_id=i // 4, config=config,
                      duration_s=float(rng.uniform(60, 600)), proposer="history")
        try:
            out.append(TrialResult(status=JobStatus.COMPLETED, metrics=response(config), **common))
        except (TrainingOutOfMemoryError, TrainingDivergedError) as exc:
            cls = ErrorClass.OOM if isinstance(exc, TrainingOutOfMemoryError) else ErrorClass.DIVERGED
            out.append(TrialResult(status=JobStatus.FAILED, error_class=cls, error_message=str(exc), **common))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10, help="cycles per variant")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="arc-bench-decision-")
    try:
        study = StudyConfig.from_yaml(ROOT / "configs" / "arc.yaml").model_copy(update={"storage": tmp})
        historian = Historian(study, compact_every=None)
        history = synthetic_history(study, HISTORY)
        for c in range(history[-1].cycle_id + 1):  # cycle by cycle, as a study writes it
            historian.integrate_experiment_results([r for r in history if r.cycle_id == c], cycle_id=c)
        historian.compact()
        n_failed = sum(r.status == JobStatus.FAILED for r in history)
        print(f"history: {HISTORY} trials ({n_failed} failed) of study {study.name!r}, "
              f"{len(study.search_space)} parameters; agents as plain objects, sequential")
        executor = InProcessExecutor(study, trainable=response)
        warm = Collective(study)
        Collective(study).decide(0, historian.summary(), historian.trials_table())  # imports, config model
        times: dict[str, list[float]] = {"warm": [], "cold": []}
        phases: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
        cycle = history[-1].cycle_id + 1
        for k in range(2 * args.cycles):
            variant = "warm" if k % 2 == 0 else "cold"
            t0 = time.perf_counter()
            summary, table = historian.summary(), historian.trials_table()
            t_summary = time.perf_counter() - t0
            collective = warm if variant == "warm" else Collective(study, build_agents(study))
            decided = collective.decide(cycle, summary, table)
            times[variant].append(time.perf_counter() - t0)
            phases[variant].append({"summary": t_summary, **decided.timings})
            approved = decided.approved
            executor.submit_batch(approved, cycle)
            wait_for(executor, [d.experiment_id for d in approved], timeout=60)
            historian.integrate_experiment_results([executor.collect_results(d.experiment_id) for d in approved], cycle)
            print(f"cycle {cycle} ({variant}): {times[variant][-1]:.3f} s, {decided.strategy.mode.value}, "
                  f"{len(decided.proposals)} proposals → {len(approved)} approved; "
                  + ", ".join(f"{p} {s:.3f}" for p, s in phases[variant][-1].items()), flush=True)
            cycle += 1
        executor.shutdown()
        # The historian analyses a new history version once (inside integrate, which the
        # timing above leaves out); this is that analysis plus reading the Parquet files.
        t0 = time.perf_counter()
        Historian(study, compact_every=None).summary()
        fresh_summary = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    for v in ("warm", "cold"):
        by_phase = {p: statistics.median(ph[p] for ph in phases[v]) for p in phases[v][0]}
        print(f"{v}: median {med[v]:.3f} s, mean {statistics.mean(times[v]):.3f} s, max {max(times[v]):.3f} s "
              f"over {len(times[v])} cycles; phases (median) "
              + ", ".join(f"{p} {s:.3f}" for p, s in by_phase.items()))
    print(f"cold / warm = {med['cold'] / med['warm']:.2f}x; a fresh historian's summary() (read + analysis) "
          f"takes {fresh_summary:.3f} s, not in the figures above (integration computes it)")
    print(f"headline: decision_time_s={med['warm']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
