"""Connecting to Ray, secure by default: a local instance or an existing cluster.

Ray 2.60's token authentication guards both the GCS (gRPC) and the dashboard (HTTP,
``Authorization: Bearer <token>``). A local start here always turns it on and binds
the dashboard to 127.0.0.1 unless asked otherwise. Connecting to an existing cluster
(``address=`` or ``RAY_ADDRESS``) turns token mode on in this process too, because
``ray.init(address=...)`` does not (it only does so for a cluster it finds by itself),
and then checks the address before ``ray.init`` is called: ``ray.init`` waits minutes
on an address nobody listens on and, with a wrong token, retries for 20 s and ends in
a ``ConnectionError`` that never says why. Here both fail in seconds with a
:class:`~arc_ray.errors.ClusterConnectionError` that says what to fix.

The token is found where Ray looks for it, in this order: ``RAY_AUTH_TOKEN``, the file
named by ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.

:class:`RayNode` starts a Ray node (``ray start --block``) as a child process group,
so a head and workers can run side by side on one machine (multi-node tests, a
cluster for a notebook) and be stopped, or killed like a failed machine, by id:
never with ``ray stop``, which ends every Ray process of the user on the machine.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from arc_ray.errors import ClusterConnectionError

logger = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")
DASHBOARD_HOST = "127.0.0.1"  # loopback: reach it through `ray dashboard` / an SSH tunnel


# ------------------------------------------------------------------------- token


def token_path() -> Path:
    """The file Ray reads the token from: ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    return Path(os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH).expanduser()


