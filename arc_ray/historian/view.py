"""An in-memory, de-duplicated view of one history table, refreshed incrementally.

The historian holds one :class:`DatasetView` per table: it loads the files once, adds
its own writes without reading them back, and on each call picks up only the files
other processes wrote since (rebuilding from scratch only after someone else's
compaction). :func:`read_table` is the one-shot form for any reader.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import pyarrow as pa

from arc_ray.historian.store import TABLE_KEYS, ParquetStore, concat_unified


class DatasetView:
    """An in-memory, de-duplicated view of one table, refreshed incrementally from files.

    Rows are kept in load order. ``key`` columns identify a row; ``keep`` says which
    copy wins when two writers stored the same key (``first`` for trials: storing again
    changes nothing; ``last`` for decisions, cycles and constraints: a newer row updates,
    e.g. a decision vetoed on resume).
    """

    def __init__(self, store: ParquetStore, table: str, key: Sequence[str],
                 keep: Literal["first", "last"] = "first", *,
                 on_rows: Callable[["DatasetView", pa.Table | None], None] | None = None,
                 empty_schema: pa.Schema | None = None) -> None:
        self.store, self.name, self.key, self.keep = store, table, tuple(key), keep
        self.empty_schema = empty_schema  # what ``table`` is before any row exists
        # Told of every chunk of rows added, in table order, and (with None) of every
        # rebuild, so derived views (the historian's numpy frame) stay aligned.
        self._on_rows = on_rows
        self.version = 0
        self.corrupt: set[str] = set()
        self._chunks: list[pa.Table] = []
        self._table: pa.Table | None = pa.table({})
        self._keys: set[tuple] = set()
        self._loaded: set[str] = set()  # live files whose rows are in the view
        self._ignored: set[str] = set()  # corrupt or replaced files
        self.reload()

    # ------------------------------------------------------------------ access

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            combined = concat_unified(self._chunks)
            # Keep chunk counts bounded so column reads stay fast; copying every time would not.
            if combined.num_columns and combined.column(0).num_chunks > 64:
                combined = combined.combine_chunks()
            self._chunks = [combined] if combined.num_columns else []
            if not self._chunks and self.empty_schema is not None:
                combined = self.empty_schema.empty_table()
            self._table = combined
        return self._table

    @property
    def file_count(self) -> int:
        """Live files whose rows are in the view."""
        return len(self._loaded)

    def has(self, key: tuple) -> bool:
        return key in self._keys

    @property
    def keys(self) -> set[tuple]:
        return self._keys

    # ---------------------------------------------------------------- loading

    def reload(self) -> None:
        """Rebuild from the files (the start of an actor, or after someone else's compaction)."""
        snap = self.store.snapshot(self.name)
        self._chunks, self._keys, self._table = [], set(), None
        self._loaded = {f.name for f in snap.files}
        self._ignored = snap.replaced | snap.corrupt
        self.corrupt = set(snap.corrupt)
        self._notify(None)
        self._add([f.table for f in snap.files])
        self.version += 1

    def refresh(self) -> bool:
        """Pick up files written by other processes since the last look. Returns whether rows changed."""
        listed = {n for n, _ in self.store.list_files(self.name)}
        new = sorted(listed - self._loaded - self._ignored)
        gone = self._loaded - listed
        if gone:
            self.reload()  # files merged away by a compaction elsewhere: rebuild, never guess
            return True
        if not new:
            return False
        try:
            snap = self.store.snapshot(self.name, new)
        except FileNotFoundError:
            self.reload()
            return True
        if any(f.replaces for f in snap.files):
            self.reload()  # someone else compacted: its merged file repeats rows we hold
            return True
        self._loaded |= {f.name for f in snap.files}
        self._ignored |= snap.corrupt
        self.corrupt |= snap.corrupt
        changed = self._add([f.table for f in snap.files])
        if changed:
            self.version += 1
        return changed

    def append(self, data: pa.Table) -> str | None:
        """Write ``data`` as a new file and add it to the view. Returns the file name."""
        if data.num_rows == 0:
            return None
        name = self.store.write(self.name, data)
        self._loaded.add(name)
        self._add([data])
        self.version += 1
        return name

    def compact(self, **kwargs) -> tuple[str, list[str]] | None:
        """Compact this table's files; the rows in memory do not change."""
        self.refresh()
        done = self.store.compact(self.name, **kwargs)
        if done:
            merged, replaced = done
            self._loaded = (self._loaded - set(replaced)) | {merged}
        return done

    def _key_list(self, table: pa.Table) -> list[tuple | None]:
        """Each row's key; ``None`` (never de-duplicated) where a key column is null or absent."""
        cols = [table.column(k).to_pylist() if k in table.column_names else [None] * table.num_rows
                for k in self.key]
        return [None if None in k else k for k in zip(*cols)]

    def _add(self, tables: list[pa.Table]) -> bool:
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return False
        if self.keep == "last":
            self._chunks.append(concat_unified(tables))
            self._table = None
            self._dedup_last()
            return True
        added = False
        for t in tables:
            keys = self._key_list(t)
            mask, fresh = [], set()
            for k in keys:
                ok = k is None or (k not in self._keys and k not in fresh)
                fresh.add(k)
                mask.append(ok)
            if not any(mask):
                continue
            self._keys |= {k for k, ok in zip(keys, mask) if ok and k is not None}
            chunk = t if all(mask) else t.filter(pa.array(mask))
            self._chunks.append(chunk)
            self._table = None
            self._notify(chunk)
            added = True
        return added

    def _notify(self, chunk: pa.Table | None) -> None:
        if self._on_rows is not None:
            self._on_rows(self, chunk)

    def _dedup_last(self) -> None:
        table = self.table
        keys = self._key_list(table)
        last: dict[tuple, int] = {}
        keep = []
        for i, k in enumerate(keys):
            if k is None:
                keep.append(i)
            else:
                last[k] = i
        if len(last) + len(keep) < len(keys):
            table = table.take(pa.array(sorted(keep + list(last.values())), pa.int64()))
        self._chunks, self._table, self._keys = [table], table, set(last)
        self._notify(None)
        self._notify(table)


def read_table(study_dir: str, table: str = "trials") -> pa.Table:
    """One history table of a study folder (path or URI), de-duplicated on its key."""
    key, keep = TABLE_KEYS[table] if table in TABLE_KEYS else ((), "first")
    store = ParquetStore(study_dir, read_only=True)
    store.table_dir(table)  # names the tables when ``table`` is unknown
    return DatasetView(store, table, key, keep).table  # type: ignore[arg-type]


__all__ = ["DatasetView", "read_table"]
