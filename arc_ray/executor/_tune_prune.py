"""Study-wide checkpoint pruning for the Tune executor: the top-k trials keep their best model.

A timm trial writes one checkpoint per epoch, each holding the resume state
(``state.pt``: model, optimiser, scheduler) and the best epoch's model
(``best_model.safetensors`` + ``best.json``). Once a cycle is stored in the history its
Tune experiments are never restored again, so the resume state only costs disk; and of
all the study's trials only the best few are worth exporting. This module applies that:

- every trial of a stored cycle keeps only its newest checkpoint folder that holds the
  export files, and in it only those files (a trainable that writes none keeps its newest
  checkpoint whole: it is the only thing of value it left);
- only the ``keep_ids`` trials (the study's top-k, ranked by the historian) keep even that.

Cycles not stored yet (pending, resumable) are never passed in; the caller also leaves
out any cycle whose trials still run. Paths may be local or any pyarrow filesystem URI.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Collection, Iterable

logger = logging.getLogger(__name__)

# What `arc export` reads from a checkpoint (trainables.timm_classifier's BEST_MODEL_FILE and
# BEST_INFO_FILE); named here so the executor need not import the trainable (torch, timm).
EXPORT_FILES = frozenset({"best_model.safetensors", "best.json"})


def prune_study(tune_dir: str, cycles: Iterable[int], keep_ids: Collection[str]) -> int:
    """Prune the checkpoints of the stored ``cycles`` down to what export needs of ``keep_ids``.

    Args:
        tune_dir: the study's Tune folder (``<study>/tune``), a path or URI.
        cycles: stored cycles whose trials no longer run.
        keep_ids: experiment ids whose newest exportable checkpoint is kept.

    Returns:
        how many checkpoint folders and files were deleted.
    """
    import pyarrow.fs as pafs

    if "://" in tune_dir:
        fs, root = pafs.FileSystem.from_uri(tune_dir)
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(tune_dir)
    wanted = {int(c) for c in cycles}
    pattern = re.compile(r"^cycle_(\d{4,})(?:-\d+)?$")
    removed = 0
    for run in _dirs(fs, root):
        m = pattern.match(run.base_name)
        if not m or int(m.group(1)) not in wanted:
            continue
        for trial in _dirs(fs, run.path):
            removed += _prune_trial(fs, trial.path, keep=trial.base_name in keep_ids)
    if removed:
        logger.info("pruned %d checkpoint folders/files (kept the best model of %d trials)", removed,
                    len(keep_ids))
    return removed


def _prune_trial(fs: Any, trial: str, *, keep: bool) -> int:
    """Leave the trial at most its newest exportable checkpoint, with only the export files."""
    checkpoints = sorted(d.path for d in _dirs(fs, trial) if d.base_name.startswith("checkpoint_"))
    if not checkpoints:
        return 0
    contents = {path: _list(fs, path) for path in checkpoints}
    exportable = [p for p in checkpoints if EXPORT_FILES <= {e.base_name for e in contents[p]}]
    kept = (exportable or checkpoints)[-1] if keep else None
    removed = 0
    for path in checkpoints:
        if path != kept:
            fs.delete_dir(path)
            removed += 1
    if kept is not None and exportable:
        for entry in contents[kept]:
            if entry.base_name not in EXPORT_FILES:
                _delete(fs, entry)
                removed += 1
    return removed


def _list(fs: Any, path: str) -> list[Any]:
    import pyarrow.fs as pafs

    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def _dirs(fs: Any, path: str) -> list[Any]:
    import pyarrow.fs as pafs

    return [e for e in _list(fs, path) if e.type == pafs.FileType.Directory]


def _delete(fs: Any, entry: Any) -> None:
    import pyarrow.fs as pafs

    if entry.type == pafs.FileType.Directory:
        fs.delete_dir(entry.path)
    else:
        fs.delete_file(entry.path)


__all__ = ["EXPORT_FILES", "prune_study"]
