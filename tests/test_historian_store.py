"""The Parquet store: atomic parts, crash-safe compaction, corrupt files, URIs, plain readers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from arc_ray.errors import HistoryError
from arc_ray.historian.store import ParquetStore
from arc_ray.historian.view import DatasetView, read_table

ROOT = Path(__file__).resolve().parent.parent


def _rows(start, n=1, **extra):
    cols = {"experiment_id": [f"e{i:04d}" for i in range(start, start + n)],
            "value": [float(i) for i in range(start, start + n)]}
    cols.update({k: [v] * n for k, v in extra.items()})
    return pa.table(cols)


def _run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_write_is_atomic_and_temp_names_are_invisible_to_plain_readers(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    name = store.write("trials", _rows(0, 3))
    assert name.startswith("part-") and name.endswith(".parquet")
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == [name]  # no temp left behind
    # what a writer killed mid-write leaves: a hidden, truncated temp file
    (tmp_path / "trials" / ".part-00000000000000000009-deadbeef.parquet.tmp").write_bytes(b"PAR1\x00trunc")
    assert store.read("trials").num_rows == 3
    assert ds.dataset(str(tmp_path / "trials")).to_table().num_rows == 3
    import pandas as pd
    assert len(pd.read_parquet(tmp_path / "trials")) == 3
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/trials/*.parquet')").fetchone()
    assert got == (3,)


def test_failed_write_leaves_nothing_visible(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    # Parquet has no interval type: the write fails after the temp file was opened
    bad = pa.table({"x": pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())})
    with pytest.raises(HistoryError, match="cannot write history file"):
        store.write("trials", bad)
    assert list((tmp_path / "trials").iterdir()) == []  # neither a part nor a temp file


def test_unwritable_storage_is_a_clear_history_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(HistoryError, match="not writable"):
        ParquetStore(str(blocker / "study")).check_writable()
    with pytest.raises(HistoryError, match="unknown history table"):
        ParquetStore(str(tmp_path)).table_dir("trails")


def test_file_uri_storage(tmp_path):
    store = ParquetStore(f"file://{tmp_path}/study")
    store.check_writable()
    store.write("trials", _rows(0, 2))
    store.write("trials", _rows(1, 2))  # e0001 twice: read_table keeps the first
    assert (tmp_path / "study" / "cycles").is_dir()
    got = read_table(f"file://{tmp_path}/study", "trials")
    assert got.column("experiment_id").to_pylist() == ["e0000", "e0001", "e0002"]
    with pytest.raises(HistoryError, match="filesystem URI"):
        ParquetStore("nosuchscheme://bucket/x")


def test_corrupt_file_is_skipped_logged_and_never_touched(tmp_path, caplog):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    for i in range(3):
        store.write("trials", _rows(i))
    bad = tmp_path / "trials" / "part-00000000000000000001-badbadbadbad.parquet"
    bad.write_bytes(b"this is not parquet")
    with caplog.at_level(logging.ERROR, logger="arc_ray.historian.store"):
        snap = store.snapshot("trials")
    assert snap.table().num_rows == 3 and snap.corrupt == {bad.name}
    assert any(bad.name in r.getMessage() for r in caplog.records)
    merged, replaced = store.compact("trials")
    assert bad.name not in replaced and bad.read_bytes() == b"this is not parquet"
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == sorted([bad.name, merged])
    assert store.read("trials").num_rows == 3


def test_compaction_merges_keeps_order_and_unifies_schemas(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    store.write("trials", _rows(0, 2))
    store.write("trials", _rows(2, 1, extra_metric=0.5))  # a new column appears
    store.write("trials", _rows(3, 2))
    before = store.read("trials")
    merged, replaced = store.compact("trials")
    assert len(replaced) == 3 and [n for n, _ in store.list_files("trials")] == [merged]
    after = store.read("trials")
    assert after.to_pylist() == before.to_pylist()
    assert after.column("extra_metric").to_pylist() == [None, None, 0.5, None, None]
    # a plain reader now sees the unified schema from one file
    assert ds.dataset(str(tmp_path / "trials")).to_table().column_names == after.column_names
    assert store.compact("trials") is None  # one file: nothing to do
    part = store.write("trials", _rows(5))
    merged2, replaced2 = store.compact("trials")
    assert replaced2 == [merged, part] and merged2 > merged  # named after its newest input
    assert store.read("trials").column("experiment_id").to_pylist() == [f"e{i:04d}" for i in range(6)]


_CRASH_MID_COMPACTION = """
import os, sys
from arc_ray.historian.store import ParquetStore
store = ParquetStore(sys.argv[1])
def crash(table, name):
    os._exit(3)   # killed after the merged file is in place, before any part is deleted
