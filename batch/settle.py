"""Settling sends in doubt: look each up (the channel's rule, batch.reconcile) and record it.

A send in doubt is never re-sent blindly. Found (and shown to be ours): its outcomes are
recorded as sent. Proven absent: it goes back to pending and is sent again. Unknown: it
stays in doubt, with the reason in its `error_details` (what `status` and the report show);
when the look-up itself failed the run stops, because sending on would push the send out
of the API's 25-item listing, where no later run could find it or prove it absent.

The look-up compares what the intent recorded (the ledger's `probe` cell), never today's
render: a subject edited after the send would otherwise be "proven absent" and sent twice.
A row written before intents kept a probe is looked up with today's render only when its
content hash shows today's render is what was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from batch import errors
from batch.anchors import anchor_in
from batch.attachments import DOCUMENTS
from batch.channels import Channel
from batch.client import CONNECT_TIMEOUT, LegallyMailClient
from batch.jobmodel import Job
from batch.ledger import FAILED, IN_DOUBT, SENT, Entry, Ledger, decode_json_cell, to_utc
from batch.plan import Batch
from batch.progress import Reporter
from batch.reconcile import (
    MISSING_FROM_ANSWER,
    TOLERANCE,
    Finding,
    Ownership,
    Probe,
    Verdict,
    probe_from,
    probe_record,
    reconcile_in_send,
    window_of,
)
from batch.registry import TrackingRegistry
from batch.render import render_keys
from batch.server_clock import ServerClock
from batch.stats import RunStats


def request_span(job: Job) -> float:
    """The longest one send can take to reach the server: every attempt, wait and back-off.

    Only attempts that surely did not arrive are retried, but each may first wait for a
    rate-limit slot and a back-off; the last one may be processed as late as its timeouts.
    """
    limits, attempts = job.spec.limits, job.spec.retry.attempts
    one = CONNECT_TIMEOUT + 2 * job.spec.api.timeout_seconds + limits.window_seconds
    return attempts * one + (attempts - 1) * job.spec.retry.max_backoff_seconds


class Settler:
    """Looks up and records one run's sends in doubt."""

    def __init__(
        self,
        job: Job,
        channel: Channel,
        api: LegallyMailClient,
        ledger: Ledger,
        frame: pl.DataFrame,
        stats: RunStats,
        reporter: Reporter,
        *,
        clock: Callable[[], datetime] | None = None,
        server_clock: ServerClock | None = None,
        registry: TrackingRegistry | None = None,
    ) -> None:
        self.job, self.channel, self.api, self.ledger, self.frame = job, channel, api, ledger, frame
        self.stats, self.reporter = stats, reporter
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.server_clock = server_clock or ServerClock(job.output_dir)
        self.registry = registry or TrackingRegistry(job.output_dir)

    def earlier_runs(self) -> str | None:
        """Settle every send left in doubt by an earlier run; the newest send found, if any."""
        doubtful = self.ledger.keys_with_status(IN_DOUBT)
        newest: str | None = None
        if doubtful.is_empty():
            return newest
        for request_id, rows in doubtful.group_by("request_id", maintain_order=True):
            request = str(request_id[0])
            entries = [
                Entry(key=k, address=e, name=n or "", content_hash=h)
                for k, e, n, h in rows.select("key", "address", "name", "content_hash").iter_rows()
            ]
            batch = Batch(tuple(entries))
            # Part of a send we recorded, yet not named in its answer: its detail says.
            missing = rows.filter(
                pl.col("error_details").fill_null("").str.starts_with(MISSING_FROM_ANSWER)
            )
            parents = missing["parent_tracking_id"].drop_nulls()
            parent = str(parents[0]) if parents.len() == rows.height else None
            record = self._recorded(rows, entries)
            if record is None and parent is None:
                self._stays_in_doubt(
                    batch,
                    "recorded before lmbatch kept what a look-up needs, and the row changed "
                    "since (or left the dataset): check the LegallyMail panel, then "
                    "`lmbatch resolve`",
                )
                continue
            # The newest send known when the intent was written travels in its request id.
            probe = probe_from(
                record or {},
                batch.keys,
                [e.address or "" for e in entries],
                anchor_in(request),
            )
            _, found = self.settle(request, batch, probe, record or {}, None, parent)
            newest = found or newest
        return newest

    def settle(
        self,
        request_id: str,
        batch: Batch,
        probe: Probe,
        record: dict[str, Any],
        cause: errors.ApiError | None,
        parent: str | None = None,
    ) -> tuple[bool, str | None]:
        """(False when it must be sent again, the send's id when it was found).

        `probe` and `record` are what the intent recorded (`probe_record`), `parent` the
        send's own id when the rows were left out of its answer.
        """
        finding = self._look_up(probe, record, parent)
        if finding.verdict is Verdict.FOUND:
            self.ledger.sent(
                request_id,
                parent_tracking_id=finding.parent_tracking_id,
                outcomes=finding.outcomes,
                sent_at=datetime.now(UTC),
            )
            for entry in batch.entries:  # the generated documents, as the sender records them
                documents = self._documents_as_sent(entry)
                if documents:
                    self.ledger.update(entry.key, documents=documents)
            self.registry.record(
                [finding.parent_tracking_id, *(o.tracking_id for o in finding.outcomes)]
            )
            self.stats.sent += sum(o.status == SENT for o in finding.outcomes)
            self.stats.failed += sum(o.status == FAILED for o in finding.outcomes)
            self.reporter.note(f"{len(batch.entries)} recipient(s): {finding.reason}")
            return True, finding.parent_tracking_id
        if finding.verdict is Verdict.ABSENT:
            self.ledger.not_sent(request_id, batch.keys, f"{cause or 'in doubt'}; {finding.reason}")
            self.reporter.note(f"{len(batch.entries)} recipient(s) proven not sent; sending again")
            return False, None
        self._stays_in_doubt(batch, finding.reason)
        if finding.lookup_failed:
            raise errors.WorkPending(
                f"{len(batch.entries)} recipient(s) in doubt could not be looked up "
                f"({finding.reason}); run again to look them up before anything else is sent"
            )
        return True, None

    def _stays_in_doubt(self, batch: Batch, reason: str) -> None:
        """Count the rows, say why, and keep the reason in their `error_details`."""
        self.stats.in_doubt += len(batch.entries)
        self.reporter.note(f"{len(batch.entries)} recipient(s) stay in doubt: {reason}")
        held = self.ledger.keys_with_status(IN_DOUBT).filter(pl.col("key").is_in(batch.keys))
        for key, details in held.select("key", "error_details").iter_rows():
            # A row its send's answer left out keeps saying so: the next look-up reads it.
            keep = MISSING_FROM_ANSWER if str(details or "").startswith(MISSING_FROM_ANSWER) else ""
            why = f"{keep}: {reason}" if keep else reason
            if details != why:
                self.ledger.update(key, error_details=why)

    def _look_up(self, probe: Probe, record: dict[str, Any], parent: str | None) -> Finding:
        if parent is not None:
            return reconcile_in_send(self.api, probe, tracking_id=parent)
        at, until = window_of(record)
        now = self.clock()
        if until is not None:
            until = min(until, now)  # nothing seen now can have been processed later
        ownership = Ownership(
            at=at,
            until=until,
            clock=self.server_clock,
            registry=self.registry,
            prompt=at is not None and now <= (window_of(record)[1] or at) + TOLERANCE,
        )
        return self.channel.look_up(self.api, probe, self._known_ids(), ownership)

    def _recorded(self, rows: pl.DataFrame, entries: Sequence[Entry]) -> dict[str, Any] | None:
        """What the intent recorded for its look-up; for an older row, today's render if same."""
        if "probe" in rows.columns:
            recorded = decode_json_cell(rows["probe"][0])
            if isinstance(recorded, dict):
                return recorded
        key = entries[0].key
        try:
            message = next(iter(render_keys(self.job, self.frame, [key])), None)
        except errors.InputError:
            return None
        if message is None or message.content_hash != entries[0].content_hash:
            return None  # today's render is not what was sent: it proves nothing
        # The intent stamped updated_at; an older lmbatch wrote nothing on the row after it.
        at = rows["updated_at"][0] if "updated_at" in rows.columns else None
        record = probe_record(
            self.channel.look_up_fields(message.content),
            [e.address or "" for e in entries],
            to_utc(at) if isinstance(at, datetime) else self.clock(),
            request_span(self.job),
        )
        if not isinstance(at, datetime):
            record["at"] = None  # unknown: its time can prove nothing
        return record

    def _documents_as_sent(self, entry: Entry) -> Any:
        """The row's generated documents (name, SHA-256) if today's render is what was sent."""
        try:
            message = next(iter(render_keys(self.job, self.frame, [entry.key])), None)
        except errors.InputError:
            return None
        if message is None or message.content_hash != entry.content_hash:
            return None
        return message.content.get(DOCUMENTS)

    def _known_ids(self) -> set[str]:
        whole = self.ledger.frame("tracking_id", "parent_tracking_id")
        ids = pl.concat([whole["tracking_id"], whole["parent_tracking_id"]]).drop_nulls()
        return set(ids.to_list())
