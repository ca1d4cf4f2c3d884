"""Chaos: a study runs to its end while worker nodes, the driver and the historian die.

In the manner of Ray Tune's worker fault-tolerance release test: a local cluster of a
head and two worker nodes (one CPU each, distinct loopback addresses), a checkpointing
study of 4 cycles x 4 trials, and a seeded schedule of SIGKILLs — a whole worker node
(restarted a few seconds later), the driver (``arc run``, restarted by the test), and
the historian actor (killed through Ray, as a crash of its process would). The test runs
the study until the driver exits 0 with the cycle budget spent, then checks the
history against what really ran:

- every approved experiment has exactly one trial row, and no other experiment has one;
- no trial ran to completion twice (the trainable appends an ``end`` line to a side-effect
  file when a run finishes);
- cycles are numbered 1..N with no gap, each logged once;
- the learned constraints and the director's recorded modes agree with the history read
  afresh (a fresh read-only summary, and the strategy kept for each cycle).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from _ray_nodes import read_events, start_node

ROOT = Path(__file__).resolve().parent.parent
ARC = str(Path(sys.executable).with_name("arc"))
CYCLES, PER_CYCLE = 4, 4

STUDY = {
    "name": "chaos",
    "trainable": "trainables.toy:train",
    "metric": "score",
    "mode": "max",
    "baseline": {"x": 0.0, "lr": 0.01, "model": "small", "layers": 2, "epochs": 3,
                 "train_split": 0.8, "val_split": 0.2, "sleep_s": 0.8},
    "search_space": {"x": {"type": "float", "low": -1.0, "high": 1.0},
                     "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
                     "model": {"type": "categorical", "choices": ["small", "medium", "large"]},
                     "layers": {"type": "int", "low": 1, "high": 6}},
    "executor": "tune",
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent_trials": 3,
    "trial_timeout_s": 120,
    "max_failures": 6,
    "budget": {"max_cycles": CYCLES, "trials_per_cycle": PER_CYCLE},
    "proposers": {"proposals_per_cycle": 6},
}

KILL_HISTORIAN = textwrap.dedent("""
    import sys, ray
    from arc_ray.cluster import connect
    connect(sys.argv[1], namespace="arc-chaos")  # with the cluster's token, as the driver
    try:
        ray.kill(ray.get_actor("historian"), no_restart=False)
        print("killed")
    except ValueError:
        print("absent")
