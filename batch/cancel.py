"""`lmbatch cancel`: end a campaign on purpose, so that nothing more is ever sent for it.

Every row still to send (pending in the ledger, or valid in the dataset and not yet queued)
becomes `cancelled`, with the operator's note as its reason, and a marker file
(`cancelled.json`) records who-knows-why and when: `run` reads it and sends nothing, even
for rows added to the dataset later. Rows in doubt stay in doubt (they may have been sent:
cancelling cannot unsend them); rows sent stay sent. The campaign's lock is taken first, so
a cancel never races a run that is sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from batch import errors
from batch.dataset import read_dataset
from batch.files import write_atomic
from batch.jobmodel import Job
from batch.ledger import CANCELLED, IN_DOUBT, PENDING, Ledger
from batch.lock import CampaignLock
from batch.render import scan
from batch.timeutil import utcnow

MARKER_NAME = "cancelled.json"


@dataclass(frozen=True)
class Cancellation:
    """Why and when a campaign was cancelled, and what it left."""

    note: str
    at: datetime
    cancelled: int  # rows that became `cancelled`
    in_doubt: int  # rows left in doubt (maybe sent; `status` lists them)

    def describe(self, tz: tzinfo | None = None) -> str:
        """One line for a person: when (in the campaign's time zone `tz`), why, how many."""
        at = self.at.astimezone(tz) if tz is not None else self.at
        return f"cancelled at {at:%Y-%m-%d %H:%M %Z} ({self.note}); {self.cancelled} row(s)"


def cancellation(folder: Path) -> Cancellation | None:
    """The campaign's cancellation, if `lmbatch cancel` ended it."""
    path = folder / MARKER_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Cancellation(
            str(data["note"]),
            datetime.fromisoformat(data["at"]),
            int(data["cancelled"]),
            int(data.get("in_doubt", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise errors.LedgerError(
            f"{path}: unreadable cancellation marker: {err}",
            hint="the campaign was cancelled; restore the file or start a new campaign",
        ) from err


def cancel(job: Job, note: str) -> Cancellation:
    """Mark every row still to send as cancelled and the campaign as ended; refuses (exit 4)
    while a run holds the campaign's lock."""
    if not note.strip():
        raise errors.JobFileError("cancel needs a --note saying why (the report shows it)")
    folder = job.output_dir
    if (earlier := cancellation(folder)) is not None:
        return earlier  # the first note and time are the record: a second cancel keeps them
    folder.mkdir(parents=True, exist_ok=True)
    reason = f"cancelled: {note.strip()}"
    with (
        CampaignLock(folder / "run.lock"),
        Ledger.open(folder, channel=job.spec.channel) as ledger,
    ):
        try:
            ok = scan(job, read_dataset(job)).ok
        except errors.InputError:
            ok = None  # an unreadable dataset: cancel what the ledger holds
        if ok is not None and ok.height:
            todo = ledger.plan(ok)
            ledger.queue(todo.select("key", "address", "name", "content_hash"))
        keys = ledger.keys_with_status(PENDING)["key"].to_list()
        for key in keys:
            ledger.update(key, status=CANCELLED, error_details=reason)
        in_doubt = ledger.keys_with_status(IN_DOUBT).height
    done = Cancellation(note.strip(), utcnow(), len(keys), in_doubt)
    marker = {"note": done.note, "at": done.at.isoformat(), "cancelled": len(keys)}
    marker["in_doubt"] = in_doubt
    write_atomic(folder / MARKER_NAME, (json.dumps(marker, indent=1) + "\n").encode("utf-8"))
    return done
