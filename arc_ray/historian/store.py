"""Append-only Parquet datasets on a local folder or any pyarrow filesystem URI.

Layout: ``<root>/<table>/part-<time_ns>-<uuid>.parquet``, one file per write. A write
goes to a hidden temporary name (``.part-….parquet.tmp``) and is renamed into place, so
a crash never leaves a half file under a visible name: pyarrow.dataset and pandas skip
names starting with ``.`` and ``_``, and a ``*.parquet`` glob (DuckDB) does not match
``….tmp``.

**Compaction** merges small parts into one file, crash-safely and without a manifest:

1. the merged file is written (temp name + rename) with the names of the parts it
   replaces in its Parquet key-value metadata (``arc.replaces``);
2. only then are those parts deleted.

A reader that sees a merged file skips every part it lists, so a crash between 1 and 2
(or a reader that lists the folder in between) never yields a row twice; the next
compaction or :meth:`ParquetStore.finish_interrupted` removes the leftovers. A folder
listing is not atomic, so a reader lists again after reading: a part that vanished, or
a merged file that appeared meanwhile, means a compaction overlapped the read, which is
then repeated (reading only new files), so no row is lost either. Plain pyarrow/pandas/DuckDB readers do not know the
``arc.replaces`` rule: during the milliseconds of a compaction (or after one that
crashed half-way) they may see replaced rows twice; every table has a key
(``experiment_id`` for trials) on which such readers can drop duplicates.

A file that cannot be read (corrupt, truncated by something else) is skipped with a
logged error naming it; it is never merged, deleted or overwritten.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from arc_ray.errors import HistoryError
from arc_ray.historian.schema import CYCLE_ID, EXPERIMENT_ID

logger = logging.getLogger(__name__)

TABLES = ("trials", "decisions", "cycles", "constraints")
# Each table's row key, and which copy wins when a key was stored twice.
TABLE_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "trials": ((EXPERIMENT_ID,), "first"),
    # last: a decision re-validated on resume is superseded (log_decisions never repeats a key)
    "decisions": ((CYCLE_ID, EXPERIMENT_ID), "last"),
    "cycles": ((CYCLE_ID,), "last"),
    "constraints": (("id",), "last"),
}
REPLACES_KEY = b"arc.replaces"
_PREFIX = "part-"
_SUFFIX = ".parquet"
_READ_RETRIES = 100  # each retry reads only files new since the last listing


def resolve_filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path on it for a local folder or a URI (``file://``, ``s3://``)."""
    if "://" in root:
        try:
            return pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            raise HistoryError(f"history storage {root!r} is not a usable filesystem URI: {exc}") from None
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def concat_unified(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables whose schemas differ (new metric, new config key, int vs float).

    Missing columns are filled with nulls and numeric types widened
    (``promote_options="permissive"``); a column whose types cannot be unified (a
    config key that was a number in one trial and a string in another) becomes a
    string column, with a warning naming it.
    """
    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    types: dict[str, list[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            types.setdefault(f.name, []).append(f.type)
    conflicted = set()
    for name, ts in types.items():
        try:
            pa.unify_schemas([pa.schema([pa.field(name, x)]) for x in ts], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            conflicted.add(name)
    logger.warning("history columns with conflicting types read as strings: %s", sorted(conflicted))
    fixed = []
    for t in tables:
        for name in conflicted & set(t.column_names):
            i = t.schema.get_field_index(name)
            t = t.set_column(i, pa.field(name, pa.string()), pc.cast(t.column(i), pa.string()))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")


@dataclass
class PartFile:
    """One readable file of a table: its name, rows and the parts it replaces."""

    name: str
    table: pa.Table
    replaces: frozenset[str] = frozenset()
    size: int = 0


@dataclass
class Snapshot:
    """A consistent read of one table: live files in name order, and what was skipped."""

    files: list[PartFile]
    replaced: set[str] = field(default_factory=set)  # present but superseded by a merged file
    corrupt: set[str] = field(default_factory=set)

    def table(self) -> pa.Table:
        return concat_unified([f.table for f in self.files])


class ParquetStore:
    """The files of one study's history: ``<root>/{trials,decisions,cycles,constraints}/``.

    Safe for several writers at once (every write is a new uniquely named file);
    compaction is meant to run in one process at a time (the historian actor).

    Args:
        root: the study folder, a local path or a pyarrow filesystem URI.
        read_only: list and read only: every method that would create, write or delete
            anything raises :class:`HistoryError` instead. Readers (``arc status``,
            ``arc report``) open the store so, which makes "a reader never writes" a
            property of the store rather than a promise of each caller; reading needs
            no folder to exist (a missing table reads as empty).
    """

    def __init__(self, root: str, *, read_only: bool = False) -> None:
        self.uri = root
        self.read_only = read_only
        self.fs, self.root = resolve_filesystem(root)
        self._logged_corrupt: set[str] = set()

    def _writing(self, what: str) -> None:
        """Refuse ``what`` on a read-only store."""
        if self.read_only:
            raise HistoryError(f"history storage {self.uri!r} is open read-only; cannot {what}")

    # ------------------------------------------------------------------ paths

    def table_dir(self, table: str) -> str:
        if table not in TABLES:
            raise HistoryError(f"unknown history table {table!r}; expected one of {', '.join(TABLES)}")
        return posixpath.join(self.root, table)

    def path(self, table: str, name: str) -> str:
        return posixpath.join(self.table_dir(table), name)

    def check_writable(self) -> None:
        """Create the table folders and write and delete a probe file in each.

        Raises:
            HistoryError: naming the storage and the OS error, when it cannot be written
                (or the store is read-only).
        """
        self._writing("check that it is writable")
        for table in TABLES:
            folder = self.table_dir(table)
            probe = posixpath.join(folder, f".probe-{uuid.uuid4().hex}")
            try:
                self.fs.create_dir(folder, recursive=True)
                with self.fs.open_output_stream(probe) as out:
                    out.write(b"ok")
                self.fs.delete_file(probe)
            except (OSError, pa.ArrowException) as exc:
                raise HistoryError(
                    f"history storage {self.uri!r} is not writable ({folder}): {exc}") from None

    def list_files(self, table: str) -> list[tuple[str, int]]:
        """Visible part files of ``table`` as ``(name, size)``, in name (= time) order."""
        selector = pafs.FileSelector(self.table_dir(table), allow_not_found=True)
        for _ in range(_READ_RETRIES):
            try:
                infos = self.fs.get_file_info(selector)
            except FileNotFoundError:
                continue  # an entry vanished between listing and stat: list again
            except (OSError, pa.ArrowException) as exc:
                raise HistoryError(f"cannot list history folder {self.table_dir(table)}: {exc}") from None
            return sorted((i.base_name, i.size or 0) for i in infos
                          if i.type == pafs.FileType.File and i.base_name.startswith(_PREFIX)
                          and i.base_name.endswith(_SUFFIX))
        raise HistoryError(f"history folder {self.table_dir(table)} kept changing while being listed")

    # ----------------------------------------------------------------- writing

    def write(self, table: str, data: pa.Table, *, replaces: Iterable[str] = (),
              time_ns: int | None = None) -> str:
        """Write ``data`` as a new part of ``table``, atomically. Returns the file name.

        Raises:
            HistoryError: the file could not be written (nothing visible is left behind).
        """
        self._writing(f"write to {table}")
        ns = time.time_ns() if time_ns is None else time_ns
        name = f"{_PREFIX}{ns:020d}-{uuid.uuid4().hex[:12]}{_SUFFIX}"
        final = self.path(table, name)
        tmp = self.path(table, f".{name}.tmp")
        replaces = sorted(replaces)
        if replaces:
            meta = dict(data.schema.metadata or {})
            meta[REPLACES_KEY] = json.dumps(replaces).encode()
            data = data.replace_schema_metadata(meta)
        try:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(data, out)
            self.fs.move(tmp, final)
        except (OSError, pa.ArrowException) as exc:
            try:
                self.fs.delete_file(tmp)
            except (OSError, pa.ArrowException):
                pass
            raise HistoryError(f"cannot write history file {final}: {exc}") from None
        return name

    # ----------------------------------------------------------------- reading

    def read_file(self, table: str, name: str) -> PartFile | None:
        """Read one file; ``None`` (and one logged error) when it is corrupt.

        Raises:
            FileNotFoundError: the file vanished (a compaction removed it); callers re-list.
        """
        path = self.path(table, name)
        try:
            with self.fs.open_input_file(path) as f:
                size = f.size()
                data = pq.ParquetFile(f).read()
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            if not self._exists(path):
                raise FileNotFoundError(path) from None
            if path not in self._logged_corrupt:
                self._logged_corrupt.add(path)
                logger.error("skipping unreadable history file %s: %s", path, exc)
            return None
        meta = data.schema.metadata or {}
        replaces = frozenset(json.loads(meta[REPLACES_KEY])) if REPLACES_KEY in meta else frozenset()
        return PartFile(name, data.replace_schema_metadata(None), replaces, size)

    def snapshot(self, table: str, names: Iterable[str] | None = None) -> Snapshot:
        """Read every live file of ``table`` (or just ``names``).

        A folder listing is not atomic: while it runs, a compaction may add its merged
        file (unseen) and delete the parts it replaces (gone before they are seen).
        So the folder is listed again after reading; if a file with an ``arc.replaces``
        list appeared in between, or a listed file vanished before it was read, a
        compaction overlapped the read and it is repeated, reading only the new files
        (files never change once written, so what was read stays valid).
        """
        read: dict[str, PartFile | None] = {}
        for _ in range(_READ_RETRIES):
            listed = [n for n, _ in self.list_files(table)] if names is None else list(names)
            try:
                for n in listed:
                    if n not in read:
                        read[n] = self.read_file(table, n)
            except FileNotFoundError:
                if names is not None:
                    raise
                continue
            if names is None:
                appeared = [n for n, _ in self.list_files(table) if n not in read]
                if any(self._replaces_of(table, n) for n in appeared):
                    continue
            files = [read[n] for n in listed if read[n] is not None]
            corrupt = {n for n in listed if read[n] is None}
            replaced = set().union(*(f.replaces for f in files)) if files else set()
            live = [f for f in files if f.name not in replaced]
            return Snapshot(live, replaced & set(listed), corrupt)
        raise HistoryError(f"history table {self.table_dir(table)} kept changing while being read")

    def read(self, table: str) -> pa.Table:
        """All rows of ``table`` (no de-duplication), schemas unified."""
        return self.snapshot(table).table()

    # -------------------------------------------------------------- compaction

    def finish_interrupted(self, table: str) -> int:
        """Delete parts that a present merged file already replaces (a crashed compaction).

        Reads only the files' footers, so it is cheap at start-up.
        """
        self._writing(f"finish an interrupted compaction of {table}")
        names = [n for n, _ in self.list_files(table)]
        replaced: set[str] = set()
        for name in names:
            replaced |= self._replaces_of(table, name)
        gone = sorted(replaced & set(names))
        for name in gone:
            self._delete(table, name)
        return len(gone)

    def _replaces_of(self, table: str, name: str) -> frozenset[str]:
        try:
            with self.fs.open_input_file(self.path(table, name)) as f:
                meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        except (OSError, pa.ArrowException):
            return frozenset()  # vanished or corrupt: the full read reports it
        return frozenset(json.loads(meta[REPLACES_KEY])) if REPLACES_KEY in meta else frozenset()

    def compact(self, table: str, *, min_files: int = 2,
                max_file_bytes: int = 8 << 20) -> tuple[str, list[str]] | None:
        """Merge the live files of ``table`` smaller than ``max_file_bytes`` into one.

        Only the small files are read, so large merged files are not rewritten again and
        again; corrupt files are left alone. Returns ``(merged name, replaced names)``,
        or ``None`` when fewer than ``min_files`` files qualified.
        """
        self._writing(f"compact {table}")
        self.finish_interrupted(table)
        small = [n for n, size in self.list_files(table) if size < max_file_bytes]
        if len(small) < max(min_files, 1):
            return None
        try:
            files = self.snapshot(table, small).files
        except FileNotFoundError:  # another process is compacting; the next call will do
            return None
        if len(files) < max(min_files, 1):
            return None
        merged = concat_unified([f.table for f in files])
        # Merged files list what their inputs replaced too, so a crash after deleting a
        # merged input but before its own leftovers are gone still hides those leftovers.
        replaces = {f.name for f in files}.union(*(f.replaces for f in files))
        # Name it after its newest input so it sorts where those rows were.
        newest = max(int(f.name[len(_PREFIX):].split("-")[0]) for f in files)
        name = self.write(table, merged, replaces=replaces, time_ns=newest)
        for f in files:
            self._delete(table, f.name)
        logger.info("compacted %d files of %s into %s", len(files), self.table_dir(table), name)
        return name, [f.name for f in files]

    def _delete(self, table: str, name: str) -> None:
        self._writing(f"delete {table}/{name}")
        try:
            self.fs.delete_file(self.path(table, name))
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            # Harmless: readers skip it through the merged file's list; retried next time.
            logger.warning("could not delete replaced history file %s: %s", self.path(table, name), exc)

    def _exists(self, path: str) -> bool:
        try:
            return self.fs.get_file_info(path).type == pafs.FileType.File
        except (OSError, pa.ArrowException):
            return False


__all__ = ["ParquetStore", "PartFile", "Snapshot", "TABLES", "TABLE_KEYS", "concat_unified",
           "resolve_filesystem"]
