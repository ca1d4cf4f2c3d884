"""The study's product: the best trial's model exported with its threshold and a model card.

``arc export CONFIG [--experiment ID] [--specificity S] --out DIR`` calls
:func:`export_model`, which

1. picks the experiment: the best completed trial of the history by the study's metric
   and direction, or the one named;
2. takes the best-epoch weights from the trial's newest checkpoint
   (``<study>/tune/cycle_NNNN[-k]/<experiment_id>/checkpoint_*/best_model.safetensors``
   and ``best.json``, written by :mod:`trainables.timm_classifier`);
3. scores the validation split and, once, the held-out test split with exactly the code
   ``arc predict`` runs (:class:`~arc_ray.predict.ExportedModel`);
4. chooses the operating threshold on validation: Youden's J by default, or the most
   sensitive threshold that keeps the validation specificity ``>= S``;
5. writes into ``DIR``: ``model.safetensors``, ``export.json`` (timm model name, number
   of classes, image size, normalisation, threshold and how it was chosen, the config,
   the lineage), ``predictions.csv`` (split, path, label, probability of every validation
   and test image), ``roc.png``, ``calibration.png``, ``model_card.md`` and
   ``model_card.html`` (:mod:`arc_ray._model_card`).

The history is read through the read-only :class:`~arc_ray.historian.HistoryReader`
(nothing is written, compacted or created there). ``DIR`` is assembled in a temporary sibling folder and renamed into place, so
it is never left half-written. The test split is evaluated here and nowhere else: a
trial never sees it, so its numbers are an honest estimate for the chosen model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arc_ray.errors import ConfigValidationError, Violation
from arc_ray.historian.schema import (
    CYCLE_ID,
    DURATION_S,
    EXPERIMENT_ID,
    ITERATIONS,
    METRIC_PREFIX,
    MODE,
    PROPOSAL_TYPE,
    PROPOSER,
    REASON,
    STATUS,
)
from arc_ray.outcomes import is_feasible
from arc_ray.predict import EXPORT_FILE, MODEL_FILE, ExportedModel
from arc_ray.records import JobStatus
from arc_ray.screening import (
    bootstrap_interval,
    confusion_at,
    screening_metrics,
    threshold_for_specificity,
    weighted_brier,
    weighted_sensitivity,
    weighted_specificity,
    youden_threshold,
)
from trainables.timm_classifier import BEST_INFO_FILE, BEST_MODEL_FILE

if TYPE_CHECKING:
    from arc_ray.historian import HistoryReader
    from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


@dataclass
class SplitScores:
    """One split's labels, probabilities, image paths and metrics at the export's threshold."""

    name: str
    labels: np.ndarray
    probs: np.ndarray
    paths: list[str] | None
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]  # 95 % bootstrap intervals
    confusion: dict[str, int]


@dataclass
class Export:
    """What :func:`export_model` wrote."""

    out: Path
    experiment_id: str
    threshold: float
    threshold_rule: str
    val: SplitScores
    test: SplitScores | None
    info: dict[str, Any]


# ----------------------------------------------------------------------------- choosing
def choose_experiment(study: "StudyConfig", reader: "HistoryReader",
                      experiment_id: str | None = None) -> dict[str, Any]:
    """The trials row to export: the named experiment, or the best feasible completed one.

    Raises:
        EmptyHistoryError: the history holds no trial, or (without ``experiment_id``) no
            completed trial with the study's metric.
        ConfigValidationError: ``experiment_id`` is not in the history.
    """
    from arc_ray.report import EmptyHistoryError

    trials = reader.trials_table()
    if trials.num_rows == 0:
        raise EmptyHistoryError(f"study {study.name!r} has no history yet at {study.study_dir}; "
                                f"run `arc run {study.source_path or 'CONFIG'}` first")
    rows = trials.to_pylist()
    if experiment_id is not None:
        match = [r for r in rows if r[EXPERIMENT_ID] == experiment_id]
        if not match:
            known = ", ".join(sorted(r[EXPERIMENT_ID] for r in rows)[:10])
            raise ConfigValidationError([Violation("experiment", experiment_id,
                                                   f"is not in the history of study {study.name!r} "
                                                   f"(experiments: {known}{', ...' if len(rows) > 10 else ''})")])
        return match[0]
    col = METRIC_PREFIX + study.metric
    done = [r for r in rows if r[STATUS] == JobStatus.COMPLETED.value and r.get(col) is not None
            and math.isfinite(r[col])]
    if not done:
        raise EmptyHistoryError(f"study {study.name!r} has no completed trial with a finite {study.metric} "
                                f"yet ({len(rows)} trial(s) in the history); nothing to export")
    feasible = [r for r in done if is_feasible(_metrics_of(r), study.outcome_constraints)]
    if not feasible:
        bounds = ", ".join(map(str, study.outcome_constraints))
        raise EmptyHistoryError(f"study {study.name!r} has no feasible trial yet ({bounds}: none of "
                                f"{len(done)} completed trial(s) meets them); name one with --experiment")
    return max(feasible, key=lambda r: study.sign * r[col])


def _metrics_of(row: dict[str, Any]) -> dict[str, float]:
    return {k[len(METRIC_PREFIX):]: v for k, v in row.items()
            if k.startswith(METRIC_PREFIX) and isinstance(v, (int, float))}


def find_checkpoint(study: "StudyConfig", experiment_id: str, cycle_id: int) -> str:
    """The trial's newest checkpoint folder that holds a best-epoch model (a path or URI).

    Raises:
        ConfigValidationError: the trial left no such checkpoint.
    """
    fs, root = _filesystem(study.tune_dir)
    pattern = re.compile(rf"^cycle_{int(cycle_id):04d}(?:-(\d+))?$")
    runs = sorted((int(m.group(1) or 1), i.path) for i in _list(fs, root) if (m := pattern.match(i.base_name)))
    candidates = []
    for _, run in runs:  # later batches of a cycle last: a re-submitted trial's newest folder wins
        entries = _list(fs, f"{run}/{experiment_id}")
        candidates += sorted(e.path for e in entries if e.base_name.startswith("checkpoint_"))
    for path in reversed(candidates):
        names = {e.base_name for e in _list(fs, path)}
        if {BEST_MODEL_FILE, BEST_INFO_FILE} <= names:
            return path
    where = f"{study.tune_dir}/cycle_{int(cycle_id):04d}*/{experiment_id}/checkpoint_*"
    why = ("its checkpoints hold no best-epoch model (best_model.safetensors): its trainable does not write one"
           if candidates else "it left no checkpoint")
    raise ConfigValidationError([Violation("experiment", experiment_id,
                                           f"cannot be exported: {why} (looked in {where}); "
                                           "pick another with --experiment (see `arc history`)")])


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _list(fs: Any, path: str) -> list[Any]:
    import pyarrow.fs as pafs

    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def lineage(reader: "HistoryReader", trial: dict[str, Any]) -> dict[str, Any]:
    """Where the experiment came from: cycle, strategy, proposer, rationale, the decision and its reason."""
    eid, cycle = trial[EXPERIMENT_ID], trial.get(CYCLE_ID)
    out: dict[str, Any] = {"experiment_id": eid, "cycle_id": cycle, "status": trial.get(STATUS),
                           "proposer": trial.get(PROPOSER), "proposal_type": trial.get(PROPOSAL_TYPE),
                           "duration_s": trial.get(DURATION_S), "epochs_run": trial.get(ITERATIONS)}
    decisions = [d for d in reader.decisions_for_cycle(int(cycle)) if d.experiment_id == eid] if cycle else []
    if decisions:
        d = decisions[-1]
        out.update(decision=d.outcome.value, decided_by=d.decided_by, decision_reason=d.reason)
        if d.proposal is not None:
            out.update(changes=d.proposal.changes, rationale=d.proposal.rationale)
    cycles = [c for c in reader.cycles_table().to_pylist() if c.get(CYCLE_ID) == cycle]
    if cycles:
        out.update(cycle_mode=cycles[-1].get(MODE), cycle_reason=cycles[-1].get(REASON))
    return out


# ----------------------------------------------------------------------------- scoring
def score_split(model: ExportedModel, name: str, image_set: Any, threshold: float | None) -> SplitScores:
    """Probabilities of every image of a split; metrics and intervals at ``threshold`` (None: later)."""
    probs, labels = [], []
    for images, y in image_set.batches(256):
        probs.append(model(images))
        labels.append(y.cpu().numpy())
    scores = SplitScores(name, np.concatenate(labels), np.concatenate(probs), getattr(image_set, "paths", None),
                         {}, {}, {})
    if threshold is not None:
        measure(scores, threshold)
    return scores


def measure(scores: SplitScores, threshold: float, seed: int = 0) -> None:
    """Fill a split's metrics, 95 % bootstrap intervals and confusion matrix at ``threshold``."""
    y, p = scores.labels, scores.probs
    scores.metrics = screening_metrics(y, p, threshold=threshold, seed=seed)
    scores.intervals = {
        "auc": (scores.metrics["auc_ci_low"], scores.metrics["auc_ci_high"]),
        "sensitivity": bootstrap_interval(y, p, weighted_sensitivity(threshold), seed=seed),
        "specificity": bootstrap_interval(y, p, weighted_specificity(threshold), seed=seed),
        "brier": bootstrap_interval(y, p, weighted_brier, seed=seed),
    }
    scores.confusion = confusion_at(y, p, threshold)


