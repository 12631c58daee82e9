"""The send loop: one request at a time, each recorded before and after it leaves.

Exactly once rests on three rules kept here:
1. An intent naming the request's recipients is fsync'd to the journal before the request
   leaves (once its rate-limit slot is taken: a kill while waiting leaves the rows pending);
   its outcome is recorded as soon as the answer arrives.
2. A request that surely did not take effect (refused connection, 429, 401, 403) goes back
   to `pending`; one that may have (lost answer, read timeout, 5xx) is `in_doubt` and is
   reconciled against the API before anything is sent again (batch.reconcile).
3. Rows that are `in_doubt` when a run starts are reconciled before the first new send.

What differs per channel (payload, endpoint, reading the answer, the look-up) is asked of
the job's channel (batch.channels); settling sends in doubt is batch.settle, and the anchor
a request id carries is batch.anchors. The intent records what its look-up will compare
(`probe_record`: the exact subject or document name, the addresses, the recipient count, our
clock); each answer teaches the server's clock offset (batch.server_clock) and registers its
tracking ids for this output root (batch.registry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from batch import errors
from batch.anchors import anchor_of, newest_parent, request_id
from batch.attachments import DOCUMENTS
from batch.channels import channel_for
from batch.client import LegallyMailClient
from batch.forecast import RunFlags, forecast
from batch.jobmodel import Job
from batch.ledger import FAILED, PENDING, SENT, Entry, Ledger
from batch.pacing import StopClock
from batch.plan import Batch, Plan, group
from batch.progress import Reporter
from batch.reconcile import probe_from, probe_record
from batch.registry import TrackingRegistry
from batch.render import Scan, render_keys
from batch.server_clock import ServerClock
from batch.settle import Settler, request_span
from batch.stats import RunStats
from batch.window import SendWindow


@dataclass(frozen=True)
class RunOptions:
    """How `lmbatch run` was asked to behave."""

    dry_run: bool = False
    skip_invalid: bool = False
    allow_partial: bool = False
    retry_failed: bool = False
    window_seconds: float | None = None  # overrides limits.window_seconds (demo, tests)
    exit_outside_window: bool = False  # cron: leave when the send window is closed
    accept_key_change: bool = False  # send although the dataset's keys look changed
    accept_new_version: bool = False  # send the rest although earlier rows got other content
    offline: bool = False  # dry run: do not check the token, server and credits
    new_campaign: bool = False  # open a new ledger although an earlier one is unfinished
    limit: int | None = None  # send to at most this many recipients (`run --limit N`)

    @property
    def flags(self) -> RunFlags:
        """The options that change what is sent (batch.forecast)."""
        return RunFlags(
            retry_failed=self.retry_failed,
            accept_key_change=self.accept_key_change,
            accept_new_version=self.accept_new_version,
        )


def grouping(job: Job) -> bool:
    """Whether identical messages may share a request."""
    return channel_for(job.spec).groups and job.spec.grouping == "auto"


class OutsideWindow(errors.WorkPending):
    """The send window closed and the run was asked to leave rather than wait."""


class Sender:
    """One run's send loop over a locked ledger."""

    outside_at_start = False
    notes: tuple[str, ...] = ()  # what the forecast said before sending

    def __init__(
        self,
        job: Job,
        api: LegallyMailClient,
        ledger: Ledger,
        frame: pl.DataFrame,
        stats: RunStats,
        reporter: Reporter,
        stop: threading.Event,
        *,
        wall_clock: Callable[[], datetime] | None = None,
        wait: Callable[[float], None] | None = None,
    ) -> None:
        self.job, self.api, self.ledger, self.frame = job, api, ledger, frame
        self.stats, self.reporter, self.stop = stats, reporter, stop
        self.channel = channel_for(job.spec)
        self.wall_clock: Callable[[], datetime] = wall_clock or (lambda: datetime.now(UTC))
        self.server_clock = ServerClock(job.output_dir)
        self.registry = TrackingRegistry(job.output_dir)
        self.span = request_span(job)
        self.settler = Settler(
            job,
            self.channel,
            api,
            ledger,
            frame,
            stats,
            reporter,
            clock=self.wall_clock,
            server_clock=self.server_clock,
            registry=self.registry,
        )
        self.anchor = anchor_of(ledger.query(["parent_tracking_id", "sent_at"], newest_parent))
        self.anchor_checked = self.anchor is not None or not self.channel.anchored
        self.wait: Callable[[float], None] = wait or StopClock(stop).sleep
        schedule = job.spec.schedule
        self.window = (
            SendWindow(schedule.window, schedule.timezone)
            if schedule is not None and schedule.window is not None
            else None
        )
        self.opened = False  # whether this run has sent inside the window yet

    def go(self, result: Scan, options: RunOptions) -> str | None:
        """Forecast, reconcile, plan, check credits and send; why it stopped early, if any.

        The forecast (batch.forecast) is the one `validate` and `--dry-run` report: it
        refuses a changed key or a second version unless asked, and its transitions
        (requeues, withdrawals, bounces sent again) are applied before planning.
        """
        keys = self.frame["__key__"] if "__key__" in self.frame.columns else result.ok["key"]
        ahead = forecast(self.ledger, result.ok, keys, options.flags, versions=False)
        ahead.check(options.flags)
        self.notes = tuple(ahead.notes())
        for note in self.notes:
            self.reporter.note(note)
        self._settle_invalid(result, options)
        ahead.apply(self.ledger)
        try:
            self.reconcile_in_doubt()
            # Nothing in doubt: the ledger now says exactly what the forecast said (its
            # transitions are applied), so its plan is reused rather than searched again.
            batches = self._plan(
                result, ahead.to_send if not ahead.in_doubt else None, options.limit
            )
        except errors.WorkPending as err:
            return str(err)
        if batches and self.channel.checks_credits:
            self._check_credits(self.stats.recipients, options.allow_partial)
        try:
            self.send_all(batches, options.exit_outside_window)
        except OutsideWindow as err:
            if not self.opened:
                self.outside_at_start = True
            return str(err)
        except errors.WorkPending as err:
            return str(err)
        except errors.StopRun as err:
            if isinstance(err, errors.AuthError):
                raise
            # The hint says what stopped the run (credits ran out) even when the API's own
            # 403 message does not.
            hint = f"; {err.hint}" if err.hint else ""
            return f"{err}; what was not sent stays pending{hint}"
        if self.stop.is_set():
            return "stopped on request"
        return self.limited

    limited: str | None = None  # why the plan was cut short by --limit

    def _plan(
        self, result: Scan, todo: pl.DataFrame | None = None, limit: int | None = None
    ) -> Plan:
        if todo is None:
            todo = self.ledger.plan(result.ok)
        # Every row is queued, so the rows --limit leaves out show as pending (work left).
        self.ledger.queue(todo.select("key", "address", "name", "content_hash"))
        if limit is not None and todo.height > limit:
            self.limited = f"--limit {limit} reached; {todo.height - limit} recipient(s) left"
            todo = todo.head(limit)
        batches = group(
            todo,
            max_recipients=self.job.spec.limits.max_recipients_per_request,
            grouping=grouping(self.job),
        )
        self.stats.recipients, self.stats.requests_planned = todo.height, len(batches)
        self.reporter.start(self.stats)
        return batches

    def _settle_invalid(self, result: Scan, options: RunOptions) -> None:
        # (A row skipped earlier and valid now goes back to the queue: the forecast's rule.)
        if not (options.skip_invalid and result.errors):
            return
        reasons: dict[str, list[str]] = {}
        for err in result.errors:
            if err.key:
                reasons.setdefault(err.key, []).append(f"{err.field}: {err.message}")
        settled = set(
            self.ledger.frame("status").filter(pl.col("status") != PENDING)["key"].to_list()
        )
        for key, why in reasons.items():
            if key not in settled:
                self.ledger.skip(
                    [Entry(key=key, address="", name="", content_hash="")], "; ".join(why)
                )

    def _check_credits(self, needed: int, allow_partial: bool) -> None:
        remaining = self.channel.remaining_credits(self.api.info())
        if remaining is not None and remaining < needed:
            message = (
                f"the account has {remaining} {self.channel.credit_unit} credits left; "
                f"this run needs {needed}"
            )
            if not allow_partial:
                raise errors.CreditsExhausted(
                    message, hint="buy credits, or pass --allow-partial to send what they cover"
                )
            self.reporter.note(message + ": sending what they cover (--allow-partial)")

    def reconcile_in_doubt(self) -> None:
        """Look up every send left in doubt by an earlier run before sending anything new."""
        self.anchor = self.settler.earlier_runs() or self.anchor

    def send_all(self, batches: Iterable[Batch], exit_outside_window: bool = False) -> None:
        """Send each batch in turn until done or asked to stop."""
        upcoming = iter(batches)
        again: Batch | None = None  # a request proven not sent goes first, before the rest
        tries: dict[tuple[str, ...], int] = {}
        while not self.stop.is_set():
            batch = again if again is not None else next(upcoming, None)
            if batch is None:
                return
            again = None
            self._await_window(exit_outside_window)
            self._checkpoint_while_waiting()
            if self._send(batch):
                self.stats.requests_done += 1
            else:
                n = tries[tuple(batch.keys)] = tries.get(tuple(batch.keys), 1) + 1
                if n <= self.job.spec.retry.attempts:
                    self.stats.retrying += len(batch.entries)
                    again = batch
                else:
                    self.stats.requests_done += 1
            self.stats.window_used = self.api.limiter.used()
            self.reporter.update(self.stats)

    def _checkpoint_while_waiting(self) -> None:
        """Fold the journal into the parquet while the rate limit makes us wait anyway.

        A checkpoint of a large ledger takes a second; taken in the send path it would delay
        a request that is due and waste part of the request budget.
        """
        if not self.ledger.unsaved:
            return
        if self.api.limiter.next_free_in() > 2 * self.ledger.checkpoint_seconds_taken + 0.5:
            self.ledger.checkpoint()

    def _await_window(self, exit_outside_window: bool) -> None:
        """Hold the next request until the send window is open (or leave, for cron)."""
        if self.window is None:
            return
        now = self.wall_clock()
        if self.window.is_open(now):
            self.opened = True
            return
        opens = self.window.next_open(now)
        if exit_outside_window:
            raise OutsideWindow(
                f"outside the send window; it opens next at {opens:%a %Y-%m-%d %H:%M %Z}"
            )
        self.reporter.note(f"outside the send window: waiting until {opens:%a %Y-%m-%d %H:%M %Z}")
        while not self.window.is_open(now):
            wait = (opens.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
            self.wait(max(wait, 1.0))
            now = self.wall_clock()
        self.opened = True

    def _send(self, batch: Batch) -> bool:
        """One request; False when it must be tried again (proven not sent)."""
        messages = list(render_keys(self.job, self.frame, batch.keys))
        content = messages[0].content
        if any(m.content_hash != batch.content_hash for m in messages):
            raise errors.LedgerError("the dataset changed while the run was going; run again")
        if not self.anchor_checked:
            self._take_anchor()
        addresses = [m.address for m in messages]
        payload = self.channel.payload(content, addresses)
        # The rate-limit slot is taken before the intent is written: a run killed while it
        # waits (most of its time, at 10 requests a minute) leaves these rows pending, not in
        # doubt. The first attempt of `post` uses the reserved slot without waiting again.
        with self.api.limiter.reserve():
            request = request_id(self.anchor)
            at = self.wall_clock()
            # What a look-up of this send will compare, as sent: never a later render.
            record = probe_record(self.channel.look_up_fields(content), addresses, at, self.span)
            self.ledger.intent(request, list(batch.entries), record)
            try:
                data = self.channel.post(self.api, payload)
            except errors.NotProcessed as err:
                self.ledger.not_sent(request, batch.keys, str(err))
                raise errors.WorkPending(f"the API kept refusing: {err}") from err
            except errors.MaybeProcessed as err:
                self.reporter.note(f"answer lost ({err}); looking the send up before any retry")
                return self._reconcile(request, batch, record, err)
            except errors.ConfigurationError as err:
                # Not this recipient's fault: every send would get the same answer.
                self.ledger.not_sent(request, batch.keys, str(err))
                raise
            except errors.PermanentApiError as err:
                self.ledger.fail(batch.keys, err.message)
                self.stats.failed += len(batch.entries)
                return True
            except (errors.StopRun, errors.WorkPending) as err:
                self.ledger.not_sent(request, batch.keys, str(err))
                raise
        self._record(request, batch, data, content, at)
        return True

    def _record(
        self,
        request: str,
        batch: Batch,
        data: dict[str, Any],
        content: dict[str, Any],
        at: datetime,
    ) -> None:
        answer = self.channel.answer(data, batch.entries)
        self.anchor = answer.anchor or self.anchor
        self.ledger.sent(
            request,
            parent_tracking_id=answer.parent,
            outcomes=answer.outcomes,
            sent_at=datetime.now(UTC),
        )
        # After the ledger: a crash in between leaves an id unregistered, never a wrong one.
        self.registry.record([answer.parent, *(o.tracking_id for o in answer.outcomes)])
        self.server_clock.learn(answer.server_time, at, self.wall_clock())
        fields: dict[str, Any] = {}
        channel_data = self.channel.send_data(data, content)
        if channel_data is not None:
            fields["channel_data"] = channel_data
        if content.get(DOCUMENTS):  # the generated documents as sent: name and SHA-256
            fields["documents"] = content[DOCUMENTS]
        if fields:
            for entry in batch.entries:
                self.ledger.update(entry.key, **fields)
        for o in answer.outcomes:
            if o.status == SENT:
                self.stats.sent += 1
            elif o.status == FAILED:
                self.stats.failed += 1
            else:
                self.stats.in_doubt += 1

    def _take_anchor(self) -> None:
        # The newest send on the account before our first: what "newer" means if one is lost.
        self.anchor = self.channel.newest_send(self.api)
        self.anchor_checked = True

    def _reconcile(
        self,
        request: str,
        batch: Batch,
        record: dict[str, Any],
        cause: errors.ApiError | None,
    ) -> bool:
        keys = batch.keys
        probe = probe_from(record, keys, [e.address or "" for e in batch.entries], self.anchor)
        done, found = self.settler.settle(request, batch, probe, record, cause)
        self.anchor = found or self.anchor
        return done
