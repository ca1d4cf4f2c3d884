"""The historian: the study's memory, and the one writer of its history.

``Historian(study)`` is a plain class; the orchestrator makes it the named Ray actor
``historian`` (``ray.remote(Historian).options(name="historian", ...)``). On start it
checks that the storage is writable (raising :class:`HistoryError` before any trial
runs), finishes any compaction a crash interrupted, and rebuilds its in-memory views
from the Parquet files, so a restarted actor knows everything its predecessor stored.

Integration is idempotent per ``experiment_id``, across restarts and across drivers:
an id already stored (by anyone) changes nothing. The in-memory views grow
incrementally (one new file per call, read-back free), so ``integrate`` + ``summary()``
stay in milliseconds at 100,000 trials. Several processes may write at once: every
write is a new file, and each historian picks up the others' files on its next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from arc_ray.errors import HistoryError
from arc_ray.historian.reader import HistoryReader
from arc_ray.historian.schema import (
    CYCLE_ID,
    constraints_to_table,
    cycle_to_table,
    decisions_to_table,
    trials_to_table,
)
from arc_ray.historian.store import TABLES, ParquetStore
from arc_ray.records import (
    Constraint,
    CycleReport,
    Decision,
    IntegrationSummary,
    JobStatus,
    TrialResult,
    experiment_id_problem,
)
from arc_ray.study import StudyConfig

logger = logging.getLogger(__name__)


class Historian(HistoryReader):
    """Keeps a study's trials, decisions, cycles and learned constraints in Parquet.

    Args:
        study: the study; history lives under ``study.study_dir``
            (``<storage>/<name>/{trials,decisions,cycles,constraints}/``).
        compact_every: compact a table once it holds this many small files (``None``: never
            automatically; :meth:`compact` still works).
        min_failures: failures needed before a constraint is learned from them.

    Raises:
        HistoryError: the storage cannot be written or listed.

    Everything it answers (tables, :meth:`summary`, the loop's questions such as
    :meth:`pending_cycle` and :meth:`results_of_cycle`) it inherits from
    :class:`~arc_ray.historian.reader.HistoryReader`; this class adds the writes.

    Thread safety: every public method takes one lock, so a driver's threads may share
    an instance. Across processes, use one actor per study (or accept that each
    process sees the others' rows at its next call).
    """

    def __init__(self, study: StudyConfig, *, compact_every: int | None = 64,
                 min_failures: int = 2) -> None:
        store = ParquetStore(study.study_dir)
        store.check_writable()
        for table in TABLES:
            store.finish_interrupted(table)
        super().__init__(study, min_failures=min_failures, store=store)
        self.compact_every = compact_every
        n_corrupt = sum(len(v.corrupt) for v in self._views())
        logger.info("historian for %s: %d trials, %d decisions, %d cycles from %s%s",
                    study.name, self._trials.table.num_rows, self._decisions.table.num_rows,
                    self._cycles.table.num_rows, self._store.uri,
                    f" ({n_corrupt} unreadable files skipped)" if n_corrupt else "")

    # ------------------------------------------------------------------ writing

    def integrate_experiment_results(self, results: Iterable[TrialResult | Mapping[str, Any]],
                                     cycle_id: int) -> IntegrationSummary:
        """Store finished results; ids already stored (or repeated in the batch) are skipped.

        A completed result without a finite value of the study's metric is stored (it
        still counts towards resources) but cannot rank.

        Raises:
            HistoryError: an item is not a valid, finished result (unknown or non-terminal
                status, bad id, ...); the message lists every bad item and nothing is written.
        """
        with self._lock:
            batch = self._validate_results(results)
            if not batch:
                return IntegrationSummary(status="empty", cycle_id=cycle_id)
            self._trials.refresh()
            new, seen, dups = [], set(), 0
            for r in batch:
                if self._trials.has((r.experiment_id,)) or r.experiment_id in seen:
                    dups += 1
                    continue
                seen.add(r.experiment_id)
                new.append(r)
                if r.cycle_id != cycle_id:
                    logger.warning("result %s says cycle %d, integrated with cycle %d; stored as %d",
                                   r.experiment_id, r.cycle_id, cycle_id, r.cycle_id)
                if r.status == JobStatus.COMPLETED and r.metric(self.study.metric) is None:
                    logger.warning("experiment %s completed without a finite %r; stored, but it cannot rank",
                                   r.experiment_id, self.study.metric)
            if dups:
                logger.info("skipped %d results already in the history", dups)
            if new:
                self._trials.append(trials_to_table(new, default_resources=self.study.resources))
                self._persist_constraints(cycle_id)
                self._maybe_compact("trials")
            best = self._analysis()["best"]
            return IntegrationSummary(
                status="ok" if new else "duplicate", cycle_id=cycle_id, total=len(batch),
                successful=sum(r.status == JobStatus.COMPLETED for r in new),
                failed=sum(r.status == JobStatus.FAILED for r in new),
                skipped_duplicates=dups, best_metrics=best["metrics"] if best else {},
                history_updated=bool(new))

    def log_decisions(self, decisions: Iterable[Decision | Mapping[str, Any]]) -> int:
        """Persist decisions; one per ``(cycle_id, experiment_id)``. Returns how many were new.

        Raises:
            HistoryError: an item is not a valid ``Decision``; nothing is written.
        """
        with self._lock:
            items = self._validate(decisions, Decision, "decision")
            self._decisions.refresh()
            new, seen = [], set()
            for d in items:
                key = (d.cycle_id, d.experiment_id)
                if not self._decisions.has(key) and key not in seen:
                    seen.add(key)
                    new.append(d)
            if new:
                self._decisions.append(decisions_to_table(new))
                self._maybe_compact("decisions")
            return len(new)

    def supersede_decisions(self, decisions: Iterable[Decision | Mapping[str, Any]]) -> int:
        """Replace logged decisions (same ``(cycle_id, experiment_id)``): a decision
        re-validated on resume that can no longer run is stored again as ``vetoed``.

        The decisions table keeps the newest row per key, so readers see the new outcome;
        the older row stays on disk until a compaction. Returns how many were stored.

        Raises:
            HistoryError: an item is not a valid ``Decision``; nothing is written.
        """
        with self._lock:
            items = self._validate(decisions, Decision, "decision")
            self._decisions.refresh()
            if items:
                self._decisions.append(decisions_to_table(items))
            return len(items)

    def log_cycle(self, report: CycleReport | Mapping[str, Any]) -> None:
        """Store one row for the cycle; logging the same cycle again replaces its row."""
        with self._lock:
            (report,) = self._validate([report], CycleReport, "cycle report")
            row = cycle_to_table(report)
            self._cycles.refresh()
            old = self._cycles.table
            if old.num_rows and self._cycles.has((report.cycle_id,)):
                prev = old.filter(pc.equal(old.column(CYCLE_ID), report.cycle_id)).to_pylist()[-1]
                now = row.to_pylist()[0]
                if all(prev.get(k) == v for k, v in now.items() if k != "finished_at"):
                    return
            self._cycles.append(row)
            self._maybe_compact("cycles")

    def compact(self) -> dict[str, int]:
        """Merge each table's small files into one. Returns files merged per table."""
        with self._lock:
            done = {}
            for view in self._views():
                result = view.compact()
                done[view.name] = len(result[1]) if result else 0
            return done

    # ---------------------------------------------------------------- internals

    def _persist_constraints(self, cycle_id: int) -> None:
        """Log learned constraints that appeared, moved, or no longer hold."""
        learned = {c.id: c for c in self._analysis()["constraints"]}
        self._constraints.refresh()
        t = self._constraints.table
        current: dict[str, Constraint] = {}
        if t.num_rows:
            for row in t.select(["id", "active", "constraint_json"]).to_pylist():
                if row["active"]:
                    current[row["id"]] = Constraint.model_validate_json(row["constraint_json"])

        def region(c: Constraint) -> tuple:
            return (tuple(c.parameters), c.low, c.high, sorted(c.when.items(), key=repr))

        changed = [c for i, c in learned.items() if i not in current or region(current[i]) != region(c)]
        retired = [c for i, c in current.items() if i not in learned and c.source == "learned"]
        now = time.time()
        tables = []
        if changed:
            tables.append(constraints_to_table(changed, active=True, updated_at=now))
            for c in changed:
                logger.info("learned constraint %s: %s (%s)", c.id, c.describe(), c.reason)
        if retired:
            tables.append(constraints_to_table(retired, active=False, updated_at=now))
        if tables:
            self._constraints.append(pa.concat_tables(tables))

    def _maybe_compact(self, table: str) -> None:
        if not self.compact_every:
            return
        view = {v.name: v for v in self._views()}[table]
        if view.file_count >= self.compact_every:
            try:
                view.compact()
            except HistoryError as exc:  # the rows are safe in their parts; compaction can wait
                logger.warning("compaction of %s failed: %s", table, exc)

    def _validate_results(self, results: Iterable[Any]) -> list[TrialResult]:
        items = self._validate(results, TrialResult, "result")
        problems = []
        for r in items:
            try:  # instances built with model_copy/model_construct skip pydantic's checks
                status = JobStatus(r.status)
            except ValueError:
                problems.append(f"result {r.experiment_id!r}: unknown status {r.status!r}")
                continue
            if not status.is_terminal():
                problems.append(f"result {r.experiment_id!r}: status {status.value} is not finished "
                                f"(expected COMPLETED, FAILED or CANCELLED)")
            reason = experiment_id_problem(r.experiment_id)
            if reason:
                problems.append(f"result {r.experiment_id!r}: experiment_id {reason}")
        if problems:
            raise HistoryError("cannot integrate results: " + "; ".join(problems))
        return items

    @staticmethod
    def _validate(items: Iterable[Any], model: type, what: str) -> list[Any]:
        if isinstance(items, (str, bytes, Mapping, BaseModel)) or not isinstance(items, Iterable):
            raise HistoryError(f"expected a list of {what}s, got {type(items).__name__}")
        out, problems = [], []
        for i, item in enumerate(items):
            if isinstance(item, model):
                out.append(item)
                continue
            if not isinstance(item, Mapping):
                problems.append(f"{what} #{i}: expected a {model.__name__} or a dict, got {type(item).__name__}")
                continue
            try:
                out.append(model.model_validate(item))
            except ValidationError as exc:
                name = item.get("experiment_id", f"#{i}")
                errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                problems.append(f"{what} {name!r}: {errs}")
        if problems:
            raise HistoryError(f"cannot store {what}s: " + "; ".join(problems))
        return out


__all__ = ["Historian"]
