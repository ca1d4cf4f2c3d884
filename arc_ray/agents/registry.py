"""Names in the study file → proposer classes.

``proposers.enabled`` in a study lists proposer names. A proposer class registers
itself under its name with :func:`register_proposer` where it is defined (the
built-ins do, and ``arc_ray.agents`` imports them), so, as timm's model registry, this
module imports no concrete agent. :func:`proposer_class` maps a name to its class and
fails, for a name it does not know, with the names it does. The director, critic and
supervisor are fixed roles every collective has (:data:`FIXED_ROLES`), not proposers.
"""

from __future__ import annotations

from typing import Callable

from arc_ray.agents.base import Proposer
from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.study import StudyConfig

FIXED_ROLES = ("director", "critic", "supervisor")

_PROPOSERS: dict[str, type[Proposer]] = {}


def register_proposer(name: str) -> Callable[[type[Proposer]], type[Proposer]]:
    """Class decorator: make a :class:`Proposer` subclass available as ``proposers.enabled: [name]``.

    Raises:
        ValueError: ``name`` is a fixed role of the collective.
        TypeError: the decorated class is not a :class:`Proposer`.
    """
    def add(cls: type[Proposer]) -> type[Proposer]:
        if name in FIXED_ROLES:
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


def enabled_proposers(study: StudyConfig) -> dict[str, type[Proposer]]:
    """The study's enabled proposers by name, in the order ``proposers.enabled`` lists them.

    Raises:
        ConfigValidationError: an enabled name is unknown, repeated, or a fixed role.
    """
    violations = []
    seen: set[str] = set()
    for name in study.proposers.enabled:
        if name in FIXED_ROLES:
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
    return {name: _PROPOSERS[name] for name in study.proposers.enabled}


def applicable(study: StudyConfig) -> list[str]:
    """Enabled proposer names that have something to propose in ``study``
    (:meth:`Proposer.applies_to`); names not registered count as applicable."""
    return [n for n in study.proposers.enabled if n not in _PROPOSERS or _PROPOSERS[n].applies_to(study)]


__all__ = ["FIXED_ROLES", "applicable", "enabled_proposers", "proposer_class", "proposer_names",
           "register_proposer"]
