"""Numpy columns of a trials table, built once and extended batch by batch.

The analyses in :mod:`arc_ray.historian.analysis` read numbers and category codes,
never Python objects. Converting a 100,000-row Arrow table to numpy on every summary
would cost more than the analyses themselves, so the historian keeps a :class:`Frame`
that grows with each integrated batch (amortised O(batch)); a plain caller builds one
with :meth:`Frame.from_table`. Rows stay aligned with the table they came from.

Numeric columns (int, float) are float64 with NaN for null; bool and string columns
are int64 codes (-1 for null) into a list of values. Free-text columns
(``experiment_id``, ``config_json``, ``error_message``, ...) are not kept.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arc_ray.historian.schema import CONFIG_JSON, CYCLE_ID, ERROR_MESSAGE, EXPERIMENT_ID

_SKIP = frozenset({EXPERIMENT_ID, CONFIG_JSON, "best_metrics_json", ERROR_MESSAGE, "node_ip"})
_SMALL = 8  # numeric columns with at most this many distinct values are treated as categories


class _Buffer:
    """A growable 1-D array (capacity doubles), so appends are amortised O(batch)."""

    def __init__(self, dtype: Any, fill: Any, n: int = 0) -> None:
        self.fill = fill
        self.data = np.full(max(1024, 2 * n), fill, dtype=dtype)
        self.n = n  # rows before this buffer existed read as ``fill``

    def append(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.data):
            grown = np.full(max(end, 2 * len(self.data)), self.fill, dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n:end] = values
        self.n = end

    def pad(self, n: int) -> None:
        self.append(np.full(n, self.fill, dtype=self.data.dtype))

    def view(self) -> np.ndarray:
        return self.data[: self.n]


def _kind(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "num"
    if pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return "cat"
    if pa.types.is_null(t):
        return "null"
    return None


class Frame:
    """Columns of a trials table as numpy arrays; see the module docstring."""

    def __init__(self) -> None:
        self.n = 0
        self._num: dict[str, _Buffer] = {}
        self._int: set[str] = set()  # numeric columns whose values were all integers
        self._cat: dict[str, _Buffer] = {}
        self._values: dict[str, list[Any]] = {}
        self._index: dict[str, dict[Any, int]] = {}
        self._distinct: dict[str, set[float] | None] = {}  # None: more than _SMALL values
        self._bins: dict[tuple, dict[str, Any]] = {}
        self._memo: dict[Any, Any] = {}
        self.cycle_ids: set[int] = set()

    @classmethod
    def from_table(cls, table: pa.Table) -> "Frame":
        frame = cls()
        if not frame.extend(table):  # cannot happen for one table; kept for the contract
            raise ValueError("a table cannot conflict with itself")
        return frame

    # ---------------------------------------------------------------- growth

    def extend(self, table: pa.Table) -> bool:
        """Append ``table``'s rows. Returns ``False`` (and changes nothing) when a column
        changed kind (number ↔ text); the caller then rebuilds from the unified table."""
        m = table.num_rows
        if m == 0:
            return True
        kinds = {f.name: _kind(f.type) for f in table.schema if f.name not in _SKIP}
        for name, kind in kinds.items():
            if (kind == "num" and name in self._cat) or (kind == "cat" and name in self._num):
                return False
        for name, kind in kinds.items():
            col = table.column(name)
            if kind == "num":
                self._add_numeric(name, col)
            elif kind == "cat":
                self._add_categorical(name, col)
        for buf in [*self._num.values(), *self._cat.values()]:  # columns this batch lacks
            if buf.n < self.n + m:
                buf.pad(self.n + m - buf.n)
        if CYCLE_ID in table.column_names:
            self.cycle_ids |= {int(c) for c in pc.unique(table.column(CYCLE_ID)).drop_null().to_pylist()}
        self.n += m
        self._memo.clear()
        return True

    def _add_numeric(self, name: str, col: pa.ChunkedArray) -> None:
        buf = self._num.get(name)
        if buf is None:
            buf = self._num[name] = _Buffer(np.float64, np.nan, self.n)
            self._distinct[name] = set()
            if pa.types.is_integer(col.type):
                self._int.add(name)
        elif not pa.types.is_integer(col.type) and col.null_count < len(col):
            self._int.discard(name)
        buf.append(pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy())
        seen = self._distinct.get(name)
        if seen is not None:
            if pc.count_distinct(col).as_py() > _SMALL:
                self._distinct[name] = None
            else:
                seen |= set(pc.unique(col).drop_null().to_pylist())
                if len(seen) > _SMALL:
                    self._distinct[name] = None

    def _add_categorical(self, name: str, col: pa.ChunkedArray) -> None:
        buf = self._cat.get(name)
        if buf is None:
            buf = self._cat[name] = _Buffer(np.int64, -1, self.n)
            self._values[name], self._index[name] = [], {}
        values, index = self._values[name], self._index[name]
        enc = pc.dictionary_encode(col.combine_chunks())
        local = enc.dictionary.to_pylist()
        mapping = np.empty(len(local) + 1, dtype=np.int64)
        mapping[-1] = -1  # null → -1 (filled below as index len(local))
        for i, v in enumerate(local):
            if v not in index:
                index[v] = len(values)
                values.append(v)
            mapping[i] = index[v]
        idx = pc.fill_null(enc.indices, len(local)).to_numpy().astype(np.int64, copy=False)
        buf.append(mapping[idx])

    # ---------------------------------------------------------------- access

    def has(self, name: str) -> bool:
        return name in self._num or name in self._cat

    def is_numeric(self, name: str) -> bool:
        return name in self._num

    def is_integer(self, name: str) -> bool:
        return name in self._int

    def floats(self, name: str) -> np.ndarray:
        """A numeric column (NaN for null); all-NaN when absent or not numeric."""
        buf = self._num.get(name)
        return buf.view() if buf is not None else np.full(self.n, np.nan)

    def codes(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """A categorical column's codes (-1 for null) and the value of each code."""
        buf = self._cat.get(name)
        if buf is None:
            return np.full(self.n, -1, dtype=np.int64), []
        return buf.view(), self._values[name]

    def equals(self, name: str, value: Any) -> np.ndarray:
        """Rows whose categorical ``name`` is ``value`` (memoised until the frame grows)."""
        def compute() -> np.ndarray:
            codes, _ = self.codes(name)
            code = self._index.get(name, {}).get(value)
            return codes == code if code is not None else np.zeros(self.n, dtype=bool)

        return self.memo(("equals", name, value), compute)

    def small_values(self, name: str) -> list[float] | None:
        """The distinct values of a numeric column when there are at most 8, else ``None``."""
        seen = self._distinct.get(name)
        return None if seen is None else sorted(seen)

    def small_codes(self, name: str) -> tuple[np.ndarray, list[float]]:
        """Codes of a numeric column with few values (index into its sorted values; -1 for NaN),
        coded once per row and recoded only when a new value appears."""
        values = self.small_values(name)
        if values is None:
            raise ValueError(f"{name} has more than {_SMALL} distinct values")
        x = self.floats(name)
        cache = self._bins.get((name, "small"))
        if cache is None or cache["values"] != values:
            cache = {"values": values, "codes": _Buffer(np.int64, -1)}
            self._bins[(name, "small")] = cache
        codes: _Buffer = cache["codes"]
        if codes.n < self.n:
            new = x[codes.n:]
            codes.append(np.where(np.isfinite(new), np.searchsorted(np.asarray(values), new), -1))
        return codes.view(), values

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once until the frame grows (shared by the analyses of one summary)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def quartile_bins(self, name: str, basis: np.ndarray, key: Any = None,
                      refresh: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Quartile-bin codes of every row (-1 for NaN) and the inner bin edges.

        Edges are the quartiles of ``basis`` (row indices, e.g. the completed experiments)
        and are recomputed when the basis has grown by ``refresh`` (10%) since; in
        between, only new rows are coded, so the cost per batch is O(batch).
        """
        x = self.floats(name)
        cache = self._bins.get((name, key))
        if cache is None or abs(len(basis) - cache["basis"]) > refresh * max(cache["basis"], 1):
            vals = x[basis]
            vals = vals[np.isfinite(vals)]
            edges = np.unique(np.quantile(vals, [0.25, 0.5, 0.75])) if vals.size else np.array([])
            cache = {"edges": edges, "basis": len(basis), "codes": _Buffer(np.int64, -1)}
            self._bins[(name, key)] = cache
        codes: _Buffer = cache["codes"]
        if codes.n < self.n:
            new = x[codes.n:]
            codes.append(np.where(np.isfinite(new), np.searchsorted(cache["edges"], new, side="right"), -1))
        return codes.view(), cache["edges"]


__all__ = ["Frame"]
