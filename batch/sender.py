"""The send loop: one request at a time, each recorded before and after it leaves.

Exactly once rests on three rules kept here:
1. An intent naming the request's recipients is fsync'd to the journal before the request
   leaves; its outcome is recorded as soon as the answer arrives.
2. A request that surely did not take effect (refused connection, 429, 401, 403) goes back
   to `pending`; one that may have (lost answer, read timeout, 5xx) is `in_doubt` and is
   reconciled against the API before anything is sent again (batch.reconcile).
3. Rows that are `in_doubt` when a run starts are reconciled before the first new send.

What differs per channel (payload, endpoint, reading the answer, the look-up) is asked of
the job's channel (batch.channels); settling sends in doubt is batch.settle, and the anchor
a request id carries is batch.anchors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from batch import errors
from batch.anchors import newest_parent, request_id
from batch.channels import channel_for
from batch.client import LegallyMailClient
from batch.jobmodel import Job
from batch.ledger import FAILED, PENDING, SENT, SKIPPED, Entry, Ledger
from batch.pacing import StopClock
from batch.plan import Batch, Plan, group
from batch.progress import Reporter, RunStats
from batch.render import Scan, render_keys
from batch.settle import Settler
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
    limit: int | None = None  # send to at most this many recipients (`run --limit N`)


def grouping(job: Job) -> bool:
    """Whether identical messages may share a request."""
    return channel_for(job.spec).groups and job.spec.grouping == "auto"


class OutsideWindow(errors.WorkPending):
    """The send window closed and the run was asked to leave rather than wait."""


class Sender:
    """One run's send loop over a locked ledger."""

    outside_at_start = False

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
        self.settler = Settler(job, self.channel, api, ledger, frame, stats, reporter)
        self.anchor: str | None = newest_parent(ledger.frame("parent_tracking_id", "sent_at"))
        self.anchor_checked = self.anchor is not None or not self.channel.anchored
        self.wall_clock: Callable[[], datetime] = wall_clock or (lambda: datetime.now(UTC))
        self.wait: Callable[[float], None] = wait or StopClock(stop).sleep
        schedule = job.spec.schedule
        self.window = (
            SendWindow(schedule.window, schedule.timezone)
            if schedule is not None and schedule.window is not None
            else None
        )
        self.opened = False  # whether this run has sent inside the window yet

    def go(self, result: Scan, options: RunOptions) -> str | None:
        """Reconcile, plan, check credits and send; the reason it stopped early, if any."""
        self._settle_invalid(result, options)
        if options.retry_failed:
            failed = self.ledger.keys_with_status(FAILED)["key"].to_list()
            self.ledger.requeue(failed)
        try:
            self.reconcile_in_doubt()
            batches = self._plan(result, options.limit)
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

    def _plan(self, result: Scan, limit: int | None = None) -> Plan:
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
        payload = self.channel.payload(content, [m.address for m in messages])
        request = request_id(self.anchor)
        self.ledger.intent(request, list(batch.entries))
        try:
            data = self.channel.post(self.api, payload)
        except errors.NotProcessed as err:
            self.ledger.not_sent(request, batch.keys, str(err))
            raise errors.WorkPending(f"the API kept refusing: {err}") from err
        except errors.MaybeProcessed as err:
            self.reporter.note(f"answer lost ({err}); looking the send up before any retry")
            return self._reconcile(request, batch, content, self.anchor, err)
        except errors.PermanentApiError as err:
            self.ledger.fail(batch.keys, err.message)
            self.stats.failed += len(batch.entries)
            return True
        except (errors.StopRun, errors.WorkPending) as err:
            self.ledger.not_sent(request, batch.keys, str(err))
            raise
        self._record(request, batch, data, content)
        return True

    def _record(
        self, request: str, batch: Batch, data: dict[str, Any], content: dict[str, Any]
    ) -> None:
        answer = self.channel.answer(data, batch.entries)
        self.anchor = answer.anchor or self.anchor
        self.ledger.sent(
            request,
            parent_tracking_id=answer.parent,
            outcomes=answer.outcomes,
            sent_at=datetime.now(UTC),
        )
        channel_data = self.channel.send_data(data, content)
        if channel_data is not None:
            for entry in batch.entries:
                self.ledger.update(entry.key, channel_data=channel_data)
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
        content: dict[str, Any] | None,
        anchor: str | None,
        cause: errors.ApiError | None,
    ) -> bool:
        done, found = self.settler.settle(request, batch, content, anchor, cause)
        self.anchor = found or self.anchor
        return done
