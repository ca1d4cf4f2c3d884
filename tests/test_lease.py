"""One driver per study: the lease, with real processes holding and dying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from arc_ray.errors import StudyLockedError
from arc_ray.lease import LEASE_FILE, StudyLease

HOLD = textwrap.dedent("""
    import sys, time
    from arc_ray.lease import StudyLease
    lease = StudyLease(sys.argv[1], "s", ttl_s=float(sys.argv[2]), settle_s=0.2).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def _holder(where: str, ttl: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, where, str(ttl)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_acquire_release_and_reacquire(tmp_path: Path) -> None:
    lease = StudyLease(str(tmp_path / "study"), "s").acquire()
    assert lease.held and (tmp_path / "study" / LEASE_FILE).is_file()
    lease.release()
    lease.release()  # twice is fine
    with StudyLease(str(tmp_path / "study"), "s") as again:
        assert again.held


def test_second_driver_is_refused_naming_the_holder(tmp_path: Path) -> None:
    where = str(tmp_path / "study")
    proc = _holder(where)
    try:
        t0 = time.monotonic()
        with pytest.raises(StudyLockedError) as err:
            StudyLease(where, "s").acquire()
        assert time.monotonic() - t0 < 5
        message = str(err.value)
        assert f"pid {proc.pid}" in message and "since" in message and os.uname().nodename in message
    finally:
        _kill(proc)


def test_a_dead_holders_lease_is_taken_over(tmp_path: Path) -> None:
    where = str(tmp_path / "study")
    proc = _holder(where)
    _kill(proc)
    with StudyLease(where, "s") as lease:
        assert lease.held


def test_racing_drivers_one_wins(tmp_path: Path) -> None:
    where = str(tmp_path / "study")
    race = textwrap.dedent("""
        import os, sys, time
        from arc_ray.errors import StudyLockedError
        from arc_ray.lease import StudyLease
        print("ready", flush=True)
        while not os.path.exists(sys.argv[2]):  # all start together
            time.sleep(0.01)
        try:
            lease = StudyLease(sys.argv[1], "s").acquire()
            print("won", flush=True)
            time.sleep(2)
        except StudyLockedError:
            print("lost", flush=True)
    """)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", race, where, str(go)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["lost", "lost", "lost", "won"]


def test_uri_storage_heartbeat_lease(tmp_path: Path) -> None:
    where = (tmp_path / "shared" / "study").as_uri()  # file:// through pyarrow, as s3:// would go
    proc = _holder(where, ttl=2.0)
    try:
        time.sleep(2.5)  # past one ttl: the holder's heartbeat keeps it alive
        with pytest.raises(StudyLockedError, match=f"pid {proc.pid}"):
            StudyLease(where, "s", ttl_s=2.0, settle_s=0.2).acquire()
    finally:
        _kill(proc)
    time.sleep(2.2)  # no more heartbeats: the lease expires
    lease = StudyLease(where, "s", ttl_s=2.0, settle_s=0.2).acquire()
    assert lease.held
    lease.release()
    assert not (tmp_path / "shared" / "study" / LEASE_FILE).exists()
