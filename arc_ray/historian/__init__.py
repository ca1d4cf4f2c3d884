"""The historian: the study's history in Parquet, and what it teaches.

- :class:`Historian` (``historian.py``): the one writer per study, made a Ray actor by
  the orchestrator; integrates results idempotently and summarises them.
- :class:`HistoryReader` (``reader.py``): the same answers (tables, summary, the loop's
  questions) for readers such as ``arc status``; it never writes, compacts or creates
  anything, so it works on read-only storage. The historian is a reader that writes.
- :mod:`~arc_ray.historian.store`: append-only Parquet datasets, atomic writes,
  crash-safe compaction, local folders or pyarrow filesystem URIs.
- :mod:`~arc_ray.historian.schema`: the tables' columns (documented there and in the
  README), and a constant for every column name that code outside it uses.
- :mod:`~arc_ray.historian.analysis`: pure functions over the trials table (best,
  trend, stagnation, patterns, learned constraints).
- :mod:`~arc_ray.historian.frame`: the trials table's columns as numpy, grown per batch,
  which keeps the analyses fast at 100,000 trials.

Reading needs nothing of ARC (``read_table(study_dir)`` is a convenience that also
honours compaction and de-duplicates): ``pyarrow.dataset.dataset("<study>/trials")``,
``pandas.read_parquet("<study>/trials")`` or DuckDB's ``read_parquet('<study>/trials/*.parquet')``.
"""

from __future__ import annotations

from arc_ray.historian import analysis
from arc_ray.historian.analysis import ConstraintRule, Stagnation
from arc_ray.historian.frame import Frame
from arc_ray.historian.historian import Historian
from arc_ray.historian.reader import HistoryReader
from arc_ray.historian.store import TABLES, ParquetStore, concat_unified
from arc_ray.historian.view import DatasetView, read_table

__all__ = [
    "TABLES",
    "ConstraintRule",
    "DatasetView",
    "Frame",
    "Historian",
    "HistoryReader",
    "ParquetStore",
    "Stagnation",
    "analysis",
    "concat_unified",
    "read_table",
]
