"""The read-only side of a study's history: tables, summary, and the loop's questions.

:class:`HistoryReader` is what ``arc status``, ``arc history`` and ``arc report`` read
through. It opens the store read-only (:class:`ParquetStore` with ``read_only=True``),
so it never creates a folder, writes a probe, finishes a crashed compaction or
compacts: it works on read-only storage, and a mistyped storage path reads as an empty
history instead of growing a folder tree. It reads through the same
:class:`DatasetView` and :meth:`ParquetStore.snapshot` as the writer, so it honours the
same rules: files that a merged file lists in ``arc.replaces`` are skipped, corrupt
files are skipped with one logged error (and reported by :meth:`corrupt_files`), and a
listing that a compaction overlapped is read again.

The :class:`~arc_ray.historian.Historian` is a reader that also writes: it inherits
every answer here, so the summary the CLI prints is computed by the same code as the
one the director plans from, and the orchestrator asks the historian actor these
questions (``cycle_ids``, ``pending_cycle``, ``results_of_cycle``, ``cycle_rows``)
instead of shipping whole tables over Ray.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from arc_ray.historian import analysis
from arc_ray.historian.frame import Frame
from arc_ray.historian.schema import (
    BEST_VALUE,
    CONFIG_JSON,
    CONSTRAINTS_SCHEMA,
    CYCLE_ID,
    CYCLES_SCHEMA,
    DECISION_JSON,
    DECISIONS_SCHEMA,
    DURATION_S,
    ERROR_CLASS,
    ERROR_MESSAGE,
    EXPERIMENT_ID,
    ITERATIONS,
    METRIC_PREFIX,
    MODE,
    OFFLINE,
    STATUS,
    TRIALS_BASE_SCHEMA,
)
from arc_ray.historian.store import TABLE_KEYS, TABLES, ParquetStore
from arc_ray.historian.view import DatasetView
from arc_ray.records import Constraint, Decision, ErrorClass, HistorySummary, JobStatus, TrialResult
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)

_EMPTY = {"trials": TRIALS_BASE_SCHEMA, "decisions": DECISIONS_SCHEMA, "cycles": CYCLES_SCHEMA,
          "constraints": CONSTRAINTS_SCHEMA}


class HistoryReader:
    """A study's history as read from its files, without ever writing to them.

    Args:
        study: the study; history lives under ``study.study_dir``.
        min_failures: failures needed before a constraint is learned from them.
        store: the files to read; default: ``study.study_dir`` opened read-only. The
            :class:`~arc_ray.historian.Historian` passes its writable store.

    Raises:
        HistoryError: the storage cannot be listed (a missing folder is not an error:
            it reads as an empty history).

    Reads happen when the reader is made; :meth:`refresh` picks up files written since.
    Thread safety: every public method takes one lock.
    """

    def __init__(self, study: StudyConfig, *, min_failures: int = 2,
                 store: ParquetStore | None = None) -> None:
        self.study = study
        self.min_failures = min_failures
        self._lock = threading.RLock()
        self._store = store if store is not None else ParquetStore(study.study_dir, read_only=True)
        self._frame = Frame()
        self._cache: dict[str, Any] = {}
        self._cache_key: tuple[int, int] | None = None
        views = {t: DatasetView(self._store, t, *TABLE_KEYS[t], empty_schema=_EMPTY[t],
                                on_rows=self._on_trial_rows if t == "trials" else None) for t in TABLES}
        self._trials, self._decisions = views["trials"], views["decisions"]
        self._cycles, self._constraints = views["cycles"], views["constraints"]

    def served_study(self) -> str:
        """The study this reader serves, as JSON (tells a reusable named actor from a stale one)."""
        return self.study.model_dump_json()

    def refresh(self) -> bool:
        """Pick up files other processes wrote. Returns whether anything changed."""
        with self._lock:
            return any([view.refresh() for view in self._views()])

    # ------------------------------------------------------------------ tables

    def table(self, name: str) -> pa.Table:
        """One table as it stands: ``trials``, ``decisions``, ``cycles`` or ``constraints``
        (the constraint log: the newest row per ``id``; ``active`` says whether it holds)."""
        views = {"trials": self._trials, "decisions": self._decisions, "cycles": self._cycles,
                 "constraints": self._constraints}
        if name not in views:
            raise ValueError(f"unknown table {name!r}; the tables are {', '.join(views)}")
        with self._lock:
            return views[name].table

    # Named readers for callers that hold an actor handle (``historian.trials_table.remote()``).
    def trials_table(self) -> pa.Table:
        return self.table("trials")

    def decisions_table(self) -> pa.Table:
        return self.table("decisions")

    def cycles_table(self) -> pa.Table:
        return self.table("cycles")

    def constraints_table(self) -> pa.Table:
        return self.table("constraints")

    def corrupt_files(self) -> list[str]:
        """Files skipped because they could not be read (never touched by the history's code)."""
        with self._lock:
            return sorted(f"{v.name}/{n}" for v in self._views() for n in v.corrupt)

    # ---------------------------------------------------------------- analyses

    def summary(self) -> HistorySummary:
        """Everything the director and proposers plan from (see :class:`HistorySummary`)."""
        with self._lock:
            self._trials.refresh()
            self._cycles.refresh()
            a = self._analysis()
            best, stag, trend = a["best"], a["stagnation"], a["trend"]
            s, fr = self.study, self._frame
            cycles = self._cycles.table
            cycle_ids = set(fr.cycle_ids)
            if cycles.num_rows:
                cycle_ids |= set(cycles.column(CYCLE_ID).drop_null().to_pylist())
            return HistorySummary(
                study=s.name, metric=s.metric, mode=s.mode, n_trials=fr.n,
                n_completed=int(fr.equals(STATUS, "COMPLETED").sum()),
                n_failed=int(fr.equals(STATUS, "FAILED").sum()),
                n_cycles=len(cycle_ids), last_cycle=max(cycle_ids) if cycle_ids else None,
                best_value=best["value"] if best else None,
                best_experiment_id=best["experiment_id"] if best else None,
                best_config=best["config"] if best else None,
                best_metrics=best["metrics"] if best else {},
                trend=trend["trend"], recent_improvement=a["recent_improvement"],
                stagnating=stag.stagnating, metric_spread=a["spread"],
                experiments_since_improvement=stag.experiments_since_improvement,
                constraints=a["constraints"], patterns=a["patterns"],
                failures_by_class=a["failures"], modes=self._modes(),
                gpu_hours_used=a["resources"][0], mean_trial_duration_s=a["resources"][1],
                n_feasible=a["n_feasible"])

    def detect_stagnation(self, metric: str | None = None, threshold: float | None = None,
                          window: int | None = None) -> bool:
        """Whether the last ``window`` completed experiments failed to beat the earlier best
        by ``threshold`` (defaults: the study's metric and director settings)."""
        with self._lock:
            d = self.study.director
            return analysis.stagnation(
                self._trials.table, metric or self.study.metric, self.study.mode,
                d.gains(self._analysis()["spread"])[0] if threshold is None else threshold,
                d.stagnation_window if window is None else window, frame=self._frame,
                constraints=self.study.outcome_constraints).stagnating

    def get_performance_trend(self, metric: str | None = None, window: int = 10,
                              mode: str | None = None) -> dict[str, Any]:
        """Slope of ``metric`` over the last ``window`` completed experiments
        (see :func:`analysis.performance_trend`)."""
        with self._lock:
            return analysis.performance_trend(self._trials.table, metric or self.study.metric,
                                              mode or self.study.mode, window, frame=self._frame)

    def learned_constraints(self) -> list[Constraint]:
        """Constraints learned from the failures so far."""
        with self._lock:
            return list(self._analysis()["constraints"])

    # ------------------------------------------------------- the loop's questions

    def integrated_ids(self) -> set[str]:
        """Experiment ids with a row in the trials table."""
        with self._lock:
            return {k[0] for k in self._trials.keys}

    def decisions_for_cycle(self, cycle_id: int) -> list[Decision]:
        """The decisions logged for ``cycle_id``, in the order they were logged."""
        with self._lock:
            t = self._decisions.table
            if t.num_rows == 0:
                return []
            rows = t.filter(pc.equal(t.column(CYCLE_ID), cycle_id)).column(DECISION_JSON).to_pylist()
            return [Decision.model_validate_json(r) for r in rows]

    def cycle_ids(self) -> dict[str, set[int]]:
        """Cycle ids the history knows: ``decided`` (decisions logged), ``done`` (cycle
        logged) and ``ran`` (trials stored)."""
        with self._lock:
            return {"decided": set(_int_column(self._decisions.table, CYCLE_ID)),
                    "done": set(_int_column(self._cycles.table, CYCLE_ID)),
                    "ran": set(_int_column(self._trials.table, CYCLE_ID))}

    def pending_cycle(self) -> int | None:
        """The oldest cycle whose decisions are logged but which is not finished, if any."""
        ids = self.cycle_ids()
        pending = sorted(ids["decided"] - ids["done"])
        return pending[0] if pending else None

    def next_cycle_id(self) -> int:
        """The id a new cycle gets: one past every cycle the history mentions (first: 1)."""
        seen = set().union(*self.cycle_ids().values())
        return max(seen) + 1 if seen else 1

    def cycle_rows(self) -> list[dict[str, Any]]:
        """The ``cycles`` table as rows (``cycle_id``, ``mode``, ``best_value``, ``offline``)
        in cycle order: what the stop rules (:mod:`arc_ray.stopping`) read."""
        with self._lock:
            cycles = self._cycles.table
            if cycles.num_rows == 0:
                return []
            columns = [c for c in (CYCLE_ID, MODE, BEST_VALUE, OFFLINE) if c in cycles.column_names]
            return sorted(cycles.select(columns).to_pylist(), key=lambda r: r[CYCLE_ID])

    def top_experiment_ids(self, k: int) -> list[str]:
        """The ``k`` best completed experiments, best first (feasible ones before the rest):
        the trials whose models are worth keeping on disk."""
        with self._lock:
            s, t = self.study, self._trials.table
            sc = analysis.scored(t, s.metric, s.mode, frame=self._frame)
            if sc.rows.size == 0:
                return []
            feasible = analysis.feasible_rows(t, s.outcome_constraints, frame=self._frame)[sc.rows]
            order = sorted(range(sc.rows.size), key=lambda i: (not feasible[i], -sc.scores[i], i))[:k]
            ids = t.column(EXPERIMENT_ID)
            return [ids[int(sc.rows[i])].as_py() for i in order]

    def results_of_cycle(self, cycle_id: int) -> list[TrialResult]:
        """The cycle's results as stored in the trials table (for a cycle integrated
        before a crash): status, config, finite metrics, duration, error class and message."""
        with self._lock:
            trials = self._trials.table
            if trials.num_rows == 0:
                return []
            rows = trials.filter(pc.equal(trials.column(CYCLE_ID), cycle_id)).to_pylist()
        return [_result_of_row(r, cycle_id) for r in rows]

    # ---------------------------------------------------------------- internals

    def _on_trial_rows(self, view: DatasetView, chunk: pa.Table | None) -> None:
        """Keep the numpy frame aligned with the trials view, one chunk at a time."""
        if chunk is None:
            self._frame = Frame()
        elif not self._frame.extend(chunk):  # a column changed type: rebuild from the unified table
            self._frame = Frame.from_table(view.table)

    def _views(self) -> list[DatasetView]:
        return [self._trials, self._decisions, self._cycles, self._constraints]

    def _analysis(self) -> dict[str, Any]:
        """Analyses of the trials table, computed once per version of it."""
        key = (id(self._trials), self._trials.version)
        if self._cache_key == key:
            return self._cache
        s, t, fr = self.study, self._trials.table, self._frame
        d, oc = s.director, s.outcome_constraints
        self._cache = {
            "best": analysis.best_trial(t, s.metric, s.mode, frame=fr, constraints=oc),
            "trend": analysis.performance_trend(t, s.metric, s.mode, d.stagnation_window, frame=fr,
                                                constraints=oc),
            "spread": (spread := analysis.spread(t, s.metric, s.mode, frame=fr, constraints=oc)),
            "stagnation": analysis.stagnation(t, s.metric, s.mode, d.gains(spread)[0],
                                              d.stagnation_window, frame=fr, constraints=oc),
            "recent_improvement": analysis.recent_improvement(
                t, s.metric, s.mode, frame=fr, constraints=oc,
                window=s.budget.trials_per_cycle if s.scheduling == "rolling" else None),
            "n_feasible": int(analysis.feasible_rows(t, oc, frame=fr).sum()) if oc else None,
            "patterns": analysis.find_patterns(t, s.metric, s.mode, s.search_space.names, frame=fr),
            "constraints": analysis.learn_constraints(
                t, min_failures=self.min_failures,
                cycle_id=max(fr.cycle_ids) if fr.cycle_ids else None, frame=fr),
            "failures": analysis.failures_by_class(t, frame=fr),
            "resources": analysis.resource_usage(t, frame=fr),
        }
        self._cache_key = key
        return self._cache

    def _modes(self) -> list[str]:
        t = self._cycles.table
        if t.num_rows == 0:
            return []
        t = t.sort_by(CYCLE_ID)
        return [m for m in t.column(MODE).to_pylist() if m is not None]


def _int_column(table: pa.Table, column: str) -> list[int]:
    if table.num_rows == 0 or column not in table.column_names:
        return []
    return [int(v) for v in table.column(column).to_pylist() if v is not None]


def _result_of_row(row: dict[str, Any], cycle_id: int) -> TrialResult:
    """A stored trials row as a :class:`TrialResult` (the fields resume and reports need)."""
    metrics = {k[len(METRIC_PREFIX):]: v for k, v in row.items()
               if k.startswith(METRIC_PREFIX) and isinstance(v, (int, float)) and math.isfinite(v)}
    try:
        config = json.loads(row.get(CONFIG_JSON) or "{}")
    except ValueError:
        config = {}
    err = row.get(ERROR_CLASS)
    return TrialResult(
        experiment_id=row[EXPERIMENT_ID], cycle_id=cycle_id, status=JobStatus(row[STATUS]),
        config=config, metrics=metrics, duration_s=row.get(DURATION_S),
        error_class=ErrorClass(err) if err in ErrorClass._value2member_map_ else None,
        error_message=row.get(ERROR_MESSAGE), iterations=row.get(ITERATIONS) or 0)


__all__ = ["HistoryReader"]
