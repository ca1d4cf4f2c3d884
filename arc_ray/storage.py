"""One storage layer for the small files a study writes: configs, strategies, run files.

A study's storage is a local folder or a pyarrow filesystem URI (``file:///x``,
``s3://bucket/x``, ...). Wrapping such a URI in :class:`pathlib.Path` turns
``file:///x`` into a local folder named ``file:/x`` and ``s3://b/x`` into ``s3:/b/x``
under the working directory, so nothing that writes under a study may do that: every
small-file write goes through here, which understands both.

Every write is atomic for readers: on a local folder through a temp file in the same
folder and a rename; on a URI, object stores replace whole objects, so a plain write is
already all-or-nothing there. (The Parquet history has its own store,
:mod:`arc_ray.historian.store`, over the same two kinds of location.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def is_uri(target: str | Path) -> bool:
    """Whether ``target`` is a pyarrow filesystem URI rather than a local path."""
    return "://" in str(target)


def join(root: str | Path, *parts: str) -> str:
    """Join path parts onto a local folder or a URI (never through :class:`Path` for a URI)."""
    root = str(root)
    if is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


def _fs(target: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(target)


def make_dirs(target: str | Path) -> None:
    """Create a folder and its parents (a no-op where it exists)."""
    target = str(target)
    if is_uri(target):
        fs, path = _fs(target)
        fs.create_dir(path, recursive=True)
    else:
        os.makedirs(target, exist_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to a local path or a pyarrow filesystem URI, atomically, making folders."""
    target = str(target)
    if is_uri(target):
        fs, path = _fs(target)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(text.encode("utf-8"))
        return
    folder = os.path.dirname(target) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(target: str | Path) -> str | None:
    """The file's text, or ``None`` when it is missing or unreadable."""
    target = str(target)
    try:
        if not is_uri(target):
            return Path(target).read_text(encoding="utf-8")
        fs, path = _fs(target)
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
    except OSError:
        return None


def is_dir(target: str | Path) -> bool:
    """Whether ``target`` is an existing folder."""
    target = str(target)
    if not is_uri(target):
        return os.path.isdir(target)
    import pyarrow.fs as pafs

    fs, path = _fs(target)
    return fs.get_file_info(path).type == pafs.FileType.Directory


__all__ = ["atomic_write_text", "is_dir", "is_uri", "join", "make_dirs", "read_text"]
