"""Instants in UTC: the one place that decides what a naive datetime means.

The ledger and tracking read timestamps written by earlier versions and by the API, some of
them naive; those are UTC by convention. Schedules are computed from a `now` a caller passes,
where a naive value is a bug (whose wall clock?), so they ask for it to be refused.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "utcnow"]


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime, *, naive: str = "utc", name: str = "value") -> datetime:
    """`value` in UTC.

    naive="utc" takes a naive datetime to be UTC already; naive="refuse" raises ValueError
    naming `name`.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        if naive == "refuse":
            raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
