"""The historian as a named Ray actor: idempotent across an actor restart and a replacement."""

from __future__ import annotations

import time
import uuid

import pytest

from arc_ray.historian import Historian
from arc_ray.records import TrialResult


def _results(start, n, cycle):
    return [TrialResult(experiment_id=f"exp-{i:03d}", cycle_id=cycle, status="COMPLETED",
                        config={"x": 0.01 * i, "lr": 0.01}, metrics={"score": 0.5 + 0.01 * i})
            for i in range(start, start + n)]


def _call(ray, handle_getter, method, *args, timeout=60):
    """Call a method, waiting out the seconds during which a restarting actor refuses calls."""
    from ray.exceptions import RayActorError

    deadline = time.time() + timeout
    while True:
        try:
            return ray.get(getattr(handle_getter(), method).remote(*args), timeout=timeout)
        except RayActorError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.ray
def test_historian_actor_rebuilds_from_files_after_restart_and_replacement(ray_session, toy_study):
    ray = ray_session
    namespace = f"historian-test-{uuid.uuid4().hex[:8]}"
    actor_cls = ray.remote(Historian)
    handle = actor_cls.options(name="historian", namespace=namespace, num_cpus=0, max_restarts=1,
                               max_task_retries=2).remote(toy_study)
    first = ray.get(handle.integrate_experiment_results.remote(_results(0, 5, 0), 0), timeout=60)
    assert first.status == "ok" and first.successful == 5
    pid = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()))

    # 1. the actor process dies; Ray restarts it, and __init__ rebuilds the view from Parquet
    # ray.kill is asynchronous: a call sent at once may still reach the dying process, so wait
    # until the restarted process answers before asking it anything
    ray.kill(handle, no_restart=False)
    deadline = time.time() + 60
    while _call(ray, lambda: handle, "__ray_call__", lambda self: __import__("os").getpid()) == pid:
        assert time.time() < deadline, "the historian actor was not restarted"
        time.sleep(0.2)
    again = _call(ray, lambda: handle, "integrate_experiment_results", _results(0, 5, 0), 0)
    assert again.status == "duplicate" and again.skipped_duplicates == 5
    assert ray.get(handle.integrated_ids.remote()) == {f"exp-{i:03d}" for i in range(5)}

    # 2. the actor is gone for good; a new one under the same name knows the same history
    ray.kill(handle, no_restart=True)
    new = actor_cls.options(name="historian", namespace=namespace, num_cpus=0).remote(toy_study)
    assert ray.get_actor("historian", namespace=namespace)._actor_id == new._actor_id
    mixed = ray.get(new.integrate_experiment_results.remote(_results(3, 4, 1), 1), timeout=60)
    assert mixed.status == "ok" and mixed.skipped_duplicates == 2 and mixed.successful == 2
    summary = ray.get(new.summary.remote())
    assert summary.n_trials == 7 and summary.best_experiment_id == "exp-006"
    table = ray.get(new.trials_table.remote())
    assert sorted(table.column("experiment_id").to_pylist()) == [f"exp-{i:03d}" for i in range(7)]
    ray.kill(new)
