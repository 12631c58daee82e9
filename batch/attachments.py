"""Files a message carries (e-mail attachments, signature documents), read within the job.

A path comes from a template over the row, so it is resolved and confined to the job's
folder before it is read; rows share attachments, so each file is read once. A file is sized
by `stat` before a byte is read (`read(path, max_bytes=…)`): a 2 GB sparse file named by a
row is refused at once instead of being read, base64-encoded and held in memory.
"""

from __future__ import annotations

import base64
import hashlib
import stat
from collections import OrderedDict
from pathlib import Path

_FILE_CACHE_ENTRIES = 256  # signature documents differ per row: bound the memory they hold


class JobFiles:
    """Reads files for attachments and documents once per path, within the job's folder."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir.resolve()
        self._cache: OrderedDict[Path, tuple[bytes, str, str]] = OrderedDict()

    def resolve(self, rendered: str) -> Path:
        """The real path of a rendered file name; ValueError if missing or outside the folder."""
        if not rendered.strip():
            raise ValueError("file path is empty")
        path = (self.base_dir / rendered.strip()).resolve()
        # resolve() follows symlinks and `..`, so this also catches links pointing outside.
        if not path.is_relative_to(self.base_dir):
            raise ValueError(f"{rendered!r} is outside the job's folder {self.base_dir}")
        if not path.is_file():
            raise ValueError(f"file not found: {rendered!r}")
        return path

    def read(self, path: Path, *, max_bytes: int | None = None) -> tuple[bytes, str, str]:
        """(first bytes, base64, digest) of a file, cached by path: rows share attachments.

        ValueError, before reading, if the file is not a regular file or holds more than
        `max_bytes`.
        """
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            size = len(hit[1]) * 3 // 4 - hit[1][-2:].count("=")  # the bytes the base64 holds
            if max_bytes is not None and size > max_bytes:
                raise ValueError(_too_big(path, size, max_bytes))
            return hit
        data = _read_bounded(path, max_bytes)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        entry = (data[:8], base64.b64encode(data).decode("ascii"), digest)
        self._cache[path] = entry
        if len(self._cache) > _FILE_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return entry


def file_size(path: Path) -> int:
    """The size `stat` gives; ValueError for anything but a regular file (a FIFO, a device)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path.name!r} is not a regular file")
    return info.st_size


def _read_bounded(path: Path, max_bytes: int | None) -> bytes:
    """The file's bytes, refused by its `stat` size first, and never more than `max_bytes`
    (a file growing between the check and the read is refused too)."""
    size = file_size(path)
    if max_bytes is None:
        return path.read_bytes()
    if size > max_bytes:
        raise ValueError(_too_big(path, size, max_bytes))
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(_too_big(path, len(data), max_bytes))
    return data


def _too_big(path: Path, size: int, limit: int) -> str:
    return (
        f"{path.name!r} is {size:,} bytes; the limit per file is {limit:,} "
        "(limits.max_attachment_bytes in the job file)"
    )
