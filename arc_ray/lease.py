"""One driver per study: a lease held in the study's storage.

Two drivers on one study would decide the same cycle twice and train the same
experiments twice, so :class:`StudyLease` lets one driver (``arc run``, ``arc cycle``,
``run_study``) hold a study at a time. A second one fails within seconds with
:class:`~arc_ray.errors.StudyLockedError`, which names the holder (host, pid, since
when). Readers (``arc status``, ``arc history``, ``arc report``) take no lease.

How the lease is held depends on where the study lives:

* **A local folder** (including one a cluster mounts over NFS): an exclusive
  ``flock`` on ``<study>/driver.lease``. The kernel drops the lock the instant its
  holder dies (SIGKILL, a lost machine's NFS lock expires), so a dead holder's lease is
  taken over safely by the next driver, and two drivers racing for it cannot both win.
  The file's text says who holds it, for the error message.
* **A pyarrow filesystem URI** (``s3://…``), where no lock exists: a heartbeat lease.
  The holder rewrites ``driver.lease`` every ``ttl_s / 3`` seconds; a lease not renewed
  for ``ttl_s`` seconds belongs to a dead driver and is taken over. A taker writes its
  own token, waits a moment, and reads the file back: of two takers racing, only the one
  whose token stayed wins.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from arc_ray.errors import HistoryError, StudyLockedError

logger = logging.getLogger(__name__)

LEASE_FILE = "driver.lease"


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("since")
    when = (datetime.fromtimestamp(since, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            if isinstance(since, (int, float)) else "an unknown time")
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {when}"


class StudyLease:
    """The right to drive one study; acquire before deciding, release when done.

    Args:
        study_dir: the study's folder or URI (``StudyConfig.study_dir``).
        study: the study's name, for messages.
        ttl_s: URI storage only: how long an unrenewed lease stays valid.
        settle_s: URI storage only: how long a taker waits before reading its write back.

    Usable as a context manager. Not thread-safe; one object per driver.
    """

    def __init__(self, study_dir: str, study: str = "", *, ttl_s: float = 60.0,
                 settle_s: float = 1.0) -> None:
        self.study_dir = str(study_dir)
        self.study = study or os.path.basename(self.study_dir.rstrip("/"))
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.token = uuid.uuid4().hex
        self._uri = "://" in self.study_dir
        self._path = f"{self.study_dir.rstrip('/')}/{LEASE_FILE}"
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.held = False

    def _holder_record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                "renewed": time.time(), "token": self.token}

    # ------------------------------------------------------------------ public

    def acquire(self) -> "StudyLease":
        """Take the lease, or fail at once naming the holder.

        Raises:
            StudyLockedError: another live driver holds the study.
            HistoryError: the study's storage cannot hold a lease file.
        """
        if self.held:
            return self
        if self._uri:
            self._acquire_uri()
        else:
            self._acquire_local()
        self.held = True
        logger.info("study %s: driver lease taken (%s)", self.study, self._path)
        return self

    def release(self) -> None:
        """Give the lease up (safe to call twice, and when never acquired)."""
        if not self.held:
            return
        self.held = False
        if self._uri:
            self._stop.set()
            if self._beat is not None:
                self._beat.join(timeout=5)
            try:
                current = self._read_uri()
                if current is not None and current.get("token") == self.token:
                    import pyarrow.fs as pafs

                    fs, path = pafs.FileSystem.from_uri(self._path)
                    fs.delete_file(path)
            except Exception as exc:  # an expired lease is as good as a released one
                logger.warning("could not remove the lease %s: %s", self._path, exc)
        elif self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StudyLease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lease must not outlive its object
        try:
            self.release()
        except Exception:
            pass

    # ------------------------------------------------------------------ local

    def _acquire_local(self) -> None:
        import fcntl

        try:
            os.makedirs(self.study_dir, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HistoryError(f"cannot create the driver lease {self._path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_local(fd)
            os.close(fd)
            raise StudyLockedError(study=self.study, holder=_describe(holder), path=self._path) from None
        previous = self._read_local(fd)
        if previous:
            logger.info("study %s: taking over the lease of a driver that is gone (%s)",
                        self.study, _describe(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._holder_record()).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    @staticmethod
    def _read_local(fd: int) -> dict[str, Any]:
        try:
            data = os.pread(fd, 4096, 0)
            out = json.loads(data.decode("utf-8")) if data else {}
            return out if isinstance(out, dict) else {}
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ URI

    def _read_uri(self) -> dict[str, Any] | None:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(self._path)
        try:
            with fs.open_input_stream(path) as f:
                data = json.loads(f.read().decode("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return None
            raise
        return data if isinstance(data, dict) else None

    def _write_uri(self, record: dict[str, Any]) -> None:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(self._path)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(json.dumps(record).encode("utf-8"))

    def _live(self, holder: dict[str, Any] | None) -> bool:
        if not holder or holder.get("token") == self.token:
            return False
        renewed = holder.get("renewed")
        return isinstance(renewed, (int, float)) and time.time() - renewed < self.ttl_s

    def _acquire_uri(self) -> None:
        try:
            holder = self._read_uri()
            if self._live(holder):
                raise StudyLockedError(study=self.study, holder=_describe(holder), path=self._path)
            if holder:
                logger.info("study %s: taking over an expired lease (%s)", self.study, _describe(holder))
            record = self._holder_record()
            self._write_uri(record)
            time.sleep(self.settle_s)
            now = self._read_uri()
        except StudyLockedError:
            raise
        except Exception as exc:
            raise HistoryError(f"cannot hold the driver lease {self._path}: {exc}") from exc
        if not now or now.get("token") != self.token:
            raise StudyLockedError(study=self.study, holder=_describe(now or {}), path=self._path)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, args=(record,), daemon=True,
                                      name=f"arc-lease-{self.study}")
        self._beat.start()

    def _heartbeat(self, record: dict[str, Any]) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                current = self._read_uri()
                if current is not None and current.get("token") != self.token:
                    logger.error("study %s: another driver took the lease (%s)", self.study,
                                 _describe(current))
                    return
                self._write_uri({**record, "renewed": time.time()})
            except Exception as exc:  # one missed beat is within the ttl
                logger.warning("study %s: could not renew the lease: %s", self.study, exc)


__all__ = ["LEASE_FILE", "StudyLease"]
