"""Cheap trainables for tests, benchmarks and the Python-API example.

``objective(config) -> metrics`` is a plain function (the in-process executor calls it);
``train(config)`` is the same response as a Ray Tune function trainable that reports
once per epoch. Both are deterministic in the config. A few config keys make a trial
misbehave on purpose, so the executor's failure handling can be tested for real:

- ``fail: "crash"``   raise ``RuntimeError`` in the first epoch
- ``fail: "nan"``     report a NaN loss, raising ``TrainingDivergedError``
- ``fail: "oom"``     raise ``TrainingOutOfMemoryError``
- ``fail: "exit"``    kill the worker process after the first epoch of a fresh start (a
  retry that resumes from the epoch-1 checkpoint then succeeds)
- ``sleep_s: x``      sleep ``x`` seconds per epoch (timeouts, concurrency, kills)
- ``events_file: p``  append one JSON line per start and end of a run to ``p`` (the
  executor tests count runs and measure overlap with it)
- ``bad_metric: k``   report ``score`` as ``nan``, ``inf``, a ``string``, under another
  name (``renamed``), or report nothing at all (``none``): a trial without the metric
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from arc_ray.errors import TrainingDivergedError, TrainingOutOfMemoryError


class Config(BaseModel):
    """The toy trainable's config; extra keys (experiment_id, ...) are ignored."""

    model_config = ConfigDict(extra="allow")

    x: float = 0.0  # the optimum is at x = 0.3
    lr: float = Field(0.01, gt=0)
    model: str = "small"
    layers: int = 2
    epochs: int = Field(3, ge=1)
    train_split: float = 0.8
    val_split: float = 0.2
    sleep_s: float = Field(0.0, ge=0)
    fail: str | None = None
    events_file: str | None = None
    bad_metric: str | None = None

    @model_validator(mode="after")
    def _splits(self) -> "Config":
        if abs(self.train_split + self.val_split - 1.0) > 1e-9:
            raise ValueError("train_split + val_split must equal 1")
        return self


_MODEL_BONUS = {"small": 0.0, "medium": 0.05, "large": 0.02}


def objective(config: dict[str, Any]) -> dict[str, Any]:
    """A smooth, mixed-type response with its maximum 1.0 near x=0.3, lr=0.01, medium, 3 layers."""
    return _spoil(_response(config), config.get("bad_metric"))


def _spoil(metrics: dict[str, Any], how: str | None) -> dict[str, Any]:
    """The metrics as a trainable that misreports ``score`` would give them (``bad_metric``)."""
    if how is None:
        return metrics
    out = dict(metrics)
    score = out.pop("score")
    if how == "none":
        return {}
    replacement = {"nan": float("nan"), "inf": float("inf"), "string": "high"}
    out["scor" if how == "renamed" else "score"] = replacement.get(how, score)
    return out


def _response(config: dict[str, Any]) -> dict[str, float]:
    x = float(config.get("x", 0.0))
    lr = float(config.get("lr", 0.01))
    score = (
        0.9
        - (x - 0.3) ** 2
        - 0.05 * (math.log10(lr) + 2.0) ** 2
        + _MODEL_BONUS.get(str(config.get("model", "small")), 0.0)
        - 0.01 * (int(config.get("layers", 2)) - 3) ** 2
    )
    return {"score": score, "loss": 1.0 - score}


def train(config: dict[str, Any]) -> None:
    """Ray Tune function trainable over :func:`objective`; reports ``score`` every epoch."""
    from ray import tune

    cfg = Config.model_validate(config)
    final = _response(config)
    start_epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start_epoch = int(open(os.path.join(d, "epoch")).read())
    _event(cfg, config, "start", start_epoch=start_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        if cfg.fail == "crash":
            raise RuntimeError("toy trainable asked to crash")
        if cfg.fail == "oom":
            raise TrainingOutOfMemoryError("CUDA out of memory (toy trainable asked to fail)")
        if cfg.fail == "nan":
            raise TrainingDivergedError(f"loss is nan at epoch {epoch} step 0", epoch=epoch, step=0)
        if cfg.fail == "exit" and start_epoch == 0 and epoch == 1:
            os._exit(1)  # the worker dies as if OOM-killed: no exception reaches Tune
        frac = (epoch + 1) / cfg.epochs
        if cfg.bad_metric == "none":
            continue  # never reports
        metrics = _spoil({k: v * frac if k == "score" else v for k, v in final.items()}, cfg.bad_metric)
        metrics.update(epoch=epoch + 1, pid=os.getpid(), t_end=time.time(),
                       cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as fh:
                fh.write(str(epoch + 1))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
    _event(cfg, config, "end", start_epoch=start_epoch, epochs=cfg.epochs)


def _event(cfg: Config, config: dict[str, Any], kind: str, **extra: Any) -> None:
    if not cfg.events_file:
        return
    line = json.dumps({"event": kind, "experiment_id": config.get("experiment_id"), "t": time.time(),
                       "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       **extra})
    with open(cfg.events_file, "a", encoding="utf-8") as fh:  # one short append per event
        fh.write(line + "\n")
