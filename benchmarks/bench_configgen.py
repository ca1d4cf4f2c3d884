"""Config generation: generate + validate + write 1,000 experiment configs.

Runs ARC's ``ExperimentConfigGenerator`` and a seed-style peer (deep-copy the baseline,
check ranges by hand, dump YAML with the pure-Python dumper and JSON, plain writes) over
the same 1,000 proposals, alternating in blocks, and prints the median time per config,
the ratio to the seed's reported ~10 ms, and the ratio to the peer.

    .venv/bin/python benchmarks/bench_configgen.py [--study configs/fundus-cpu.yaml] [--n 1000]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.records import Proposal
from arc_ray.space import flatten_config, unflatten_config
from arc_ray.study import StudyConfig

SEED_MS_PER_CONFIG = 10.0
ROOT = Path(__file__).resolve().parent.parent


def make_proposals(study: StudyConfig, n: int, seed: int = 0) -> list[Proposal]:
    rng = np.random.default_rng(seed)
    names = [k for k in study.search_space.names if k not in ("train_split", "val_split")]
    out = []
    for i in range(n):
        sample = study.search_space.sample(rng)
        picked = rng.choice(names, size=3, replace=False)
        out.append(Proposal(experiment_id=f"bench-{i:05d}", changes={k: sample[k] for k in picked},
                            proposer="bench"))
    return out


def seed_style(study: StudyConfig, out_dir: Path, proposal: Proposal) -> None:
    """What the seed did: deep copy, merge, hand checks, YAML + JSON written in place."""
    config = copy.deepcopy(study.baseline)
    flat = flatten_config(config)
    for key, value in flatten_config(proposal.changes).items():
        spec = study.search_space.params[key]
        if spec.type in ("float", "int") and not (spec.low <= value <= spec.high):
            raise ValueError(key)
        if spec.type == "categorical" and value not in spec.choices:
            raise ValueError(key)
        flat[key] = value
    config = unflatten_config(flat)
    folder = out_dir / proposal.experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "config.yaml", "w") as fh:
        yaml.dump(config, fh, Dumper=yaml.SafeDumper, default_flow_style=False)
    with open(folder / "config.json", "w") as fh:
        json.dump(config, fh, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--study", default=str(ROOT / "configs" / "fundus-cpu.yaml"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    base = StudyConfig.from_yaml(args.study)
    proposals = make_proposals(base, args.n)
    ours_ms: list[float] = []
    peer_ms: list[float] = []
    for r in range(args.rounds):
        for which in ("ours", "peer") if r % 2 == 0 else ("peer", "ours"):
            tmp = Path(tempfile.mkdtemp(prefix="arc-bench-configgen-"))
            try:
                study = base.model_copy(update={"storage": str(tmp)})
                gen = ExperimentConfigGenerator(study)
                gen.validate({})  # import the trainable's Config once, outside the timing
                per = []
                for p in proposals:
                    t0 = time.perf_counter()
                    if which == "ours":
                        gen.generate_config(p.experiment_id, p)
                    else:
                        seed_style(study, tmp / "seed", p)
                    per.append((time.perf_counter() - t0) * 1e3)
                (ours_ms if which == "ours" else peer_ms).append(statistics.median(per))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    ours, peer = statistics.median(ours_ms), statistics.median(peer_ms)
    print(f"study: {base.name}  configs per round: {args.n}  rounds: {args.rounds}")
    print(f"arc configgen (validate + atomic YAML+JSON): median {ours:.3f} ms/config "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ours_ms)})")
    print(f"seed-style peer (no atomicity, pure-Python YAML): median {peer:.3f} ms/config "
          f"(rounds: {', '.join(f'{x:.3f}' for x in peer_ms)})")
    print(f"ratio vs the seed's reported {SEED_MS_PER_CONFIG:.0f} ms/config: {SEED_MS_PER_CONFIG / ours:.1f}x faster")
    print(f"ratio vs the seed-style peer measured here: {peer / ours:.2f}x")
    print(f"headline: configgen_speedup_vs_seed={SEED_MS_PER_CONFIG / ours:.1f}")


if __name__ == "__main__":
    main()
