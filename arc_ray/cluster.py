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

Starting Ray nodes side by side on one machine (multi-node tests) is a test harness:
``tests/_ray_nodes.py``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


__all__ = [
    "auth_headers",
    "auth_token",
    "check_cluster",
    "check_dashboard",
    "connect",
    "ensure_token",
    "token_path",
]
