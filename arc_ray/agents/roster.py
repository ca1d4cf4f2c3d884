"""The members of a study's collective: the fixed roles and the enabled proposers.

The orchestrator builds each member as an actor from :func:`build_roster`
(``ray.remote(cls).remote(*args, **kwargs)``); tests and the Python API build plain
objects with :func:`build_agents`. The director is told which enabled proposers have
something to propose in the study, so it needs nothing of the registry itself.
"""

from __future__ import annotations

from typing import Any

from arc_ray.agents.critic import Critic
from arc_ray.agents.director import Director
from arc_ray.agents.registry import applicable, enabled_proposers
from arc_ray.agents.supervisor import Supervisor
from arc_ray.study import StudyConfig


def agent_classes(study: StudyConfig) -> dict[str, type]:
    """Every agent of the study's collective by name: director, critic, the enabled
    proposers in order, supervisor.

    Raises:
        ConfigValidationError: an enabled name is unknown, repeated, or a fixed role.
    """
    return {"director": Director, "critic": Critic, **enabled_proposers(study), "supervisor": Supervisor}


def build_roster(study: StudyConfig) -> dict[str, tuple[type, tuple, dict]]:
    """name → (class, args, kwargs) of every agent, for the orchestrator to make actors of:
    ``ray.remote(cls).remote(*args, **kwargs)``."""
    roster: dict[str, tuple[type, tuple, dict]] = {
        name: (cls, (study,), {"name": name}) for name, cls in agent_classes(study).items()}
    roster["director"][2]["applicable"] = applicable(study)
    return roster


def build_agents(study: StudyConfig) -> dict[str, Any]:
    """Plain-object agents for the study (see :func:`agent_classes`)."""
    return {name: cls(*args, **kwargs) for name, (cls, args, kwargs) in build_roster(study).items()}


__all__ = ["agent_classes", "build_agents", "build_roster"]
