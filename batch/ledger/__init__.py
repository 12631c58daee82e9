"""The ledger: one row per recipient, durable as the run goes.

A package of three concerns: `schema` (statuses, file names, columns, JSON cells, the
migration of ledgers written before the `address` column), `files` (the journal lines and
the parquet checkpoint, written durably), `fold` (events folded into state, read lazily)
and `core` (the `Ledger` state machine and its durability). Import from here.
"""

from batch.ledger.core import Ledger
from batch.ledger.fold import read_ledger, unsettled
from batch.ledger.history import has_history
from batch.ledger.rules import read_resolutions, resolve, retry_bounced, withdraw
from batch.ledger.schema import (
    BOUNCED,
    CANCELLED,
    CHANNELS,
    FAILED,
    HOT_COLUMNS,
    IN_DOUBT,
    JOURNAL_NAME,
    JSON_COLUMNS,
    LEDGER_FILES,
    LOCK_NAME,
    PARQUET_NAME,
    PENDING,
    PREV_JOURNAL,
    PREV_PARQUET,
    SCHEMA,
    SENT,
    SKIPPED,
    UNSENT,
    WITHDRAWN,
    Entry,
    Outcome,
    Row,
    decode_json_cell,
    to_utc,
    utcnow,
)

__all__ = [
    "BOUNCED",
    "CANCELLED",
    "CHANNELS",
    "FAILED",
    "HOT_COLUMNS",
    "IN_DOUBT",
    "JOURNAL_NAME",
    "JSON_COLUMNS",
    "LEDGER_FILES",
    "LOCK_NAME",
    "PARQUET_NAME",
    "PENDING",
    "PREV_JOURNAL",
    "PREV_PARQUET",
    "SCHEMA",
    "SENT",
    "SKIPPED",
    "UNSENT",
    "WITHDRAWN",
    "Entry",
    "Ledger",
    "Outcome",
    "Row",
    "decode_json_cell",
    "has_history",
    "read_ledger",
    "read_resolutions",
    "resolve",
    "retry_bounced",
    "to_utc",
    "unsettled",
    "utcnow",
    "withdraw",
]
