"""Small-file I/O shared by the config generator, the executor and the loop's state.

Every write is atomic for readers: on a local folder through a temp file in the same
folder and a rename; on a pyarrow filesystem URI (``s3://…``) object stores replace
whole objects, so a plain write is already all-or-nothing there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write ``text`` to a local path or a pyarrow filesystem URI, atomically, making folders."""
    target = str(target)
    if "://" in target:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(target)
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
        if "://" not in target:
            return Path(target).read_text(encoding="utf-8")
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(target)
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
    except OSError:
        return None
