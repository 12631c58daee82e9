"""The anchor a new intent carries: the campaign's newest recorded send."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from batch.anchors import anchor_in, anchor_of, newest_parent, request_id


def sends(*rows: tuple[str, str | None, datetime | None]) -> pl.LazyFrame:
    return pl.DataFrame(
        rows,
        schema={
            "key": pl.String(),
            "parent_tracking_id": pl.String(),
            "sent_at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    ).lazy()


def at(minute: int) -> datetime:
    return datetime(2026, 11, 30, 9, minute, tzinfo=UTC)


def test_the_newest_send_with_a_time_is_the_anchor() -> None:
    ledger = sends(
        ("a", "P1", at(1)),
        ("b", "P3", at(3)),
        ("c", "P9", None),  # settled by hand: no send time
        ("d", None, at(5)),  # no parent recorded
        ("e", "P2", at(2)),
    )
    assert anchor_of(newest_parent(ledger).collect()) == "P3"


def test_a_campaign_with_no_send_has_no_anchor() -> None:
    assert anchor_of(newest_parent(sends(("a", None, None))).collect()) is None
    assert request_id(None).count("~") == 0


def test_the_anchor_travels_in_the_request_id() -> None:
    assert anchor_in(request_id("P3")) == "P3"
    assert anchor_in(request_id(None)) is None
