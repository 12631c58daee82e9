"""The run: validate, check the output folder, take the campaign's lock, and hand the
ledger, the paced client and the plan to the send loop (batch.sender)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from batch import errors
from batch.campaigns import check_new_ledger, mark
from batch.cancel import Cancellation, cancellation
from batch.channels import channel_for
from batch.client import LegallyMailClient, RequestEvent
from batch.connect import build_client, build_client_from_env
from batch.dataset import load_dataset
from batch.forecast import forecast
from batch.jobmodel import Job
from batch.ledger import (
    IN_DOUBT,
    PARQUET_NAME,
    PENDING,
    SKIPPED,
    WITHDRAWN,
    Ledger,
    has_history,
    read_ledger,
)
from batch.lock import CampaignLock
from batch.pacing import StopClock
from batch.plan import group
from batch.progress import NullReporter, Reporter
from batch.render import Scan, scan
from batch.report_data import PROBLEMS
from batch.sender import RunOptions, Sender, grouping
from batch.settings import Settings
from batch.stats import RunStats
from batch.timeutil import utcnow

__all__ = ["NullReporter", "Reporter", "RunOptions", "RunStats", "RunSummary", "run", "validate"]

MIN_FREE_BYTES = 16 * 1024 * 1024
# Rows that end a run "done with problems" (exit 5): not reached (failed, bounced, skipped…);
# rows ended on purpose (cancelled, withdrawn) are not problems.
PROBLEM_STATUSES = (*PROBLEMS, SKIPPED)


@dataclass
class RunSummary:
    """What a run did and what is left; `exit_code` follows the documented table."""

    campaign: str
    ledger_path: Path
    counts: dict[str, int]
    stats: RunStats
    dry_run: bool = False
    stopped: str | None = None
    invalid: list[errors.RowError] = field(default_factory=list)
    closed_at_start: bool = False  # --exit-outside-window found the window closed: nothing tried
    valid_rows: int = 0  # rows that rendered and validated (dry runs)
    notes: list[str] = field(default_factory=list)  # the forecast's (and a dry run's checks)
    refused: str | None = None  # dry runs: why the real run would refuse to start (exit 2)
    cancelled: Cancellation | None = None  # `lmbatch cancel` ended it: nothing was sent

    @property
    def remaining(self) -> int:
        """Recipients still to send or to reconcile."""
        return self.counts.get(PENDING, 0) + self.counts.get(IN_DOUBT, 0)

    @property
    def exit_code(self) -> int:
        """0 when nothing is left, 3 when work remains (a closed window too: the period is
        not done, and the next firing inside the window sends it)."""
        if self.dry_run:
            return errors.EXIT_INVALID if self.refused else errors.EXIT_OK
        if self.cancelled is not None:
            return errors.EXIT_OK
        if self.remaining or self.stopped:
            return errors.EXIT_PENDING
        # Done, but not everyone was reached: exit 5 so cron and systemd do not file it as
        # success (the summary lists the rows and the next command).
        if any(self.counts.get(s, 0) for s in PROBLEM_STATUSES):
            return errors.EXIT_PROBLEMS
        return errors.EXIT_OK


def check_writable(folder: Path) -> None:
    """Fail before the first send if the output folder cannot take the ledger."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise errors.LedgerError(
            f"{folder}: cannot write the ledger here: {err.strerror or err}",
            hint="choose a writable `output:` folder in the job file",
        ) from err
    if free < MIN_FREE_BYTES:
        raise errors.LedgerError(
            f"{folder}: only {free // 1024} KiB free; the ledger needs room to be written safely",
            hint="free some disk space, then run again",
        )


def validate(job: Job) -> tuple[pl.DataFrame, Scan]:
    """Read and render every row; the dataset and the compact scan of it."""
    dataset = load_dataset(job)
    return dataset.frame, scan(job, dataset.frame, notes=dataset.notes)


