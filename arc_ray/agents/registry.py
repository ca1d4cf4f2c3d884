"""Names in the study file → agent classes.

``proposers.enabled`` in a study lists proposer names; :func:`proposer_class` maps
each to its class and fails, for a name it does not know, with the names it does.
The director, critic and supervisor are fixed roles every collective has.
"""

from __future__ import annotations

from typing import Any, Callable

from arc_ray.agents.architect import ArchitectProposer
from arc_ray.agents.base import Proposer
from arc_ray.agents.bayesian import BayesianProposer
from arc_ray.agents.critic import Critic
from arc_ray.agents.director import Director
from arc_ray.agents.explorer import ExplorerProposer
from arc_ray.agents.recovery import RecoveryProposer
from arc_ray.agents.supervisor import Supervisor
from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.study import StudyConfig

_PROPOSERS: dict[str, type[Proposer]] = {
    "bayesian": BayesianProposer,
    "explorer": ExplorerProposer,
    "architect": ArchitectProposer,
    "recovery": RecoveryProposer,
}
ROLES: dict[str, type] = {"director": Director, "critic": Critic, "supervisor": Supervisor}


def register_proposer(name: str) -> Callable[[type[Proposer]], type[Proposer]]:
    """Class decorator: make a :class:`Proposer` subclass available as ``proposers.enabled: [name]``."""
    def add(cls: type[Proposer]) -> type[Proposer]:
        if name in ROLES:
            raise ValueError(f"{name!r} is a fixed role of the collective, not a proposer name")
        if not (isinstance(cls, type) and issubclass(cls, Proposer)):
            raise TypeError(f"{cls!r} is not a Proposer subclass")
        _PROPOSERS[name] = cls
        return cls
    return add


def proposer_names() -> list[str]:
    """Every registered proposer name, sorted."""
    return sorted(_PROPOSERS)


def proposer_class(name: str) -> type[Proposer]:
    """The class registered as ``name``.

    Raises:
        ConfigValidationError: ``name`` is not registered; the message lists the valid names.
    """
    cls = _PROPOSERS.get(name)
    if cls is None:
        raise ConfigValidationError([Violation(
            "proposers.enabled", name, f"unknown proposer; valid names are: {', '.join(proposer_names())}")])
    return cls


def applicable(study: StudyConfig) -> set[str]:
    """Enabled proposer names that have something to propose in ``study``
    (:meth:`Proposer.applies_to`); names not registered here count as applicable."""
    return {n for n in study.proposers.enabled if n not in _PROPOSERS or _PROPOSERS[n].applies_to(study)}


def agent_classes(study: StudyConfig) -> dict[str, type]:
    """Every agent of the study's collective by name: director, critic, the enabled
    proposers in order, supervisor. The orchestrator builds each as ``cls(study, name)``,
    in the driver or as ``ray.remote(cls).remote(study, name)``.

    Raises:
        ConfigValidationError: an enabled name is unknown, repeated, or a fixed role.
    """
    violations = []
    seen: set[str] = set()
    for name in study.proposers.enabled:
        if name in ROLES:
            violations.append(Violation("proposers.enabled", name, "is a fixed role of the collective, "
                                        f"not a proposer; valid names are: {', '.join(proposer_names())}"))
        elif name in seen:
            violations.append(Violation("proposers.enabled", name, "is listed twice"))
        elif name not in _PROPOSERS:
            violations.append(Violation("proposers.enabled", name,
                                        f"unknown proposer; valid names are: {', '.join(proposer_names())}"))
        seen.add(name)
    if violations:
        raise ConfigValidationError(violations, source=study.source_path)
    classes: dict[str, type] = {"director": Director, "critic": Critic}
    classes.update({name: _PROPOSERS[name] for name in study.proposers.enabled})
    classes["supervisor"] = Supervisor
    return classes


def build_roster(study: StudyConfig) -> dict[str, tuple[type, tuple, dict]]:
    """name → (class, args, kwargs) of every agent, for the orchestrator to make actors of:
    ``ray.remote(cls).remote(*args, **kwargs)``."""
    return {name: (cls, (study,), {"name": name}) for name, cls in agent_classes(study).items()}


def build_agents(study: StudyConfig) -> dict[str, Any]:
    """Plain-object agents for the study (see :func:`agent_classes`)."""
    return {name: cls(*args, **kwargs) for name, (cls, args, kwargs) in build_roster(study).items()}
