"""ARC's metrics on the Ray dashboard, through ``ray.util.metrics``.

The orchestrator records each finished cycle; the values go to the metrics agent of
the node this process runs on, which Ray's Prometheus endpoint exports with a
``ray_`` prefix (``arc_best_metric`` is scraped as ``ray_arc_best_metric``). The
dashboard's Metrics tab and any Prometheus / Grafana pointed at the cluster
(``ray metrics launch-prometheus``) show them; every series carries a ``study`` tag.

=============================== ======= ======================= ===========================
metric                          kind    tags                    value
=============================== ======= ======================= ===========================
``arc_current_cycle``           gauge   study                   id of the last finished cycle
``arc_cycles``                  counter study                   cycles finished
``arc_best_metric``             gauge   study, metric           best value of the study metric
``arc_trials``                  gauge   study, status           trials in the history, by status
``arc_trials_finished``         counter study, status           trials finished, by status
``arc_proposals``               counter study, decision         proposals, by supervisor outcome
``arc_strategy_mode``           gauge   study, mode             1 for the cycle's mode, else 0
``arc_cycle_duration_seconds``  gauge   study                   wall time of the last cycle
``arc_decision_time_seconds``   gauge   study                   time the agents took to decide
``arc_slots``                   gauge   study, state            trial slots busy / free (rolling)
=============================== ======= ======================= ===========================

Telemetry never fails a cycle: without Ray (offline, in-process runs) it records
nothing, and an error while recording is logged and swallowed.
"""

from __future__ import annotations

import logging
from collections import Counter as _Tally
from typing import TYPE_CHECKING, Any, Mapping

from arc_ray.records import JobStatus, StrategyMode

if TYPE_CHECKING:
    from arc_ray.records import CycleReport

logger = logging.getLogger(__name__)

PREFIX = "arc_"
# The Prometheus names under which Ray exports them (it prefixes "ray_", counters "_total").
EXPORTED_NAMES = {
    "current_cycle": "ray_arc_current_cycle",
    "cycles": "ray_arc_cycles_total",
    "best_metric": "ray_arc_best_metric",
    "trials": "ray_arc_trials",
    "trials_finished": "ray_arc_trials_finished_total",
    "proposals": "ray_arc_proposals_total",
    "strategy_mode": "ray_arc_strategy_mode",
    "cycle_duration_seconds": "ray_arc_cycle_duration_seconds",
    "decision_time_seconds": "ray_arc_decision_time_seconds",
    "slots": "ray_arc_slots",
}


def _ray_ready() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()


