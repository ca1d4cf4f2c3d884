"""Proposal → merged, validated, constrained experiment config, written as YAML + JSON.

Seed-compatible surface: :class:`ExperimentConfigGenerator`, :func:`get_config_generator`,
``generate_config(experiment_id, proposal, validate=True)``, ``get_baseline_config()``.

Validation collects *every* violation before raising, in this order: the experiment id,
unknown parameters, each parameter against the search space (type, range, choices,
NaN/inf), the trainable's own pydantic ``Config`` (where a trainable's cross-field rules
live, e.g. the flagship's ``train_split + val_split == 1``), and the study's constraints
(declared and learned). Nothing is written unless all pass.
Files land atomically: ``<study>/experiments/<id>/`` is assembled under a temporary
name and renamed into place, so a reader never sees half an experiment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from arc_ray import storage
from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.records import Constraint, Proposal, experiment_id_problem
from arc_ray.space import flatten_config, unflatten_config

if TYPE_CHECKING:
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()  # import failures already logged in this process

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class ExperimentConfigGenerator:
    """Turns proposals into validated configs for one study.

    Args:
        study: the study whose baseline, search space and constraints apply.
        constraints: learned constraints to enforce beside the study's declared ones;
            replace them later with :meth:`set_constraints`.
        output_dir: where ``<id>/config.yaml`` go; default ``study.experiments_dir``.

    Thread safety: ``generate_config`` may be called from several threads (it holds no
    mutable state but the learned constraints). A generator pickles, so an agent
    context carries one to the agents' actors.
    """

    def __init__(
        self,
        study: "StudyConfig",
        constraints: list[Constraint] | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        self.study = study
        self.space = study.search_space
        self.output_dir = str(output_dir or study.experiments_dir)  # a folder or a URI: never Path() it
        self._learned: list[Constraint] = list(constraints or [])
        self._config_model: type[BaseModel] | None | bool = False  # False = not looked up yet
        self._copy = False  # unpickled in another process (an agent's actor)
        self._baseline_flat = flatten_config(study.baseline)

    def __getstate__(self) -> dict[str, Any]:
        # The trainable's Config is looked up again where it is needed: unpickling the
        # class would import the trainable (torch, timm) in agents that never validate.
        # A copy marks itself: see _get_config_model.
        return {**self.__dict__, "_config_model": False, "_copy": True}

    # ------------------------------------------------------------ constraints

    @property
    def constraints(self) -> list[Constraint]:
        """Declared constraints first, then learned ones."""
        return [*self.study.constraints, *self._learned]

    def set_constraints(self, learned: list[Constraint]) -> None:
        """Replace the learned constraints (the historian's latest)."""
        self._learned = list(learned)

    # ---------------------------------------------------------------- baseline

    def get_baseline_config(self) -> dict[str, Any]:
        """The study's baseline, nested (a copy)."""
        return unflatten_config(dict(self._baseline_flat))

    # -------------------------------------------------------------- generation

    def merge(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Baseline with ``changes`` applied, flat (dotted keys). No validation."""
        merged = dict(self._baseline_flat)
        merged.update(flatten_config(changes))
        return merged

    def validate(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge and validate without writing; returns the nested config.

        Raises:
            ConfigValidationError: with every violation found.
        """
        flat_changes = flatten_config(changes)
        unknown = [Violation(k, v, self._unknown_rule(k)) for k, v in flat_changes.items()
                   if k not in self.space]
        merged = dict(self._baseline_flat)
        merged.update(flat_changes)
        return self._validate_flat(merged, extra=unknown)

    def generate_config(
        self,
        experiment_id: str,
        proposal: Proposal | Mapping[str, Any],
        validate: bool = True,
        write: bool = True,
    ) -> dict[str, Any]:
        """Merge a proposal's changes into the baseline, validate, and write the config.

        Args:
            experiment_id: a safe folder name (letters, digits, ``_ . -``, ≤ 64).
            proposal: a :class:`Proposal`, or a mapping with ``changes`` (or of changes).
            validate: check the search space, the trainable's ``Config`` and constraints.
            write: write ``<output_dir>/<id>/config.yaml`` and ``config.json``.

        Returns:
            the nested config, with ``experiment_id`` added.

        Raises:
            ConfigValidationError: naming every field at fault; nothing is written.
        """
        problem = experiment_id_problem(experiment_id)
        if problem:
            raise ConfigValidationError([Violation("experiment_id", experiment_id, problem)])
        if isinstance(proposal, Proposal):
            changes = proposal.changes
        elif isinstance(proposal, Mapping):
            changes = proposal.get("changes", proposal) if "changes" in proposal else proposal
        else:
            raise ConfigValidationError(
                [Violation("proposal", type(proposal).__name__, "expected a Proposal or a mapping of changes")]
            )
        config = self.validate(changes) if validate else unflatten_config(self.merge(changes))
        config["experiment_id"] = experiment_id
        if write:
            self.write_config(experiment_id, config)
        return config

    def write_config(self, experiment_id: str, config: Mapping[str, Any]) -> str:
        """Atomically write ``config.yaml`` and ``config.json`` under ``<output_dir>/<id>/``
        (a local folder or a URI, through :mod:`arc_ray.storage`). Returns that folder."""
        final = storage.join(self.output_dir, experiment_id)
        as_yaml = yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False)
        as_json = json.dumps(config, indent=1, default=str)
        try:
            storage.make_dirs(self.output_dir)
        except OSError as exc:
            raise ConfigValidationError(
                [Violation("storage", self.output_dir, f"cannot create folder: {exc}")]
            ) from None
        if storage.is_uri(final) or storage.is_dir(final):
            # an object store replaces whole objects; a rewrite (resume) replaces each file
            storage.atomic_write_text(storage.join(final, "config.yaml"), as_yaml)
            storage.atomic_write_text(storage.join(final, "config.json"), as_json)
            return final
        tmp = Path(tempfile.mkdtemp(dir=self.output_dir, prefix=f".{experiment_id}."))
        try:
            (tmp / "config.yaml").write_text(as_yaml, encoding="utf-8")
            (tmp / "config.json").write_text(as_json, encoding="utf-8")
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not storage.is_dir(final):
                raise
            # another writer placed the same experiment first: keep theirs, refresh files
            storage.atomic_write_text(storage.join(final, "config.yaml"), as_yaml)
            storage.atomic_write_text(storage.join(final, "config.json"), as_json)
        return final

    # -------------------------------------------------------------- validation

    def _unknown_rule(self, key: str) -> str:
        group, _, leaf = key.rpartition(".")
        if group and any(n.startswith(group + ".") for n in self.space.names):
            known = sorted(n.rpartition(".")[2] for n in self.space.names if n.startswith(group + "."))
            return f"unknown {group} key {leaf!r}; expected one of: {', '.join(known)}"
        return f"unknown parameter; searchable parameters are: {', '.join(self.space.names)}"

    def _validate_flat(self, flat: dict[str, Any], extra: list[Violation]) -> dict[str, Any]:
        """Check a merged flat config; returns it coerced and nested (built once, for the
        trainable's ``Config`` and the caller alike)."""
        coerced, space_violations = self.space.validate_flat(flat)
        nested = unflatten_config(coerced)
        violations = [*extra, *space_violations]
        if not violations:
            violations += self._model_violations(nested)
        if not violations:
            for c in self.constraints:
                if c.forbids(coerced):
                    field = " × ".join(c.parameters)
                    value = c.quantity(coerced)
                    violations.append(Violation(
                        field, value, f"inside {c.source} constraint {c.id!r} ({c.describe()}): {c.reason}"))
        if violations:
            raise ConfigValidationError(violations)
        return nested

    def _model_violations(self, nested: dict[str, Any]) -> list[Violation]:
        model = self._get_config_model()
        if model is None:
            return []
        try:
            model.model_validate(nested)
        except ValidationError as exc:
            return [Violation(".".join(map(str, e["loc"])) or "config", e.get("input"),
                              f"{model.__name__}: {e['msg']}") for e in exc.errors()]
        return []

    def _get_config_model(self) -> type[BaseModel] | None:
        if self._config_model is False:
            try:
                self._config_model = self.study.load_config_model()
            except ConfigValidationError as exc:
                if not self._copy:
                    raise
                # A copy in an agent's actor that cannot import the trainable's module:
                # it is on the driver's path only (a script's folder, a notebook's
                # sys.path). Rejecting every config here left the proposers with nothing
                # to propose. The driver checks the study's trainable before the loop
                # starts, and the collective validates every proposal against its
                # Config again in the driver.
                rule = exc.violations[0].rule
                if rule not in _WARNED:  # once per process, not once per cycle and agent
                    _WARNED.add(rule)
                    logger.warning("not checking configs against the trainable's Config in this process "
                                   "(%s); the driver checks every proposal against it", rule)
                self._config_model = None
        return self._config_model  # type: ignore[return-value]


_default_generator: ExperimentConfigGenerator | None = None
_default_lock = threading.Lock()


def get_config_generator(study: "StudyConfig | None" = None) -> ExperimentConfigGenerator:
    """The process-wide generator (seed surface). The first call must pass the study."""
    global _default_generator
    with _default_lock:
        if study is not None and (_default_generator is None or _default_generator.study is not study):
            _default_generator = ExperimentConfigGenerator(study)
        if _default_generator is None:
            raise RuntimeError("get_config_generator() needs a study on its first call")
        return _default_generator


__all__ = ["ExperimentConfigGenerator", "get_config_generator"]
