"""ARC's error hierarchy.

One base class, :class:`ArcError`; each subclass mixes in the builtin exception
that callers already expect (``ConfigValidationError`` is a ``ValueError``), and
carries its data as keyword fields rather than only in the message.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, Iterable

# Shows a value in a message at bounded cost: a hostile study file can hold a value
# that expands to gigabytes (YAML aliases), and a full repr() would build all of it.
_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother, _short.maxlong = 3, 60, 60, 40
_short.maxlist = _short.maxdict = _short.maxset = _short.maxtuple = 6


class ArcError(Exception):
    """Base class of every error ARC raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: which field, the offending value, and the rule in words."""

    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        shown = _short.repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"{self.field}={shown}: {self.rule}"


class ConfigValidationError(ArcError, ValueError):
    """A study, search space, proposal or config breaks one or more rules."""

    def __init__(
        self,
        violations: Iterable[Violation] | str,
        *,
        source: str | None = None,
    ) -> None:
        if isinstance(violations, str):
            violations = [Violation(field="", value=None, rule=violations)]
        self.violations: list[Violation] = list(violations)
        self.source = source
        super().__init__(self._message())

    @property
    def fields(self) -> list[str]:
        """The names of the fields that broke a rule, in order."""
        return [v.field for v in self.violations]

    def _message(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.violations) == 1:
            v = self.violations[0]
            return head + (str(v) if v.field else v.rule)
        lines = [f"{head}{len(self.violations)} violations:"]
        lines += [f"  - {v}" if v.field else f"  - {v.rule}" for v in self.violations]
        return "\n".join(lines)


class TrainingExecutionError(ArcError, RuntimeError):
    """A trial could not be run or did not finish."""

    def __init__(
        self,
        message: str,
        *,
        experiment_id: str | None = None,
        error_class: str | None = None,
    ) -> None:
        super().__init__(message)
        self.experiment_id = experiment_id
        self.error_class = error_class


class TrainingDivergedError(TrainingExecutionError, FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, *, epoch: int | None = None, step: int | None = None,
                 experiment_id: str | None = None) -> None:
        super().__init__(message, experiment_id=experiment_id, error_class="diverged")
        self.epoch = epoch
        self.step = step

    def __reduce__(self):  # keep keyword fields across Ray's pickling
        return (_rebuild_diverged, (str(self), self.epoch, self.step, self.experiment_id))


def _rebuild_diverged(message: str, epoch: int | None, step: int | None,
                      experiment_id: str | None) -> TrainingDivergedError:
    return TrainingDivergedError(message, epoch=epoch, step=step, experiment_id=experiment_id)


class TrainingOutOfMemoryError(TrainingExecutionError, MemoryError):
    """The accelerator (or host) ran out of memory during a trial."""

    def __init__(self, message: str, *, experiment_id: str | None = None) -> None:
        super().__init__(message, experiment_id=experiment_id, error_class="oom")

    def __reduce__(self):
        return (_rebuild_oom, (str(self), self.experiment_id))


def _rebuild_oom(message: str, experiment_id: str | None) -> TrainingOutOfMemoryError:
    return TrainingOutOfMemoryError(message, experiment_id=experiment_id)


class DataError(ArcError, ValueError):
    """A data set cannot be used for training (no usable image, one class, bad manifest)."""


class HistoryError(ArcError, RuntimeError):
    """The study's history cannot be read or written."""


class ClusterConnectionError(ArcError, ConnectionError):
    """A Ray cluster cannot be reached or refused our credentials."""


class StudyLockedError(ArcError, RuntimeError):
    """Another live driver holds the study's lease (see :mod:`arc_ray.lease`)."""

    def __init__(self, *, study: str, holder: str, path: str) -> None:
        super().__init__(f"study {study!r} is being run by another driver ({holder}); "
                         f"wait for it to finish or stop it (lease: {path})")
        self.study = study
        self.holder = holder
        self.path = path

    def __reduce__(self):
        return (_rebuild_locked, (self.study, self.holder, self.path))


def _rebuild_locked(study: str, holder: str, path: str) -> StudyLockedError:
    return StudyLockedError(study=study, holder=holder, path=path)


__all__ = [
    "ArcError",
    "ClusterConnectionError",
    "ConfigValidationError",
    "DataError",
    "HistoryError",
    "StudyLockedError",
    "TrainingDivergedError",
    "TrainingExecutionError",
    "TrainingOutOfMemoryError",
    "Violation",
]
