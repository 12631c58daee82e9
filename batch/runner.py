"""The run: plan what is left, group it, pace it, send it, and record every step durably.

Exactly once rests on three rules kept here:
1. An intent naming the request's recipients is fsync'd to the journal before the request
   leaves; its outcome is recorded as soon as the answer arrives.
2. A request that surely did not take effect (refused connection, 429, 401, 403) goes back
   to `pending`; one that may have (lost answer, read timeout, 5xx) is `in_doubt` and is
   reconciled against the API before anything is sent again (batch.reconcile).
3. Rows that are `in_doubt` when a run starts are reconciled before the first new send.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import polars as pl

from batch import errors
from batch.client import LegallyMailClient
from batch.dataset import read_dataset
from batch.jobfile import Job
from batch.ledger import FAILED, IN_DOUBT, PENDING, SKIPPED, Entry, Ledger, Outcome, read_ledger
from batch.pacing import HostLimiter, RateLimiter
from batch.plan import Batch, eta_seconds, group
from batch.reconcile import Probe, Verdict, reconcile_email
from batch.render import Scan, render_keys, scan
from batch.schedule import CampaignLock

MIN_FREE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RunOptions:
    """How `lmbatch run` was asked to behave."""

    dry_run: bool = False
    skip_invalid: bool = False
    allow_partial: bool = False
    retry_failed: bool = False
    window_seconds: float | None = None  # overrides limits.window_seconds (demo, tests)


@dataclass
class RunStats:
    """Live counters for the progress display."""

    recipients: int = 0
    requests_planned: int = 0
    requests_done: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    in_doubt: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    per_window: int = 10
    window: float = 60.0
    started: float = field(default_factory=time.monotonic)

    @property
    def eta_seconds(self) -> float:
        """Time the remaining requests need at the full rate."""
        left = self.requests_planned - self.requests_done
        return eta_seconds(left, per_window=self.per_window, window=self.window)


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

    @property
    def remaining(self) -> int:
        """Recipients still to send or to reconcile."""
        return self.counts.get(PENDING, 0) + self.counts.get(IN_DOUBT, 0)

    @property
    def exit_code(self) -> int:
        """0 when nothing is left, 3 when work remains."""
        if self.dry_run:
            return errors.EXIT_OK
        return errors.EXIT_PENDING if self.remaining or self.stopped else errors.EXIT_OK


class Reporter(Protocol):
    """Receives progress from the run (the CLI shows it; tests ignore it)."""

    def start(self, stats: RunStats) -> None:
        """The plan is known."""

    def update(self, stats: RunStats) -> None:
        """Something changed."""

    def note(self, message: str) -> None:
        """A line worth showing (in-doubt found, credits, retries)."""

    def stop(self) -> None:
        """The run is over."""


class NullReporter:
    """A reporter that shows nothing."""

    def start(self, stats: RunStats) -> None:
        """Ignore."""

    def update(self, stats: RunStats) -> None:
        """Ignore."""

    def note(self, message: str) -> None:
        """Ignore."""

    def stop(self) -> None:
        """Ignore."""


class StopClock:
    """The real clock, whose waits end early (with WorkPending) once a stop is asked."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait, unless a stop comes first."""
        if self._stop.wait(max(0.0, seconds)):
            raise errors.WorkPending("interrupted while waiting")


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
    )
    return LegallyMailClient(
        url,
        api_token(job),
        limiter=limiter,
        timeout=job.spec.api.timeout_seconds,
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
    frame = read_dataset(job)
    return frame, scan(job, frame)


def run(
    job: Job,
    options: RunOptions = RunOptions(),
    *,
    client: LegallyMailClient | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Send what the ledger says is left, within the limits, recording every step."""
    reporter = reporter or NullReporter()
    stop = stop or threading.Event()
    frame, result = validate(job)
    if result.errors and not options.skip_invalid:
        raise errors.RowErrors(result.errors, source=job.spec.dataset.path)
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

    with (
        CampaignLock(job.output_dir / "run.lock"),
        Ledger.open(job.output_dir) as ledger,
        _client(job, client, stop, options, on_request) as api,
    ):
        sender = Sender(job, api, ledger, frame, stats, reporter, stop)
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
    ledger = read_ledger(folder) if (folder / "ledger.parquet").exists() else None
    todo = result.ok
    if ledger is not None and ledger.height:
        settled = ledger.filter(pl.col("status") != PENDING).select("key")
        todo = todo.join(settled, on="key", how="anti")
    batches = group(
        todo, max_recipients=job.spec.limits.max_recipients_per_request, grouping=_grouping(job)
    )
    stats.recipients, stats.requests_planned = todo.height, len(batches)
    counts = {PENDING: todo.height}
    return RunSummary(
        job.campaign, folder / "ledger.parquet", counts, stats, dry_run=True, invalid=result.errors
    )


def _grouping(job: Job) -> bool:
    return job.spec.channel == "email" and job.spec.grouping == "auto"


class Sender:
    """One run's send loop over a locked ledger."""

    def __init__(
        self,
        job: Job,
        api: LegallyMailClient,
        ledger: Ledger,
        frame: pl.DataFrame,
        stats: RunStats,
        reporter: Reporter,
        stop: threading.Event,
    ) -> None:
        self.job, self.api, self.ledger, self.frame = job, api, ledger, frame
        self.stats, self.reporter, self.stop = stats, reporter, stop
        self.anchor: str | None = _newest_parent(ledger.frame())
        self.anchor_checked = self.anchor is not None

    def go(self, result: Scan, options: RunOptions) -> str | None:
        """Reconcile, plan, check credits and send; the reason it stopped early, if any."""
        self._settle_invalid(result, options)
        if options.retry_failed:
            failed = self.ledger.keys_with_status(FAILED)["key"].to_list()
            self.ledger.requeue(failed)
        try:
            self.reconcile_in_doubt()
            batches = self._plan(result)
        except errors.WorkPending as err:
            return str(err)
        if batches and self.job.spec.channel == "email":
            self._check_credits(self.stats.recipients, options.allow_partial)
        try:
            self.send_all(deque(batches))
        except errors.WorkPending as err:
            return str(err)
        except errors.StopRun as err:
            if isinstance(err, errors.AuthError):
                raise
            return f"{err}; what was not sent stays pending"
        return "stopped on request" if self.stop.is_set() else None

    def _plan(self, result: Scan) -> list[Batch]:
        todo = self.ledger.plan(result.ok)
        self.ledger.queue(
            todo.select("key", pl.col("address").alias("email"), "name", "content_hash")
        )
        batches = group(
            todo,
            max_recipients=self.job.spec.limits.max_recipients_per_request,
            grouping=_grouping(self.job),
        )
        self.stats.recipients, self.stats.requests_planned = todo.height, len(batches)
        self.reporter.start(self.stats)
        return batches

    def _settle_invalid(self, result: Scan, options: RunOptions) -> None:
        # A row skipped earlier and valid now goes back to the queue: the user fixed it.
        skipped = self.ledger.keys_with_status(SKIPPED).select("key")
        fixed = result.ok.join(skipped, on="key", how="semi")["key"].to_list()
        if fixed:
            self.ledger.requeue(fixed)
        if not (options.skip_invalid and result.errors):
            return
        reasons: dict[str, list[str]] = {}
        for err in result.errors:
            if err.key:
                reasons.setdefault(err.key, []).append(f"{err.field}: {err.message}")
        settled = set(self.ledger.frame().filter(pl.col("status") != PENDING)["key"].to_list())
        for key, why in reasons.items():
            if key not in settled:
                self.ledger.skip(
                    [Entry(key=key, email="", name="", content_hash="")], "; ".join(why)
                )

    def _check_credits(self, needed: int, allow_partial: bool) -> None:
        info = self.api.info()
        remaining = (info.get("user") or {}).get("remaining_emails")
        if isinstance(remaining, int) and remaining < needed:
            message = f"the account has {remaining} e-mail credits left; this run needs {needed}"
            if not allow_partial:
                raise errors.CreditsExhausted(
                    message, hint="buy credits, or pass --allow-partial to send what they cover"
                )
            self.reporter.note(message + ": sending what they cover (--allow-partial)")

    def reconcile_in_doubt(self) -> None:
        """Look up every send left in doubt by an earlier run before sending anything new."""
        doubtful = self.ledger.keys_with_status(IN_DOUBT)
        if doubtful.is_empty():
            return
        if self.job.spec.channel != "email":
            self.stats.in_doubt += doubtful.height
            self.reporter.note(
                f"{doubtful.height} {self.job.spec.channel} send(s) in doubt are left for you "
                "to decide (this channel has no listing to check them against)"
            )
            return
        whole = self.ledger.frame()
        for request_id, rows in doubtful.group_by("request_id", maintain_order=True):
            entries = [
                Entry(key=k, email=e, name=n or "", content_hash=h)
                for k, e, n, h in rows.select("key", "email", "name", "content_hash").iter_rows()
            ]
            intent_at = rows["updated_at"].min()
            assert intent_at is None or isinstance(intent_at, datetime)
            anchor = _newest_parent(whole, before=intent_at)
            subject = self._subject(entries[0].key)
            self._reconcile(str(request_id[0]), Batch(tuple(entries)), subject, anchor, None)

    def send_all(self, queue: deque[Batch]) -> None:
        """Send each batch in turn until done or asked to stop."""
        tries: dict[tuple[str, ...], int] = {}
        while queue and not self.stop.is_set():
            batch = queue.popleft()
            if self._send(batch):
                self.stats.requests_done += 1
            else:
                n = tries[tuple(batch.keys)] = tries.get(tuple(batch.keys), 1) + 1
                if n <= self.job.spec.retry.attempts:
                    self.stats.retrying += len(batch.entries)
                    queue.appendleft(batch)
                else:
                    self.stats.requests_done += 1
            self.reporter.update(self.stats)

    def _send(self, batch: Batch) -> bool:
        """One request; False when it must be tried again (proven not sent)."""
        messages = list(render_keys(self.job, self.frame, batch.keys))
        content = messages[0].content
        if any(m.content_hash != batch.content_hash for m in messages):
            raise errors.LedgerError("the dataset changed while the run was going; run again")
        if self.job.spec.channel == "email" and not self.anchor_checked:
            self._take_anchor()
        payload = self._payload(content, [m.address for m in messages])
        request_id = uuid.uuid4().hex
        self.ledger.intent(request_id, list(batch.entries))
        try:
            data = self._post(payload)
        except errors.NotProcessed as err:
            self.ledger.not_sent(request_id, batch.keys, str(err))
            raise errors.WorkPending(f"the API kept refusing: {err}") from err
        except errors.MaybeProcessed as err:
            self.reporter.note(f"answer lost ({err}); looking the send up before any retry")
            subject = str(content.get("subject", ""))
            return self._reconcile(request_id, batch, subject, self.anchor, err)
        except errors.PermanentApiError as err:
            self.ledger.fail(batch.keys, err.message)
            self.stats.failed += len(batch.entries)
            return True
        except (errors.StopRun, errors.WorkPending) as err:
            self.ledger.not_sent(request_id, batch.keys, str(err))
            raise
        self._record(request_id, batch, data)
        return True

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        channel = self.job.spec.channel
        if channel == "sms":
            return self.api.send_sms(payload)
        if channel == "signature":
            return self.api.send_signature(payload)
        return self.api.send_email(payload)

    def _payload(self, content: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
        channel = self.job.spec.channel
        if channel == "email":
            return {**content, "recipient": ", ".join(addresses)}
        if channel == "sms":
            return {**content, "phone": addresses[0]}
        return dict(content)

    def _record(self, request_id: str, batch: Batch, data: dict[str, Any]) -> None:
        channel = self.job.spec.channel
        if channel == "email":
            parent = data.get("tracking_id")
            answers = {
                str(r.get("email") or "").strip().lower(): r for r in data.get("recipients") or []
            }
            outcomes = []
            for entry in batch.entries:
                answer = answers.get((entry.email or "").lower())
                if answer is None:  # accepted, yet not named in the answer: look it up later
                    outcomes.append(Outcome(entry.key, IN_DOUBT, None, "missing from the answer"))
                    continue
                status = "failed" if answer.get("status") == "failed" else "sent"
                outcomes.append(
                    Outcome(
                        entry.key, status, answer.get("tracking_id"), answer.get("error_details")
                    )
                )
            self.anchor = str(parent) if parent else self.anchor
        else:
            uid = data.get("uuid") or (data.get("data") or {}).get("uuid")
            parent = uid
            outcomes = [Outcome(e.key, "sent", uid, None) for e in batch.entries]
        self.ledger.sent(
            request_id, parent_tracking_id=parent, outcomes=outcomes, sent_at=datetime.now(UTC)
        )
        for o in outcomes:
            if o.status == "sent":
                self.stats.sent += 1
            elif o.status == "failed":
                self.stats.failed += 1
            else:
                self.stats.in_doubt += 1

    def _take_anchor(self) -> None:
        # The newest send on the account before our first: what "newer" means if one is lost.
        listing = self.api.list_emails(1)
        self.anchor = str(listing[0].get("tracking_id")) if listing else None
        self.anchor_checked = True

    def _reconcile(
        self,
        request_id: str,
        batch: Batch,
        subject: str,
        anchor: str | None,
        cause: errors.ApiError | None,
    ) -> bool:
        probe = Probe(
            addresses=tuple(e.email or "" for e in batch.entries),
            keys=tuple(batch.keys),
            subject=subject,
            anchor=anchor,
        )
        known = self._known_ids()
        finding = reconcile_email(self.api, probe, known_tracking_ids=known)
        if finding.verdict is Verdict.FOUND:
            self.ledger.sent(
                request_id,
                parent_tracking_id=finding.parent_tracking_id,
                outcomes=finding.outcomes,
                sent_at=datetime.now(UTC),
            )
            self.stats.sent += sum(o.status == "sent" for o in finding.outcomes)
            self.stats.failed += sum(o.status == "failed" for o in finding.outcomes)
            self.anchor = finding.parent_tracking_id or self.anchor
            self.reporter.note(f"{len(batch.entries)} recipient(s): {finding.reason}")
            return True
        if finding.verdict is Verdict.ABSENT:
            self.ledger.not_sent(request_id, batch.keys, f"{cause or 'in doubt'}; {finding.reason}")
            self.reporter.note(f"{len(batch.entries)} recipient(s) proven not sent; sending again")
            return False
        self.stats.in_doubt += len(batch.entries)
        self.reporter.note(f"{len(batch.entries)} recipient(s) stay in doubt: {finding.reason}")
        return True

    def _known_ids(self) -> set[str]:
        whole = self.ledger.frame()
        ids = pl.concat([whole["tracking_id"], whole["parent_tracking_id"]]).drop_nulls()
        return set(ids.to_list())

    def _subject(self, key: str) -> str:
        message = next(iter(render_keys(self.job, self.frame, [key])), None)
        return str(message.content.get("subject", "")) if message else ""


def _newest_parent(frame: pl.DataFrame, before: datetime | None = None) -> str | None:
    sent = frame.filter(
        pl.col("parent_tracking_id").is_not_null() & pl.col("sent_at").is_not_null()
    )
    if before is not None:
        sent = sent.filter(pl.col("sent_at") <= before)
    if sent.is_empty():
        return None
    value = sent.sort("sent_at").tail(1)["parent_tracking_id"][0]
    return str(value) if value else None
