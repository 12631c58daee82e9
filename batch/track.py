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
from datetime import datetime, timedelta, tzinfo

from rich.console import Console

from batch import errors
from batch.answers import UNTRACKED, Row
from batch.channels import CHANNELS, channel_for
from batch.client import LegallyMailClient
from batch.connect import build_client_from_env as build_client
from batch.jobmodel import Job
from batch.ledger import Ledger, has_history, utcnow
from batch.progress import NullReporter
from batch.progress import Reporter as ProgressReporter
from batch.stats import StepStats
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
    progress: ProgressReporter | None = None,
) -> TrackSummary:
    """Bring the ledger's statuses up to date: one pass, or with `watch` until all are final.

    `reporter` hears of each pass's end; `progress` (batch.progress) shows each look-up.
    """
    stop = stop or threading.Event()
    summary = TrackSummary(job.campaign)
    folder = job.output_dir
    if not has_history(folder):
        raise errors.NothingSent(folder, job.path)
    own = client is None
    api = client if client is not None else build_client(job, stop=stop)
    wait = sleep or (lambda seconds: _stop_wait(stop, seconds))
    shown = _Shown(job, api, summary, progress or NullReporter(), stop)
    try:
        with Ledger.open(folder, clock=clock) as ledger:
            tracker = Tracker(
                job, api, ledger, summary, clock, until, on_pass=shown.pass_, on_call=shown.call
            )
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
                shown.between(summary.next_pass_at)
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
        shown.progress.stop()
        if own:
            api.close()
    if reporter is not None:
        reporter(summary)
    return summary


class _Shown:
    """The look-ups of each pass as a progress display's steps."""

    def __init__(
        self,
        job: Job,
        api: LegallyMailClient,
        summary: TrackSummary,
        progress: ProgressReporter,
        stop: threading.Event,
    ) -> None:
        limits = job.spec.limits
        limiter = getattr(api, "limiter", None)  # scripted clients in tests have none
        self.stats = StepStats(
            per_window=limits.requests_per_window,
            window=limits.window_seconds,
            next_free=limiter.next_free_in if limiter is not None else None,
            tz=job.tz,
            label="tracking",
            unit="look-ups",
        )
        self.summary, self.progress, self.stop, self.started = summary, progress, stop, False
        self._before = 0  # calls made before this pass

    def pass_(self, planned: int) -> None:
        self.stats.total, self.stats.done, self.stats.between = planned, 0, None
        self._before = self.summary.calls_total
        self.stats.detail = f"pass {self.summary.passes}"
        if not self.started:
            self.started = True
            self.progress.start(self.stats)
        else:
            self.progress.update(self.stats)

    def call(self) -> None:
        made = self.summary.calls_total - self._before
        self.stats.done = min(made, self.stats.total)
        self.stats.calls = self.summary.calls_total
        self.progress.update(self.stats)
        if self.stop.is_set():  # Ctrl-C: stop after the call in flight; what it found is kept
            raise errors.WorkPending("interrupted")

    def between(self, at: datetime) -> None:
        self.stats.between = f"next pass at {at.astimezone(self.stats.tz):%a %H:%M %Z}"
        self.progress.update(self.stats)


def console_reporter(console: Console, tz: tzinfo | None = None) -> Reporter:
    """A progress display for `lmbatch track --watch`: one line per pass, in `tz`."""

    def show(summary: TrackSummary) -> None:
        done = summary.final
        total = summary.final + summary.open
        shown = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
        line = f"pass {summary.passes}: {done}/{total} final ({shown}); {summary.calls_total} calls"
        if summary.next_pass_at is not None:
            line += f"; next pass at {summary.next_pass_at.astimezone(tz):%a %H:%M %Z}"
        console.print(line, markup=False, highlight=False)

    return show


def _stop_wait(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(0.0, seconds)):
        raise errors.WorkPending("interrupted while waiting for the next pass")
