"""The Python API: the autonomous loop over your own trainable, without a YAML file.

A trainable is either a Ray Tune function trainable (``train(config)`` that calls
``tune.report``) or a cheap objective (``objective(config) -> {"metric": value}``).
Give it with a search space and the metric to optimise, and ARC runs the same loop as
``arc run``::

    import arc_ray

    def objective(config):
        return {"score": -(config["x"] - 0.3) ** 2}

    result = arc_ray.run_study(objective, {"x": {"type": "float", "low": -1, "high": 1}},
                               metric="score", cycles=3, executor="inprocess")
    print(result.best_value, result.best_config)

A study file works too: ``arc_ray.run_study("configs/arc.yaml", cycles=3)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.space import SearchSpace, unflatten_config
from arc_ray.study import StudyConfig

if TYPE_CHECKING:
    from arc_ray.orchestrator import CycleEvent, RunReport


def _reference(trainable: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, as ``StudyConfig.trainable`` spells it."""
    module = getattr(trainable, "__module__", None)
    name = getattr(trainable, "__qualname__", None) or getattr(trainable, "__name__", None)
    if not module or not name:
        raise ConfigValidationError([Violation("trainable", repr(trainable),
                                               "expected a function or a 'module:function' string")])
    return f"{module}:{name}"


def default_baseline(space: SearchSpace) -> dict[str, Any]:
    """A baseline in the middle of the search space (log-middle for log parameters)."""
    return unflatten_config(space.middle())


def make_study(trainable: Callable[..., Any] | str, search_space: SearchSpace | Mapping[str, Any],
               metric: str, *, mode: str = "max", baseline: Mapping[str, Any] | None = None,
               name: str | None = None, storage: str | Path = "history", **settings: Any) -> StudyConfig:
    """Build a :class:`StudyConfig` from Python objects.

    Args:
        trainable: a Tune function trainable or a plain objective, or ``"module:function"``.
        search_space: YAML-shaped parameter specs (``{"lr": {"type": "float", "low": 1e-4,
            "high": 0.1, "log": True}}``; groups nest) or a :class:`SearchSpace`.
        metric: the metric to optimise, as the trainable reports it.
        mode: ``"max"`` or ``"min"``.
        baseline: the starting config; default: the middle of the search space.
        name: the study's name (its history folder); default: the trainable's name.
        storage: the history root (a folder or a pyarrow filesystem URI).
        **settings: any other :class:`StudyConfig` field (``executor``, ``target``,
            ``budget``, ``resources``, ``max_concurrent_trials``, ``proposers``, ...).

    Raises:
        ConfigValidationError: a field breaks a rule (named in the message).
    """
    ref = trainable if isinstance(trainable, str) else _reference(trainable)
    space = search_space if isinstance(search_space, SearchSpace) else _space(search_space)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref.rpartition(":")[2]).strip("._") or "study"
    storage = str(storage) if "://" in str(storage) else str(Path(storage).resolve())
    data = {"name": name, "trainable": ref, "metric": metric, "mode": mode,
            "baseline": dict(baseline) if baseline is not None else default_baseline(space),
            "search_space": space, "storage": storage, **settings}
    return StudyConfig.from_dict(data, source=f"study {name!r}")


def _space(mapping: Mapping[str, Any]) -> SearchSpace:
    try:
        return SearchSpace.from_mapping(mapping)
    except ValueError as exc:
        raise ConfigValidationError([Violation("search_space", None, str(exc))]) from None


def run_study(trainable: Callable[..., Any] | str | StudyConfig | Path,
              search_space: SearchSpace | Mapping[str, Any] | None = None, metric: str | None = None, *,
              cycles: int | None = None, address: str | None = None, offline: bool = False,
              on_event: Callable[["CycleEvent"], None] | None = None, **study_fields: Any) -> "RunReport":
    """Run the autonomous loop and return what it did.

    Args:
        trainable: a function (with ``search_space`` and ``metric``), a
            ``"module:function"`` string (likewise), a :class:`StudyConfig`, or the path
            of a study YAML file.
        search_space: see :func:`make_study`; not allowed with a study or a file.
        metric: see :func:`make_study`.
        cycles: the most cycles to run now (default: until the target or a budget).
        address: the Ray cluster; default ``RAY_ADDRESS``, else Ray starts in-process.
        offline: decide and log only, run nothing.
        on_event: progress callback (see :class:`~arc_ray.orchestrator.CycleEvent`).
        **study_fields: :func:`make_study` keywords (``mode``, ``baseline``, ``name``,
            ``storage``, ``executor``, ``target``, ``budget``, ...).

    Returns:
        the :class:`~arc_ray.orchestrator.RunReport`: best value, experiment and config,
        cycles run and why the loop stopped.

    Raises:
        ConfigValidationError: the study is invalid.
        ClusterConnectionError: Ray cannot be reached.
    """
    from arc_ray.orchestrator import Orchestrator

    fn: Callable[..., Any] | None = None
    if isinstance(trainable, StudyConfig) or _is_study_file(trainable):
        if search_space is not None or metric is not None or study_fields:
            raise ConfigValidationError([Violation(
                "search_space", None, "a study file or StudyConfig already declares the search space, "
                "metric and settings; pass only cycles, address, offline and on_event")])
        study = trainable if isinstance(trainable, StudyConfig) else StudyConfig.from_yaml(trainable)
    else:
        missing = [n for n, v in (("search_space", search_space), ("metric", metric)) if v is None]
        if missing:
            raise ConfigValidationError([Violation(n, None, "required with a trainable") for n in missing])
        study = make_study(trainable, search_space, metric, **study_fields)  # type: ignore[arg-type]
        fn = trainable if callable(trainable) else None
    orch = Orchestrator(study, offline_mode=offline, address=address, trainable=fn, on_event=on_event)
    try:
        result = orch.run(max_cycles=cycles)
    except KeyboardInterrupt:  # leave the trials unfinished, not cancelled: a re-run resumes them
        orch.shutdown(kill_actors=True, cancel_trials=False)
        raise
    except BaseException:
        orch.shutdown(kill_actors=True)
        raise
    orch.shutdown(kill_actors=True)
    return result


def _is_study_file(x: Any) -> bool:
    return isinstance(x, Path) or (isinstance(x, str) and x.endswith((".yaml", ".yml")))


__all__ = ["default_baseline", "make_study", "run_study"]
