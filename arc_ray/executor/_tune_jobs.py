"""What ARC keeps of each trial: job states and the files in a Tune experiment folder.

:class:`JobState` is the executor's record of one experiment, from submission to its
final :class:`~arc_ray.records.TrialResult`; :class:`RunStore` reads and writes ARC's own
files inside a Tune experiment folder (``arc/manifest.json``, ``arc/results/<id>.json``),
locally through a temp file and a rename, or on a pyarrow filesystem URI. Neither
imports Ray: a driver reading a finished cycle back needs no Tune.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arc_ray.storage import atomic_write_text
from arc_ray.records import ErrorClass, JobStatus, ProposalType, Resources, RiskLevel, TrialResult

logger = logging.getLogger(__name__)

# Fields Tune adds to every result (ray.tune.result's AUTO_RESULT_KEYS and DEBUG_METRICS,
# spelled out so this module stays free of Ray), and its own bookkeeping keys.
_NOT_METRICS = {
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip",
    "hostname", "pid", "time_this_iter_s", "timestamp", "date", "time_since_restore",
    "timesteps_since_restore", "iterations_since_restore", "config", "checkpoint_dir_name",
    "trial_id", "experiment_id", "done", "should_checkpoint", "experiment_tag", "__duplicate__",
    "trainable_name",
}


# --------------------------------------------------------------------------- storage


class RunStore:
    """ARC's own files inside a Tune experiment folder (local path or pyarrow URI)."""

    def __init__(self, experiment_uri: str) -> None:
        self.uri = experiment_uri
        self._local = "://" not in experiment_uri
        if self._local:
            self._fs, self._root = None, str(Path(experiment_uri).resolve())
        else:
            import pyarrow.fs as pafs

            self._fs, self._root = pafs.FileSystem.from_uri(experiment_uri)

    def _path(self, rel: str) -> str:
        return f"{self._root.rstrip('/')}/{rel}"

    def write_json(self, rel: str, obj: Any) -> None:
        """Write ``obj`` as JSON, atomically (see :func:`arc_ray.storage.atomic_write_text`)."""
        path = self._path(rel)
        atomic_write_text(path if self._local else f"{self.uri.rstrip('/')}/{rel}",
                          json.dumps(obj, indent=1, default=str))

    def read_json(self, rel: str) -> Any | None:
        """The parsed file, or ``None`` when it is missing or unreadable."""
        path = self._path(rel)
        try:
            if self._local:
                text = Path(path).read_text(encoding="utf-8")
            else:
                with self._fs.open_input_stream(path) as fh:
                    text = fh.readall().decode()
            return json.loads(text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return None

    def list_json(self, rel_dir: str) -> list[str]:
        """Names (without ``.json``) of the JSON files in a sub-folder."""
        path = self._path(rel_dir)
        if self._local:
            if not os.path.isdir(path):
                return []
            names = os.listdir(path)
        else:
            import pyarrow.fs as pafs

            infos = self._fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            names = [i.base_name for i in infos]
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))


# ------------------------------------------------------------------------- job state


@dataclass
class JobState:
    """Everything the executor knows about one experiment; mutated under the executor's lock."""

    experiment_id: str
    cycle_id: int
    config: dict[str, Any]
    resources: Resources
    meta: dict[str, Any] = field(default_factory=dict)  # proposer, proposal_type, risk_level
    status: JobStatus = JobStatus.PENDING
    run_name: str | None = None  # the Tune experiment (folder) it runs in
    trial_id: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempt_started: float | None = None  # monotonic, this driver's latest start of the trial
    attempt_prior_s: float = 0.0  # training time the latest start resumed from (its checkpoint)
    restored_time_s: float = 0.0  # training time another driver spent before this one restored it
    last_metrics: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    n_results: int = 0
    iterations: int = 0
    time_total_s: float | None = None
    node_ip: str | None = None
    error_class: ErrorClass | None = None
    error_message: str | None = None
    stopped_early: bool = False
    result: TrialResult | None = None  # set once, when terminal
    history: list[tuple[JobStatus, float]] = field(default_factory=list)  # (status, unix time)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append((self.status, time.time()))

    def set_status(self, status: JobStatus) -> None:
        """Move to ``status``, remembering when (lock held)."""
        if status != self.status:
            self.status = status
            self.history.append((status, time.time()))

    def to_result(self) -> TrialResult:
        """The job as a :class:`TrialResult` (the final one when terminal)."""
        if self.result is not None:
            return self.result
        duration = None
        if self.started_at is not None:
            duration = (self.ended_at or time.time()) - self.started_at + self.restored_time_s
        meta = self.meta
        return TrialResult(
            experiment_id=self.experiment_id, cycle_id=self.cycle_id, status=self.status,
            config=self.config, metrics=self.last_metrics, best_metrics=self.best_metrics,
            duration_s=duration, error_class=self.error_class, error_message=self.error_message,
            node_ip=self.node_ip, resources=self.resources, stopped_early=self.stopped_early,
            iterations=self.iterations, started_at=self.started_at, ended_at=self.ended_at,
            proposer=meta.get("proposer"),
            proposal_type=ProposalType(meta["proposal_type"]) if meta.get("proposal_type") else None,
            risk_level=RiskLevel(meta["risk_level"]) if meta.get("risk_level") else None,
        )

    def load_result(self, result: TrialResult) -> None:
        """Adopt a terminal result read back from a sidecar."""
        self.result = result
        self.set_status(result.status)
        self.started_at, self.ended_at = result.started_at, result.ended_at
        self.last_metrics, self.best_metrics = dict(result.metrics), dict(result.best_metrics)
        self.iterations, self.node_ip = result.iterations, result.node_ip
        self.error_class, self.error_message = result.error_class, result.error_message
        self.stopped_early = result.stopped_early


def result_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a trainable reported in one Tune result, without Tune's own fields."""
    out: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            name = f"{prefix}{k}"
            if not prefix and (k in _NOT_METRICS or k.startswith("arc_")):
                continue
            if isinstance(v, dict):
                walk(v, name + "/")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[name] = float(v)

    walk(result, "")
    return out


__all__ = ["JobState", "RunStore", "result_metrics"]
