"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one.

The one implementation of "temp file, fsync, rename, fsync the folder" in lmbatch:
`write_atomic` for bytes in hand, `atomic_path` for writers that want a path of their own
(polars' `write_parquet`/`sink_parquet`, a PDF renderer).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from batch.errors import BatchError


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush `path`'s data to disk (a writer that closed it may have left it in the cache)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, temp: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it becomes `path` atomically, durably.

    The temp file is fsync'd, renamed over `path` and the folder fsync'd; if the body raises,
    the temp file is removed and `path` is left as it was. `temp` names the temporary file
    where a crash's leftover must be recognisable. OSErrors of the rename and the fsyncs
    propagate as they are (callers wrap them in their own located error).
    """
    tmp = temp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, temp: Path | None = None) -> None:
    """Temp file, fsync, rename, fsync the folder; BatchError naming the file on failure.

    `temp` names the temporary file where a crash's leftover must be recognisable.
    """
    try:
        with atomic_path(path, temp=temp) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise BatchError(f"{path}: cannot write: {err.strerror or err}") from err
