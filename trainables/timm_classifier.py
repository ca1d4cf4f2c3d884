"""The flagship trainable: a timm image classifier for glaucoma screening.

``train(config)`` is a Ray Tune function trainable; it validates the config with
:class:`Config`, restores the last checkpoint when Tune restarts the trial, and hands
over to :func:`run_training`, which reads top to bottom: build data, build model,
loop over epochs (train, evaluate, report + checkpoint). ``run_training`` runs outside
Tune too (tests, benchmarks, the smoke test), reporting through any callable.

Every epoch reports, on the validation split, the screening metrics of
:mod:`arc_ray.screening` (``auc`` with its 95 % bootstrap interval ``auc_ci_low`` /
``auc_ci_high``, ``sensitivity`` and ``specificity`` at the Youden threshold (also
reported as ``threshold``), ``sens_at_spec90``/``sens_at_spec95``,
``spec_at_sens90``/``spec_at_sens95``, ``brier``) and ``val_loss``; and ``train_loss``,
``epoch``, ``samples_per_s`` (training images per second of training-loop time), ``lr``,
``skipped_images`` and ``threads`` (torch CPU threads). Metrics come from
scikit-learn. On a CUDA device the loop uses bf16 autocast and channels_last; on a
CPU it uses as many threads as Ray assigned CPUs. The test split (``test_split``, see
:mod:`trainables.data`) is never evaluated here: it is scored once, by ``arc export``.

Each epoch's checkpoint holds the resume state of that epoch (``state.pt``: model,
optimizer, schedule, random state) and the weights of the *best* epoch so far by
``select_metric``/``select_mode`` (``best_model.safetensors``, plus ``best.json``: epoch,
metrics, model name, image size, normalisation and the full config). So a trial's newest
checkpoint always carries its best model, and Tune still resumes from the last epoch.

Failures are typed so the executor can learn from them: a NaN/inf loss raises
:class:`~arc_ray.errors.TrainingDivergedError` (epoch, step), running out of memory
:class:`~arc_ray.errors.TrainingOutOfMemoryError`, bad data
:class:`~arc_ray.errors.DataError` (before training starts).

Smoke test (a tiny model on 64 synthetic images, seconds on a CPU)::

    python -m trainables.timm_classifier --smoke-test
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arc_ray.errors import TrainingDivergedError, TrainingExecutionError, TrainingOutOfMemoryError
from arc_ray.screening import SCREENING_METRICS, screening_metrics
from trainables.data import SplitData, augment, load_data

logger = logging.getLogger(__name__)

Report = Callable[[dict[str, float], Path], None]  # (metrics, checkpoint dir valid during the call)

_FINITE_CHECK_EVERY = 16  # steps between NaN checks (each check syncs a GPU once)
_CHECKPOINT_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.safetensors"  # the best epoch's weights, in every checkpoint
BEST_INFO_FILE = "best.json"  # what the weights are: epoch, metrics, model, image size, normalisation, config
#: Metrics the best epoch can be selected by (what :func:`evaluate` reports, bar the threshold).
SELECTABLE_METRICS = (*(m for m in SCREENING_METRICS if m != "threshold"), "val_loss")


# ---------------------------------------------------------------------------- config
class Augmentation(BaseModel):
    """Batch augmentation applied to training images (see :func:`trainables.data.augment`)."""

    model_config = ConfigDict(extra="forbid")

    flip: bool = True  # random horizontal flip
    rotate: float = Field(0.0, ge=0, le=180)  # max rotation, degrees
    crop: float = Field(0.0, ge=0, lt=1)  # random-resized-crop scale jitter (0 = none)
    color_jitter: float = Field(0.0, ge=0, le=1)  # brightness/contrast/saturation jitter


class Synthetic(BaseModel):
    """The synthetic fundus set used when ``data_dir`` is null."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(600, ge=4)  # number of images
    size: int = Field(32, ge=8)  # side drawn, px (resized to image_size if different)
    seed: int = 0


