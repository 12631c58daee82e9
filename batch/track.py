"""Tracking: bring every sent recipient's status up to date in the ledger.

Which rows are looked at: every row the runner recorded as sent (any status except pending,
in_doubt and skipped) that has a tracking id and is not final yet.

Final-status rule (one place: `is_final`):
    email      read, bounced, failed
    sms        failed; delivered once the API gives its certificate URL
    signature  signed, declined, expired, cancelled/canceled, rejected
Any other value (sent, delivered, pending, or one the documentation never names) is kept
as data and is not final, until the row's deadline passes (`--until`, by default 14 days
after its send): the first look at or after the deadline settles it as final, whatever its
status. A row re-sent later (a newer `sent_at` than the look that settled it) is open again.

API statuses named like the runner's own (pending, in_doubt, skipped) would make the runner
send again, so they are stored as `sent` with the API's word kept in channel_data.api_status.

Each channel's rule is its own (`Channel.is_final`, `Channel.track` in batch.channels);
one pass over the ledger is batch.tracker's; this module is the watch loop around it.

Call plan for one pass, cheapest first (every call goes through the shared, paced client):
    email      one `GET /api/emails?limit=25` when at least two open sends are among the
               campaign's 25 newest; a listed send whose status equals what every open
               recipient of it holds (and is not final) needs nothing more. Everything else
               (not listed, changed, final, a group's mixed "pending"): one
               `GET /api/email?tracking_id=<parent>` per send, which covers all of its
               recipients (matched by tracking_id, then address).
    signature  the same with `GET /api/signatures` and `GET /api/signature?uuid=`.
    sms        one `GET /api/sms?uuid=` per open SMS (there is no listing).
So a recipient costs one detail call per status change (sent → delivered → read: times
and certificates come only with the detail), and a quiet pass costs one listing plus one
look-up per open send outside the newest 25.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from rich.console import Console

from batch import errors
from batch.answers import UNTRACKED, Row
from batch.channels import CHANNELS, channel_for
from batch.client import LegallyMailClient
from batch.client import build_client_from_env as build_client
from batch.jobmodel import Job
from batch.ledger import Ledger, utcnow
from batch.tracker import DEFAULT_DEADLINE, Tracker, TrackSummary

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_INTERVAL",
    "FINAL_STATUSES",
    "UNTRACKED",
    "Reporter",
    "TrackSummary",
    "console_reporter",
    "is_final",
    "track",
]

FINAL_STATUSES: dict[str, frozenset[str]] = {n: c.final_statuses for n, c in CHANNELS.items()}
DEFAULT_INTERVAL = 300.0  # seconds between passes of --watch: statuses move on human time

Reporter = Callable[[TrackSummary], None]


def is_final(channel: str, status: str | None, data: Row | None = None) -> bool:
    """Whether `status` ends tracking for `channel` (see the module docstring)."""
    return channel_for(channel).is_final(status, data)


def track(
    job: Job,
    *,
    client: LegallyMailClient | None = None,
    watch: bool = False,
    until: datetime | None = None,
    interval: float = DEFAULT_INTERVAL,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] | None = None,
    stop: threading.Event | None = None,
    reporter: Reporter | None = None,
) -> TrackSummary:
    """Bring the ledger's statuses up to date: one pass, or with `watch` until all are final."""
    stop = stop or threading.Event()
    summary = TrackSummary(job.campaign)
    folder = job.output_dir
    if not (folder / "ledger.parquet").exists() and not (folder / "journal.jsonl").exists():
        raise errors.LedgerError(
            f"{folder}: no ledger here: nothing was sent yet",
            hint="run `lmbatch run` first",
        )
    own = client is None
    api = client if client is not None else build_client(job, stop=stop)
    wait = sleep or (lambda seconds: _stop_wait(stop, seconds))
    try:
        with Ledger.open(folder, clock=clock) as ledger:
            tracker = Tracker(job, api, ledger, summary, clock, until)
            while True:
                try:
                    tracker.one_pass()
                except errors.WorkPending as err:
                    summary.stopped = str(err)
                    break
                if not watch or summary.open == 0:
                    break
                if stop.is_set():
                    summary.stopped = "stopped on request"
                    break
                summary.next_pass_at = clock() + timedelta(seconds=interval)
                if reporter is not None:
                    reporter(summary)
                try:
                    wait(interval)
                except errors.WorkPending as err:
                    summary.stopped = str(err)
                    break
                if stop.is_set():
                    summary.stopped = "stopped on request"
                    break
            summary.next_pass_at = None
            tracker.recount()
    finally:
        if own:
            api.close()
    if reporter is not None:
        reporter(summary)
    return summary


def console_reporter(console: Console) -> Reporter:
    """A progress display for `lmbatch track --watch`: one line per pass."""

    def show(summary: TrackSummary) -> None:
        done = summary.final
        total = summary.final + summary.open
        shown = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
        line = f"pass {summary.passes}: {done}/{total} final ({shown}); {summary.calls_total} calls"
        if summary.next_pass_at is not None:
            line += f"; next look at {summary.next_pass_at:%Y-%m-%d %H:%M:%S} UTC"
        console.print(line, markup=False, highlight=False)  # statuses come from the server

    return show


def _stop_wait(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(0.0, seconds)):
        raise errors.WorkPending("interrupted while waiting for the next pass")
