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


def make_trial_function(user_fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Wrap a Tune function trainable (or a plain ``objective(config) -> dict``).

    The wrapper carries the trainable's name, so Tune's folders and ``Tuner.restore``'s
    trainable check see the study's trainable.
    """

    def arc_trial(config: dict[str, Any]) -> Any:
        from ray import tune

        entry = config[TRIAL_KEY]
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
    entry = (getattr(trial, "config", None) or {}).get(TRIAL_KEY)
    return entry.get("experiment_id") if isinstance(entry, dict) else None


def trial_name(trial: Any) -> str:
    """Tune's ``trial_name_creator``: the experiment id."""
    return experiment_id_of(trial) or str(trial.trial_id)


def trial_dirname(trial: Any) -> str:
    """Tune's ``trial_dirname_creator``: the experiment id (a validated, safe folder name)."""
    return experiment_id_of(trial) or f"trial_{trial.trial_id}"


__all__ = ["TRIAL_KEY", "experiment_id_of", "make_trial_function",
           "trial_dirname", "trial_name", "trial_resources"]
