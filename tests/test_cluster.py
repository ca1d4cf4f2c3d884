"""Cluster launch: cluster.yaml passes Ray's schema; `ray up` over SSH to 127.0.0.1 runs a cycle.

The `cluster` test brings the local-provider cluster up exactly as the README says:
``scripts/local_sshd.sh start`` (installs openssh-server and rsync with apt-get if they
are missing, makes a key, starts sshd on 127.0.0.1:22 in its own PID namespace),
``ray up``, ``ray job submit -- arc cycle configs/toy-cluster.yaml``, ``ray down``,
``scripts/local_sshd.sh stop``. Everything runs in subprocesses on ports and a temp dir
of its own, so the session's in-process Ray is never touched.
"""

from __future__ import annotations

import copy
import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _prepared(path: Path) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)  # Ray's ray-schema.json plus its own consistency checks
    return config


# --------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_passes_rays_cluster_schema():
    config = _prepared(ROOT / "cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # trials go to GPU workers
    gpu_types = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} == {"g5.xlarge", "g5.12xlarge"}
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types.values())  # autoscaled
    assert sum(t["max_workers"] for t in gpu_types.values()) >= config["max_workers"]
    # The project (configs/ with it) and the token reach every node.
    assert config["file_mounts"] == {"~/arc-ray": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    assert ".venv" in config["rsync_exclude"]
    setup = "\n".join(config["setup_commands"])
    assert "pip install -q -e ~/arc-ray" in setup
    assert "export RAY_AUTH_MODE=token" in setup
    assert "export ARC_STORAGE=s3://" in setup  # shared history and Tune results
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "ray start --head" in head_start and "--autoscaling-config" in head_start


def test_cluster_local_yaml_passes_rays_cluster_schema():
    config = _prepared(ROOT / "configs" / "cluster-local.yaml")
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    head_start = " ".join(config["head_start_ray_commands"])
    for flag in ("--dashboard-host=127.0.0.1", "RAY_AUTH_MODE=token", "--temp-dir=/tmp/arc-local-cluster"):
        assert flag in head_start


def test_rays_schema_rejects_what_it_should():
    import jsonschema

    from ray.autoscaler._private.util import prepare_config, validate_config

    good = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    typo = copy.deepcopy(good)
    typo["auth"]["ssh_usr"] = typo["auth"].pop("ssh_user")
    with pytest.raises(jsonschema.ValidationError, match="ssh_usr"):
        validate_config(prepare_config(typo))
    too_few = copy.deepcopy(good)
    too_few["max_workers"] = 0
    too_few["available_node_types"]["gpu.1x"]["min_workers"] = 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(too_few))


def test_arc_storage_overrides_the_study_storage(monkeypatch, tmp_path):
    from arc_ray.study import StudyConfig

    path = ROOT / "configs" / "toy-cluster.yaml"
    monkeypatch.delenv("ARC_STORAGE", raising=False)
    assert StudyConfig.from_yaml(path).storage == str((ROOT / "history").resolve())
    monkeypatch.setenv("ARC_STORAGE", "s3://bucket/arc")
    study = StudyConfig.from_yaml(path)
    assert (study.storage, study.study_dir) == ("s3://bucket/arc", "s3://bucket/arc/toy_cluster")
    monkeypatch.setenv("ARC_STORAGE", str(tmp_path))
    assert StudyConfig.from_yaml(path).study_dir == str(tmp_path / "toy_cluster")


# ------------------------------------------------------------------- ray up


