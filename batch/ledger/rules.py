"""Transitions decided outside the send loop: withdrawn rows, bounces sent again, hand verdicts.

Each is one journal event with absolute values, like every other (so replay stays
idempotent), recorded through the `Ledger`'s own append:

- `withdraw`: pending rows whose key left the dataset become `withdrawn`: never sent, no
  longer wanted, so the campaign can end (exit 0) instead of waiting for them forever.
- `retry_bounced`: a bounced row whose address was corrected goes back to `pending`, the
  address it bounced at added to `bounced_addresses`, which planning never sends to again.
- `resolve`: the operator's verdict on rows in doubt, journalled with the time, the note and
  the evidence given, and also appended to `resolutions.jsonl` in the campaign folder: the
  journal is folded into the parquet at checkpoints, the resolutions file keeps every verdict.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batch.errors import InputError, LedgerError
from batch.files import fsync_dir
from batch.ledger.schema import (
    BOUNCED,
    IN_DOUBT,
    PENDING,
    SENT,
    WITHDRAWN,
    Row,
    decode_json_cell,
)

if TYPE_CHECKING:
    from batch.ledger.core import Ledger

RESOLUTIONS_NAME = "resolutions.jsonl"


def withdraw(ledger: Ledger, keys: Sequence[str], reason: str) -> list[str]:
    """Record pending `keys` as withdrawn (left the dataset); the keys that changed."""
    now = ledger._now()
    rows: dict[str, Row] = {}
    for key in keys:
        current = ledger._current(key, rows)
        if current is not None and current["status"] == PENDING:
            rows[key] = {"status": WITHDRAWN, "error_details": reason, "updated_at": now}
    ledger._record("withdraw", rows, reason=reason)
    return list(rows)


def bounced_addresses(cell: Any) -> list[str]:
    """The addresses a row bounced at, from its `bounced_addresses` cell."""
    value = decode_json_cell(cell)
    return [str(a) for a in value] if isinstance(value, list) else []


def retry_bounced(ledger: Ledger, new_addresses: Mapping[str, str]) -> list[str]:
    """Put bounced rows whose address changed back to pending; the keys that changed.

    The address each bounced at joins its `bounced_addresses`; a row whose dataset address is
    still one it bounced at is left as it is (sending there again would bounce again).
    """
    now = ledger._now()
    rows: dict[str, Row] = {}
    for key, address in new_addresses.items():
        row = ledger.get(key)
        if row is None or row["status"] != BOUNCED:
            continue
        seen = bounced_addresses(row.get("bounced_addresses"))
        if row.get("address"):
            seen = [*seen, str(row["address"])] if row["address"] not in seen else seen
        if address in seen:
            continue
        rows[key] = {
            "status": PENDING,
            "bounced_addresses": json.dumps(seen, ensure_ascii=False),
            "error_details": f"bounced at {row.get('address')}; to be sent to {address}",
            "updated_at": now,
        }
    ledger._record("retry_bounced", rows)
    return list(rows)


def resolve(
    ledger: Ledger,
    keys: Sequence[str],
    *,
    sent: bool,
    tracking_id: str | None,
    note: str | None,
) -> list[str]:
    """Record the operator's verdict on the in-doubt `keys`; every key must be in doubt.

    Refused (LedgerError naming them) when a key is not in the ledger or not in doubt: a
    verdict on a row that is not waiting for one is a mistake about which row was checked.
    """
    keys = list(dict.fromkeys(keys))
    unknown, settled, requests = [], [], set()
    for key in keys:
        row = ledger._current(key, {})
        if row is None:
            unknown.append(key)
        elif row["status"] != IN_DOUBT:
            settled.append(f"{key} ({row['status']})")
        else:
            requests.add(str(row["request_id"]))
    if unknown or settled:
        parts = []
        if unknown:
            parts.append(f"not in the ledger: {', '.join(unknown[:10])}")
        if settled:
            parts.append(f"not in doubt: {', '.join(settled[:10])}")
        raise InputError("; ".join(parts), hint="`lmbatch status JOB` lists the rows in doubt")
    now = ledger._now()
    verdict = "sent" if sent else "not sent"
    why = f"resolved by hand: {verdict}" + (f" ({note})" if note else "")
    rows: dict[str, Row] = {}
    for key in keys:
        fields: Row = {"error_details": why, "updated_at": now}
        if sent:
            fields |= {
                "status": SENT,
                "tracking_id": tracking_id,
                "parent_tracking_id": tracking_id,
                "sent_at": now,
            }
        else:
            fields |= {"status": PENDING}
        rows[key] = fields
    record = {
        "at": now.isoformat(),
        "keys": list(keys),
        "verdict": verdict,
        "tracking_id": tracking_id,
        "note": note,
        "requests": sorted(requests),
        "operator": _operator(),
    }
    _append(ledger.path.parent / RESOLUTIONS_NAME, record)
    ledger._record(
        "resolve",
        rows,
        verdict=verdict,
        tracking_id=tracking_id,
        note=note,
        requests=sorted(requests),
    )
    return list(keys)


def read_resolutions(folder: Path) -> list[dict[str, Any]]:
    """Every verdict given by hand in this campaign, oldest first."""
    try:
        text = (folder / RESOLUTIONS_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _operator() -> str:
    """The account that gave the verdict (from the OS, not the environment)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _append(path: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:
            fsync_dir(path.parent)
    except OSError as err:
        raise LedgerError(f"{path}: cannot record the resolution: {err}") from err
