"""Trial slots in virtual time: rolling decisions' search quality, measured on cheap objectives.

With the plain in-process executor a cheap objective returns at once and trials run one
at a time, so a rolling loop never has trials in flight the way a cluster has (or has a
queue of them, decided a round ahead, when its decision is slower than the objective).
:class:`VirtualSlots` makes the in-flight structure of a real cluster: ``slots`` trials
run side by side, each for a virtual duration (log-uniform between 1 and 10 units, drawn
from its experiment id, so reruns agree), a queued trial starts when a slot frees (first
come, first served), and a result is revealed only when the virtual clock reaches the
trial's end. The clock moves only while the loop waits for a result
(:meth:`wait_for_change`), to the next end: deciding costs no virtual time, as when
trials are long against decisions (minutes against a second). The objective itself
still runs in the in-process executor's thread.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Iterable, Sequence

from arc_ray.executor import InProcessExecutor, Job
from arc_ray.records import Decision, JobStatus, TrialResult

UNIT_S = 60.0  # a virtual unit in the durations the loop sees (trials of 1-10 minutes)


class VirtualSlots(InProcessExecutor):
    """``slots`` trial slots in virtual time (see the module)."""

    def __init__(self, study: Any, trainable: Any, slots: int) -> None:
        super().__init__(study, trainable)
        self.slots = slots
        self.now = 0.0
        self._free_at = [0.0] * slots
        self._end: dict[str, float] = {}
        self._length: dict[str, float] = {}

    def submit_batch(self, decisions: Sequence[Decision], cycle_id: int) -> list[Job]:
        jobs = super().submit_batch(decisions, cycle_id)
        with self._cond:
            for job in jobs:
                eid = job.experiment_id
                if eid in self._end:
                    continue
                slot = min(range(self.slots), key=self._free_at.__getitem__)
                length = math.exp(random.Random(eid).uniform(0.0, math.log(10.0)))
                self._length[eid] = length
                self._end[eid] = self._free_at[slot] = max(self.now, self._free_at[slot]) + length
        return jobs

    def _hidden(self, eid: str) -> bool:
        return self._end.get(eid, 0.0) > self.now

    def poll(self, experiment_ids: Iterable[str]) -> dict[str, JobStatus]:
        with self._cond:
            out = super().poll(experiment_ids)
            return {e: JobStatus.RUNNING if s.is_terminal() and s != JobStatus.CANCELLED and self._hidden(e) else s
                    for e, s in out.items()}

    def collect_results(self, experiment_id: str) -> TrialResult:
        with self._cond:
            result = super().collect_results(experiment_id)
            if result.status == JobStatus.CANCELLED:
                return result
            if self._hidden(experiment_id):
                return TrialResult(experiment_id=experiment_id, cycle_id=result.cycle_id, status=JobStatus.RUNNING,
                                   config=result.config, resources=result.resources)
            return result.model_copy(update={"duration_s": self._length[experiment_id] * UNIT_S})

    def wait_for_change(self, timeout: float) -> None:
        """Move the clock to the next trial's end, once that trial has really been computed."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            ahead = [(end, eid) for eid, end in self._end.items()
                     if end > self.now and self._jobs[eid].status != JobStatus.CANCELLED]
            if not ahead:
                self._cond.wait(timeout=max(0.0, timeout))
                return
            end, eid = min(ahead)
            while not self._jobs[eid].status.is_terminal() and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._jobs[eid].status.is_terminal():
                self.now = end
                self._cond.notify_all()


__all__ = ["UNIT_S", "VirtualSlots"]
