"""What one cycle costs beyond its trials: the orchestrator's own time, and the whole cycle
against the executor alone running the same trials.

Setup: the toy study (``trainables.toy:train``, a Ray Tune function trainable) with
no-op trials (one epoch, no sleep), four trials per cycle, on a local Ray with 2 CPUs,
over a history of 1,000 trials (100 cycles, written through the historian first).

Each round runs, alternating:

* **cycle**: ``Orchestrator.run_autonomous_cycle()``: summary, decide (director,
  proposers, critic with the world model, vote, supervisor; all actors), log decisions,
  submit, wait, collect, integrate, log the cycle, telemetry;
* **executor alone**: a ``TrainingExecutor`` given the same approved decisions
  (fresh ids): submit, wait, collect.

The orchestrator's own time is the cycle's wall time minus the time spent inside the
executor (submit + wait + collect). Prints medians, the ratio cycle / executor alone,
and ``headline: orchestrator_overhead_s=<median>``.

Run: ``.venv/bin/python benchmarks/bench_cycle.py [--rounds 5] [--history 1000]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

STUDY = """\
name: bench_cycle
trainable: trainables.toy:train
metric: score
mode: max
baseline: {{x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 1, train_split: 0.8, val_split: 0.2}}
search_space:
  x: {{type: float, low: -1.0, high: 1.0}}
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
  model: {{type: categorical, choices: [small, medium, large]}}
  layers: {{type: int, low: 1, high: 4}}
storage: {storage}
resources: {{cpu: 1, gpu: 0}}
max_concurrent_trials: 2
budget: {{trials_per_cycle: 4}}
proposers: {{proposals_per_cycle: 6}}
"""


def seed_history(study, n_trials: int, per_cycle: int = 10, seed: int = 0) -> None:
    """Write ``n_trials`` finished trials (with their decisions and cycle rows) via the historian."""
    from arc_ray.historian import Historian
    from arc_ray.records import (CycleReport, Decision, DecisionOutcome, JobStatus, Proposal, Strategy,
                                 StrategyMode, TrialResult)
    from arc_ray.space import flatten_config, unflatten_config
    from trainables.toy import objective

    h = Historian(study, compact_every=None)
    rng = np.random.default_rng(seed)
    base = flatten_config(study.baseline)
    for cycle in range(1, n_trials // per_cycle + 1):
        decisions, results = [], []
        for i in range(per_cycle):
            eid = f"c{cycle:04d}-seed-{i:02d}"
            changes = study.search_space.sample(rng)
            config = unflatten_config(base | changes) | {"experiment_id": eid}
            failed = rng.random() < 0.05
            decisions.append(Decision(experiment_id=eid, cycle_id=cycle, outcome=DecisionOutcome.APPROVED,
                                      decided_by="supervisor", reason="seeded",
                                      proposal=Proposal(experiment_id=eid, changes=changes, proposer="bayesian"),
                                      config=config))
            results.append(TrialResult(
                experiment_id=eid, cycle_id=cycle, config=config, proposer="bayesian",
                status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                error_class="crash" if failed else None,
                metrics={} if failed else objective(config), duration_s=1.0, iterations=1))
        h.log_decisions(decisions)
        h.integrate_experiment_results(results, cycle)
        h.log_cycle(CycleReport(study=study.name, cycle_id=cycle, decisions=decisions, results=results,
                                strategy=Strategy(mode=StrategyMode.EXPLORE, reason="seeded")))
    h.compact()


def executor_alone(study, decisions, cycle_id: int) -> float:
    """Wall time for a fresh executor to run the same approved decisions (fresh ids)."""
    from _poll import wait_for
    from arc_ray.executor import TrainingExecutor

    items = []
    for d in decisions:
        eid = f"peer{cycle_id}-{d.experiment_id}"[:64]
        items.append(d.model_copy(update={"experiment_id": eid, "cycle_id": cycle_id,
                                         "config": dict(d.config, experiment_id=eid)}))
    ex = TrainingExecutor(study)
    t0 = time.perf_counter()
    ex.submit_batch(items, cycle_id)
    ids = [d.experiment_id for d in items]
    wait_for(ex, ids, timeout=600)
    results = [ex.collect_results(i) for i in ids]
    elapsed = time.perf_counter() - t0
    ex.shutdown()
    assert all(r.status.value == "COMPLETED" for r in results), [r.error_message for r in results]
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--history", type=int, default=1000)
    args = parser.parse_args(argv)

    import ray

    from arc_ray.orchestrator import Orchestrator
    from arc_ray.study import StudyConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_cycle_"))
    path = tmp / "study.yaml"
    path.write_text(STUDY.format(storage=tmp / "history"))
    study = StudyConfig.from_yaml(path)
    t = time.perf_counter()
    seed_history(study, args.history)
    print(f"seeded a history of {args.history} trials in {time.perf_counter() - t:.1f} s ({study.study_dir})")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    orch = Orchestrator(study)

    orch.run_autonomous_cycle()  # warm-up: actors import their libraries, Tune starts once
    overhead, wall, alone, parts = [], [], [], {}
    for r in range(args.rounds):
        report = orch.run_autonomous_cycle()
        tm = dict(orch.timings)
        inside = tm.get("submit", 0.0) + tm.get("execute", 0.0)
        runnable = [d for d in report.decisions if d.outcome.runs()]
        overhead.append(report.duration_s - inside)
        wall.append(report.duration_s)
        for k, v in tm.items():
            parts.setdefault(k, []).append(v)
        alone.append(executor_alone(study, runnable, 9000 + r))
        print(f"round {r + 1}: cycle {report.cycle_id} ({len(runnable)} trials) {report.duration_s:.2f} s, "
              f"orchestrator {overhead[-1]:.3f} s, executor alone {alone[-1]:.2f} s")
    orch.shutdown(kill_actors=True)
    ray.shutdown()

    med = statistics.median
    print(f"history: {args.history} trials before the first timed cycle")
    print("orchestrator time per step (median s): "
          + ", ".join(f"{k} {med(v):.3f}" for k, v in parts.items()
                      if k not in ("submit", "execute") and not k.startswith("decide.")))
    print("  of which the collective's decide (median s): "
          + ", ".join(f"{k[7:]} {med(v):.3f}" for k, v in parts.items() if k.startswith("decide.")))
    print(f"median cycle wall time:          {med(wall):.2f} s")
    print(f"median executor-alone wall time: {med(alone):.2f} s")
    print(f"ratio cycle / executor alone:    {med(wall) / med(alone):.2f}")
    print(f"median orchestrator overhead:    {med(overhead):.3f} s per cycle (target < 1 s)")
    print(f"headline: orchestrator_overhead_s={med(overhead):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
