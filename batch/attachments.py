"""Files a message carries (e-mail attachments, signature documents), read within the job.

A path comes from a template over the row, so it is resolved and confined to the job's
folder before it is read; rows share attachments, so each file is read once.
"""

from __future__ import annotations

import base64
import hashlib
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

    def read(self, path: Path) -> tuple[bytes, str, str]:
        """(first bytes, base64, digest) of a file, cached by path: rows share attachments."""
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            return hit
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        entry = (data[:8], base64.b64encode(data).decode("ascii"), digest)
        self._cache[path] = entry
        if len(self._cache) > _FILE_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return entry
