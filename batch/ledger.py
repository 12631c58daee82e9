"""The ledger: one row per recipient, durable as the run goes.

Contract (implemented below): an append-only journal `journal.jsonl` fsync'd per event,
checkpointed atomically into `ledger.parquet`; opening replays the journal tail.
"""

from __future__ import annotations

import polars as pl

# Statuses: pending, in_doubt, sent, failed, skipped; tracking adds delivered, read, bounced
# and any other value the API returns (kept as data).
PENDING, IN_DOUBT, SENT, FAILED, SKIPPED = "pending", "in_doubt", "sent", "failed", "skipped"

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
    "queued_at": pl.Datetime("us", "UTC"),
    "sent_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
}