def run(
    job: Job,
    options: RunOptions | None = None,
    *,
    settings: Settings | None = None,
    client: LegallyMailClient | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> RunSummary:
    """Send what the ledger says is left, within the limits, recording every step.

    The client is `client`, else built from `settings` (the CLI passes the settings it read
    from the environment), else from the environment as it is now (library callers).
    `wall_clock` and `sleep` drive the send-window waits (tests pass fakes); pacing has its
    own clock inside the client's limiter. The run owns its counters (`RunStats`): the send
    loop advances them, the reporter reads them, the summary returns them.
    """
    options = options or RunOptions()
    reporter = reporter or NullReporter()
    stop = stop or threading.Event()
    frame, result = validate(job)
    for note in result.notes:  # e.g. "delimiter: auto picked ';'"
        reporter.note(note)
    if result.errors and not options.skip_invalid:
        raise result.problem(job.spec.dataset.path)
    limits = job.spec.limits
    stats = RunStats(
        per_window=limits.requests_per_window,
        window=options.window_seconds or limits.window_seconds,
        tz=job.tz,
    )
    if options.dry_run:
        check_new_ledger(job, allow_new=options.new_campaign)
        summary = _dry_run(job, frame, result, stats, options)
        if not options.offline and summary.refused is None:
            with _client(job, client, settings, stop, options, lambda _: None) as api:
                summary.notes.append(_account_check(job, api, stats.recipients))
        return summary
    if (ended := cancellation(job.output_dir)) is not None:
        counted = read_ledger(job.output_dir).group_by("status").len()
        counts = dict(zip(counted["status"].to_list(), counted["len"].to_list(), strict=True))
        return RunSummary(
            job.campaign, job.output_dir / PARQUET_NAME, counts, stats, cancelled=ended
        )
    check_writable(job.output_dir)
    check_new_ledger(job, allow_new=options.new_campaign)

    def on_request(event: RequestEvent) -> None:
        stats.count_request(event.status)
        reporter.update(stats)

    lock = CampaignLock(job.output_dir / "run.lock")
    with (
        lock,
        # The sender checkpoints while the rate limit makes it wait; these are a safety net.
        Ledger.open(
            job.output_dir,
            checkpoint_every=2000,
            checkpoint_seconds=600,
            channel=job.spec.channel,
        ) as ledger,
        _client(job, client, settings, stop, options, on_request) as api,
    ):
        mark(job, done=False)
        if lock.stale_previous is not None:  # unattended, this is the only sign of a crash
            reporter.note(
                f"the previous run ({lock.stale_previous}) ended without releasing the lock; "
                "its sends in doubt are looked up before anything new"
            )
        sender = Sender(
            job,
            api,
            ledger,
            frame,
            stats,
            reporter,
            stop,
            wall_clock=wall_clock or utcnow,
            wait=sleep or StopClock(stop).sleep,
        )
        # The display's ETA counts the wait for the next slot and the window's closed hours.
        stats.next_free, stats.send_window = api.limiter.next_free_in, sender.window
        stopped = sender.go(result, options)
        counts = ledger.counts()
        summary = RunSummary(
            job.campaign,
            job.output_dir / PARQUET_NAME,
            counts,
            stats,
            stopped=stopped,
            invalid=result.errors,
            closed_at_start=sender.outside_at_start,
            notes=list(sender.notes),
        )
        if summary.exit_code == errors.EXIT_OK:
            mark(job, done=True)
    reporter.stop()
    return summary


@contextmanager
def _client(
    job: Job,
    given: LegallyMailClient | None,
    settings: Settings | None,
    stop: threading.Event,
    options: RunOptions,
    on_request: Callable[[RequestEvent], None],
) -> Iterator[LegallyMailClient]:
    if given is not None:
        yield given
        return
    window = options.window_seconds
    built = (
        build_client(settings, job, stop=stop, window_seconds=window, on_request=on_request)
        if settings is not None
        else build_client_from_env(job, stop=stop, window_seconds=window, on_request=on_request)
    )
    try:
        yield built
    finally:
        built.close()


def _dry_run(
    job: Job, frame: pl.DataFrame, result: Scan, stats: RunStats, options: RunOptions
) -> RunSummary:
    """What `run` with the same options would send: the forecast it starts from."""
    folder = job.output_dir
    # The journal alone may hold sends (a first run stopped before its first checkpoint);
    # a campaign whose files were lost is refused here as the run would refuse it.
    ledger = read_ledger(folder) if has_history(folder) else pl.DataFrame()
    ahead = forecast(ledger, result.ok, frame["__key__"], options.flags)
    refused = None
    try:
        ahead.check(options.flags)
    except errors.InputError as err:
        refused = f"{err}" + (f"; {err.hint}" if err.hint else "")
    todo = ahead.to_send if refused is None else ahead.to_send.clear()
    if options.limit is not None:
        todo = todo.head(options.limit)
    batches = group(
        todo, max_recipients=job.spec.limits.max_recipients_per_request, grouping=grouping(job)
    )
    stats.recipients, stats.requests_planned = todo.height, len(batches)
    counts = {PENDING: todo.height}
    if ahead.withdrawn:
        counts[WITHDRAWN] = ahead.withdrawn
    return RunSummary(
        job.campaign,
        folder / PARQUET_NAME,
        counts,
        stats,
        dry_run=True,
        invalid=result.errors,
        valid_rows=result.ok.height,
        notes=ahead.notes(),
        refused=refused,
    )


def _account_check(job: Job, api: LegallyMailClient, needed: int) -> str:
    """One `/api/info` call: the token is accepted, the server answers, the credits cover."""
    info = api.info()  # an AuthError (exit 1) or the server's silence stops the dry run here
    channel = channel_for(job.spec)
    remaining = channel.remaining_credits(info) if channel.checks_credits else None
    if remaining is None:
        return "the token and the server answer (GET /api/info)"
    if remaining < needed:
        return (
            f"the token and the server answer; the account has {remaining} "
            f"{channel.credit_unit} credits left and this run needs {needed}: `run` stops "
            "unless --allow-partial"
        )
    return (
        f"the token and the server answer; {remaining} {channel.credit_unit} credits left "
        f"cover the {needed} to send"
    )
