"""The ledger: one row per recipient, durable as the run goes (state machine and durability).

Files in the campaign folder:

    ledger.parquet   the checkpointed state, one row per key, sorted by key (plain Parquet)
    journal.jsonl    events since that checkpoint, one JSON object per line, fsync'd per event
    ledger.lock      appends and checkpoints hold an exclusive flock: `run` and `track` can
                     write one campaign at once

A send intent sets status `in_doubt` at once, in memory as on disk: if no outcome follows,
the row reopens as in_doubt and the runner reconciles it against the API before any resend.
Conditional transitions (requeue only failed rows, …) are resolved when the event is
recorded, so the journal holds absolute values and replays idempotently.

Several Ledger objects (processes) may write one campaign; each sees the others' events at
its checkpoints, or when it reads parquet columns and finds another process replaced it. An
automatic checkpoint runs after its event is durable: a LedgerError from it loses no event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl

from batch.errors import LedgerError
from batch.files import fsync_dir
from batch.ledger import files, history
from batch.ledger.events import LedgerEvents
from batch.ledger.fold import SERVED, State, in_sorted, load_checked, prepared
from batch.ledger.schema import (
    CHANNELS,
    HOT_COLUMNS,
    IN_DOUBT,
    JOURNAL_NAME,
    LOCK_NAME,
    PARQUET_NAME,
    PENDING,
    PREV_JOURNAL,
    PREV_PARQUET,
    Row,
    infer,
    normalise,
    to_utc,
    utcnow,
)


class Ledger(LedgerEvents):
    """The campaign's ledger: a checkpoint read lazily plus the journal events since."""

    def __init__(
        self,
        folder: Path,
        *,
        checkpoint_every: int,
        checkpoint_seconds: float,
        clock: Callable[[], datetime],
        channel: str | None,
    ) -> None:
        if channel is not None and channel not in CHANNELS:
            raise LedgerError(f"{folder}: unknown channel {channel!r}")
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._parquet = folder / PARQUET_NAME
        self._journal = folder / JOURNAL_NAME
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock
        self._channel = channel
        existed = self._journal.exists()
        try:
            self._lock_fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._journal_fd = os.open(self._journal, flags, 0o644)
            if not existed:  # the journal's directory entry must survive a crash too
                fsync_dir(folder)
        except OSError as err:
            raise LedgerError(f"{folder}: cannot open the ledger: {err}") from err
        self._closed = False
        self._broken: str | None = None
        self._kept = (folder / PREV_PARQUET, folder / PREV_JOURNAL)
        try:
            self._marker = history.Marker(folder)
            with self._locked():
                self._state, seq = load_checked(folder, journal_existed=existed)
                self._marker.catch_up(seq)
        except LedgerError:
            os.close(self._journal_fd)
            os.close(self._lock_fd)
            if not existed:  # a refused ledger is left as found: its loss stays visible
                self._journal.unlink(missing_ok=True)
            raise
        # Rows queued since the last checkpoint: pending rows need no durability (a key the
        # ledger lacks is pending by definition, and an intent creates its row), so queue()
        # leaves them for the next checkpoint instead of rewriting the parquet before the
        # first send. Sorted by key.
        self._queued: pl.DataFrame | None = None
        self._since = 0
        self._last_checkpoint = clock()
        self.checkpoint_seconds_taken = 0.0  # how long the last checkpoint took (wall time)

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        checkpoint_every: int = 200,
        checkpoint_seconds: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        channel: str | None = None,
    ) -> Ledger:
        """Open (creating if needed) the ledger in `folder` and replay its journal.

        `channel` (email, sms, signature) is written in the rows' `channel` column; rows of
        a ledger written before that column get it at the next checkpoint. Readers that do
        not know the channel (tracking) leave it as it is.
        """
        return cls(
            folder,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            clock=clock,
            channel=channel,
        )

    @property
    def path(self) -> Path:
        """The checkpoint file, `<folder>/ledger.parquet`."""
        return self._parquet

    # -- reading -------------------------------------------------------------------------

    def frame(self, *columns: str) -> pl.DataFrame:
        """The current state, one row per key, sorted by key.

        With no `columns`, every column (SCHEMA's then extras); with some, `key` and those
        only, read from the parquet's columns alone (planning asks for two of twenty).
        """
        wanted = ["key", *(c for c in columns if c != "key")] if columns else None
        return self._query(wanted)

    def query(
        self, columns: list[str], then: Callable[[pl.LazyFrame], pl.LazyFrame]
    ) -> pl.DataFrame:
        """`columns` (key first) of every row, `then` applied to the lazy frame, computed.

        For readers that want a count or a few rows of a large ledger (batch.forecast): only
        the columns named are read, and `then` can filter or join before anything is held.
        """
        return self._query(["key", *(c for c in columns if c != "key")], then)

    def get(self, key: str) -> dict[str, Any] | None:
        """The current row of `key` as a dict, or None when the ledger does not hold it."""
        if self._state.hot(key) is None and self._queued_row(key) is None:
            return None
        found = self._query(None, lambda f: f.filter(pl.col("key") == key))
        return found.row(0, named=True) if found.height else None

    def keys_with_status(self, *statuses: str) -> pl.DataFrame:
        """The rows whose status is one of `statuses` (every column)."""
        hot = self._state.current(self._queued, None, ["key", "status"])
        keys = hot.filter(pl.col("status").is_in(list(statuses))).collect()["key"]
        if keys.is_empty():  # the usual case: nothing to read from the parquet
            return pl.DataFrame(
                schema=self._state.current(self._queued, self._channel).collect_schema()
            )
        return self._query(None, lambda f: f.filter(pl.col("key").is_in(keys.implode())))

    def plan(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """The candidates still to send: key absent from the ledger or its status pending."""
        if "key" not in candidates.columns:
            raise LedgerError("plan(): the candidates have no 'key' column")
        # Binary searches in the in-memory index: neither a copy of it nor a hash table.
        return candidates.filter(~self._state.settled(candidates["key"].cast(pl.String)))

    def status_of(self, keys: pl.Series) -> pl.Series:
        """Per key of `keys`: its status, null where the ledger does not hold it (a binary
        search in the in-memory index, like `plan`; rows only queued are pending)."""
        keys = keys.cast(pl.String)
        status = self._state.status_of(keys)
        if self._queued is not None:
            queued = in_sorted(self._queued["key"], keys)
            status = pl.select(
                pl.when(status.is_null() & queued).then(pl.lit(PENDING)).otherwise(status)
            ).to_series()
        return status.alias("status")

    def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        counted = self.frame("status").group_by("status").len()
        return dict(zip(counted["status"].to_list(), counted["len"].to_list(), strict=True))

    # -- recording -----------------------------------------------------------------------

    def queue(self, rows: pl.DataFrame) -> None:
        """Add `rows` (key, address, name, content_hash) as pending; written at the next checkpoint.

        Keys the ledger already holds are left as they are. (`email`, the address column's
        name before `address`, is read as `address`.)
        """
        new = prepared(rows, self._channel, self._now())
        # Against the keys held in memory (index, events, queue): no copy of them is made.
        held = self._state.holds(new["key"])
        if self._queued is not None:
            held |= in_sorted(self._queued["key"], new["key"])
        new = new.filter(~held).sort("key")
        if new.height:
            queued = (
                new
                if self._queued is None
                else pl.concat([self._queued, new], how="diagonal_relaxed")
            )
            self._queued = queued.sort("key")

    # -- durability ----------------------------------------------------------------------

    @property
    def unsaved(self) -> bool:
        """Whether events or queued rows wait for a checkpoint."""
        return self._since > 0 or self._queued is not None

    def checkpoint(self) -> None:
        """Fold the parquet, the journal and queued rows into a new parquet; empty the journal."""
        started = time.monotonic()
        self._checkpoint(closing=False)
        self.checkpoint_seconds_taken = time.monotonic() - started

    def close(self) -> None:
        """Checkpoint and release the files; the object is unusable afterwards."""
        if self._closed:
            return
        try:
            if not self._broken:
                self._checkpoint(closing=True)
        finally:
            self._closed = True
            os.close(self._journal_fd)
            os.close(self._lock_fd)
            self._marker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _now(self) -> datetime:
        if self._closed:
            raise LedgerError(f"{self._folder}: the ledger is closed")
        if self._broken:
            raise LedgerError(
                f"{self._journal}: a journal write failed ({self._broken})",
                hint="reopen the ledger: what reached the disk will be replayed",
            )
        return to_utc(self._clock())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as err:
            raise LedgerError(f"{self._folder / LOCK_NAME}: cannot lock: {err}") from err
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _query(
        self,
        columns: list[str] | None,
        then: Callable[[pl.LazyFrame], pl.LazyFrame] = lambda frame: frame,
    ) -> pl.DataFrame:
        """The current rows (`columns` only, if given), `then` applied, computed.

        Hot columns come from memory. Anything else reads the parquet, under the lock so no
        checkpoint swaps it meanwhile; if another process checkpointed since ours, the state
        is reloaded first (the parquet is no longer the one our index describes).
        """
        if (columns is not None and set(columns) <= SERVED) or self._state.base is None:
            return files.collect(
                then(self._state.current(self._queued, self._channel, columns)), self._parquet
            )
        with self._locked():
            if files.write_id(self._parquet) != self._state.write_id:
                self._state = State.load(self._parquet)
                self._state.replay(files.read_events(self._journal))
            frame = self._state.current(self._queued, self._channel, columns)
            return files.collect(then(frame), self._parquet)

    def _queued_row(self, key: str) -> Row | None:
        if self._queued is None:
            return None
        keys = self._queued.get_column("key")
        at = keys.search_sorted(key)
        if isinstance(at, int) and at < keys.len() and keys[at] == key:
            return self._queued.row(at, named=True)
        return None

    def _current(self, key: str, pending: dict[str, Row]) -> Row | None:
        """`key`'s hot columns as this event has left them so far (rejects a key given twice)."""
        if key in pending:
            raise LedgerError(f"key {key} appears twice in one event")
        found = self._state.hot(key)
        if found is None or found["status"] is None:
            queued = self._queued_row(key)
            if queued is not None:
                found = {c: queued.get(c) for c in HOT_COLUMNS} | (found or {})
                if found["status"] is None:
                    found["status"] = queued["status"]
        return found

    def _expect_in_doubt(self, key: str, request_id: str, pending: dict[str, Row]) -> None:
        current = self._current(key, pending)
        if current is None:
            raise LedgerError(f"key {key} is not in the ledger")
        if current["status"] != IN_DOUBT or current["request_id"] != request_id:
            raise LedgerError(
                f"key {key}: no send {request_id} in doubt "
                f"(status {current['status']}, last request {current['request_id']})"
            )

    def _checked(self, column: str, value: Any) -> Any:
        """`value` normalised for `column`, refused here if it would not fit its dtype."""
        value = normalise(column, value)
        dtype = self._state.dtype(column) or infer([value])
        try:
            pl.Series(column, [value], dtype=dtype, strict=True)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
            raise LedgerError(f"update(): {column}={value!r} does not fit {dtype}") from err
        return value

    def _record(self, kind: str, rows: dict[str, Row], **payload: Any) -> None:
        """Append one event durably, then apply it; an empty event writes nothing."""
        if not rows:
            return
        for key, fields in rows.items():
            # A row only queued is not durable yet: the event carries what the queue held,
            # so that memory and a replay after a crash agree on it.
            queued = self._queued_row(key) if self._state.hot(key) is None else None
            if queued is not None:
                rows[key] = {
                    c: v for c, v in queued.items() if v is not None and c != "key"
                } | fields
        now = self._now()
        with self._locked():
            try:
                files.cut_torn_tail(self._journal_fd)
                # The campaign's event number: after the last line, or the checkpoint's.
                seq = files.last_seq(self._journal_fd) or files.parquet_seq(self._parquet) or 0
                line = files.event_line(kind, now, rows, seq=seq + 1, **payload)
                files.write_all(self._journal_fd, line)
                os.fdatasync(self._journal_fd)
                self._marker.write(seq + 1)
            except OSError as err:
                # After a failed fsync the page cache cannot be trusted (the line may or may
                # not be on disk): refuse to build on it. Reopening replays what is there; an
                # intent that did land reopens in_doubt, which is the safe side.
                self._broken = str(err)
                raise LedgerError(f"{self._journal}: cannot append: {err}") from err
        self._state.apply(rows)
        self._since += 1
        elapsed = (self._now() - self._last_checkpoint).total_seconds()
        if self._since >= self._every or elapsed >= self._seconds:
            self.checkpoint()

    def _checkpoint(self, *, closing: bool) -> None:
        """Stream disk state (+ queued rows where the key is absent) into a fresh parquet."""
        self._now()  # refuses a closed ledger
        # Built aside and adopted only at the end: a failure anywhere leaves the object as it
        # was (if the journal cannot be truncated after the rename, replay is idempotent).
        with self._locked():
            state = self._state
            if files.write_id(self._parquet) != state.write_id:  # another process checkpointed
                state = State.load(self._parquet)
            else:
                state = state.same_base()
            # Our own events are in the journal too, with everyone else's, in append order.
            events = files.read_events(self._journal)
            state.replay(events)
            fresh = self._queued is not None and self._queued.height > 0
            if state.delta or fresh or not state.write_id or not state.migrated:
                files.keep_previous(self._parquet, self._journal_fd, self._journal, self._kept)
                seq = history.last_seq(state.seq, events)
                files.sink(state.current(self._queued, self._channel), self._parquet, seq=seq)
                files.truncate(self._journal_fd, self._journal)
                # Closing needs no index of what it just wrote; a running ledger reads it back.
                state = State(self._parquet, None) if closing else State.load(self._parquet)
        self._state = state
        self._queued = None
        self._since = 0
        self._last_checkpoint = self._now()
