"""The ledger: one row per recipient, durable as the run goes.

Files in the campaign folder:

    ledger.parquet   the checkpointed state, one row per key, sorted by key (plain Parquet)
    journal.jsonl    events since that checkpoint, one JSON object per line, fsync'd per event
    ledger.lock      every append and every checkpoint holds an exclusive flock on it, so
                     `lmbatch run` and `lmbatch track` can write the same campaign at once

A journal line is `{"v": 1, "type": "intent", "at": T, "rows": {key: {column: value}}, ...}`
plus the event's own payload (`request_id`, `reason`) for people reading it; datetimes are
written as `{"$dt": "<ISO 8601 UTC>"}`. Only newline-terminated lines count: an unterminated
tail is a write that crashed before it was acknowledged and is dropped (and cut off before
the next append); an unparseable terminated line is a LedgerError naming file and line.

Replay is idempotent because events have "set" semantics: every line holds the absolute
values it assigns (the intent carries `attempts: 3`, never "+1"), and conditional
transitions (requeue only failed rows, …) are resolved when the event is recorded. Replaying
lines that a checkpoint already folded (a crash between the parquet rename and the journal
truncation) assigns the same values again, so no high-water mark is needed.

A send intent sets status `in_doubt` at once, in memory as on disk: if no outcome follows,
the row reopens as in_doubt and the runner reconciles it against the API before any resend.

Several Ledger objects (processes) may write one campaign; each sees the others' events at
its own checkpoints (call checkpoint() to refresh the view). An automatic checkpoint runs
after the event that triggers it is durable, so a LedgerError from it never means the event
was lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import polars as pl

from batch import journal
from batch.errors import LedgerError
from batch.files import fsync_dir

# Statuses: pending, in_doubt, sent, failed, skipped; tracking adds delivered, read, bounced
# and any other value the API returns (kept as data).
PENDING, IN_DOUBT, SENT, FAILED, SKIPPED = "pending", "in_doubt", "sent", "failed", "skipped"

_UTC_US = pl.Datetime("us", "UTC")

SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "email": pl.String(),  # the address: e-mail, E.164 phone, or first signer's e-mail
    "name": pl.String(),
    "status": pl.String(),
    "tracking_id": pl.String(),
    "parent_tracking_id": pl.String(),
    "error_details": pl.String(),
    "attempts": pl.Int32(),
    "content_hash": pl.String(),
    "request_id": pl.String(),  # our own id of the last send attempt (write-ahead intent)
    "queued_at": _UTC_US,
    "sent_at": _UTC_US,
    "updated_at": _UTC_US,
    # Tracking (filled by `lmbatch track`); the JSON ones hold serialised dicts/lists.
    "delivered_at": _UTC_US,
    "read_at": _UTC_US,
    "final": pl.Boolean(),
    "error_status": pl.String(),
    "certificates": pl.String(),
    "certificate_paths": pl.String(),
    "channel_data": pl.String(),
}
JSON_COLUMNS = frozenset({"certificates", "certificate_paths", "channel_data"})

PARQUET_NAME, JOURNAL_NAME, LOCK_NAME = "ledger.parquet", "journal.jsonl", "ledger.lock"

# Rows the API has not (or surely not) processed; anything else may have been sent.
_UNSENT = frozenset({PENDING, FAILED, SKIPPED})

Row = dict[str, Any]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Entry(NamedTuple):
    """One recipient of a send: what identifies it and what content it gets."""

    key: str
    email: str | None
    name: str | None
    content_hash: str | None


class Outcome(NamedTuple):
    """What the API answered for one recipient of a send."""

    key: str
    status: str
    tracking_id: str | None = None
    error_details: str | None = None


class Ledger:
    """The campaign's ledger: a polars frame plus the journal events since its checkpoint."""

    def __init__(
        self,
        folder: Path,
        *,
        checkpoint_every: int,
        checkpoint_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._parquet = folder / PARQUET_NAME
        self._journal = folder / JOURNAL_NAME
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock
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
        with self._locked():
            base, self._write_id = _read_parquet(self._parquet)
            self._state = _State(base)
            self._state.replay(journal.read_events(self._journal))
        self._frame: pl.DataFrame | None = None
        # Rows queued since the last checkpoint: pending rows need no durability (a key the
        # ledger lacks is pending by definition, and an intent creates its row), so queue()
        # leaves them for the next checkpoint instead of rewriting the parquet before the
        # first send.
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
    ) -> Ledger:
        """Open (creating if needed) the ledger in `folder` and replay its journal."""
        return cls(
            folder,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            clock=clock,
        )

    @property
    def path(self) -> Path:
        """The checkpoint file, `<folder>/ledger.parquet`."""
        return self._parquet

    # -- reading -------------------------------------------------------------------------

    def frame(self) -> pl.DataFrame:
        """The current state: SCHEMA columns then extras, one row per key, sorted by key."""
        if self._frame is None:
            folded = self._state.fold()
            if self._queued is not None:
                fresh = self._queued.filter(~pl.col("key").is_in(folded["key"].implode()))
                folded = _merge(folded, fresh)
            self._frame = folded
        return self._frame

    def get(self, key: str) -> dict[str, Any] | None:
        """The current row of `key` as a dict, or None when the ledger does not hold it."""
        found = self._state.row(key)
        if found is None and self._queued is not None:  # queued only: read it as frame() has it
            queued = self.frame().filter(pl.col("key") == key)
            if queued.height:
                return queued.row(0, named=True)
        return found

    def keys_with_status(self, *statuses: str) -> pl.DataFrame:
        """The rows whose status is one of `statuses`."""
        return self.frame().filter(pl.col("status").is_in(list(statuses)))

    def plan(self, candidates: pl.DataFrame) -> pl.DataFrame:
        """The candidates still to send: key absent from the ledger or its status pending."""
        return unsettled(self.frame(), candidates)

    def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        counted = self.frame().group_by("status").len()
        return dict(zip(counted["status"].to_list(), counted["len"].to_list(), strict=True))

    # -- recording -----------------------------------------------------------------------

    def queue(self, rows: pl.DataFrame) -> None:
        """Add `rows` (key, email, name, content_hash) as pending; written at the next checkpoint.

        Keys the ledger already holds are left as they are.
        """
        if "key" not in rows.columns:
            raise LedgerError("queue(): the rows have no 'key' column")
        wanted = [c for c in ("key", "email", "name", "content_hash") if c in rows.columns]
        new = rows.select(pl.col(c).cast(pl.String) for c in wanted)
        if new["key"].null_count():
            raise LedgerError("queue(): a row has no key")
        if new["key"].is_duplicated().any():
            dupes = new.filter(pl.col("key").is_duplicated())["key"].unique().sort().head(5)
            raise LedgerError(f"queue(): duplicate keys: {', '.join(dupes.to_list())}")
        now = self._now()
        new = new.with_columns(
            status=pl.lit(PENDING),
            attempts=pl.lit(0, pl.Int32),
            queued_at=pl.lit(now, _UTC_US),
            updated_at=pl.lit(now, _UTC_US),
        )
        new = new.filter(~pl.col("key").is_in(self.frame()["key"].implode()))
        if new.height:
            self._queued = new if self._queued is None else pl.concat([self._queued, new])
            self._frame = None

    def intent(self, request_id: str, entries: Sequence[Entry]) -> None:
        """Record, durably, that `entries` are about to be sent under `request_id`."""
        now = self._now()
        rows: dict[str, Row] = {}
        for entry in entries:
            current = self._current(entry.key, rows)
            status = current["status"] if current else None
            if status not in (None, PENDING):
                raise LedgerError(
                    f"key {entry.key}: status is {status}; refusing a new send intent",
                    hint="in_doubt rows must be reconciled (not_sent) before a resend",
                )
            fields: Row = {
                "email": entry.email,
                "name": entry.name,
                "content_hash": entry.content_hash,
                "status": IN_DOUBT,
                "attempts": (current["attempts"] or 0) + 1 if current else 1,
                "request_id": request_id,
                "error_details": None,
                "updated_at": now,
            }
            if current is None:
                fields["queued_at"] = now
            rows[entry.key] = fields
        self._record("intent", rows, request_id=request_id)

    def sent(
        self,
        request_id: str,
        *,
        parent_tracking_id: str | None,
        outcomes: Sequence[Outcome],
        sent_at: datetime | None,
    ) -> None:
        """Record what the API answered for the send `request_id`."""
        now = self._now()
        when = _utc(sent_at) if sent_at is not None else now
        rows: dict[str, Row] = {}
        for outcome in outcomes:
            self._expect_in_doubt(outcome.key, request_id, rows)
            if outcome.status == PENDING:
                # That would make a processed send look unsent: plan() resends pending rows.
                # (in_doubt is a valid outcome: the answer did not name the recipient.)
                raise LedgerError(
                    f"key {outcome.key}: outcome status {outcome.status} is not an outcome",
                    hint="use not_sent() for a send that surely did not happen",
                )
            fields: Row = {
                "status": outcome.status,
                "tracking_id": outcome.tracking_id,
                "parent_tracking_id": parent_tracking_id,
                "error_details": outcome.error_details,
                "updated_at": now,
            }
            if outcome.status not in (FAILED, IN_DOUBT):
                fields["sent_at"] = when
            rows[outcome.key] = fields
        self._record("sent", rows, request_id=request_id)

    def not_sent(self, request_id: str, keys: Sequence[str], reason: str) -> None:
        """Record that the send `request_id` surely did not happen: back to pending."""
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            self._expect_in_doubt(key, request_id, rows)
            rows[key] = {"status": PENDING, "error_details": reason, "updated_at": now}
        self._record("not_sent", rows, request_id=request_id, reason=reason)

    def fail(self, keys: Sequence[str], reason: str) -> None:
        """Record a permanent failure (the API refused the request) for `keys`."""
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            current = self._current(key, rows)
            status = current["status"] if current else None
            if status not in (None, IN_DOUBT, *_UNSENT):
                # Marking a sent row failed would let --retry-failed send it twice.
                raise LedgerError(f"key {key}: status is {status}; refusing to mark it failed")
            rows[key] = {"status": FAILED, "error_details": reason, "updated_at": now}
            if current is None:
                rows[key] |= {"queued_at": now, "attempts": 0}
        self._record("fail", rows, reason=reason)

    def skip(self, entries: Sequence[Entry], reason: str) -> None:
        """Record invalid rows as skipped; rows that may have been sent stay as they are."""
        now = self._now()
        rows: dict[str, Row] = {}
        for entry in entries:
            current = self._current(entry.key, rows)
            if current is not None and current["status"] not in _UNSENT:
                continue
            known = {"email": entry.email, "name": entry.name, "content_hash": entry.content_hash}
            # An invalid row may lack them: blanks must not erase what the ledger holds.
            rows[entry.key] = {c: v for c, v in known.items() if v} | {
                "status": SKIPPED,
                "error_details": reason,
                "updated_at": now,
            }
            if current is None:
                rows[entry.key] |= {"queued_at": now, "attempts": 0}
        self._record("skip", rows, reason=reason)

    def update(self, key: str, **fields: Any) -> None:
        """Set tracking fields of `key` (known columns or new ones); dicts/lists become JSON."""
        if self.get(key) is None:
            raise LedgerError(f"update(): key {key} is not in the ledger")
        if "key" in fields:
            raise LedgerError("update(): the key of a row cannot change")
        if fields.get("status") in (PENDING, IN_DOUBT):
            # Those transitions decide whether a row is (re)sent: only the runner's events
            # (not_sent, requeue, intent) may make them.
            raise LedgerError(f"update(): status {fields['status']} is set by the runner only")
        values = {column: self._checked(column, value) for column, value in fields.items()}
        values.setdefault("updated_at", self._now())
        self._record("update", {key: values})

    def requeue(self, keys: Sequence[str]) -> None:
        """Put failed or skipped `keys` back to pending; other keys stay as they are."""
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            current = self._current(key, rows)
            if current is not None and current["status"] in (FAILED, SKIPPED):
                rows[key] = {"status": PENDING, "updated_at": now}
        self._record("requeue", rows)

    # -- durability ----------------------------------------------------------------------

    @property
    def unsaved(self) -> bool:
        """Whether events or queued rows wait for a checkpoint."""
        return self._since > 0 or self._queued is not None

    def checkpoint(self) -> None:
        """Fold the parquet, the journal and queued rows into a new parquet; empty the journal."""
        started = time.monotonic()
        self._checkpoint(self._queued)
        self.checkpoint_seconds_taken = time.monotonic() - started

    def close(self) -> None:
        """Checkpoint and release the files; the object is unusable afterwards."""
        if self._closed:
            return
        try:
            if not self._broken:
                self.checkpoint()
        finally:
            self._closed = True
            os.close(self._journal_fd)
            os.close(self._lock_fd)

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
        return _utc(self._clock())

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

    def _current(self, key: str, pending: dict[str, Row]) -> Row | None:
        """The row of `key` as this event has left it so far (rejects a key given twice)."""
        if key in pending:
            raise LedgerError(f"key {key} appears twice in one event")
        return self.get(key)

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
        value = _normalise(column, value)
        dtype = self._dtype(column) or _infer([value])
        try:
            pl.Series(column, [value], dtype=dtype, strict=True)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
            raise LedgerError(f"update(): {column}={value!r} does not fit {dtype}") from err
        return value

    def _dtype(self, column: str) -> pl.DataType | None:
        if column in self._state.base.schema:
            return self._state.base.schema[column]
        delta = self._state.delta.values()
        values = [row[column] for row in delta if row.get(column) is not None]
        return _infer(values) if values else None

    def _record(self, kind: str, rows: dict[str, Row], **payload: Any) -> None:
        """Append one event durably, then apply it; an empty event writes nothing."""
        if not rows:
            return
        event = {"v": 1, "type": kind, "at": journal.encode(self._now()), **payload}
        event["rows"] = {k: {c: journal.encode(v) for c, v in f.items()} for k, f in rows.items()}
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._locked():
            try:
                journal.cut_torn_tail(self._journal_fd)
                journal.write_all(self._journal_fd, line)
                os.fdatasync(self._journal_fd)
            except OSError as err:
                # After a failed fsync the page cache cannot be trusted (the line may or may
                # not be on disk): refuse to build on it. Reopening replays what is there; an
                # intent that did land reopens in_doubt, which is the safe side.
                self._broken = str(err)
                raise LedgerError(f"{self._journal}: cannot append: {err}") from err
        self._state.apply(rows)
        self._frame = None
        self._since += 1
        elapsed = (self._now() - self._last_checkpoint).total_seconds()
        if self._since >= self._every or elapsed >= self._seconds:
            self.checkpoint()

    def _checkpoint(self, new_rows: pl.DataFrame | None) -> None:
        """Fold disk state (+ `new_rows` where the key is absent) into a fresh parquet."""
        self._now()  # refuses a closed ledger
        # Built aside and adopted only at the end: a failure anywhere leaves the object as it
        # was (if the journal cannot be truncated after the rename, replay is idempotent).
        with self._locked():
            base, write_id = self._state.base, self._write_id
            if journal.write_id(self._parquet) != write_id:  # another process checkpointed
                base, write_id = _read_parquet(self._parquet)
            # Our own events are in the journal too, with everyone else's, in append order.
            state = _State(base)
            state.replay(journal.read_events(self._journal))
            folded = state.fold()
            grew = False
            if new_rows is not None:
                new_rows = new_rows.filter(~pl.col("key").is_in(folded["key"].implode()))
                folded, grew = _merge(folded, new_rows), new_rows.height > 0
            if state.delta or grew or not write_id:
                new_id = journal.write_parquet(folded, self._parquet)
                journal.truncate(self._journal_fd, self._journal)
                state, write_id = _State(folded), new_id
        self._state, self._write_id = state, write_id
        self._queued = None
        self._frame = None
        self._since = 0
        self._last_checkpoint = self._now()


