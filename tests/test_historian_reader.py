"""The read-only HistoryReader: the historian's answers, read without writing anything."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from arc_ray.errors import HistoryError
from arc_ray.historian import Historian, HistoryReader
from arc_ray.historian.store import ParquetStore
from test_report import seed_history


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its mtime and size: what a writer would change."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(folder) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return out


def chmod_tree(root: Path, writable: bool) -> None:
    """Make ``root`` and everything in it read-only (or writable again)."""
    for folder, dirs, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder) / name, 0o644 if writable else 0o444)
        os.chmod(folder, 0o755 if writable else 0o555)


def _leave_a_crashed_compaction(study_dir: str) -> None:
    """Merge the trials' parts but keep them, as a compaction killed before deleting does."""
    store = ParquetStore(study_dir)
    store._delete = lambda table, name: None  # the crash: no part is deleted
    assert store.compact("trials") is not None


def test_the_reader_gives_the_historians_answers(toy_study):
    h = seed_history(toy_study, n_cycles=3, per_cycle=4, failures=2)
    r = HistoryReader(toy_study)
    assert r.summary() == h.summary()
    assert r.learned_constraints() == h.learned_constraints()
    for name in ("trials_table", "decisions_table", "cycles_table", "constraints_table"):
        assert getattr(r, name)().to_pylist() == getattr(h, name)().to_pylist(), name
    assert r.decisions_for_cycle(3) == h.decisions_for_cycle(3) and len(r.decisions_for_cycle(3)) == 4
    assert r.cycle_ids() == h.cycle_ids() == {"decided": {1, 2, 3}, "done": {1, 2, 3}, "ran": {1, 2, 3}}
    assert r.cycle_rows() == h.cycle_rows() and [c["mode"] for c in r.cycle_rows()] == [
        "explore", "exploit", "recover"]
    assert r.results_of_cycle(3) == h.results_of_cycle(3)
    assert r.integrated_ids() == h.integrated_ids() and r.corrupt_files() == []


def test_the_historian_answers_the_loops_questions(toy_study):
    from arc_ray.records import Decision, DecisionOutcome

    h = Historian(toy_study)
    assert h.pending_cycle() is None and h.next_cycle_id() == 1 and h.cycle_rows() == []
    seed_history(toy_study, n_cycles=2, per_cycle=2, failures=0)
    h.log_decisions([Decision(experiment_id="c0003-explorer-00", cycle_id=3, outcome=DecisionOutcome.APPROVED,
                              decided_by="supervisor", reason="ok")])
    h.refresh()
    assert h.pending_cycle() == 3 and h.next_cycle_id() == 4
    assert h.cycle_ids() == {"decided": {1, 2, 3}, "done": {1, 2}, "ran": {1, 2}}
    assert h.results_of_cycle(3) == [] and len(h.results_of_cycle(2)) == 2


def test_the_reader_writes_nothing_and_honours_leftovers_and_corrupt_files(toy_study, caplog):
    seed_history(toy_study, n_cycles=3, per_cycle=4, failures=1)
    study_dir = Path(toy_study.study_dir)
    _leave_a_crashed_compaction(toy_study.study_dir)
    bad = study_dir / "trials" / "part-00000000000000000001-badbadbadbad.parquet"
    bad.write_bytes(b"not parquet")
    before = tree(study_dir)
    with caplog.at_level(logging.ERROR, logger="arc_ray.historian.store"):
        r = HistoryReader(toy_study)
        summary = r.summary()
    assert r.trials_table().num_rows == 12 and summary.n_trials == 12  # the leftovers hide, no row twice
    assert r.corrupt_files() == [f"trials/{bad.name}"]
    assert any(bad.name in rec.getMessage() for rec in caplog.records)
    assert tree(study_dir) == before  # the crashed compaction's parts are left for the writer


def test_the_reader_works_on_read_only_storage(toy_study):
    h = seed_history(toy_study, n_cycles=2, per_cycle=3, failures=0)
    root = Path(toy_study.study_dir)
    before = tree(root)
    chmod_tree(root, writable=False)
    try:
        mode = stat.S_IMODE(os.stat(root / "trials").st_mode)
        r = HistoryReader(toy_study)
        assert r.summary() == h.summary() and r.decisions_for_cycle(2) == h.decisions_for_cycle(2)
        after = tree(root)
    finally:
        chmod_tree(root, writable=True)
    assert not mode & 0o222
    # chmod changes ctime, not mtime; root ignores the mode bits, so check nothing was written
    assert after == before


def test_a_missing_study_folder_reads_as_empty_and_is_not_created(toy_study, tmp_path):
    study = toy_study.model_copy(update={"storage": str(tmp_path / "typo" / "history")})
    r = HistoryReader(study)
    s = r.summary()
    assert s.n_trials == 0 and r.trials_table().num_rows == 0 and r.cycle_ids()["decided"] == set()
    assert r.pending_cycle() is None and r.results_of_cycle(1) == []
    assert not (tmp_path / "typo").exists()


def test_a_read_only_store_refuses_every_write(tmp_path):
    store = ParquetStore(str(tmp_path / "study"), read_only=True)
    for attempt in (lambda: store.check_writable(), lambda: store.write("trials", pa.table({"a": [1]})),
                    lambda: store.compact("trials"), lambda: store.finish_interrupted("trials")):
        with pytest.raises(HistoryError, match="read-only"):
            attempt()
    assert store.list_files("trials") == [] and store.read("trials").num_rows == 0
    assert not (tmp_path / "study").exists()


def test_the_reader_reads_again_when_a_compaction_overlaps_its_listing(toy_study):
    seed_history(toy_study, n_cycles=3, per_cycle=4, failures=0)
    writer = ParquetStore(toy_study.study_dir)
    assert len(writer.list_files("trials")) == 3
    ro = ParquetStore(toy_study.study_dir, read_only=True)
    read_file = ro.read_file
    compacted = []

    def compact_under_the_reader(table, name):
        if table == "trials" and not compacted:  # after the listing, before the first read
            compacted.append(writer.compact("trials"))
        return read_file(table, name)

    ro.read_file = compact_under_the_reader
    r = HistoryReader(toy_study, store=ro)
    assert compacted[0] is not None and len(writer.list_files("trials")) == 1
    ids = r.trials_table().column("experiment_id").to_pylist()
    assert sorted(ids) == sorted(f"c{c:04d}-bayesian-{i:02d}" for c in (1, 2, 3) for i in range(4))
