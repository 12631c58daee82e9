"""The send loop: one request at a time, each recorded before and after it leaves.

Exactly once rests on three rules kept here:
1. An intent naming the request's recipients is fsync'd to the journal before the request
   leaves; its outcome is recorded as soon as the answer arrives.
2. A request that surely did not take effect (refused connection, 429, 401, 403) goes back
   to `pending`; one that may have (lost answer, read timeout, 5xx) is `in_doubt` and is
   reconciled against the API before anything is sent again (batch.reconcile).
3. Rows that are `in_doubt` when a run starts are reconciled before the first new send.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from batch import errors
from batch.client import LegallyMailClient
from batch.jobfile import Job
from batch.ledger import FAILED, IN_DOUBT, PENDING, SKIPPED, Entry, Ledger, Outcome
from batch.pacing import StopClock
from batch.plan import Batch, Plan, group
from batch.progress import Reporter, RunStats
from batch.reconcile import (
    Finding,
    Probe,
    Verdict,
    reconcile_email,
    reconcile_in_send,
    reconcile_signature,
)
from batch.render import Scan, render_keys
from batch.schedule import SendWindow

# error_details of a recipient an accepted send's answer did not name (status in_doubt).
MISSING_FROM_ANSWER = "missing from the answer"


@dataclass(frozen=True)
class RunOptions:
    """How `lmbatch run` was asked to behave."""

    dry_run: bool = False
    skip_invalid: bool = False
    allow_partial: bool = False
    retry_failed: bool = False
    window_seconds: float | None = None  # overrides limits.window_seconds (demo, tests)
    exit_outside_window: bool = False  # cron: leave when the send window is closed


def grouping(job: Job) -> bool:
    """Whether identical messages may share a request."""
    return job.spec.channel == "email" and job.spec.grouping == "auto"


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
        self.anchor: str | None = _newest_parent(ledger.frame())
        self.anchor_checked = self.anchor is not None or job.spec.channel == "sms"
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
            batches = self._plan(result)
        except errors.WorkPending as err:
            return str(err)
        if batches and self.job.spec.channel == "email":
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
        return "stopped on request" if self.stop.is_set() else None

    def _plan(self, result: Scan) -> Plan:
        todo = self.ledger.plan(result.ok)
        self.ledger.queue(
            todo.select("key", pl.col("address").alias("email"), "name", "content_hash")
        )
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
        for request_id, rows in doubtful.group_by("request_id", maintain_order=True):
            entries = [
                Entry(key=k, email=e, name=n or "", content_hash=h)
                for k, e, n, h in rows.select("key", "email", "name", "content_hash").iter_rows()
            ]
            # The newest send known when the intent was written travels in its request id.
            anchor = _anchor_in(str(request_id[0]))
            content = self._content(entries[0].key)
            # Part of a send we recorded, yet not named in its answer: its detail says.
            missing = rows.filter(pl.col("error_details") == MISSING_FROM_ANSWER)
            parents = missing["parent_tracking_id"].drop_nulls()
            parent = str(parents[0]) if parents.len() == rows.height else None
            batch = Batch(tuple(entries))
            self._reconcile(str(request_id[0]), batch, content, anchor, None, parent)

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
        payload = self._payload(content, [m.address for m in messages])
        request_id = _request_id(self.anchor)
        self.ledger.intent(request_id, list(batch.entries))
        try:
            data = self._post(payload)
        except errors.NotProcessed as err:
            self.ledger.not_sent(request_id, batch.keys, str(err))
            raise errors.WorkPending(f"the API kept refusing: {err}") from err
        except errors.MaybeProcessed as err:
            self.reporter.note(f"answer lost ({err}); looking the send up before any retry")
            return self._reconcile(request_id, batch, content, self.anchor, err)
        except errors.PermanentApiError as err:
            self.ledger.fail(batch.keys, err.message)
            self.stats.failed += len(batch.entries)
            return True
        except (errors.StopRun, errors.WorkPending) as err:
            self.ledger.not_sent(request_id, batch.keys, str(err))
            raise
        self._record(request_id, batch, data, content)
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

    def _record(
        self, request_id: str, batch: Batch, data: dict[str, Any], content: dict[str, Any]
    ) -> None:
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
                    outcomes.append(Outcome(entry.key, IN_DOUBT, None, MISSING_FROM_ANSWER))
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
            # A later lost answer is looked up among the requests newer than this one: with
            # a stale anchor it would fall out of the 25-item listing in a long campaign.
            self.anchor = str(uid) if uid and channel == "signature" else self.anchor
        self.ledger.sent(
            request_id, parent_tracking_id=parent, outcomes=outcomes, sent_at=datetime.now(UTC)
        )
        if channel != "email":
            channel_data = _send_data(channel, data, content)
            for entry in batch.entries:
                self.ledger.update(entry.key, channel_data=channel_data)
        for o in outcomes:
            if o.status == "sent":
                self.stats.sent += 1
            elif o.status == "failed":
                self.stats.failed += 1
            else:
                self.stats.in_doubt += 1

    def _take_anchor(self) -> None:
        # The newest send on the account before our first: what "newer" means if one is lost.
        if self.job.spec.channel == "signature":
            listing, field_name = self.api.signatures(1), "uuid"
        else:
            listing, field_name = self.api.list_emails(1), "tracking_id"
        self.anchor = str(listing[0].get(field_name)) if listing else None
        self.anchor_checked = True

    def _look_up(
        self,
        batch: Batch,
        content: dict[str, Any] | None,
        anchor: str | None,
        parent: str | None = None,
    ) -> Finding:
        if parent is not None:
            probe = Probe(tuple(e.email or "" for e in batch.entries), tuple(batch.keys), "", None)
            return reconcile_in_send(self.api, probe, tracking_id=parent)
        if content is None:
            return Finding(Verdict.UNKNOWN, reason="the row is no longer in the dataset")
        channel = self.job.spec.channel
        probe = Probe(
            addresses=tuple(e.email or "" for e in batch.entries),
            keys=tuple(batch.keys),
            subject=str(content.get("subject", "")),
            anchor=anchor,
        )
        if channel == "email":
            return reconcile_email(self.api, probe, known_tracking_ids=self._known_ids())
        if channel == "signature":
            return reconcile_signature(
                self.api,
                probe,
                document_name=str(content.get("document_name", "")),
                known_tracking_ids=self._known_ids(),
            )
        return Finding(
            Verdict.UNKNOWN,
            reason="certified SMS has no listing to check against: check the LegallyMail "
            "panel, then settle it with `lmbatch resolve`",
        )

    def _reconcile(
        self,
        request_id: str,
        batch: Batch,
        content: dict[str, Any] | None,
        anchor: str | None,
        cause: errors.ApiError | None,
        parent: str | None = None,
    ) -> bool:
        finding = self._look_up(batch, content, anchor, parent)
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
        if finding.lookup_failed:
            # Sending on would push this send out of the API's 25-item listing, where no later
            # run could find it or prove it absent: stop, so the next run looks it up first.
            raise errors.WorkPending(
                f"{len(batch.entries)} recipient(s) in doubt could not be looked up "
                f"({finding.reason}); run again to look them up before anything else is sent"
            )
        return True

    def _known_ids(self) -> set[str]:
        whole = self.ledger.frame()
        ids = pl.concat([whole["tracking_id"], whole["parent_tracking_id"]]).drop_nulls()
        return set(ids.to_list())

    def _content(self, key: str) -> dict[str, Any] | None:
        try:
            message = next(iter(render_keys(self.job, self.frame, [key])), None)
        except errors.InputError:
            return None
        return message.content if message else None


def _send_data(channel: str, answer: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """What the send's answer says beyond its id, for the ledger's channel_data.

    SMS: the credits charged and the status at send time. Signature: the status at send
    time, the document's name and each signer as sent (tracking replaces them with the
    API's per-signer statuses).
    """
    status = answer.get("status")
    if channel == "sms":
        return {"status_at_send": status, "credits_deducted": answer.get("credits_deducted")}
    signers = [
        {**signer, "status": status}
        for signer in content.get("signers") or []
        if isinstance(signer, dict)
    ]
    return {
        "status_at_send": status,
        "document_name": answer.get("document_name"),
        "created_at": answer.get("created_at"),
        "signers": signers,
    }


def _request_id(anchor: str | None) -> str:
    """A new id for one send attempt, carrying the anchor known when its intent is written."""
    return f"{uuid.uuid4().hex}~{anchor}" if anchor else uuid.uuid4().hex


def _anchor_in(request_id: str) -> str | None:
    """The anchor a request id carries, if any."""
    return request_id.partition("~")[2] or None


def _newest_parent(frame: pl.DataFrame) -> str | None:
    """The request id of the campaign's latest recorded send, if any."""
    sent = frame.filter(
        pl.col("parent_tracking_id").is_not_null() & pl.col("sent_at").is_not_null()
    )
    if sent.is_empty():
        return None
    value = sent.sort("sent_at").tail(1)["parent_tracking_id"][0]
    return str(value) if value else None