def unsettled(ledger: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """The candidates still to send: key absent from `ledger` or its status pending."""
    if "key" not in candidates.columns:
        raise LedgerError("plan(): the candidates have no 'key' column")
    # Lazy, so only the key and status columns of the ledger are touched.
    settled = ledger.lazy().filter(pl.col("status") != PENDING).select(__key="key")
    return (
        candidates.lazy()
        .with_columns(__key=pl.col("key").cast(pl.String))
        .join(settled, on="__key", how="anti", maintain_order="left")
        .drop("__key")
        .collect()
    )


def read_ledger(folder: Path) -> pl.DataFrame:
    """The ledger's current state (parquet + journal) without taking write ownership."""
    if not folder.is_dir():
        raise LedgerError(f"{folder}: no ledger here", hint="check the campaign name")
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # a read-only copy has no lock to honour
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_SH)  # a checkpoint cannot swap files under us
        base, _ = _read_parquet(folder / PARQUET_NAME)
        events = journal.read_events(folder / JOURNAL_NAME)
    state = _State(base)
    state.replay(events)
    return state.fold()


# -- frames ------------------------------------------------------------------------------


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def _lookup(base: pl.DataFrame, key: str) -> Row | None:
    keys = base.get_column("key")
    index = keys.search_sorted(key)  # the base is kept sorted by key: a binary search
    if isinstance(index, int) and index < base.height and keys[index] == key:
        return base.row(index, named=True)
    return None


