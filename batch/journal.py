"""The ledger's files: the JSON-lines journal and the Parquet checkpoint, written durably.

Only newline-terminated journal lines count; an unterminated tail is a torn write and is
dropped (and cut before the next append). The checkpoint carries a write id in its
key-value metadata so a process can tell whether another one checkpointed since.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from batch.errors import LedgerError
from batch.files import fsync_dir

WRITE_ID = "lmbatch.write_id"  # parquet key-value metadata: which write produced the file


def read_parquet(path: Path) -> tuple[pl.DataFrame | None, str]:
    """The checkpoint as written and its write id; (None, "") when there is none yet."""
    try:
        frame = pl.read_parquet(path)
        return frame, write_id(path)
    except FileNotFoundError:
        return None, ""
    except (OSError, pl.exceptions.PolarsError) as err:
        raise LedgerError(f"{path}: cannot read the ledger: {err}") from err


def write_id(path: Path) -> str:
    """Which write produced `path` ("" if absent; unique each call if not ours: reread it)."""
    try:
        return pl.read_parquet_metadata(path).get(WRITE_ID) or f"foreign-{uuid.uuid4().hex}"
    except FileNotFoundError:
        return ""
    except (OSError, pl.exceptions.PolarsError) as err:
        raise LedgerError(f"{path}: cannot read the ledger: {err}") from err


def write_parquet(frame: pl.DataFrame, path: Path) -> str:
    """Replace `path` by `frame` atomically and durably; returns the new write id."""
    write_id = uuid.uuid4().hex
    tmp = path.with_name(path.name + ".tmp")
    try:
        frame.write_parquet(tmp, metadata={WRITE_ID: write_id})
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise LedgerError(f"{path}: cannot write the ledger: {err}") from err
    return write_id


def read_events(path: Path) -> list[dict[str, Any]]:
    """The journal's complete events; the unterminated tail (a torn write) is dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise LedgerError(f"{path}: cannot read the journal: {err}") from err
    events = []
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), 1):
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("rows"), dict):
                raise ValueError("not a journal event")
        except ValueError as err:
            raise LedgerError(
                f"{path}:{number}: corrupt journal line: {err}",
                hint="the ledger cannot be trusted past this line; inspect the file",
            ) from err
        events.append(event)
    return events


def cut_torn_tail(fd: int) -> None:
    """Cut an unterminated last line (a crashed write) so the next line starts clean."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def truncate(fd: int, path: Path) -> None:
    """Empty the journal in place: other writers' O_APPEND fds keep pointing at it."""
    try:
        os.ftruncate(fd, 0)
        os.fsync(fd)
    except OSError as err:
        raise LedgerError(f"{path}: cannot truncate the journal: {err}") from err


def encode(value: Any) -> Any:
    """A journal value: datetimes as {"$dt": ISO 8601}."""
    return {"$dt": value.isoformat()} if isinstance(value, datetime) else value


def decode(value: Any) -> Any:
    """The value a journal line holds."""
    if isinstance(value, dict) and "$dt" in value:
        return datetime.fromisoformat(value["$dt"]).astimezone(UTC)
    return value
