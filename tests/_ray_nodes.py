"""Ray nodes side by side on one machine: the multi-node and security tests' harness.

:func:`start_node` starts a Ray node (``ray start --block``) as a child process group,
with token authentication on, free ports and its own temp folder, so a head and workers
run beside the test session's own Ray and can be stopped, or killed like a failed
machine (:meth:`RayNode.kill`), by id: never with ``ray stop``, which ends every Ray
process of the user on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from arc_ray.cluster import AUTH_MODE_ENV, DASHBOARD_HOST, TOKEN_ENV, check_dashboard, ensure_token
from arc_ray.errors import ClusterConnectionError

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (small race: take it soon)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RayNode:
    """A Ray node run by ``ray start --block`` in its own process group.

    Stopping sends SIGTERM to the group (``ray start --block`` then stops its Ray
    processes); :meth:`kill` sends SIGKILL to every process of the node at once, the
    way a machine failure looks to the rest of the cluster.
    """

    process: subprocess.Popen
    address: str  # the cluster's GCS HOST:PORT
    temp_dir: str
    head: bool
    node_ip: str
    dashboard_url: str | None = None
    metrics_export_port: int | None = None
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the leader's pid is the group id

    def pids(self) -> list[int]:
        """Every live process of this node: its process group and their descendants.

        Ray starts each worker process in a process group of its own, under the raylet,
        so the group alone would miss the trials.
        """
        procs = _process_table()
        members = {pid for pid, (_, pgid, state) in procs.items() if pgid == self.pgid and state != "Z"}
        frontier = list(members)
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _, state) in procs.items():
                if ppid == parent and pid not in members and state != "Z":
                    members.add(pid)
                    frontier.append(pid)
        return sorted(members)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL every process of the node at once (a node failure)."""
        deadline = time.time() + 10
        while (pids := self.pids()) and time.time() < deadline:
            for pid in pids:  # again until none is left: one may have been forking just now
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the node gracefully, then SIGKILL whatever is left of its group."""
        if self.alive():
            # SIGTERM to `ray start --block` alone: it then stops its Ray processes in order
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("Ray node %s did not stop in %g s; killing it", self.address, timeout_s)
        deadline = time.time() + 5
        while self.pids() and time.time() < deadline:
            time.sleep(0.2)
        self.kill()


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, pgid, state) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def start_node(*, head: bool, temp_dir: str, address: str | None = None,
               port: int | None = None, node_ip: str = "127.0.0.1",
               num_cpus: float = 1, num_gpus: float = 0,
               resources: Mapping[str, float] | None = None,
               dashboard: bool = False, dashboard_port: int | None = None,
               env: Mapping[str, str] | None = None, timeout_s: float = 90.0) -> RayNode:
    """Start a Ray head or worker node on this machine, token authentication on.

    Every port that Ray would otherwise take at a fixed default (GCS 6379, dashboard
    8265, agent 52365, client 10001) is a free one, and the node keeps its files in
    ``temp_dir``, so it never collides with, or is picked up by, a ``ray.init()`` of
    another process on the machine.

    Args:
        head: start a head node (else a worker joining ``address``).
        temp_dir: the node's Ray temp folder (short: Unix socket paths are limited).
        address: the head's GCS ``HOST:PORT`` for a worker node.
        port: the head's GCS port; default a free one.
        node_ip: the address the node advertises; distinct loopback addresses
            (127.0.0.2, ...) tell nodes on one machine apart in results.
        num_cpus, num_gpus, resources: what the node offers the scheduler.
        dashboard, dashboard_port: start the dashboard (head only), on 127.0.0.1.
        env: extra environment for the node's processes.
        timeout_s: how long to wait for the node to come up.

    Returns:
        The running node.

    Raises:
        ClusterConnectionError: the node did not come up (its log is named).
    """
    if not head and not address:
        raise ValueError("a worker node needs the head's address")
    node_env = dict(os.environ)
    node_env.pop("RAY_ADDRESS", None)
    node_env[AUTH_MODE_ENV] = "token"
    node_env.update(env or {})
    if TOKEN_ENV not in node_env:
        ensure_token()
    os.makedirs(temp_dir, exist_ok=True)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           f"--node-ip-address={node_ip}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--metrics-export-port={(metrics_port := free_port())}"]
    if resources:
        cmd.append(f"--resources={json.dumps(dict(resources))}")
    dashboard_url = None
    if head:
        port = port or free_port()
        address = f"{node_ip}:{port}"
        cmd += ["--head", f"--port={port}", f"--ray-client-server-port={free_port()}"]
        if dashboard:
            dashboard_port = dashboard_port or free_port()
            cmd += ["--include-dashboard=true", f"--dashboard-host={DASHBOARD_HOST}",
                    f"--dashboard-port={dashboard_port}"]
            dashboard_url = f"http://{DASHBOARD_HOST}:{dashboard_port}"
        else:
            cmd.append("--include-dashboard=false")
    else:
        cmd.append(f"--address={address}")
    log_path = os.path.join(temp_dir, f"ray-start-{'head' if head else 'worker'}-{time.time_ns()}.log")
    marker = os.path.join(temp_dir, "ray_current_cluster")  # written once the node is up
    if os.path.exists(marker):
        os.remove(marker)
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=node_env,
                                   start_new_session=True, cwd=temp_dir)
    node = RayNode(process=process, address=str(address), temp_dir=temp_dir, head=head,
                   node_ip=node_ip, dashboard_url=dashboard_url, metrics_export_port=metrics_port,
                   log_path=log_path, env={k: node_env[k] for k in (AUTH_MODE_ENV,)})
    deadline = time.time() + timeout_s
    while not os.path.exists(marker):
        if process.poll() is not None or time.time() > deadline:
            node.stop()
            tail = Path(log_path).read_text()[-2000:]
            raise ClusterConnectionError(
                f"the Ray {'head' if head else 'worker'} node did not start "
                f"(log {log_path}):\n{tail}")
        time.sleep(0.3)
    if head:  # the address Ray settled on (it swaps 127.0.0.1 for the machine's address)
        node.address = Path(marker).read_text().strip() or node.address
    if dashboard_url:
        while True:  # the dashboard comes up a little after the GCS
            try:
                check_dashboard(dashboard_url, node_env.get(TOKEN_ENV), timeout_s=2)
                break
            except ClusterConnectionError:
                if time.time() > deadline:
                    node.stop()
                    raise
                time.sleep(0.5)
    logger.info("started Ray %s node at %s (pgid %d)", "head" if head else "worker",
                address, node.pgid)
    return node


def read_events(path: Path) -> list[dict]:
    """The JSON lines a trainable appended to its events file (none yet: ``[]``)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
