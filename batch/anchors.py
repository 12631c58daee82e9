"""Anchors: where to start looking for a send whose answer was lost.

The API's listings hold the account's last 25 sends and its timestamps carry no zone, so a
lost send is looked for among the sends newer than an *anchor*: the newest send this
campaign knew of when the intent was written. The anchor travels inside the intent's
request id (`<uuid hex>~<anchor>`), so a later run knows it without any other record.
"""

from __future__ import annotations

import uuid

import polars as pl


def request_id(anchor: str | None) -> str:
    """A new id for one send attempt, carrying the anchor known when its intent is written."""
    return f"{uuid.uuid4().hex}~{anchor}" if anchor else uuid.uuid4().hex


def anchor_in(request_id: str) -> str | None:
    """The anchor a request id carries, if any."""
    return request_id.partition("~")[2] or None


def newest_parent(frame: pl.LazyFrame) -> pl.LazyFrame:
    """The campaign's newest recorded send: the id the API gave it (its parent tracking id).

    That is the e-mail group's tracking id, or the SMS or signature request's uuid, of the
    row with the latest `sent_at`; rows settled by hand without a send time do not count.
    A query over the ledger's `parent_tracking_id` and `sent_at` (`Ledger.query`), so that
    only the newest row is ever held; its one row (none: no send yet) goes to `anchor_of`.
    """
    return (
        frame.filter(pl.col("parent_tracking_id").is_not_null() & pl.col("sent_at").is_not_null())
        .top_k(1, by=["sent_at", "key"])
        .select("parent_tracking_id")
    )


def anchor_of(newest: pl.DataFrame) -> str | None:
    """The anchor `newest_parent`'s answer names, if any."""
    if newest.is_empty():
        return None
    value = newest["parent_tracking_id"][0]
    return str(value) if value else None