""")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_study_survives_random_kills_of_nodes_driver_and_historian(tmp_path):
    rng = random.Random(int(os.environ.get("ARC_CHAOS_SEED", "7")))
    events_file = tmp_path / "events.jsonl"
    study = dict(STUDY, storage=str(tmp_path / "history"))
    study["baseline"] = dict(STUDY["baseline"], events_file=str(events_file))
    study_file = tmp_path / "chaos.yaml"
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))

    fast_failure = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    tag = f"{os.getpid()}"
    head = start_node(head=True, temp_dir=f"/tmp/arc-ch-{tag}-h", num_cpus=1, env=fast_failure)
    workers: dict[str, object] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "ARC_STORAGE")}
    env["RAY_ADDRESS"] = head.address
    kills = {"worker_node": 0, "driver": 0, "historian": 0}
    driver = None
    log_path = tmp_path / "driver.log"

    def start_worker(ip: str) -> None:
        workers[ip] = start_node(head=False, address=head.address, temp_dir=f"/tmp/arc-ch-{tag}-{ip[-1]}",
                                 node_ip=ip, num_cpus=1, env=fast_failure)

    def start_driver() -> subprocess.Popen:
        with open(log_path, "a") as log:
            log.write(f"\n==== driver start {time.time():.1f}\n")
            log.flush()
            return subprocess.Popen([ARC, "run", str(study_file)], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

    try:
        for ip in ("127.0.0.2", "127.0.0.3"):
            start_worker(ip)
        driver = start_driver()
        deadline = time.time() + 780
        next_chaos = time.time() + rng.uniform(6, 12)
        down: dict[str, float] = {}  # worker ip -> when to restart it
        bag: list[str] = []
        while True:
            assert time.time() < deadline, log_path.read_text()[-4000:]
            for ip, when in list(down.items()):
                if time.time() >= when:
                    start_worker(ip)
                    del down[ip]
            code = driver.poll()
            if code is not None:
                if code == 0:
                    break
                # a driver that died of the chaos (its historian gone mid-call) is restarted
                driver = start_driver()
            if time.time() >= next_chaos:
                if not bag:  # every kind of kill in each round, in a random order; the first
                    # three kills are one of each kind, so a fast machine that ends the study
                    # after three still sees every fault
                    kinds = ["worker_node", "driver", "historian"]
                    rng.shuffle(kinds)
                    bag = ["worker_node", *kinds]  # popped from the end
                what = bag.pop()
                if what == "worker_node":
                    alive = [ip for ip in workers if ip not in down]
                    if alive:
                        ip = rng.choice(alive)
                        workers[ip].kill()
                        down[ip] = time.time() + rng.uniform(2, 6)
                        kills[what] += 1
                elif what == "driver" and driver.poll() is None:
                    driver.kill()
                    driver.wait(timeout=30)
                    kills[what] += 1
                    driver = start_driver()
                elif what == "historian":
                    done = subprocess.run([sys.executable, "-c", KILL_HISTORIAN, head.address], env=env,
                                          cwd=ROOT, capture_output=True, text=True, timeout=60)
                    kills[what] += "killed" in done.stdout
                    assert "killed" in done.stdout or "absent" in done.stdout, done.stderr[-3000:]
                next_chaos = time.time() + rng.uniform(6, 14)
            time.sleep(0.3)
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        for node in workers.values():
            node.stop()
        head.stop()
        for suffix in ("h", "2", "3"):
            shutil.rmtree(f"/tmp/arc-ch-{tag}-{suffix}", ignore_errors=True)

    print(f"chaos kills: {kills}")
    output = log_path.read_text()
    assert sum(kills.values()) >= 3, (kills, output[-3000:])
    assert all(n >= 1 for n in kills.values()), (kills, output[-3000:])  # each kind of fault happened

    from arc_ray.historian import HistoryReader
    from arc_ray.study import StudyConfig

    reader = HistoryReader(StudyConfig.from_yaml(study_file))
    trials = reader.trials_table().to_pylist()
    decisions = reader.decisions_table().to_pylist()
    cycles = reader.cycles_table().to_pylist()

    approved = sorted(d["experiment_id"] for d in decisions if d["outcome"] in ("approved", "repaired"))
    ids = [t["experiment_id"] for t in trials]
    assert sorted(ids) == approved, "each approved experiment has exactly one trial row"
    assert len(ids) == len(set(ids)) == CYCLES * PER_CYCLE

    ends: dict[str, int] = {}
    for e in read_events(events_file):
        if e["event"] == "end":
            ends[e["experiment_id"]] = ends.get(e["experiment_id"], 0) + 1
    assert all(n == 1 for n in ends.values()), {k: n for k, n in ends.items() if n > 1}
    assert sorted(ends) == approved  # every trial ran to completion, once

    cycle_ids = [c["cycle_id"] for c in cycles]
    assert sorted(cycle_ids) == list(range(1, CYCLES + 1)), cycle_ids

    summary = reader.summary()
    assert summary.n_trials == CYCLES * PER_CYCLE
    stored = {c["id"] for c in reader.constraints_table().to_pylist()
              if c["active"] and c["source"] != "declared"}
    learned = {c.id for c in summary.constraints if c.source != "declared"}
    assert stored == learned
    modes = {c["cycle_id"]: c["mode"] for c in cycles}
    strategies = Path(study["storage"], "chaos", "strategies")
    for cid, mode in modes.items():
        kept = json.loads((strategies / f"cycle_{cid:04d}.json").read_text())
        assert kept["mode"] == mode, (cid, kept, mode)
