"""The benchmarks' wait for trials: poll the executor until they finish (its contract only).

ARC's one wait / timeout loop is the orchestrator's; a benchmark that drives an
executor by itself polls it here instead.
"""

from __future__ import annotations

import time
from typing import Iterable

from arc_ray.executor import Executor
from arc_ray.records import JobStatus


def wait_for(executor: Executor, experiment_ids: Iterable[str], timeout: float) -> dict[str, JobStatus]:
    """Poll until every experiment is terminal; raise ``TimeoutError`` after ``timeout`` seconds."""
    ids = list(experiment_ids)
    deadline = time.monotonic() + timeout
    while True:
        statuses = executor.poll(ids)
        open_ids = [i for i, s in statuses.items() if not s.is_terminal()]
        if not open_ids:
            return statuses
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(open_ids)} trials not finished after {timeout:g} s")
        executor.wait_for_change(min(left, 1.0))