class Config(BaseModel):
    """The classifier's config; extra keys (``experiment_id``, ...) are allowed and ignored."""

    model_config = ConfigDict(extra="allow")

    # ---- model
    model: str = "resnet18"  # any timm model name
    pretrained: bool = False  # load timm weights; they must be cached (nothing is downloaded)
    allow_download: bool = False  # let timm fetch missing pretrained weights from the hub
    image_size: int = Field(32, ge=8, le=1024)
    dropout: float = Field(0.0, ge=0, lt=1)  # classifier-head dropout (timm drop_rate)
    # ---- optimisation
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "step", "none"] = "cosine"  # per-epoch; step = ×0.1 every third of the run
    epochs: int = Field(3, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap on training steps (quick checks)
    augmentation: Augmentation = Field(default_factory=Augmentation)
    seed: int = 0
    # ---- data
    data_dir: str | None = None  # null = synthetic fundus set; else ImageFolder root or CSV/Parquet manifest
    positive_class: str = "glaucoma"  # the class that is label 1
    train_split: float = Field(0.8, gt=0, lt=1)  # of the images not held out for test
    val_split: float = Field(0.2, gt=0, lt=1)  # train_split + val_split == 1
    test_split: float = Field(0.0, ge=0, lt=1)  # of all images, held out first, same for every trial (0 = none)
    synthetic: Synthetic = Field(default_factory=Synthetic)
    cache_max_bytes: int = Field(1_000_000_000, ge=0)  # decoded images kept in memory up to this size
    num_workers: int = Field(0, ge=0)  # DataLoader workers when images do not fit the cache
    # ---- best-epoch checkpoint: set these to the study's metric and mode when it is not auc/max
    select_metric: str = "auc"  # the metric that picks the best epoch (one of SELECTABLE_METRICS)
    select_mode: Literal["max", "min"] = "max"
    # ---- hardware
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        import timm

        if not timm.is_model(name):
            near = timm.list_models(f"*{name[:5]}*")[:8]
            hint = f"; similar names: {', '.join(near)}" if near else ""
            raise ValueError(f"unknown timm model {name!r} (see timm.list_models()){hint}")
        return name

    @field_validator("select_metric")
    @classmethod
    def _selectable(cls, name: str) -> str:
        if name not in SELECTABLE_METRICS:
            raise ValueError(f"select_metric {name!r} is not a validation metric; use one of "
                             f"{', '.join(SELECTABLE_METRICS)}")
        return name

    @model_validator(mode="after")
    def _splits(self) -> Config:
        if abs(self.train_split + self.val_split - 1.0) > 1e-9:
            raise ValueError(f"train_split + val_split must equal 1 (got {self.train_split} + {self.val_split})")
        return self

    @property
    def experiment_id(self) -> str | None:
        return (self.model_extra or {}).get("experiment_id")


# ---------------------------------------------------------------------------- Tune entry point
def train(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: report every epoch with a checkpoint; resume from one."""
    from ray import tune

    cfg = Config.model_validate(config)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_checkpoint(d)
        logger.info("resuming %s from epoch %d", cfg.experiment_id, state["epoch"])

    def report(metrics: dict[str, float], ckpt_dir: Path) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))

    run_training(cfg, report=report, resume_state=state, num_threads=assigned_cpus())


def assigned_cpus() -> int | None:
    """CPUs Ray gave this worker (so parallel trials do not oversubscribe the cores)."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # outside a Ray worker the context may not be available
        logger.debug("no Ray runtime context", exc_info=True)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint directory written by :func:`run_training`.

    Returns:
        the resume state (``epoch``, ``model``, ``optimizer``, ...), with ``best`` (the
        contents of ``best.json``) and ``best_model`` (its weights) when the checkpoint
        carries a best epoch.
    """
    from safetensors.torch import load_file

    path = Path(path)
    state = torch.load(path / _CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    if (path / BEST_INFO_FILE).is_file() and (path / BEST_MODEL_FILE).is_file():
        state["best"] = json.loads((path / BEST_INFO_FILE).read_text(encoding="utf-8"))
        state["best_model"] = load_file(str(path / BEST_MODEL_FILE))
    return state


def normalisation(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel ``(mean, std)`` a timm model expects of images scaled to [0, 1]."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


# ---------------------------------------------------------------------------- the training run
def run_training(config: Config | dict[str, Any], *, report: Report | None = None,
                 resume_state: dict[str, Any] | None = None, num_threads: int | None = None) -> dict[str, float]:
    """Train and evaluate once per epoch; the core of :func:`train`, usable without Ray.

    Args:
        config: a :class:`Config` or a dict that validates as one.
        report: called after each epoch with the metrics and a directory holding the
            checkpoint (valid only during the call). ``None``: no checkpoints are written.
        resume_state: a checkpoint read by :func:`load_checkpoint`; training continues
            after its epoch with the same model, optimizer, schedule and random state,
            and keeps its best epoch unless a later one beats it.
        num_threads: torch CPU threads (``None`` leaves torch's default).

    Returns:
        The last epoch's metrics.

    Raises:
        DataError: the data cannot be used (raised before the model is built).
        TrainingDivergedError: a loss became NaN or infinite.
        TrainingOutOfMemoryError: the device ran out of memory.
    """
    cfg = config if isinstance(config, Config) else Config.model_validate(config)
    if num_threads:
        torch.set_num_threads(num_threads)
    device = _device(cfg)
    cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed)  # model init and dropout
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 2)  # augmentation, drawn on the device

    # ---- data: uint8 N×3×S×S, checked before anything else is built
    data: SplitData = load_data(
        cfg.data_dir, image_size=cfg.image_size, positive_class=cfg.positive_class,
        train_split=cfg.train_split, val_split=cfg.val_split, seed=cfg.seed,
        synthetic=(cfg.synthetic.n, cfg.synthetic.size, cfg.synthetic.seed),
        cache_max_bytes=cfg.cache_max_bytes, num_workers=cfg.num_workers, test_split=cfg.test_split)
    if cuda and hasattr(data.train, "to"):
        data.train, data.val = data.train.to(device), data.val.to(device)  # type: ignore[attr-defined]
    logger.info("data: %s, %d train / %d val, %d skipped", data.source, len(data.train), len(data.val),
                data.skipped_images)

    # ---- model, optimizer, schedule
    model = build_model(cfg).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    norm_mean, norm_std = normalisation(model)
    mean = torch.tensor(norm_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm_std, device=device).view(1, 3, 1, 1)
    optimizer = _optimizer(cfg, model)
    scheduler = _scheduler(cfg, optimizer)
    start_epoch = 0
    best: _Best | None = None  # the best epoch so far, its weights on the CPU
    if resume_state is not None and "best" in resume_state:
        best = _Best(resume_state["best"], resume_state["best_model"])
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["rng"])
        gen.set_state(resume_state["generator"])
        aug_gen.set_state(resume_state["aug_generator"])
        start_epoch = int(resume_state["epoch"])

    def prepare(images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 B×3×S×S → normalised float on the device, augmented when training."""
        x = images.to(device, non_blocking=True).float().div_(255)
        if train:
            a = cfg.augmentation
            x = augment(x, flip=a.flip, rotate=a.rotate, crop=a.crop, color_jitter=a.color_jitter, generator=aug_gen)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    metrics: dict[str, float] = {}
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # ---- train one epoch
            model.train()
            seen, losses, start = 0, [], time.perf_counter()
            for step, (images, labels) in enumerate(
                    data.train.batches(cfg.batch_size, shuffle=True, generator=gen, drop_singleton=True)):
                if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
                    break
                x, y = prepare(images, train=True), labels.to(device, non_blocking=True)
                with autocast:
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
                seen += len(y)
                if (step + 1) % _FINITE_CHECK_EVERY == 0:
                    _check_finite(losses, epoch, cfg)
            _check_finite(losses, epoch, cfg)
            if cuda:
                torch.cuda.synchronize()
            train_time = time.perf_counter() - start
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()

            # ---- evaluate and report
            metrics = evaluate(model, data, prepare, autocast, batch_size=2 * cfg.batch_size)
            metrics.update(
                epoch=epoch + 1, train_loss=float(torch.stack(losses).float().mean()) if losses else math.nan,
                samples_per_s=seen / train_time if train_time > 0 else 0.0, lr=lr,
                skipped_images=data.skipped_images, train_samples=len(data.train), val_samples=len(data.val),
                threads=torch.get_num_threads(),
                epoch_time_s=time.perf_counter() - start)
            logger.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                        " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if report is not None:
                if best is None or _better(cfg, metrics.get(cfg.select_metric), best.info["metrics"]):
                    best = _Best(_best_info(cfg, epoch + 1, metrics, norm_mean, norm_std),
                                 {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                with tempfile.TemporaryDirectory(prefix="arc-ckpt-") as d:
                    torch.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                "generator": gen.get_state(), "aug_generator": aug_gen.get_state(),
                                "metrics": metrics}, Path(d) / _CHECKPOINT_FILE)
                    best.write(Path(d))
                    report(dict(metrics), Path(d))
    except torch.OutOfMemoryError as exc:
        raise _oom(cfg, exc) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise _oom(cfg, exc) from exc
        raise
    return metrics


class _Best:
    """The best epoch so far: ``best.json``'s contents and the weights (CPU tensors)."""

    def __init__(self, info: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.info, self.weights = info, weights

    def write(self, folder: Path) -> None:
        """Write ``best_model.safetensors`` and ``best.json`` into a checkpoint folder."""
        from safetensors.torch import save_file

        # Contiguous, unshared copies: safetensors refuses tensors that share storage.
        save_file({k: v.contiguous().clone() for k, v in self.weights.items()}, str(folder / BEST_MODEL_FILE),
                  metadata={"epoch": str(self.info["epoch"]), "model": self.info["model"]})
        (folder / BEST_INFO_FILE).write_text(json.dumps(self.info, indent=1, allow_nan=False), encoding="utf-8")


def _better(cfg: Config, value: float | None, best_metrics: dict[str, Any]) -> bool:
    """Whether this epoch's ``select_metric`` beats the best epoch's (a non-finite value never does)."""
    if value is None or not math.isfinite(value):
        return False
    old = best_metrics.get(cfg.select_metric)
    if old is None or not math.isfinite(old):
        return True
    return value > old if cfg.select_mode == "max" else value < old


def _best_info(cfg: Config, epoch: int, metrics: dict[str, float], mean: tuple[float, ...],
               std: tuple[float, ...]) -> dict[str, Any]:
    return {"epoch": epoch, "select_metric": cfg.select_metric, "select_mode": cfg.select_mode,
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
            "model": cfg.model, "num_classes": 2, "image_size": cfg.image_size,
            "mean": list(mean), "std": list(std), "positive_class": cfg.positive_class,
            "config": cfg.model_dump(mode="json")}


def evaluate(model: torch.nn.Module, data: SplitData, prepare: Callable[[torch.Tensor, bool], torch.Tensor],
             autocast: torch.autocast, batch_size: int) -> dict[str, float]:
    """Validation loss and the screening metrics (:func:`arc_ray.screening.screening_metrics`)."""
    model.eval()
    logits, labels = [], []
    with torch.inference_mode(), autocast:
        for images, y in data.val.batches(batch_size):
            logits.append(model(prepare(images, False)).float())
            labels.append(y)
    logit = torch.cat(logits)
    y = torch.cat(labels).to(logit.device)
    val_loss = float(F.cross_entropy(logit, y))
    if not math.isfinite(val_loss):
        val_loss = math.nan
    prob = torch.softmax(logit, 1)[:, 1].cpu().numpy()
    y_true = y.cpu().numpy()
    if not np.isfinite(prob).all():  # a diverged model: score it as chance rather than crash sklearn
        prob = np.nan_to_num(prob, nan=0.5, posinf=1.0, neginf=0.0)
    return {**screening_metrics(y_true, prob), "val_loss": val_loss}


def build_model(cfg: Config) -> torch.nn.Module:
    """``timm.create_model`` with two classes; pretrained weights only from the local cache."""
    if not cfg.pretrained:
        return _create(cfg, pretrained=False)
    import huggingface_hub.constants as hf

    offline = hf.HF_HUB_OFFLINE
    hf.HF_HUB_OFFLINE = offline or not cfg.allow_download  # read per request: no retries against a dead network
    try:
        return _create(cfg, pretrained=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TrainingExecutionError(
            f"pretrained weights for {cfg.model!r} are not in the local cache and downloads are off "
            f"(set allow_download: true on a machine with internet, or pretrained: false): {exc}",
            experiment_id=cfg.experiment_id, error_class="crash") from exc
    finally:
        hf.HF_HUB_OFFLINE = offline


def _create(cfg: Config, pretrained: bool) -> torch.nn.Module:
    import timm

    kwargs: dict[str, Any] = {"pretrained": pretrained, "num_classes": 2, "drop_rate": cfg.dropout}
    try:  # vision transformers fix their patch grid from img_size; convnets reject the argument
        return timm.create_model(cfg.model, img_size=cfg.image_size, **kwargs)
    except TypeError:
        return timm.create_model(cfg.model, **kwargs)


def _optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params, lr, wd = model.parameters(), cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _device(cfg: Config) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise TrainingExecutionError("device: cuda was asked for but no CUDA device is visible",
                                     experiment_id=cfg.experiment_id, error_class="crash")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    return torch.device("cuda")


def _check_finite(losses: list[torch.Tensor], epoch: int, cfg: Config) -> None:
    """Raise at the first non-finite loss of the epoch so far (one device sync per call)."""
    if not losses:
        return
    finite = torch.isfinite(torch.stack(losses).float())
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0, 0])
        raise TrainingDivergedError(
            f"loss is {float(losses[step])} at epoch {epoch + 1} step {step} "
            f"(optimizer {cfg.optimizer}, learning_rate {cfg.learning_rate})",
            epoch=epoch + 1, step=step, experiment_id=cfg.experiment_id)


def _oom(cfg: Config, exc: BaseException) -> TrainingOutOfMemoryError:
    return TrainingOutOfMemoryError(
        f"out of memory training {cfg.model} at batch_size {cfg.batch_size}, image_size {cfg.image_size}: "
        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", experiment_id=cfg.experiment_id)


# ---------------------------------------------------------------------------- command line
SMOKE_CONFIG: dict[str, Any] = {
    "model": "test_resnet", "image_size": 32, "batch_size": 16, "epochs": 2, "learning_rate": 0.003,
    "synthetic": {"n": 64, "size": 32, "seed": 0}, "augmentation": {"flip": True},
}


def main(argv: list[str] | None = None) -> int:
    """Train once outside Tune: ``--smoke-test`` or a YAML config, printing each epoch."""
    import yaml

    parser = argparse.ArgumentParser(description="Train the timm fundus classifier once (outside Tune).")
    parser.add_argument("--smoke-test", action="store_true", help="tiny model, 64 synthetic images, seconds on CPU")
    parser.add_argument("--config", help="YAML config (e.g. configs/baseline_cpu.yaml)")
    parser.add_argument("--epochs", type=int, help="override epochs")
    args = parser.parse_args(argv)
    if not args.smoke_test and not args.config:
        parser.error("give --smoke-test or --config")
    config = dict(SMOKE_CONFIG)
    if args.config:
        with open(args.config) as fh:
            config = yaml.safe_load(fh) or {}
    if args.epochs:
        config["epochs"] = args.epochs
    start = time.perf_counter()

    def show(metrics: dict[str, float], _: Path) -> None:
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)

    run_training(config, report=show)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
