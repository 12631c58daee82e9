"""Turning API answers into ledger values: times, statuses, certificates, JSON cells.

Shared by the channels' tracking passes (batch.channels) and the tracker (batch.tracker),
so every channel stores an answer the same way.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from batch.ledger import IN_DOUBT, PENDING, SENT, SKIPPED
from batch.timeutil import as_utc

utc = as_utc  # an aware UTC time; a naive one is taken as UTC

Row = dict[str, Any]
UNTRACKED = frozenset({PENDING, IN_DOUBT, SKIPPED})  # never sent (or not known to be)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def ledger_status(raw: str) -> tuple[str, Row]:
    """The status to store, and channel_data keeping the API's word when it had to change.

    API statuses named like the runner's own (pending, in_doubt, skipped) would make the
    runner send again, so they are stored as `sent`.
    """
    if raw in UNTRACKED:
        return SENT, {"api_status": raw}
    return raw, {}


def certificate(
    kind: str, url: Any, file_hash: Any, confirmed_at: Any, has_tsr: Any, has_tsq: Any
) -> Row:
    """One certificate's metadata, the same shape for every channel."""
    return {
        "type": kind,
        "file_hash": str(file_hash).lower() if file_hash else None,
        "confirmed_at": confirmed_at,
        "has_tsr": has_tsr,
        "has_tsq": has_tsq,
        "url": str(url) if url else None,
    }


def merged(row: Row, extra: Row) -> str:
    """The row's channel_data with `extra` laid over it, as stable JSON."""
    return dumps(json_object(row.get("channel_data")) | extra)


def json_object(value: Any) -> Row:
    """A JSON cell read leniently: anything but an object is an empty one."""
    if not value:
        return {}
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def dumps(value: Any) -> str:
    """Stable JSON: an unchanged answer serialises identically, so no ledger write is made."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def api_time(value: Any) -> datetime | None:
    """An API time ("YYYY-MM-DD HH:MM:SS", no zone: taken as UTC), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.strptime(text, _TIME_FORMAT)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return utc(parsed)
