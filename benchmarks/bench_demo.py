"""Does the demo study's best improve after its first cycle? Over several study seeds.

`make demo` runs three cycles of ``configs/fundus-cpu.yaml`` (timm models on synthetic
fundus images, three trials a cycle on two slots). A user who watches it wants the best
to move after the first cycle, which explores with nothing known. This runs the same
study, unchanged but for ``seed`` (the agents' seed) and a fresh storage folder, for
``--seeds`` seeds of ``--cycles`` cycles each, one local Ray for all, and prints per seed
the best after each cycle and whether the best after cycle 1 was beaten later.

Prints the share of seeds whose best improved after cycle 1 and
``headline: demo_improves_after_cycle1=<share>``.

Run: ``.venv/bin/python benchmarks/bench_demo.py [--seeds 3] [--cycles 3] [--keep DIR]``
(about 4-7 min a seed on 2 CPU cores; ``--keep`` leaves each seed's history in ``DIR``
for ``arc report``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "fundus-cpu.yaml"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--out", help="write the per-seed results as JSON here")
    ap.add_argument("--keep", help="keep each seed's history under this folder (default: a temporary one)")
    args = ap.parse_args()

    import ray

    from arc_ray import run_study
    from arc_ray.study import StudyConfig

    base = StudyConfig.from_yaml(args.config)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_demo-") as scratch:
        tmp = args.keep or scratch
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            study = base.model_copy(update={"seed": seed, "name": f"{base.name}_seed{seed}",
                                            "storage": str(Path(tmp) / f"seed{seed}")})
            t0 = time.perf_counter()
            report = run_study(study, cycles=args.cycles)
            wall = time.perf_counter() - t0
            bests = [c.best_value for c in report.cycles]  # the study's best after each cycle
            first = bests[0]
            improved = first is not None and bests[-1] is not None and study.sign * (bests[-1] - first) > 0
            improved = improved or (first is None and bests[-1] is not None)
            modes = [c.strategy.mode.value if c.strategy else "?" for c in report.cycles]
            rows.append({"seed": seed, "bests": bests, "improved": improved, "modes": modes, "wall_s": wall})
            shown = " → ".join("—" if b is None else f"{b:.4f}" for b in bests)
            print(f"seed {seed}: best {shown}  modes {'/'.join(modes)}  "
                  f"{'improved' if improved else 'no gain'} after cycle 1  ({wall:.0f} s)", flush=True)
    ray.shutdown()
    share = sum(r["improved"] for r in rows) / len(rows)
    gains = [base.sign * (r["bests"][-1] - r["bests"][0]) for r in rows
             if r["bests"][0] is not None and r["bests"][-1] is not None]
    gain = f"{statistics.median(gains):+.4f}" if gains else "n/a"
    print(f"improved after cycle 1: {sum(r['improved'] for r in rows)}/{len(rows)} seeds; "
          f"median gain {gain}; median wall {statistics.median(r['wall_s'] for r in rows):.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"headline: demo_improves_after_cycle1={share:.2f}")


if __name__ == "__main__":
    main()
