"""The run: validate, check the output folder, take the campaign's lock, and hand the
ledger, the paced client and the plan to the send loop (batch.sender)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from batch import errors
from batch.client import LegallyMailClient
from batch.dataset import load_dataset
from batch.jobfile import Job
from batch.ledger import IN_DOUBT, PENDING, Ledger, read_ledger, unsettled
from batch.lock import CampaignLock
from batch.pacing import HostLimiter, RateLimiter, StopClock
from batch.plan import group
from batch.progress import NullReporter, Reporter, RunStats
from batch.render import Scan, scan
from batch.sender import RunOptions, Sender, grouping

__all__ = ["NullReporter", "Reporter", "RunOptions", "RunStats", "RunSummary", "run", "validate"]

MIN_FREE_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0


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

    @property
    def remaining(self) -> int:
        """Recipients still to send or to reconcile."""
        return self.counts.get(PENDING, 0) + self.counts.get(IN_DOUBT, 0)

    @property
    def exit_code(self) -> int:
        """0 when nothing is left, 3 when work remains (a closed window too: the period is
        not done, and the next firing inside the window sends it)."""
        if self.dry_run:
            return errors.EXIT_OK
        return errors.EXIT_PENDING if self.remaining or self.stopped else errors.EXIT_OK


def api_token(job: Job) -> str:
    """The API token, from the environment only."""
    name = job.spec.api.token_env
    token = os.environ.get(name, "").strip()
    if not token:
        raise errors.AuthError(
            f"no API token: the environment variable {name} is not set",
            hint=f"export {name}=... (the token from your LegallyMail panel)",
        )
    return token


def base_url(job: Job) -> str:
    """The API's base URL: LEGALLYMAIL_BASE_URL overrides the job file."""
    return os.environ.get("LEGALLYMAIL_BASE_URL") or job.spec.api.base_url


def build_client(
    job: Job,
    *,
    stop: threading.Event,
    window_seconds: float | None = None,
    on_request: Callable[[Any], None] | None = None,
) -> LegallyMailClient:
    """A client for the job's API, paced by the host-wide limiter."""
    url = base_url(job)
    limits = job.spec.limits
    clock = StopClock(stop)
    limiter: RateLimiter = HostLimiter(
        limits.requests_per_window,
        window_seconds or limits.window_seconds,
        key=(urlsplit(url).netloc or "api").replace(":", "_"),
        clock=clock,
        # A request's worst case (connect, write, read) before a hung process stops counting.
        request_timeout=CONNECT_TIMEOUT + 2 * job.spec.api.timeout_seconds,
    )
    return LegallyMailClient(
        url,
        api_token(job),
        limiter=limiter,
        timeout=job.spec.api.timeout_seconds,
        connect_timeout=CONNECT_TIMEOUT,
        attempts=job.spec.retry.attempts,
        max_backoff=job.spec.retry.max_backoff_seconds,
        sleep=clock.sleep,
        on_request=on_request,
    )


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
    client: LegallyMailClient | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    wall_clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> RunSummary:
    """Send what the ledger says is left, within the limits, recording every step.

    `wall_clock` and `sleep` drive the send-window waits (tests pass fakes); pacing has its
    own clock inside the client's limiter.
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
    )
    if options.dry_run:
        return _dry_run(job, result, stats)
    check_writable(job.output_dir)

    def on_request(event: Any) -> None:
        stats.api_calls += 1
        if getattr(event, "status", None) == 429:
            stats.rate_limited += 1
        reporter.update(stats)

    lock = CampaignLock(job.output_dir / "run.lock")
    with (
        lock,
        # The sender checkpoints while the rate limit makes it wait; these are a safety net.
        Ledger.open(job.output_dir, checkpoint_every=2000, checkpoint_seconds=600) as ledger,
        _client(job, client, stop, options, on_request) as api,
    ):
        if lock.stale_previous is not None:  # unattended, this is the only sign of a crash
            reporter.note(
                f"the previous run ({lock.stale_previous}) ended without releasing the lock; "
                "its sends in doubt are looked up before anything new"
            )
        sender = Sender(job, api, ledger, frame, stats, reporter, stop)
        sender.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        sender.wait = sleep or StopClock(stop).sleep
        stopped = sender.go(result, options)
        counts = ledger.counts()
    reporter.stop()
    return RunSummary(
        job.campaign,
        job.output_dir / "ledger.parquet",
        counts,
        stats,
        stopped=stopped,
        invalid=result.errors,
        closed_at_start=sender.outside_at_start,
    )


@contextmanager
def _client(
    job: Job,
    given: LegallyMailClient | None,
    stop: threading.Event,
    options: RunOptions,
    on_request: Callable[[Any], None],
) -> Iterator[LegallyMailClient]:
    if given is not None:
        yield given
        return
    built = build_client(
        job, stop=stop, window_seconds=options.window_seconds, on_request=on_request
    )
    try:
        yield built
    finally:
        built.close()


def _dry_run(job: Job, result: Scan, stats: RunStats) -> RunSummary:
    folder = job.output_dir
    # The journal alone may hold sends (a first run stopped before its first checkpoint).
    todo = unsettled(read_ledger(folder), result.ok) if folder.is_dir() else result.ok
    batches = group(
        todo, max_recipients=job.spec.limits.max_recipients_per_request, grouping=grouping(job)
    )
    stats.recipients, stats.requests_planned = todo.height, len(batches)
    counts = {PENDING: todo.height}
    return RunSummary(
        job.campaign,
        folder / "ledger.parquet",
        counts,
        stats,
        dry_run=True,
        invalid=result.errors,
        valid_rows=result.ok.height,
    )
