"""One long-lived Tune experiment per driver, fed decision by decision (rolling decisions).

With ``scheduling: rolling`` a decision round often holds a single experiment. Starting
a Tune experiment per round would pay a ``Tuner`` start and a worker start per trial,
which is most of a short trial's length. Instead the executor keeps one Tune experiment
per driver run, ``<study.tune_dir>/stream-<UTC time>``, whose search algorithm is a
:class:`QueueSearcher`: ``submit_batch`` puts the decided experiments on its queue and
Tune asks for them as slots free up (``max_concurrent_trials`` = the study's slots,
``reuse_actors`` keeps the worker warm). ARC still decides every config; the searcher
only hands them over.

Resume: the stream's ``arc/manifest.json`` lists every job with its ``cycle_id`` and is
rewritten on each submission; ``arc/results/<id>.json`` holds each finished trial, as for
a cycle's experiment. A restarted driver reads finished results back (not rerun) and
submits the unfinished ones again, from their start, into its own stream (a stream is not
restored with ``Tuner.restore``: its searcher's queue belonged to the dead driver).

Warm workers: a new trial worker costs seconds before the trainable runs (a process,
Ray, Tune's import: 6–10 s for four on two cores, 10% of a short run). A new stream
therefore starts with one *warm trial* per slot (:func:`~arc_ray.executor._tune_trial.warm_entry`),
queued ahead of every decision: its worker starts while the collective decides the first
round, and it only reports until :class:`~arc_ray.executor._tune_monitor.ArcScheduler`
stops it — as soon as the live trials outnumber the slots (a decided trial is waiting),
or the stream closes. Tune then hands the warm worker to the waiting trial
(``reuse_actors``). The searcher counts only real trials against the study's slots, so
warm trials never add to ``max_concurrent_trials``; a warm trial has no experiment, and
every ARC hook ignores it.

The searcher, like the other hooks, holds only a token and finds its queue in a process
registry, so Tune can pickle it with the experiment's state.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

from arc_ray.executor._tune_trial import TRIAL_KEY, WARM_KEY

if TYPE_CHECKING:
    from arc_ray.executor._tune_jobs import JobState

logger = logging.getLogger(__name__)

STREAM_PREFIX = "stream-"

_QUEUES: dict[str, "EntryQueue"] = {}
_QUEUES_LOCK = threading.Lock()


class EntryQueue:
    """The decided experiments waiting for a slot in a stream (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: collections.deque[dict[str, Any]] = collections.deque()
        self.closed = False

    def put(self, entries: list[dict[str, Any]]) -> None:
        """Queue entries (``experiment_id``, ``config``, ``resources``), in order."""
        with self._lock:
            self._entries.extend(entries)

    def drop(self, experiment_ids: set[str]) -> None:
        """Take entries that have not started off the queue (cancelled before a slot freed)."""
        with self._lock:
            self._entries = collections.deque(e for e in self._entries
                                              if e.get("experiment_id") not in experiment_ids)

    def close(self) -> None:
        """No more entries: the experiment ends once the queued ones have run (warm
        trials that have not started are dropped)."""
        with self._lock:
            self.closed = True
            self._entries = collections.deque(e for e in self._entries if WARM_KEY not in e)

    def next(self, real: bool = True) -> dict[str, Any] | str | None:
        """The next entry, :attr:`Searcher.FINISHED` when closed and empty, else ``None``.

        Args:
            real: whether a decided experiment may start now; when not, only a warm
                entry at the head of the queue is handed out.
        """
        with self._lock:
            if self._entries:
                return self._entries.popleft() if real or WARM_KEY in self._entries[0] else None
            return Searcher.FINISHED if self.closed else None


def register_queue(token: str, queue: EntryQueue) -> None:
    with _QUEUES_LOCK:
        _QUEUES[token] = queue


def unregister_queue(token: str) -> None:
    with _QUEUES_LOCK:
        _QUEUES.pop(token, None)


def queue_of(token: str) -> EntryQueue | None:
    """The live queue registered under ``token`` (``None``: its driver is gone)."""
    with _QUEUES_LOCK:
        return _QUEUES.get(token)


class QueueSearcher(Searcher):
    """A Tune search algorithm that suggests ARC's decided experiments, in submission order.

    ``suggest`` returns the next queued experiment as the trial's config, ``None`` while the
    queue is empty or ``slots`` decided trials are live (Tune asks again at its next
    step) and ``FINISHED`` once the queue is closed and empty. Warm trials (see the module
    doc) do not count against ``slots``. It learns nothing from results: ARC's agents decide.

    Args:
        token: the key of the stream's :class:`EntryQueue` in this process's registry.
        slots: the most decided trials live (pending or running) at once; ``None``: no
            limit of its own.
    """

    def __init__(self, token: str, slots: int | None = None) -> None:
        super().__init__(metric=None, mode=None)
        self.token = token
        self.slots = slots
        self._live: set[str] = set()  # Tune trial ids of the decided trials not yet complete

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # nothing to search: every config comes from the queue

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        queue = queue_of(self.token)
        if queue is None:  # restored without its driver: nothing more will come
            return Searcher.FINISHED
        entry = queue.next(real=self.slots is None or len(self._live) < self.slots)
        if entry is None or entry == Searcher.FINISHED:
            return entry
        assert isinstance(entry, dict)
        if WARM_KEY not in entry:
            self._live.add(trial_id)
        return {TRIAL_KEY: entry}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._live.discard(trial_id)

    def save(self, checkpoint_path: str) -> None:
        return None  # the queue is the driver's; the manifest and results are the state

    def restore(self, checkpoint_path: str) -> None:
        return None


# ------------------------------------------------------------------ on disk


def _folders(tune_dir: str) -> list[str]:
    if "://" in tune_dir:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(tune_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return [i.base_name for i in infos if i.type == pafs.FileType.Directory]
    return [n for n in os.listdir(tune_dir) if os.path.isdir(os.path.join(tune_dir, n))] \
        if os.path.isdir(tune_dir) else []


def stream_names(tune_dir: str) -> list[str]:
    """The stream experiments' folders under ``tune_dir``, oldest first."""
    return sorted(n for n in _folders(tune_dir) if n.startswith(STREAM_PREFIX))


def stream_name(tune_dir: str) -> str:
    """A new stream's folder name: ``stream-<UTC time>`` (sorts in start order), unique."""
    base = STREAM_PREFIX + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    taken = set(stream_names(tune_dir))
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def finished_in_streams(tune_dir: str, cycle_id: int, skip: set[str]) -> list["JobState"]:
    """The cycle's trials that finished in an earlier driver's stream, results loaded.

    Args:
        tune_dir: the study's Tune folder.
        cycle_id: the cycle (decision round).
        skip: stream folders to leave out (this driver's own, live one).
    """
    from arc_ray.executor._tune_jobs import JobState, RunStore
    from arc_ray.records import Resources, TrialResult
    from arc_ray.study import join_storage

    found = []
    for name in stream_names(tune_dir):
        if name in skip:
            continue
        store = RunStore(join_storage(tune_dir, name))
        manifest = store.read_json("arc/manifest.json") or {}
        for entry in manifest.get("jobs", []):
            if entry.get("cycle_id") != cycle_id:
                continue
            data = store.read_json(f"arc/results/{entry['experiment_id']}.json")
            if not data:
                continue  # unfinished: the caller submits it again
            job = JobState(experiment_id=entry["experiment_id"], cycle_id=cycle_id, config=entry["config"],
                           resources=Resources.model_validate(entry["resources"]),
                           meta=entry.get("meta") or {}, run_name=name)
            try:
                job.load_result(TrialResult.model_validate(data))
            except ValueError as exc:
                logger.warning("%s: unreadable result of %s (%s); it runs again", name, job.experiment_id, exc)
                continue
            found.append(job)
    return found


__all__ = ["EntryQueue", "QueueSearcher", "finished_in_streams", "queue_of", "register_queue", "stream_name",
           "stream_names", "unregister_queue"]