class Telemetry:
    """The metrics of one study, recorded from the driver (the orchestrator's process).

    Args:
        study_name: the ``study`` tag on every series.
        metric: the study's target metric, the ``metric`` tag of ``arc_best_metric``.

    Ray metrics are per process; create one ``Telemetry`` per study in the process that
    runs its cycles. Not thread-safe: the orchestrator records from one thread.
    """

    def __init__(self, study_name: str, metric: str = "metric") -> None:
        self.study_name = study_name
        self.metric = metric
        self._values: dict[str, Any] = {}
        self._metrics: dict[str, Any] | None = None
        if _ray_ready():
            self._metrics = self._create()
        else:
            logger.debug("Ray is not initialized: telemetry for %s is off", study_name)

    # ------------------------------------------------------------------ set-up

    @property
    def active(self) -> bool:
        """Whether values reach Ray (Ray was initialized when this was created)."""
        return self._metrics is not None

    def _create(self) -> dict[str, Any]:
        from ray.util.metrics import Counter, Gauge

        study = ("study",)
        made = {
            "current_cycle": Gauge(PREFIX + "current_cycle", "id of the last finished cycle", study),
            "cycles": Counter(PREFIX + "cycles", "cycles finished", study),
            "best_metric": Gauge(PREFIX + "best_metric", "best value of the study metric",
                                 ("study", "metric")),
            "trials": Gauge(PREFIX + "trials", "trials in the study's history, by status",
                            ("study", "status")),
            "trials_finished": Counter(PREFIX + "trials_finished", "trials finished, by status",
                                       ("study", "status")),
            "proposals": Counter(PREFIX + "proposals", "proposals, by the supervisor's decision",
                                 ("study", "decision")),
            "strategy_mode": Gauge(PREFIX + "strategy_mode",
                                   "1 for the director's mode of the last cycle, 0 for the others",
                                   ("study", "mode")),
            "cycle_duration_seconds": Gauge(PREFIX + "cycle_duration_seconds",
                                            "wall time of the last cycle", study),
            "decision_time_seconds": Gauge(PREFIX + "decision_time_seconds",
                                           "time the agents took to decide in the last cycle", study),
            "slots": Gauge(PREFIX + "slots", "trial slots busy / free (rolling decisions)",
                           ("study", "state")),
        }
        for m in made.values():
            m.set_default_tags({"study": self.study_name})
        return made

    def _set(self, name: str, value: float, **tags: str) -> None:
        self._values[_key(name, tags)] = value
        if self._metrics is not None:
            self._metrics[name].set(float(value), tags=tags or None)

    def _inc(self, name: str, value: float, **tags: str) -> None:
        if value <= 0:
            return
        key = _key(name, tags)
        self._values[key] = self._values.get(key, 0.0) + value
        if self._metrics is not None:
            self._metrics[name].inc(float(value), tags=tags or None)

    # ---------------------------------------------------------------- recording

    def record_cycle(self, report: "CycleReport") -> None:
        """Record one finished cycle: its id, best, mode, durations, decisions and trials."""
        try:
            self._record_cycle(report)
        except Exception:  # noqa: BLE001 - a dashboard must never fail a cycle
            logger.warning("could not record telemetry for cycle %s", report.cycle_id,
                           exc_info=True)

    def _record_cycle(self, report: "CycleReport") -> None:
        self._set("current_cycle", report.cycle_id)
        self._inc("cycles", 1)
        if report.best_value is not None:
            self._set("best_metric", report.best_value, metric=self.metric)
        if report.strategy is not None:
            self.set_strategy_mode(report.strategy.mode)
        self._set("cycle_duration_seconds", report.duration_s)
        self._set("decision_time_seconds", report.decision_time_s)
        for outcome, n in _Tally(_value(d.outcome) for d in report.decisions).items():
            self._inc("proposals", n, decision=outcome)
        for status, n in _Tally(_value(r.status) for r in report.results).items():
            self._inc("trials_finished", n, status=status)

    def set_trials_by_status(self, counts: Mapping[str, int]) -> None:
        """Set the number of trials in the history per status; statuses not given are 0."""
        try:
            given = {_value(k): int(v) for k, v in counts.items()}
            for status in [s.value for s in JobStatus] + sorted(set(given) - {s.value for s in JobStatus}):
                self._set("trials", given.get(status, 0), status=status)
        except Exception:  # noqa: BLE001
            logger.warning("could not record trials by status", exc_info=True)

    def set_slots(self, busy: int, slots: int) -> None:
        """Set how many of the study's trial slots are busy and how many are free."""
        self._set("slots", busy, state="busy")
        self._set("slots", max(slots - busy, 0), state="free")

    def set_strategy_mode(self, mode: StrategyMode | str) -> None:
        """Mark ``mode`` as the current strategy (1) and every other mode 0."""
        mode = _value(mode)
        for m in [s.value for s in StrategyMode]:
            self._set("strategy_mode", 1.0 if m == mode else 0.0, mode=m)

    def snapshot(self) -> dict[str, Any]:
        """What this process has recorded, keyed ``name{tag=value,...}`` (for logs and tests)."""
        return dict(self._values)


def _key(name: str, tags: Mapping[str, str]) -> str:
    if not tags:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(tags.items())) + "}"


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


__all__ = ["EXPORTED_NAMES", "Telemetry"]
