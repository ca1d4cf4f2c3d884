"""Executors: approved decisions become trials, trials become results.

:class:`Executor` (in :mod:`arc_ray.executor.base`) is the contract the orchestrator
relies on; :class:`TrainingExecutor` runs each trial as a Ray Tune trial,
:class:`InProcessExecutor` calls a cheap objective in the driver. ``study.executor``
picks one (``tune``, the default, or ``inprocess``). Modules starting with ``_`` are the
Tune executor's private parts. Importing this package does not import Ray.
"""

from __future__ import annotations

from arc_ray.executor.base import Executor, Job, classify_error
from arc_ray.executor.inprocess import InProcessExecutor
from arc_ray.executor.tune import TrainingExecutor

__all__ = ["Executor", "InProcessExecutor", "Job", "TrainingExecutor", "classify_error"]