# ----------------------------------------------------------------------------- the export
def export_model(study: "StudyConfig", out_dir: str | os.PathLike[str], *, experiment_id: str | None = None,
                 specificity: float | None = None, overwrite: bool = False, device: str = "cpu") -> Export:
    """Export an experiment's best-epoch model with its threshold and model card (see the module docstring).

    Args:
        study: the study whose history holds the experiment.
        out_dir: the folder to write; it must not exist or be empty, unless ``overwrite``.
        experiment_id: the experiment to export; default: the best completed one.
        specificity: choose the threshold reaching this validation specificity (in
            (0, 1)); default: Youden's J on validation.
        overwrite: replace a non-empty ``out_dir``.
        device: where to score the validation and test images.

    Returns:
        an :class:`Export`.

    Raises:
        EmptyHistoryError: no trial (or no completed trial) in the history.
        ConfigValidationError: unknown experiment, no exportable checkpoint, a bad
            ``specificity`` or a non-empty ``out_dir``.
        DataError: the experiment's data can no longer be loaded.
    """
    from arc_ray._model_card import write_card

    if specificity is not None and not 0 < specificity < 1:
        raise ConfigValidationError([Violation("specificity", specificity, "must be between 0 and 1 (e.g. 0.95)")])
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigValidationError([Violation("out", str(out), "exists and is not empty; pass --overwrite "
                                                                "to replace it")])
    from arc_ray.historian import HistoryReader

    reader = HistoryReader(study)
    trial = choose_experiment(study, reader, experiment_id)
    eid = str(trial[EXPERIMENT_ID])
    checkpoint = find_checkpoint(study, eid, int(trial[CYCLE_ID]))
    logger.info("exporting %s from %s", eid, checkpoint)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp's 0700 would make the export private to its writer
        fs, _ = _filesystem(study.tune_dir)
        best = json.loads(_read(fs, f"{checkpoint}/{BEST_INFO_FILE}"))
        (stage / MODEL_FILE).write_bytes(_read(fs, f"{checkpoint}/{BEST_MODEL_FILE}"))
        info = {"format": "arc-screening-export/1", "experiment_id": eid, "study": study.name,
                "study_metric": study.metric, "study_mode": study.mode, "checkpoint": checkpoint,
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **{k: best[k] for k in ("model", "num_classes", "image_size", "mean", "std", "positive_class")},
                "preprocessing": "RGB, resized to image_size x image_size (PIL bilinear), scaled to [0, 1], "
                                 "normalised by mean/std",
                "best_epoch": best["epoch"], "select_metric": best["select_metric"],
                "trial_metrics": best["metrics"], "config": best["config"],
                "threshold": None, "threshold_rule": None, "lineage": lineage(reader, trial)}
        _write_json(stage / EXPORT_FILE, info)
        model = ExportedModel(stage, device)
        data = _load_split_data(best["config"])

        val = score_split(model, "validation", data.val, None)
        if specificity is None:
            threshold = youden_threshold(val.labels, val.probs)
            rule = "Youden's J (sensitivity + specificity - 1) maximised on the validation split"
        else:
            threshold = threshold_for_specificity(val.labels, val.probs, specificity)
            rule = f"the most sensitive threshold with validation specificity >= {specificity:g}"
        measure(val, threshold)
        test = score_split(model, "test", data.test, threshold) if data.test is not None else None
        info.update(threshold=threshold, threshold_rule=rule,
                    splits={"train": _counts(data.train.labels.cpu().numpy()), "validation": _counts(val.labels),
                            "test": _counts(test.labels) if test is not None else None},
                    data_source=data.source, skipped_images=data.skipped_images,
                    metrics={"validation": _jsonable(val.metrics),
                             "test": _jsonable(test.metrics) if test is not None else None})
        _write_json(stage / EXPORT_FILE, info)
        _write_predictions(stage / "predictions.csv", [s for s in (val, test) if s is not None])
        write_card(stage, info, val, test)
        _install(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    logger.info("exported %s to %s (threshold %.4f)", eid, out, threshold)
    return Export(out=out, experiment_id=eid, threshold=threshold, threshold_rule=rule, val=val, test=test,
                  info=info)


def _load_split_data(config: dict[str, Any]) -> Any:
    from trainables.data import load_data
    from trainables.timm_classifier import Config

    cfg = Config.model_validate(config)
    return load_data(cfg.data_dir, image_size=cfg.image_size, positive_class=cfg.positive_class,
                     train_split=cfg.train_split, val_split=cfg.val_split, seed=cfg.seed,
                     synthetic=(cfg.synthetic.n, cfg.synthetic.size, cfg.synthetic.seed),
                     cache_max_bytes=cfg.cache_max_bytes, num_workers=cfg.num_workers, test_split=cfg.test_split)


def _read(fs: Any, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {"n": int(labels.size), "positive": int((labels == 1).sum()), "negative": int((labels == 0).sum())}


def _jsonable(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str, allow_nan=False), encoding="utf-8")


def _write_predictions(path: Path, splits: list[SplitScores]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "index", "path", "label", "probability"])
        for s in splits:
            for i, (y, p) in enumerate(zip(s.labels.tolist(), s.probs.tolist())):
                writer.writerow([s.name, i, s.paths[i] if s.paths else "", y, repr(p)])


def _install(stage: Path, out: Path) -> None:
    """Move the finished folder into place; an old one is removed only after the new one is there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


__all__ = ["Export", "SplitScores", "choose_experiment", "export_model", "find_checkpoint", "lineage"]
