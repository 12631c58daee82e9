"""The fold of events into state: a checkpoint on disk plus the patches events made since.

The checkpoint is never held whole. What stays in memory is its *index* (the HOT_COLUMNS:
key, status, attempts, request_id, sorted by key: what planning and the state machine read)
and, per key an event touched, only the fields events set. Every view of the ledger is a
lazy query built here: the checkpoint (or, when only hot columns are asked for, the index)
merged with the rows that are new since, then patched by a left join with the touched
fields. Planning reads two columns of that; a checkpoint streams all of it into the next
parquet; nothing ever holds two copies of a 900k-row ledger.

Replay is idempotent because events have "set" semantics: a patch holds absolute values, so
replaying lines a checkpoint already folded assigns the same values again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from batch.errors import LedgerError
from batch.ledger import files, history
from batch.ledger.schema import (
    HOT_COLUMNS,
    IN_DOUBT,
    JOURNAL_NAME,
    LEGACY_ADDRESS,
    LOCK_NAME,
    PARQUET_NAME,
    PENDING,
    SCHEMA,
    UTC_US,
    Row,
    conform,
    infer,
    schema_of,
)

_HOT_SCHEMA = {c: SCHEMA[c] for c in HOT_COLUMNS}
# The index holds request_id only where a transition reads it (in_doubt rows): a sent row's
# request id is 60 bytes a row that planning never looks at. So it serves only these.
SERVED = frozenset({"key", "status", "attempts"})


def in_sorted(sorted_keys: pl.Series, keys: pl.Series) -> pl.Series:
    """Per key of `keys`, whether `sorted_keys` (sorted) holds it: a binary search, no hash."""
    if sorted_keys.is_empty():
        return pl.repeat(False, keys.len(), eager=True, dtype=pl.Boolean())
    at = sorted_keys.search_sorted(keys)
    assert isinstance(at, pl.Series)
    found = sorted_keys.gather(at.clip(0, sorted_keys.len() - 1)) == keys
    return ((at < sorted_keys.len()) & found).fill_null(False)


class State:
    """A checkpoint (read lazily, its hot columns indexed) plus the fields events set since."""

    def __init__(
        self,
        path: Path,
        scanned: files.Checkpoint | None,
        index: pl.DataFrame | None = None,
    ) -> None:
        self.path = path
        self.delta: dict[str, Row] = {}
        self.touched: set[str] = set()  # columns those events set: only they need patching
        if scanned is None:
            self.base: pl.LazyFrame | None = None
            self.base_schema: dict[str, pl.DataType] = dict(SCHEMA)
            self.write_id = ""
            self.seq: int | None = 0
            self.index = pl.DataFrame(schema=_HOT_SCHEMA)
            self.base_sorted = True
            return
        self.base, self.base_schema, self.write_id, self.seq = scanned
        if index is None:
            hot = conform(self.base, self.base_schema, _HOT_SCHEMA).with_columns(
                request_id=pl.when(pl.col("status") == IN_DOUBT).then("request_id")
            )
            index = files.collect(hot, path)
        self.base_sorted = index["key"].is_sorted()
        if not self.base_sorted:  # written by something else than us
            index = index.sort("key")
        self.index = index.set_sorted("key")

    @classmethod
    def load(cls, path: Path) -> State:
        """The checkpoint at `path` (none yet: an empty state)."""
        return cls(path, files.scan(path))

    def same_base(self) -> State:
        """A state on the same checkpoint with no events applied."""
        fresh = State(self.path, None)
        fresh.base, fresh.base_schema, fresh.write_id = self.base, self.base_schema, self.write_id
        fresh.seq = self.seq
        fresh.index, fresh.base_sorted = self.index, self.base_sorted
        return fresh

    @property
    def migrated(self) -> bool:
        """Whether the checkpoint is already in the form a checkpoint would write."""
        return self.base_sorted and set(SCHEMA) <= set(self.base_schema)

    # -- events --------------------------------------------------------------------------

    def apply(self, rows: dict[str, Row]) -> None:
        """Apply one event: each key takes the values the event sets."""
        for key, fields in rows.items():
            self.delta[key] = self.delta.get(key, {}) | fields
            self.touched.update(fields)

    def replay(self, events: Iterable[dict[str, Any]]) -> None:
        """Apply journal events as read from disk."""
        for event in events:
            rows = event["rows"]
            self.apply({k: {c: files.decode(v) for c, v in f.items()} for k, f in rows.items()})

    # -- reading -------------------------------------------------------------------------

    def indexed(self, key: str) -> Row | None:
        """The hot columns of `key` in the checkpoint, or None."""
        keys = self.index.get_column("key")
        at = keys.search_sorted(key)
        if isinstance(at, int) and at < self.index.height and keys[at] == key:
            return self.index.row(at, named=True)
        return None

    def settled(self, keys: pl.Series) -> pl.Series:
        """Per key: whether the ledger holds it with a status other than pending."""
        index = self.index
        found = in_sorted(index["key"], keys)
        if index.height:
            at = index["key"].search_sorted(keys)
            assert isinstance(at, pl.Series)
            status = index["status"].gather(at.clip(0, index.height - 1))
            settled = (found & (status != PENDING)).fill_null(False)
        else:
            settled = found
        changed = {k: f["status"] for k, f in self.delta.items() if "status" in f}
        if not changed:
            return settled
        events = pl.DataFrame(
            {"key": list(changed), "__status": list(changed.values())},
            schema={"key": pl.String(), "__status": pl.String()},
        )
        marked = pl.DataFrame({"key": keys, "__settled": settled})
        marked = marked.join(events, on="key", how="left", maintain_order="left")
        by_event = pl.col("__status") != PENDING
        return marked.select(
            pl.when(pl.col("__status").is_null()).then("__settled").otherwise(by_event)
        ).to_series()

    def status_of(self, keys: pl.Series) -> pl.Series:
        """Per key: its status as events left it, null where the ledger does not hold it."""
        index = self.index
        if index.height:
            at = index["key"].search_sorted(keys)
            assert isinstance(at, pl.Series)
            found = in_sorted(index["key"], keys)
            status = index["status"].gather(at.clip(0, index.height - 1))
            status = pl.select(pl.when(found).then(status)).to_series()
        else:
            status = pl.repeat(None, keys.len(), eager=True, dtype=pl.String())
        changed = {k: f["status"] for k, f in self.delta.items() if "status" in f}
        made = [k for k in self.delta if k not in changed and self.indexed(k) is None]
        changed |= dict.fromkeys(made, PENDING)  # rows only events made: pending until set
        if not changed:
            return status.alias("status")
        events = pl.DataFrame(
            {"key": list(changed), "__status": list(changed.values())},
            schema={"key": pl.String(), "__status": pl.String()},
        )
        marked = pl.DataFrame({"key": keys, "__old": status})
        marked = marked.join(events, on="key", how="left", maintain_order="left")
        return marked.select(pl.coalesce("__status", "__old").alias("status")).to_series()

    def holds(self, keys: pl.Series) -> pl.Series:
        """Per key: whether the checkpoint or an event since holds it."""
        held = in_sorted(self.index["key"], keys)
        if self.delta:
            held |= keys.is_in(pl.Series(list(self.delta), dtype=pl.String()).implode())
        return held

    def hot(self, key: str) -> Row | None:
        """`key`'s hot columns as events left them (None: neither checkpointed nor touched)."""
        patch = self.delta.get(key)
        found = self.indexed(key)
        if found is None and patch is None:
            return None
        return (found or {"key": key, "status": None, "attempts": 0, "request_id": None}) | (
            patch or {}
        )

    def dtype(self, column: str) -> pl.DataType | None:
        """The dtype `column` has (or would get from the values events set), None if unknown."""
        known = schema_of(self.base_schema)
        if column in known:
            return known[column]
        values = [row[column] for row in self.delta.values() if row.get(column) is not None]
        return infer(values) if values else None

    def current(
        self,
        queued: pl.DataFrame | None = None,
        channel: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """The ledger's rows as a lazy query: SCHEMA columns then extras, sorted by key.

        `queued` rows count where the key is otherwise unknown. `channel` fills rows whose
        channel is null (ledgers written before the column). With `columns` (key first)
        naming only hot columns, the in-memory index stands in for the parquet.
        """
        from_index = columns is not None and set(columns) <= SERVED
        have = _HOT_SCHEMA if from_index else self.base_schema
        patch_types = self._patch_types(queued)
        schema = schema_of(have, queued.schema if queued is not None else {}, patch_types)
        if from_index:
            schema = {c: t for c, t in schema.items() if c in HOT_COLUMNS}
        base = self.index.lazy() if from_index else self.base
        if base is not None and not from_index and not self.base_sorted:
            base = base.sort("key")
        fresh = self._fresh(queued)
        frame = conform(base, have, schema) if base is not None else None
        if fresh is not None:
            fresh_frame = conform(fresh.lazy(), dict(fresh.schema), schema)
            frame = fresh_frame if frame is None else frame.merge_sorted(fresh_frame, "key")
        if frame is None:
            frame = pl.DataFrame(schema=schema).lazy()
        if self.delta:
            frame = self._patched(frame, patch_types, schema)
        fills = [pl.col("attempts").fill_null(0)]
        if channel is not None and "channel" in schema:
            fills.append(pl.col("channel").fill_null(channel))
        frame = frame.with_columns(fills)
        return frame.select(columns) if columns is not None else frame

    def _patch_types(self, queued: pl.DataFrame | None) -> dict[str, pl.DataType]:
        known = schema_of(self.base_schema, queued.schema if queued is not None else {})
        types: dict[str, pl.DataType] = {}
        for column in sorted(self.touched - {"key"}):
            if column in known:
                types[column] = known[column]
            else:
                types[column] = infer([row.get(column) for row in self.delta.values()])
        return types

    def _fresh(self, queued: pl.DataFrame | None) -> pl.DataFrame | None:
        """Rows the checkpoint lacks: queued ones, and blank ones for keys only events made."""
        parts = []
        if queued is not None and queued.height:
            parts.append(queued.join(self.index.select("key"), on="key", how="anti"))
        made = [k for k in self.delta if self.indexed(k) is None]
        if made:
            blank = pl.DataFrame({"key": made, "status": [PENDING] * len(made)})
            if parts:
                blank = blank.join(parts[0].select("key"), on="key", how="anti")
            parts.append(blank.with_columns(attempts=pl.lit(0, pl.Int32)))
        if not parts:
            return None
        return pl.concat(parts, how="diagonal_relaxed").sort("key")

    def _patched(
        self, frame: pl.LazyFrame, types: dict[str, pl.DataType], schema: dict[str, pl.DataType]
    ) -> pl.LazyFrame:
        """`frame` with every field events set written in (a left join on the touched keys)."""
        keys = sorted(self.delta)  # code-point order == UTF-8 byte order
        data: dict[str, pl.Series] = {"key": pl.Series("key", keys, dtype=pl.String())}
        for column, dtype in types.items():
            rows = [self.delta[k] for k in keys]
            try:
                data[f"__v_{column}"] = pl.Series(
                    values=[row.get(column) for row in rows], dtype=dtype, strict=True
                )
            except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as err:
                raise LedgerError(f"ledger column {column!r} holds mixed types: {err}") from err
            data[f"__s_{column}"] = pl.Series(values=[column in row for row in rows])
        patch = pl.DataFrame(data).lazy()
        joined = frame.join(patch, on="key", how="left", maintain_order="left")
        return joined.select(
            pl.when(pl.col(f"__s_{c}")).then(pl.col(f"__v_{c}")).otherwise(pl.col(c)).alias(c)
            if c in types
            else pl.col(c)
            for c in schema
        )


def unsettled(ledger: pl.DataFrame | pl.LazyFrame, candidates: pl.DataFrame) -> pl.DataFrame:
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


def prepared(rows: pl.DataFrame, channel: str | None, now: datetime) -> pl.DataFrame:
    """Rows given to `Ledger.queue` as the ledger holds them: pending, stamped `now`."""
    if "key" not in rows.columns:
        raise LedgerError("queue(): the rows have no 'key' column")
    if LEGACY_ADDRESS in rows.columns and "address" not in rows.columns:
        rows = rows.rename({LEGACY_ADDRESS: "address"})
    wanted = [c for c in ("key", "address", "name", "content_hash") if c in rows.columns]
    new = rows.select(pl.col(c).cast(pl.String) for c in wanted)
    if new["key"].null_count():
        raise LedgerError("queue(): a row has no key")
    if new["key"].is_duplicated().any():
        dupes = new.filter(pl.col("key").is_duplicated())["key"].unique().sort().head(5)
        raise LedgerError(f"queue(): duplicate keys: {', '.join(dupes.to_list())}")
    new = new.with_columns(
        channel=pl.lit(channel, pl.String),
        status=pl.lit(PENDING),
        attempts=pl.lit(0, pl.Int32),
        queued_at=pl.lit(now, UTC_US),
        updated_at=pl.lit(now, UTC_US),
    )
    return new


def read_ledger(folder: Path) -> pl.DataFrame:
    """The ledger's current state (parquet + journal) without taking write ownership."""
    parquet, journal = folder / PARQUET_NAME, folder / JOURNAL_NAME
    if not folder.is_dir():
        if history.read_marker(folder) is None:
            raise LedgerError(f"{folder}: no ledger here", hint="check the campaign name")
        history.verify(  # a campaign with a history lost its folder: says so
            folder,
            parquet=parquet,
            journal=journal,
            base_seq=None,
            events=[],
            journal_existed=False,
        )
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # a read-only copy has no lock to honour
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_SH)  # a checkpoint cannot swap files under us
        state, _ = load_checked(folder, journal_existed=journal.exists())
        return files.collect(state.current(), parquet)


def load_checked(folder: Path, *, journal_existed: bool) -> tuple[State, int]:
    """The ledger in `folder` (checkpoint + journal), refused if it lost events; its last seq."""
    parquet, journal = folder / PARQUET_NAME, folder / JOURNAL_NAME
    state = State.load(parquet)
    events = files.read_events(journal)
    history.verify(
        folder,
        parquet=parquet,
        journal=journal,
        base_seq=state.seq,
        events=events,
        journal_existed=journal_existed,
    )
    state.replay(events)
    return state, history.last_seq(state.seq, events)
