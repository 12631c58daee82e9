"""What a ledger row is: statuses, file names, columns, JSON cells and value rules, defined once.

Every other module reads these names from here (through `batch.ledger`): a status literal or
a file name spelled out elsewhere is a second definition waiting to drift.

Ledgers written before the `address` column (lmbatch ≤ 0.x wrote the recipient's address
in a column named `email`, whatever the channel, and had no `channel` column) are read
through `migrate_frame` / `migrate_row`: `email` becomes `address` and `channel` is added,
null until a ledger opened for a known channel fills it. The next checkpoint writes the
migrated form; nothing is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import polars as pl

from batch.timeutil import as_utc
from batch.timeutil import utcnow as utcnow

to_utc = as_utc  # a naive datetime is taken to be UTC already

# Statuses: pending, in_doubt, sent, failed, skipped, withdrawn; tracking adds delivered,
# read, bounced and any other value the API returns (kept as data).
PENDING, IN_DOUBT, SENT, FAILED, SKIPPED = "pending", "in_doubt", "sent", "failed", "skipped"
# A pending row whose key left the dataset (deleted, or filtered out by `where`): never sent,
# no longer wanted, so the campaign can end. Its tracking_id is null; a signature the API
# reports as withdrawn in the panel (same word, tracking's) always has one.
WITHDRAWN = "withdrawn"
BOUNCED = "bounced"  # tracking's word for a message the recipient's server refused
CANCELLED = "cancelled"  # `lmbatch cancel` ended the campaign before this row was sent

# Rows the API has not (or surely not) processed; anything else may have been sent.
UNSENT = frozenset({PENDING, FAILED, SKIPPED, WITHDRAWN})

# The campaign folder's ledger files.
PARQUET_NAME, JOURNAL_NAME, LOCK_NAME = "ledger.parquet", "journal.jsonl", "ledger.lock"
LEDGER_FILES = (PARQUET_NAME, JOURNAL_NAME)  # a campaign has a ledger if either exists
# What each checkpoint keeps of its predecessor, to rebuild a lost checkpoint (recover.py).
PREV_PARQUET, PREV_JOURNAL = "ledger.prev.parquet", "journal.prev.jsonl"

CHANNELS = ("email", "sms", "signature")
LEGACY_ADDRESS = "email"  # the address column's name before it was `address`

UTC_US = pl.Datetime("us", "UTC")

SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "channel": pl.String(),  # email, sms or signature: what `address` holds
    "address": pl.String(),  # the address sent to: e-mail, E.164 phone, or first signer's e-mail
    "name": pl.String(),
    "status": pl.String(),
    "tracking_id": pl.String(),
    "parent_tracking_id": pl.String(),
    "error_details": pl.String(),
    "attempts": pl.Int32(),
    "content_hash": pl.String(),
    "request_id": pl.String(),  # our own id of the last send attempt (write-ahead intent)
    # What a look-up of that attempt needs, as sent (JSON, written with the intent; the format
    # is batch.reconcile's `probe_record`): never today's render.
    "probe": pl.String(),
    "queued_at": UTC_US,
    "sent_at": UTC_US,
    "updated_at": UTC_US,
    # Tracking (filled by `lmbatch track`); the JSON ones hold serialised dicts/lists.
    "delivered_at": UTC_US,
    "read_at": UTC_US,
    "final": pl.Boolean(),
    "error_status": pl.String(),
    "certificates": pl.String(),
    "certificate_paths": pl.String(),
    "channel_data": pl.String(),
    # Addresses this row bounced at, a JSON list: `--retry-failed` never sends to them again.
    "bounced_addresses": pl.String(),
}
JSON_COLUMNS = frozenset(
    {"certificates", "certificate_paths", "channel_data", "probe", "bounced_addresses"}
)

# The columns a send decision and the state machine need: the ledger keeps these in memory;
# everything else stays in the parquet until a whole frame is asked for.
HOT_COLUMNS = ("key", "status", "attempts", "request_id")

Row = dict[str, Any]


def decode_json_cell(value: Any) -> Any:
    """A JSON cell's value, leniently: None for an empty or unparseable cell.

    Cells written by lmbatch are JSON text; a hand-edited or foreign ledger may hold
    anything, and a report or a tracking pass must not die on one bad cell. Values that are
    not strings (already decoded) come back as they are. Callers check the shape they need.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def normalise(column: str, value: Any) -> Any:
    """`value` as the ledger stores it: datetimes in UTC, dicts and lists as JSON text."""
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    if column in JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value


def infer(values: Sequence[Any]) -> pl.DataType:
    """The dtype of a new extra column, from its first non-null value."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bool):
        return pl.Boolean()
    if isinstance(first, int):
        return pl.Int64()
    if isinstance(first, float):
        return pl.Float64()
    if isinstance(first, datetime):
        return UTC_US
    return pl.String()


def schema_of(*schemas: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """SCHEMA's columns first, then the extras in name order, whatever the history."""
    extras: dict[str, pl.DataType] = {}
    for schema in schemas:
        for column, dtype in schema.items():
            if column not in SCHEMA:
                extras.setdefault(column, dtype)
    return SCHEMA | dict(sorted(extras.items()))


def conform(
    frame: pl.LazyFrame, have: dict[str, pl.DataType], want: dict[str, pl.DataType]
) -> pl.LazyFrame:
    """`frame` (with columns `have`) with exactly `want`'s columns in its order, missing null."""
    return frame.select(
        (pl.col(c) if have[c] == t else pl.col(c).cast(t))
        if c in have
        else pl.lit(None, t).alias(c)
        for c, t in want.items()
    )


def migrate_schema(schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The schema a frame of `schema` has once migrated (see `migrate_frame`)."""
    if LEGACY_ADDRESS in schema and "address" not in schema:
        schema = {("address" if c == LEGACY_ADDRESS else c): t for c, t in schema.items()}
    return schema


def migrate_frame(frame: pl.LazyFrame, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """A frame written before the `address` column, renamed: `email` holds the address."""
    if LEGACY_ADDRESS in schema and "address" not in schema:
        return frame.rename({LEGACY_ADDRESS: "address"})
    return frame


def migrate_row(fields: Row) -> Row:
    """A journal row written before the `address` column, renamed the same way."""
    if LEGACY_ADDRESS in fields and "address" not in fields:
        fields = {("address" if c == LEGACY_ADDRESS else c): v for c, v in fields.items()}
    return fields


class Entry(NamedTuple):
    """One recipient of a send: what identifies it and what content it gets."""

    key: str
    address: str | None  # e-mail, E.164 phone, or the first signer's e-mail
    name: str | None
    content_hash: str | None


class Outcome(NamedTuple):
    """What the API answered for one recipient of a send."""

    key: str
    status: str
    tracking_id: str | None = None
    error_details: str | None = None
