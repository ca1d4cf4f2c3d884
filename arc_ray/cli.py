"""The ``arc`` command (a first cut: the orchestrator issue fills in the loop)."""

from __future__ import annotations

import argparse
import sys

from arc_ray.configgen import ExperimentConfigGenerator
from arc_ray.errors import ArcError
from arc_ray.study import StudyConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arc", description="ARC on Ray: autonomous research loop")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the autonomous loop for a study")
    run.add_argument("config")
    run.add_argument("--cycles", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        study = StudyConfig.from_yaml(args.config)
        gen = ExperimentConfigGenerator(study)
        path = gen.write_config("baseline", gen.generate_config("baseline", {}, write=False))
        print(f"study {study.name}: baseline config validated and written to {path}")
    except ArcError as exc:
        print(f"arc: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