def auth_token() -> str | None:
    """The token this process presents, found as Ray finds it; ``None`` when there is none."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    path = token_path()
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def ensure_token() -> str:
    """Return the token, first writing a new random one to :func:`token_path` if none exists.

    The file is created with mode 0600: whoever reads it can run code on the cluster.
    """
    token = auth_token()
    if token:
        return token
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)  # 256 bits, the same as `ray get-auth-token --generate`
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    logger.info("wrote a new Ray authentication token to %s", path)
    return token


def auth_headers(token: str | None = None) -> dict[str, str]:
    """HTTP headers for the dashboard and job API: ``{"Authorization": "Bearer <token>"}``.

    Raises:
        ClusterConnectionError: no token is given and none can be found.
    """
    token = token or auth_token()
    if not token:
        raise ClusterConnectionError(
            "no Ray authentication token: set RAY_AUTH_TOKEN, or put the cluster's token in "
            f"{token_path()} (`ray get-auth-token` prints it on the head node)")
    return {"Authorization": f"Bearer {token}"}


def _enable_token_mode() -> bool:
    """Turn token mode on for this process and its children, unless the user turned it off."""
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None and mode.lower() != "token":
        logger.warning("%s=%s: Ray token authentication is off at the user's request; anyone "
                       "who can reach the cluster can run code on it", AUTH_MODE_ENV, mode)
        return False
    if mode is None:
        os.environ[AUTH_MODE_ENV] = "token"
        from ray._raylet import Config

        Config.initialize("")  # Ray caches its config; re-read it, as ray.init does
    return True


# ---------------------------------------------------------------------- checks


def _split_host_port(address: str) -> tuple[str, int]:
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterConnectionError(
            f"cannot connect to Ray at {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), "
            "'auto' or 'ray://HOST:PORT'")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout_s: float) -> None:
    host, port = _split_host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterConnectionError(
            f"cannot reach the Ray cluster at {address}: {reason} (is the head node up, "
            "and is this the GCS port, 6379 by default?)") from None


def _check_gcs(address: str, timeout_s: float) -> None:
    """Ask the GCS for its cluster id: proves it is a Ray GCS and that it accepts our token.

    ``GcsClient`` retries for up to a minute on a port that is not a GCS; it releases
    the GIL while it waits, so a daemon thread bounds the wait.
    """
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            outcome["cluster_id"] = GcsClient(address=address).cluster_id
        except Exception as exc:  # noqa: BLE001 - classified below
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="arc-gcs-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ClusterConnectionError(
            f"{address} accepts connections but did not answer as a Ray GCS within "
            f"{timeout_s:g} s (wrong port? the head's GCS port is 6379 by default)")
    error = outcome.get("error")
    if isinstance(error, AuthenticationError):
        if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
            why = f"{AUTH_MODE_ENV}={os.environ.get(AUTH_MODE_ENV)} turns tokens off here"
        else:
            why = "no token was found" if auth_token() is None else "the token is wrong"
        raise ClusterConnectionError(
            f"the Ray cluster at {address} refused our authentication token ({why}); use "
            f"the cluster's token (RAY_AUTH_TOKEN, or the file {token_path()})") from None
    if error is not None:
        raise ClusterConnectionError(f"the Ray cluster at {address} did not answer: {error}") from None


def check_cluster(address: str, timeout_s: float = 10.0) -> None:
    """Check that ``address`` is a reachable Ray cluster that accepts this process's token.

    Args:
        address: the head's GCS ``HOST:PORT``, or ``ray://HOST:PORT`` (Ray Client; only
            reachability is checked).
        timeout_s: how long to wait for an answer.

    Raises:
        ClusterConnectionError: malformed, unreachable, not a Ray GCS, or the token is refused.
    """
    _enable_token_mode()
    if address.startswith(("http://", "https://")):
        raise ClusterConnectionError(
            f"{address} is a dashboard / job-submission address; connect to the GCS "
            "(HOST:6379) or use `ray job submit --address " + address + " -- ...`")
    _check_reachable(address, min(timeout_s, 5.0))
    if os.environ.get(AUTH_MODE_ENV, "").lower() == "token" and auth_token() is None:
        # Ray aborts the whole process when asked to send a token it does not have.
        raise ClusterConnectionError(
            f"cannot authenticate to the Ray cluster at {address}: no token was found; put "
            f"the cluster's token in {token_path()} or RAY_AUTH_TOKEN (`ray get-auth-token` "
            "prints it on the head node)")
    if not address.startswith("ray://"):
        _check_gcs(address, timeout_s)


def check_dashboard(url: str, token: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """Call the dashboard's ``/api/version`` with the token, as the job API would.

    Returns:
        The decoded JSON answer (Ray version, ...).

    Raises:
        ClusterConnectionError: unreachable, or the token is missing (401) or wrong (403).
    """
    import json

    url = url if "://" in url else f"http://{url}"
    request = urllib.request.Request(url.rstrip("/") + "/api/version", headers=auth_headers(token))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ClusterConnectionError(
                f"the Ray dashboard at {url} refused our token (HTTP {exc.code}); use the "
                f"cluster's token (RAY_AUTH_TOKEN, or the file {token_path()})") from None
        raise ClusterConnectionError(f"the Ray dashboard at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClusterConnectionError(f"cannot reach the Ray dashboard at {url}: {exc}") from None


# ---------------------------------------------------------------------- connect


def connect(address: str | None = None, *, namespace: str | None = None,
            dashboard: bool = True, dashboard_host: str = DASHBOARD_HOST,
            log_to_driver: bool = False, timeout_s: float = 10.0,
            **init_kwargs: Any) -> dict[str, Any]:
    """Connect this process to a Ray cluster, or start a local Ray in it.

    Args:
        address: the head's GCS ``HOST:PORT``, ``auto`` (a cluster started on this
            machine) or ``ray://HOST:PORT``; default ``RAY_ADDRESS``; when neither is
            set (or ``"local"``), a local Ray is started.
        namespace: the Ray namespace (named actors of one study live in one).
        dashboard: start the dashboard with a local Ray.
        dashboard_host: the dashboard's bind address for a local Ray; 127.0.0.1 keeps
            it off the network (``0.0.0.0`` exposes it, protected only by the token).
        log_to_driver: stream workers' output (trial logs) to this process.
        timeout_s: how long the pre-connection checks wait for an answer.
        **init_kwargs: passed to ``ray.init`` (``num_cpus``, ``num_gpus``, ... for a
            local start).

    Returns:
        ``{"address": gcs address, "dashboard_url": url or None, "started": bool}``.

    Raises:
        ClusterConnectionError: the address is malformed or unreachable, is not a Ray
            cluster, or refuses our token.
    """
    import ray

    if ray.is_initialized():
        return {"address": ray.get_runtime_context().gcs_address,
                "dashboard_url": _dashboard_url(None), "started": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"namespace": namespace, "log_to_driver": log_to_driver,
                              "configure_logging": False, **init_kwargs}
    local = address in (None, "local")
    if _enable_token_mode() and local:
        ensure_token()
    if local:
        kwargs.update(include_dashboard=dashboard, dashboard_host=dashboard_host)
        if dashboard_host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("the Ray dashboard listens on %s, reachable from the network",
                           dashboard_host)
    elif address != "auto":
        check_cluster(address, timeout_s)
    try:
        # "local": a new instance even if `ray start` left a cluster for ray.init to find
        info = ray.init(address="local" if local else address, **kwargs)
    except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ClusterConnectionError(
            f"cannot connect to the Ray cluster at {address or 'a new local instance'}: "
            f"{type(exc).__name__}: {first}") from exc
    gcs = getattr(info, "address_info", {}).get("gcs_address") or address
    return {"address": gcs, "dashboard_url": _dashboard_url(info), "started": local}


def _dashboard_url(info: Any | None) -> str | None:
    url = getattr(info, "dashboard_url", None) if info is not None else None
    if not url:
        try:
            from ray._private.worker import get_dashboard_url

            url = get_dashboard_url()
        except Exception:  # noqa: BLE001 - no dashboard is a normal state
            url = None
    if url and "://" not in url:
        url = f"http://{url}"
    return url or None


# ------------------------------------------------------------------ local nodes


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
    import json

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


__all__ = [
    "RayNode",
    "auth_headers",
    "auth_token",
    "check_cluster",
    "check_dashboard",
    "connect",
    "ensure_token",
    "free_port",
    "start_node",
    "token_path",
]
