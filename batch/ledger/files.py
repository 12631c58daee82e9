"""The ledger's files: the JSON-lines journal and the Parquet checkpoint, written durably.

A journal line is `{"v": 2, "type": "intent", "at": T, "rows": {key: {column: value}}, ...}`
plus the event's own payload (`request_id`, `reason`) for people reading it; datetimes are
written as `{"$dt": "<ISO 8601 UTC>"}`. Version 1 lines (before the `address` column) name
the address `email`; `read_events` hands every line back in the current form.

Only newline-terminated journal lines count; an unterminated tail is a torn write and is
dropped (and cut before the next append); an unparseable terminated line is a LedgerError
naming file and line. The checkpoint carries a write id in its key-value metadata so a
process can tell whether another one checkpointed since.

The checkpoint is never held whole by this module: `scan` hands out a lazy frame (readers
pick the columns they need) and `sink` streams a lazy frame into the new file.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from batch.errors import BatchError, LedgerError
from batch.files import atomic_path, write_atomic
from batch.ledger.schema import migrate_frame, migrate_row, migrate_schema

WRITE_ID = "lmbatch.write_id"  # parquet key-value metadata: which write produced the file
SEQ = "lmbatch.seq"  # parquet key-value metadata: the last event number it folds in
VERSION = 2  # journal line format: 2 since the address column is `address` (and lines number)
# Rows per row group of a checkpoint. Polars decodes a parquet a row group at a time (several
# in flight), so this bounds what reading and rewriting a checkpoint holds: sinking a 900k-row
# ledger peaks at ~400 MB over the process with 90k-row groups, ~130 MB with 16k (the file is
# 2.5 % larger), and a key-range query reads only the groups its keys fall in.
ROW_GROUP_ROWS = 16_384
_RECOVER = (
    "rebuild it: `python -m batch.ledger.recover {}` (never delete it: rows it holds as sent "
    "would be sent again)"
)


class Checkpoint(NamedTuple):
    """A checkpoint file, opened lazily."""

    frame: pl.LazyFrame  # migrated to the current column names
    schema: dict[str, pl.DataType]
    write_id: str
    seq: int | None  # None: written before events were numbered


def scan(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, lazily; None when there is none yet."""
    try:
        written = dict(pl.read_parquet_schema(path))
        frame = pl.scan_parquet(path, glob=False)
        found = Checkpoint(migrate_frame(frame, written), migrate_schema(written), "", None)
        return found._replace(write_id=write_id(path), seq=parquet_seq(path))
    except FileNotFoundError:
        return None
    except (OSError, pl.exceptions.PolarsError) as err:
        raise unreadable(path, err) from err


def unreadable(path: Path, err: Exception) -> LedgerError:
    """The error for a checkpoint that cannot be read, with its way back."""
    return LedgerError(f"{path}: cannot read the ledger: {err}", hint=_RECOVER.format(path.parent))


def parquet_seq(path: Path) -> int | None:
    """The last event number the checkpoint at `path` folds in (None: absent, or unnumbered)."""
    try:
        value = pl.read_parquet_metadata(path).get(SEQ)
    except FileNotFoundError:
        return None
    except (OSError, pl.exceptions.PolarsError) as err:
        raise unreadable(path, err) from err
    return int(value) if value and value.isdigit() else None


def collect(frame: pl.LazyFrame, path: Path) -> pl.DataFrame:
    """`frame` (a query over the checkpoint at `path`) computed; a LedgerError naming it."""
    try:
        return frame.collect()
    except (OSError, pl.exceptions.PolarsError) as err:
        raise unreadable(path, err) from err


def write_id(path: Path) -> str:
    """Which write produced `path`: "" if absent; for a file not written by us, its identity.

    A file another tool wrote has no write id; its inode, size and modification time stand
    in, so that a replacement is noticed and an unchanged file is not read again.
    """
    try:
        found = pl.read_parquet_metadata(path).get(WRITE_ID)
        if found:
            return found
        stat = path.stat()
        return f"foreign-{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"
    except FileNotFoundError:
        return ""
    except (OSError, pl.exceptions.PolarsError) as err:
        raise unreadable(path, err) from err


def sink(frame: pl.LazyFrame, path: Path, *, seq: int) -> str:
    """Replace `path` by `frame`, streamed, atomically and durably; returns the new write id.

    `seq` is the last event number the new checkpoint folds in.
    """
    new_id = uuid.uuid4().hex
    try:
        with atomic_path(path, temp=path.with_name(path.name + ".tmp")) as tmp:
            frame.sink_parquet(
                tmp, metadata={WRITE_ID: new_id, SEQ: str(seq)}, row_group_size=ROW_GROUP_ROWS
            )
    except (OSError, pl.exceptions.PolarsError) as err:
        raise LedgerError(f"{path}: cannot write the ledger: {err}") from err
    return new_id


def read_events(path: Path) -> list[dict[str, Any]]:
    """The journal's complete events, current form; the unterminated tail is dropped."""
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
        if event.get("v", 1) < VERSION:
            event["rows"] = {k: migrate_row(f) for k, f in event["rows"].items()}
        events.append(event)
    return events


def keep_previous(parquet: Path, journal_fd: int, journal: Path, kept: tuple[Path, Path]) -> None:
    """Before a checkpoint replaces `parquet`: keep it (a hard link) and the journal it folds."""
    old_parquet, old_journal = kept
    try:
        data = os.pread(journal_fd, os.fstat(journal_fd).st_size, 0)
        write_atomic(old_journal, data[: data.rfind(b"\n") + 1])
        if parquet.exists():
            link = parquet.with_name(parquet.name + ".link")
            link.unlink(missing_ok=True)
            os.link(parquet, link)
            os.replace(link, old_parquet)
    except (OSError, BatchError) as err:
        raise LedgerError(f"{journal.parent}: cannot keep the previous checkpoint: {err}") from err


def last_seq(fd: int) -> int | None:
    """The event number of the journal's last complete line (None: empty, or unnumbered)."""
    end = os.fstat(fd).st_size
    data = b""
    while end > 0:
        start = max(0, end - 65536)
        data = os.pread(fd, end - start, start) + data
        lines = data[: data.rfind(b"\n") + 1].splitlines()
        if len(lines) >= 2 or (lines and start == 0):
            try:
                seq = json.loads(lines[-1]).get("seq")
            except ValueError:
                return None
            return seq if isinstance(seq, int) else None
        end = start
    return None


def event_line(
    kind: str, at: datetime, rows: dict[str, dict[str, Any]], *, seq: int, **payload: Any
) -> bytes:
    """One journal line, newline-terminated: event number `seq`."""
    event = {"v": VERSION, "seq": seq, "type": kind, "at": encode(at), **payload}
    event["rows"] = {k: {c: encode(v) for c, v in f.items()} for k, f in rows.items()}
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


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
