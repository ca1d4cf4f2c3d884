"""What runs inside a Ray Tune trial on a worker: the trial wrapper and its failure report.

The executor hands Tune one wrapped function per study. Each trial's Tune config is
``{"arc_trial": {"experiment_id", "config", "resources"}}``; the wrapper passes the
study's trainable exactly the validated ``config`` (so a trainable never sees Tune or
ARC bookkeeping), and Tune reads the trial's resources, name and folder from the same
entry, so a restored experiment needs nothing but its own saved state.

A trainable that raises does not become a Tune error: the wrapper reports the failure
as one last result (``arc_error_class``, ``arc_error_type``, ``arc_error_message``) and
returns. Tune's ``FailureConfig.max_failures`` then retries only what it should — a
worker that died (``RayActorError``: killed, OOM-killed, segfault) — instead of re-running
a config that deterministically diverges or runs out of memory, and the trial's actor
stays reusable for the next trial.
"""

from __future__ import annotations

import gc
import sys
import traceback
from typing import Any, Callable

from arc_ray.executor.base import classify_error

#: The one key of a Tune trial's config; everything ARC needs travels under it.
TRIAL_KEY = "arc_trial"
#: Keys of the failure result the wrapper reports when the trainable raises.
ERROR_CLASS_KEY = "arc_error_class"
ERROR_TYPE_KEY = "arc_error_type"
ERROR_MESSAGE_KEY = "arc_error_message"
ERROR_TRACEBACK_KEY = "arc_error_traceback"

_MAX_MESSAGE = 2000

#: A warm trial's entry carries this key instead of an experiment (see :func:`warm_entry`),
#: and its reports carry it too, so the scheduler knows them from a real trial's results.
WARM_KEY = "arc_warm"
WARM_REPORT_S = 0.2  # how often a warm trial asks whether its worker is wanted
WARM_LIMIT_S = 3600.0  # a warm trial nobody released ends by itself after this long


def make_trial_function(user_fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Wrap a Tune function trainable (or a plain ``objective(config) -> dict``).

    The wrapper carries the trainable's name, so Tune's folders and ``Tuner.restore``'s
    trainable check see the study's trainable.
    """

    def arc_trial(config: dict[str, Any]) -> Any:
        from ray import tune

        entry = config[TRIAL_KEY]
        if WARM_KEY in entry:
            _hold_warm(tune)
            return None
        try:
            return user_fn(dict(entry["config"]))
        except Exception as exc:  # failures are data: report, do not raise (see module doc)
            failure = {
                ERROR_CLASS_KEY: classify_error(exc).value,
                ERROR_TYPE_KEY: type(exc).__name__,
                ERROR_MESSAGE_KEY: str(exc)[:_MAX_MESSAGE] or type(exc).__name__,
                ERROR_TRACEBACK_KEY: "".join(traceback.format_exception(exc))[-_MAX_MESSAGE:],
            }
            del exc  # drop the traceback's frames (and the tensors they hold) before reuse
            _release_memory()
            tune.report(failure)
            return None

    # Only the name: functools.wraps would also copy __module__/__qualname__, and
    # cloudpickle would then ship the user's function by reference instead of this wrapper.
    arc_trial.__name__ = getattr(user_fn, "__name__", "arc_trial")
    return arc_trial


def warm_entry(k: int, resources: dict[str, Any]) -> dict[str, Any]:
    """The Tune config entry of warm trial ``k``: no experiment, only a worker to start."""
    return {WARM_KEY: k, "resources": resources}


def _entry(trial: Any) -> dict[str, Any]:
    """A Tune trial's ARC entry (empty for a trial ARC did not create)."""
    entry = (getattr(trial, "config", None) or {}).get(TRIAL_KEY)
    return entry if isinstance(entry, dict) else {}


def is_warm(trial: Any) -> bool:
    """Whether a Tune trial is a warm trial (:func:`warm_entry`)."""
    return WARM_KEY in _entry(trial)


def _hold_warm(tune: Any) -> None:
    """A warm trial: its worker has started and imported Tune (the seconds a new trial
    worker costs); it reports every :data:`WARM_REPORT_S` until the scheduler stops it,
    and Tune hands the worker to the trial that needs the slot (``reuse_actors``)."""
    import time

    deadline = time.monotonic() + WARM_LIMIT_S
    while time.monotonic() < deadline:
        tune.report({WARM_KEY: 1})
        time.sleep(WARM_REPORT_S)


def _release_memory() -> None:
    """Give GPU memory back after a failed trial, so a reused actor starts clean."""
    torch = sys.modules.get("torch")
    if torch is None:
        return  # nothing on an accelerator to free; a full gc would only cost time
    try:
        if torch.cuda.is_available():
            gc.collect()  # the exception's frames (and their tensors) sit in reference cycles
            torch.cuda.empty_cache()
    except Exception:  # never let cleanup mask the trial's own failure
        pass


def trial_resources(config: dict[str, Any]) -> Any:
    """Tune's per-trial resource request, read from the trial's own config."""
    from ray.tune import PlacementGroupFactory

    res = config[TRIAL_KEY]["resources"]
    bundle = {"CPU": float(res.get("cpu", 1.0))}
    if float(res.get("gpu", 0.0)) > 0:
        bundle["GPU"] = float(res["gpu"])
    return PlacementGroupFactory([bundle])


def experiment_id_of(trial: Any) -> str | None:
    """The ARC experiment id of a Tune trial, or ``None`` for a trial ARC did not create."""
    return _entry(trial).get("experiment_id")


def trial_name(trial: Any) -> str:
    """Tune's ``trial_name_creator``: the experiment id (``warm_<k>`` for a warm trial)."""
    return experiment_id_of(trial) or _warm_name(trial) or str(trial.trial_id)


def trial_dirname(trial: Any) -> str:
    """Tune's ``trial_dirname_creator``: the experiment id (a validated, safe folder name)."""
    return experiment_id_of(trial) or _warm_name(trial) or f"trial_{trial.trial_id}"


def _warm_name(trial: Any) -> str | None:
    return f"warm_{int(_entry(trial)[WARM_KEY])}" if is_warm(trial) else None


__all__ = ["TRIAL_KEY", "WARM_KEY", "experiment_id_of", "is_warm", "make_trial_function",
           "trial_dirname", "trial_name", "trial_resources", "warm_entry"]