store._delete = crash
store.compact("trials")
"""


def test_crash_between_merge_and_delete_never_shows_a_row_twice(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    for i in range(5):
        store.write("trials", _rows(i))
    proc = _run(_CRASH_MID_COMPACTION, str(tmp_path))
    assert proc.returncode == 3, proc.stderr
    files = [n for n, _ in store.list_files("trials")]
    assert len(files) == 6  # five parts and the merged file, all visible
    snap = store.snapshot("trials")
    assert len(snap.replaced) == 5 and len(snap.files) == 1
    assert sorted(snap.table().column("experiment_id").to_pylist()) == [f"e{i:04d}" for i in range(5)]
    view = DatasetView(store, "trials", ["experiment_id"])
    assert view.table.num_rows == 5
    assert store.finish_interrupted("trials") == 5
    assert len(store.list_files("trials")) == 1
    assert ds.dataset(str(tmp_path / "trials")).to_table().num_rows == 5


_WRITER = """
import sys
import pyarrow as pa
from arc_ray.historian.store import ParquetStore
store = ParquetStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.write("trials", pa.table({"experiment_id": [f"e{i:04d}"], "value": [float(i)]}))
    if i % 4 == 3:
        store.compact("trials")
"""


def test_readers_during_writes_and_compactions_never_duplicate_or_lose(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    n = 60
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(n)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    reader = ParquetStore(str(tmp_path))
    seen_max, reads = 0, 0
    while proc.poll() is None or reads == 0:
        ids = reader.read("trials").column("experiment_id").to_pylist() if reader.list_files("trials") else []
        assert len(ids) == len(set(ids)), "a row was read twice"
        assert len(ids) >= seen_max, "a row was lost"
        # rows are written in order, so what has been seen is always a prefix
        assert sorted(ids) == [f"e{i:04d}" for i in range(len(ids))]
        seen_max, reads = len(ids), reads + 1
    assert proc.returncode == 0, proc.stderr.read()
    assert reader.read("trials").num_rows == n and reads > 1


def test_view_refresh_picks_up_other_writers_and_their_compactions(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    view = DatasetView(store, "trials", ["experiment_id"])
    view.append(_rows(0, 2))
    other = ParquetStore(str(tmp_path))
    other.write("trials", _rows(2, 2))
    other.write("trials", _rows(1, 2))  # e0001 again (another driver integrated it too)
    assert view.refresh()
    assert view.table.column("experiment_id").to_pylist() == ["e0000", "e0001", "e0002", "e0003"]
    assert not view.refresh()
    other.compact("trials")
    assert view.refresh()
    assert sorted(view.table.column("experiment_id").to_pylist()) == ["e0000", "e0001", "e0002", "e0003"]
    last = DatasetView(store, "cycles", ["experiment_id"], keep="last")
    last.append(_rows(0, 1, mode="explore"))
    last.append(_rows(0, 1, mode="exploit"))
    assert last.table.column("mode").to_pylist() == ["exploit"]


def test_plain_readers_may_unify_schemas_themselves(tmp_path):
    """What the README tells pyarrow / DuckDB users to do while parts differ in schema."""
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    store.write("trials", _rows(0))
    store.write("trials", _rows(1, extra_metric=0.5))
    files = sorted(str(p) for p in (tmp_path / "trials").glob("part-*.parquet"))
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    t = ds.dataset(files, schema=schema).to_table()
    assert t.column("extra_metric").to_pylist() == [None, 0.5]
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"select count(extra_metric), count(*) from "
                     f"read_parquet('{tmp_path}/trials/*.parquet', union_by_name=true)").fetchone()
    assert got == (1, 2)
    assert os.path.exists(files[0])


def test_compaction_leaves_large_files_alone(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.check_writable()
    big = store.write("trials", _rows(0, 5000))
    small = [store.write("trials", _rows(5000 + i)) for i in range(3)]
    sizes = dict(store.list_files("trials"))
    limit = sizes[big] - 1
    merged, replaced = store.compact("trials", max_file_bytes=limit)
    assert sorted(replaced) == sorted(small)
    assert sorted(n for n, _ in store.list_files("trials")) == sorted([big, merged])
    assert store.compact("trials", max_file_bytes=limit) is None  # one small file: nothing to merge
    assert store.read("trials").num_rows == 5003