def _infer(values: Sequence[Any]) -> pl.DataType:
    """The dtype of a new extra column, from its first non-null value."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bool):
        return pl.Boolean()
    if isinstance(first, int):
        return pl.Int64()
    if isinstance(first, float):
        return pl.Float64()
    if isinstance(first, datetime):
        return _UTC_US
    return pl.String()


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with exactly `schema`'s columns in its order (missing ones null)."""
    return frame.select(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
        for c, t in schema.items()
    )


def _schema_of(*frames: pl.DataFrame) -> dict[str, pl.DataType]:
    """SCHEMA's columns first, then the extras in name order, whatever the history."""
    extras: dict[str, pl.DataType] = {}
    for frame in frames:
        for column, dtype in frame.schema.items():
            if column not in SCHEMA:
                extras.setdefault(column, dtype)
    return SCHEMA | dict(sorted(extras.items()))


def _merge(base: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """`base` plus rows of keys it does not hold, still sorted by key."""
    if not new.height:
        return base
    if not new["key"].is_sorted():
        new = new.sort("key")
    schema = _schema_of(base, new)
    merged = pl.concat([_conform(base, schema), _conform(new, schema)])
    if base.height and new["key"].min() <= base["key"].max():  # type: ignore[operator]
        merged = merged.sort("key")  # otherwise appending kept the order: no sort needed
    return merged.with_columns(pl.col("attempts").fill_null(0)).set_sorted("key")


class _State:
    """A checkpointed frame plus the whole rows that events since then have touched."""

    def __init__(self, base: pl.DataFrame) -> None:
        self.base = base
        self.delta: dict[str, Row] = {}
        self.touched: set[str] = set()  # columns those events set: only they need folding

    def row(self, key: str) -> Row | None:
        """The current row of `key`, a copy."""
        row = self.delta.get(key) or _lookup(self.base, key)
        if row is None:
            return None
        # A row holds only what was set or checkpointed; the frame has every column.
        return dict.fromkeys([*self.base.columns, *self.touched]) | row

    def apply(self, rows: dict[str, Row]) -> None:
        """Apply one event: each key's row takes the values the event sets."""
        for key, fields in rows.items():
            row = self.delta.get(key) or _lookup(self.base, key) or {"key": key, "attempts": 0}
            self.delta[key] = row | fields
            self.touched.update(fields)

    def replay(self, events: Iterable[dict[str, Any]]) -> None:
        """Apply journal events as read from disk."""
        for event in events:
            rows = event["rows"]
            self.apply({k: {c: journal.decode(v) for c, v in f.items()} for k, f in rows.items()})

    def fold(self) -> pl.DataFrame:
        """The base with the touched rows written in; the base itself if nothing changed."""
        if not self.delta:
            return self.base
        base, keys = self.base, sorted(self.delta)  # code-point order == UTF-8 byte order
        data: dict[str, pl.Series] = {}
        for column in ["key", "attempts", *sorted(self.touched - {"key", "attempts"})]:
            values = [self.delta[k].get(column) for k in keys]
            dtype = base.schema.get(column) or _infer(values)
            try:
                data[column] = pl.Series(column, values, dtype=dtype, strict=True)
            except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
                raise LedgerError(f"ledger column {column!r} holds mixed types: {err}") from err
        changed = pl.DataFrame(data)
        # Rows already in the base are patched in place (a scatter per touched column) rather
        # than re-sorting 900k strings: that is what keeps checkpoints cheap.
        at = base["key"].search_sorted(changed["key"])
        assert isinstance(at, pl.Series)
        found = at < base.height
        if base.height:
            found &= base["key"].gather(at.clip(0, base.height - 1)) == changed["key"]
        old, positions = changed.filter(found), at.filter(found)
        patched = base
        if old.height:
            patched = base.with_columns(
                (
                    base[c]
                    if c in base.columns
                    else pl.repeat(None, base.height, dtype=s.dtype, eager=True).alias(c)
                ).scatter(positions, s)
                for c, s in old.to_dict().items()
                if c != "key"
            )
        return _merge(_conform(patched, _schema_of(patched)), changed.filter(~found))


def _read_parquet(path: Path) -> tuple[pl.DataFrame, str]:
    """The checkpointed frame (sorted by key, SCHEMA conformed) and its write id."""
    frame, write_id = journal.read_parquet(path)
    if frame is None:
        return _empty(), ""
    frame = _conform(frame, _schema_of(frame))
    if not frame["key"].is_sorted():  # written by something else than us
        frame = frame.sort("key")
    return frame.set_sorted("key"), write_id


# -- values ------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _normalise(column: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    if column in JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value