def _run(cmd: list[str], env: dict[str, str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _cluster_processes(marker: str) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out.append(f"{entry.name} {cmd[:120]}")
    return out


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ray_up_over_ssh_runs_one_cycle_then_ray_down(tmp_path):
    if os.geteuid() != 0 and not (Path("/usr/sbin/sshd").exists() and shutil.which("rsync")):
        pytest.skip("openssh-server/rsync are missing and apt-get needs root")
    if not Path("/usr/sbin/sshd").exists() and not shutil.which("apt-get"):
        pytest.skip("openssh-server is missing and apt-get is not available to install it")

    sshd_dir = f"/tmp/arc-sshd-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "ARC_STORAGE")}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", ARC_SSHD_DIR=sshd_dir, RAY_DISABLE_USAGE_STATS="1")
    # The configs/cluster-local.yaml of the README, with this machine's user and its own name.
    config = yaml.safe_load((ROOT / "configs" / "cluster-local.yaml").read_text())
    config["cluster_name"] = f"arc-local-test-{os.getpid()}"
    config["auth"]["ssh_user"] = getpass.getuser()
    if _listening(22):  # a system sshd: ours takes another port, reached through a proxy command
        from _ray_nodes import free_port

        port = free_port()
        env["ARC_SSHD_PORT"] = str(port)
        config["auth"]["ssh_proxy_command"] = (
            f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; cat <&3 & exec cat >&3'")
    cluster_file = tmp_path / "cluster-local.yaml"
    cluster_file.write_text(yaml.safe_dump(config, sort_keys=False))
    history = tmp_path / "history"

    _run(["bash", "scripts/local_sshd.sh", "start"], env, timeout=300)
    try:
        status = _run(["bash", "scripts/local_sshd.sh", "status"], env, timeout=30).stdout
        # Without a PID namespace, `ray down`'s `ray stop` would end this session's Ray too.
        assert "PID namespace: yes" in status, status
        link = Path.home() / "arc-ray"
        assert link.resolve() == ROOT.resolve(), f"{link} points to {link.resolve()}, not this checkout"

        start = time.time()
        _run(["ray", "up", str(cluster_file), "-y", "--disable-usage-stats"], env, timeout=240)
        up_s = time.time() - start

        dashboard = "http://127.0.0.1:8266"
        token_env = dict(env, RAY_AUTH_MODE="token")
        # The job API refuses a client that does not present the token.
        denied = _run(["ray", "job", "list", "--address", dashboard],
                      dict(env, RAY_AUTH_MODE="disabled"), timeout=60, check=False)
        assert denied.returncode != 0
        assert "Missing authentication token" in denied.stderr, denied.stderr[-2000:]  # HTTP 401

        runtime_env = json.dumps({"env_vars": {"ARC_STORAGE": str(history)}})
        job = _run(["ray", "job", "submit", "--address", dashboard, "--working-dir", ".",
                    "--runtime-env-json", runtime_env, "--",
                    "arc", "cycle", "configs/toy-cluster.yaml"], token_env, timeout=240)
        assert "cycle 1 done: 2 result(s)" in job.stdout, job.stdout[-3000:]
        assert "succeeded" in job.stdout

        import pyarrow.dataset as ds

        trials = ds.dataset(history / "toy_cluster" / "trials", format="parquet").to_table()
        assert trials.num_rows == 2
        assert set(trials.column("status").to_pylist()) == {"COMPLETED"}
        assert all(v is not None for v in trials.column("metric.score").to_pylist())
        cycles = ds.dataset(history / "toy_cluster" / "cycles", format="parquet").to_table()
        assert cycles.column("cycle_id").to_pylist() == [1]
        print(f"ray up {up_s:.0f} s")
    finally:
        _run(["ray", "down", str(cluster_file), "-y"], env, timeout=120, check=False)
        _run(["bash", "scripts/local_sshd.sh", "stop"], env, timeout=60, check=False)
        for suffix in ("state", "lock"):
            Path(f"/tmp/ray/cluster-{config['cluster_name']}.{suffix}").unlink(missing_ok=True)
        shutil.rmtree("/tmp/arc-local-cluster", ignore_errors=True)
    deadline = time.time() + 20
    while _cluster_processes("/tmp/arc-local-cluster") and time.time() < deadline:
        time.sleep(0.5)
    assert _cluster_processes("/tmp/arc-local-cluster") == []
    assert not Path(sshd_dir).exists()
