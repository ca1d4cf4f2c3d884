"""Security defaults: token authentication on, dashboard on 127.0.0.1, clear connection errors.

A head node with its dashboard runs as its own process group (``_ray_nodes.start_node``)
on free ports and its own temp dir, so it never meets the session's in-process Ray.
Connections are made from subprocesses: a process holds one Ray connection, and Ray
caches the token it read.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from arc_ray.cluster import (
    auth_headers,
    auth_token,
    check_cluster,
    check_dashboard,
    ensure_token,
    token_path,
)
from arc_ray.errors import ClusterConnectionError

from _ray_nodes import free_port, start_node

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ token files


def test_ensure_token_writes_a_private_random_token_once(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray" / "auth_token"))
    assert auth_token() is None
    token = ensure_token()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(os.stat(token_path()).st_mode) == 0o600
    assert ensure_token() == token and auth_token() == token
    assert auth_headers() == {"Authorization": f"Bearer {token}"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")  # the variable wins over the file, as in Ray
    assert auth_token() == "from-env"


def test_auth_headers_without_a_token_says_where_to_put_one(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterConnectionError, match="no Ray authentication token.*missing"):
        auth_headers()


# ------------------------------------------------------------- bad addresses


@pytest.mark.parametrize("address, message", [
    ("not-an-address", "expected HOST:PORT"),
    ("http://127.0.0.1:8265", "dashboard / job-submission address"),
])
def test_malformed_addresses_are_named(address, message, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what check_cluster sets; restored afterwards
    with pytest.raises(ClusterConnectionError, match=message):
        check_cluster(address)


def test_unreachable_address_fails_fast(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    port = free_port()
    start = time.time()
    with pytest.raises(ClusterConnectionError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_cluster(f"127.0.0.1:{port}")
    assert time.time() - start < 10


def test_connect_honours_ray_address():
    port = free_port()  # nobody listens: the error names the address taken from RAY_ADDRESS
    out, elapsed = _run(_CONNECT.format(address=None), {"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert out["error"].startswith(f"cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert elapsed < 20


# ----------------------------------------------------------- a live head node


@pytest.fixture(scope="module")
def head():
    """A head node with its dashboard, token authentication on."""
    temp_dir = f"/tmp/arc-sec-{os.getpid()}"
    node = start_node(head=True, temp_dir=temp_dir, dashboard=True, num_cpus=1)
    yield node
    node.stop()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _listening_addresses(port: int) -> list[str]:
    """The IPv4 addresses a TCP port is listening on, from /proc/net/tcp (state 0A)."""
    import ipaddress

    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.append(str(ipaddress.IPv4Address(bytes.fromhex(ip_hex)[::-1])))
    return found


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.ray
@pytest.mark.slow
def test_dashboard_refuses_requests_without_the_token(head):
    token = ensure_token()
    for path in ("/api/version", "/api/jobs/", "/nodes?view=summary"):
        url = head.dashboard_url + path
        assert _get(url) == 401, path  # no token
        assert _get(url, {"Authorization": "Bearer " + "0" * 64}) == 403, path  # wrong token
        assert _get(url, {"Authorization": f"Bearer {token}"}) == 200, path
    assert check_dashboard(head.dashboard_url)["ray_version"]
    with pytest.raises(ClusterConnectionError, match="refused our token"):
        check_dashboard(head.dashboard_url, token="0" * 64)


@pytest.mark.ray
@pytest.mark.slow
def test_dashboard_listens_on_loopback_only(head):
    port = int(head.dashboard_url.rsplit(":", 1)[1])
    assert _listening_addresses(port) == ["127.0.0.1"]


def _run(code: str, env: dict[str, str], timeout: float = 90) -> tuple[dict, float]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    full_env.update(env)
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    elapsed = time.time() - start
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1]), elapsed


_CONNECT = """
    import json
    from arc_ray.cluster import connect
    from arc_ray.errors import ClusterConnectionError
    try:
        info = connect({address!r})
        import ray
        ok = ray.get(ray.remote(lambda: 41 + 1).remote())
        print(json.dumps({{"ok": ok, "address": info["address"]}}))
    except ClusterConnectionError as exc:
        print(json.dumps({{"error": str(exc)}}))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_connect_with_the_token_runs_a_task(head):
    # RAY_AUTH_MODE unset: ray.init(address=...) alone would not send the token.
    out, _ = _run(_CONNECT.format(address=head.address), {})
    assert out == {"ok": 42, "address": head.address}


@pytest.mark.ray
@pytest.mark.slow
def test_connect_with_a_wrong_token_fails_fast_and_says_so(head):
    out, elapsed = _run(_CONNECT.format(address=head.address), {"RAY_AUTH_TOKEN": "0" * 64})
    assert "refused our authentication token (the token is wrong)" in out["error"]
    assert elapsed < 20  # ray.init alone retries for 20 s and never says why


@pytest.mark.ray
@pytest.mark.slow
def test_connect_without_a_token_says_none_was_found(head, tmp_path):
    out, _ = _run(_CONNECT.format(address=head.address),
                  {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert "no token was found" in out["error"]


@pytest.mark.ray
@pytest.mark.slow
def test_connect_to_a_port_that_is_not_a_gcs(head):
    code = _CONNECT.replace("connect({address!r})", "connect({address!r}, timeout_s=3)")
    out, elapsed = _run(code.format(address=head.dashboard_url.split("://")[1]), {})
    assert "did not answer as a Ray GCS" in out["error"]
    assert elapsed < 20


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_start_has_token_auth_on_and_dashboard_on_loopback(tmp_path):
    code = """
        import json, os, urllib.request, urllib.error
        from arc_ray.cluster import auth_headers, connect
        info = connect(num_cpus=1, dashboard=True, dashboard_port={port}, _temp_dir={temp!r})
        def get(headers):
            try:
                return urllib.request.urlopen(urllib.request.Request(
                    info["dashboard_url"] + "/api/version", headers=headers), timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code
        print(json.dumps({{"url": info["dashboard_url"], "mode": os.environ.get("RAY_AUTH_MODE"),
                           "without": get({{}}), "with": get(auth_headers())}}))
    """.format(temp=(temp := f"/tmp/arc-sec-local-{os.getpid()}"), port=free_port())
    try:
        out, _ = _run(code, {})
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert out["url"].startswith("http://127.0.0.1:")
    assert out["mode"] == "token"
    assert (out["without"], out["with"]) == (401, 200)
