"""Files a message carries (e-mail attachments, signature documents), read within the job.

Two kinds:
  - fixed files (`path:`): the path comes from a template over the row, so it is resolved
    and confined to the job's folder before it is read; rows share attachments, so each file
    is read once;
  - generated documents (`template:`): one PDF per row from an HTML + CSS template
    (batch.documents), stored as `<output>/<campaign>/documents/<key>/<name>`. The scan
    (`validate`) renders them all; `run` renders each row again only as far as its HTML, finds
    the stored PDF current and sends exactly its bytes, read back against its SHA-256.

A message's generated documents travel in its content under `DOCUMENTS` as
`[{"name", "sha256"}]`: the sender records them in the ledger's `documents` column and the
channels leave the key out of the API payload (`without_documents`).

A fixed file is sized by `stat` before a byte is read (`read(path, max_bytes=…)`): a 2 GB
sparse file named by a row is refused at once instead of being read, base64-encoded and held
in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from batch.documents import DocumentError, DocumentRenderer, read_if_unchanged
from batch.jobmodel import JobSpec
from batch.templating import template_dirs

_FILE_CACHE_ENTRIES = 256  # signature documents differ per row: bound the memory they hold
DOCUMENTS = "documents"  # the content key listing a message's generated documents


@dataclass(frozen=True)
class Generated:
    """A row's generated document as it will be sent."""

    name: str
    sha256: str
    size: int
    b64: str

    @property
    def digest(self) -> str:
        """`sha256:<hex>`, as the content hash takes a file."""
        return "sha256:" + self.sha256


def generated_templates(spec: JobSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """(job-file location, template) of every document the job generates per row."""
    found: list[tuple[tuple[str | int, ...], str]] = [
        (("message", "attachments", i, "template"), a.template)
        for i, a in enumerate(spec.message.attachments)
        if a.template is not None
    ]
    if spec.document is not None and spec.document.template is not None:
        found.append((("document", "template"), spec.document.template))
    return found


def recorded_documents(value: Any) -> list[tuple[str, str]]:
    """The ledger's `documents` cell as (name, SHA-256) pairs; [] when it holds none."""
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return []
    if not isinstance(loaded, list):
        return []
    return [
        (str(d["name"]), str(d.get("sha256") or "").lower())
        for d in loaded
        if isinstance(d, dict) and d.get("name")
    ]


def without_documents(content: dict[str, Any]) -> dict[str, Any]:
    """The content without the list of generated documents (not an API field)."""
    return {k: v for k, v in content.items() if k != DOCUMENTS}


class JobFiles:
    """Reads files for attachments and documents once per path, within the job's folder.

    With `html_env` and `output_dir` it also generates documents (`generate`).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        html_env: jinja2.Environment | None = None,
        output_dir: Path | None = None,
    ) -> None:
        self.base_dir = base_dir.resolve()
        self._cache: OrderedDict[Path, tuple[bytes, str, str]] = OrderedDict()
        self._output_dir = output_dir
        self._renderer = (
            DocumentRenderer(html_env, roots=template_dirs(self.base_dir))
            if html_env is not None
            else None
        )

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

    def generate(
        self, key: str, template: str, name: str, variables: dict[str, Any], *, limit: int
    ) -> Generated:
        """The row's document, rendered or found current in the store; ValueError saying why not.

        The bytes returned are the stored file's, read back and checked against its SHA-256.
        """
        if self._renderer is None or self._output_dir is None:
            raise ValueError("documents cannot be generated here (no output folder)")
        try:
            document = self._renderer.produce(
                self._output_dir, key, template, name, variables, limit=limit
            )
        except DocumentError as err:
            raise ValueError(err.message) from err
        data = read_if_unchanged(document.path, document.sha256)
        if data is None:
            raise ValueError(f"{document.path}: changed while it was read; run again")
        return Generated(
            document.name, document.sha256, len(data), base64.b64encode(data).decode("ascii")
        )


def decoded_size(b64: str) -> int:
    """The byte size of a base64 text, without decoding it."""
    return len(b64) * 3 // 4 - b64[-2:].count("=")


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
