"""The study's agents and historian: named Ray actors, or plain objects in the driver.

The orchestrator talks to every agent the same way, ``handle.method.remote(...)`` then
``ray.get``: with actors (:func:`start_actors`) in the study's namespace ``arc-<study>``,
where the dashboard shows each by name and a restarted driver gets them back by name;
or, for a cheap in-process study with no cluster (:func:`in_driver_agents`), as plain
objects in this process, the historian behind :class:`InDriver` so that ``.remote`` runs
the call at once and its result stands in for the reference.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


def _started(name: str, ref: Any) -> Any:
    """``ray.get(ref)``; an actor whose constructor raised becomes that error, in one line."""
    import ray

    from arc_ray.errors import ArcError, ConfigValidationError, HistoryError

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        text = str(getattr(exc, "error_msg", "") or exc)
        found = re.findall(r"^(?:[\w.]+\.)?(\w+Error): (.+)$", text, re.M)
        kind, message = found[-1] if found else (type(exc).__name__, text.strip().splitlines()[0])
        cls = {"HistoryError": HistoryError, "ConfigValidationError": ConfigValidationError}.get(kind, ArcError)
        raise cls(f"the {name} actor could not start: {message}") from None


def ray_initialized() -> bool:
    """Whether this process is connected to Ray, without importing Ray to find out."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


class InDriver:
    """A plain object behind an actor handle's surface: ``obj.method.remote(*a)`` runs the
    method now and returns its result, so one code path serves actors and the in-driver mode."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._obj, name)
        return SimpleNamespace(remote=method)


def roster(study: "StudyConfig") -> dict[str, tuple[type, tuple, dict]]:
    """Name → (class, args, kwargs) of every agent the study needs, historian included."""
    from arc_ray.agents import build_roster
    from arc_ray.historian import Historian

    out: dict[str, tuple[type, tuple, dict]] = {"historian": (Historian, (study,), {})}
    out.update(build_roster(study))
    return out


def in_driver_agents(study: "StudyConfig") -> dict[str, Any]:
    """The study's agents as plain objects in this process; the historian behind :class:`InDriver`."""
    agents = {name: cls(*args, **kwargs) for name, (cls, args, kwargs) in roster(study).items()}
    agents["historian"] = InDriver(agents["historian"])
    return agents


def start_actors(study: "StudyConfig", namespace: str) -> dict[str, Any]:
    """The study's agents and historian as named Ray actors in ``namespace`` (reused by name).

    Raises:
        HistoryError, ConfigValidationError, ArcError: an actor's constructor raised.
    """
    import ray

    wanted = roster(study)
    handles = {name: _actor(namespace, name, cls, args, kwargs) for name, (cls, args, kwargs) in wanted.items()}
    want = study.model_dump_json()
    refs = [h.served_study.remote() for h in handles.values()]
    served = [_started(name, ref) for name, ref in zip(handles, refs)]
    for (name, handle), study_json in zip(list(handles.items()), served):
        if study_json != want:  # an actor left from another study of the same name
            logger.info("replacing actor %s/%s: it serves a different study config", namespace, name)
            ray.kill(handle, no_restart=True)
            cls, args, kwargs = wanted[name]
            handles[name] = _actor(namespace, name, cls, args, kwargs, fresh=True)
    logger.info("actors in namespace %s: %s", namespace, ", ".join(handles))
    return handles


def _actor(namespace: str, name: str, cls: type, args: tuple, kwargs: dict, fresh: bool = False) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: the historian writes a local storage path there (a worker
    # node's disk would be the wrong one), and a worker node's death (a reclaimed spot
    # instance) must not take the study's state with it. A restarted actor serves
    # calls again (max_task_retries): every actor call of the loop is idempotent.
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    remote = ray.remote(cls).options(name=name, namespace=namespace, get_if_exists=not fresh,
                                     num_cpus=0, max_restarts=2, max_task_retries=2,
                                     scheduling_strategy=here)
    deadline = time.monotonic() + 30
    while True:
        try:
            return remote.remote(*args, **kwargs)
        except ValueError:  # the killed actor's name is not released yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


__all__ = ["InDriver", "in_driver_agents", "ray_initialized", "roster", "start_actors"]
