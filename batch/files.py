"""Atomic, durable file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from batch.errors import BatchError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 100  # file systems allow 255 bytes; leave room for the suffixes


def safe_name(key: str) -> str:
    """`key` as a file-name stem: safe characters only, unique per key.

    Certificates and generated documents are stored under it.
    """
    clean = _UNSAFE.sub("_", key)[:_MAX_STEM]
    if clean != key or clean.startswith("."):
        clean = f"{clean.lstrip('.')}~{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return clean


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, temp: Path | None = None) -> None:
    """Temp file, fsync, rename, fsync the folder; BatchError naming the file on failure.

    `temp` names the temporary file where a crash's leftover must be recognisable.
    """
    tmp = temp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise BatchError(f"{path}: cannot write: {err.strerror or err}") from err
