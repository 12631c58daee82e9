"""Settling sends in doubt: look each up (the channel's rule, batch.reconcile) and record it.

A send in doubt is never re-sent blindly. Found: its outcomes are recorded as sent. Proven
absent: it goes back to pending and is sent again. Unknown: it stays in doubt; when the
look-up itself failed the run stops, because sending on would push the send out of the
API's 25-item listing, where no later run could find it or prove it absent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from batch import errors
from batch.anchors import anchor_in
from batch.attachments import DOCUMENTS
from batch.channels import Channel
from batch.client import LegallyMailClient
from batch.jobmodel import Job
from batch.ledger import FAILED, IN_DOUBT, SENT, Entry, Ledger
from batch.plan import Batch
from batch.progress import Reporter
from batch.reconcile import MISSING_FROM_ANSWER, Finding, Probe, Verdict, reconcile_in_send
from batch.render import render_keys
from batch.stats import RunStats


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
    ) -> None:
        self.job, self.channel, self.api, self.ledger, self.frame = job, channel, api, ledger, frame
        self.stats, self.reporter = stats, reporter

    def earlier_runs(self) -> str | None:
        """Settle every send left in doubt by an earlier run; the newest send found, if any."""
        doubtful = self.ledger.keys_with_status(IN_DOUBT)
        newest: str | None = None
        if doubtful.is_empty():
            return newest
        for request_id, rows in doubtful.group_by("request_id", maintain_order=True):
            entries = [
                Entry(key=k, address=e, name=n or "", content_hash=h)
                for k, e, n, h in rows.select("key", "address", "name", "content_hash").iter_rows()
            ]
            # The newest send known when the intent was written travels in its request id.
            anchor = anchor_in(str(request_id[0]))
            content = self._content(entries[0].key)
            # Part of a send we recorded, yet not named in its answer: its detail says.
            missing = rows.filter(pl.col("error_details") == MISSING_FROM_ANSWER)
            parents = missing["parent_tracking_id"].drop_nulls()
            parent = str(parents[0]) if parents.len() == rows.height else None
            batch = Batch(tuple(entries))
            _, found = self.settle(str(request_id[0]), batch, content, anchor, None, parent)
            newest = found or newest
        return newest

    def settle(
        self,
        request_id: str,
        batch: Batch,
        content: dict[str, Any] | None,
        anchor: str | None,
        cause: errors.ApiError | None,
        parent: str | None = None,
    ) -> tuple[bool, str | None]:
        """(False when it must be sent again, the send's id when it was found)."""
        finding = self._look_up(batch, content, anchor, parent)
        if finding.verdict is Verdict.FOUND:
            self.ledger.sent(
                request_id,
                parent_tracking_id=finding.parent_tracking_id,
                outcomes=finding.outcomes,
                sent_at=datetime.now(UTC),
            )
            if content is not None and content.get(DOCUMENTS):  # as the sender records them
                for entry in batch.entries:
                    self.ledger.update(entry.key, documents=content[DOCUMENTS])
            self.stats.sent += sum(o.status == SENT for o in finding.outcomes)
            self.stats.failed += sum(o.status == FAILED for o in finding.outcomes)
            self.reporter.note(f"{len(batch.entries)} recipient(s): {finding.reason}")
            return True, finding.parent_tracking_id
        if finding.verdict is Verdict.ABSENT:
            self.ledger.not_sent(request_id, batch.keys, f"{cause or 'in doubt'}; {finding.reason}")
            self.reporter.note(f"{len(batch.entries)} recipient(s) proven not sent; sending again")
            return False, None
        self.stats.in_doubt += len(batch.entries)
        self.reporter.note(f"{len(batch.entries)} recipient(s) stay in doubt: {finding.reason}")
        if finding.lookup_failed:
            raise errors.WorkPending(
                f"{len(batch.entries)} recipient(s) in doubt could not be looked up "
                f"({finding.reason}); run again to look them up before anything else is sent"
            )
        return True, None

    def _look_up(
        self,
        batch: Batch,
        content: dict[str, Any] | None,
        anchor: str | None,
        parent: str | None = None,
    ) -> Finding:
        addresses = tuple(e.address or "" for e in batch.entries)
        if parent is not None:
            probe = Probe(addresses, tuple(batch.keys), "", None)
            return reconcile_in_send(self.api, probe, tracking_id=parent)
        if content is None:
            return Finding(Verdict.UNKNOWN, reason="the row is no longer in the dataset")
        probe = Probe(
            addresses=addresses,
            keys=tuple(batch.keys),
            subject=str(content.get("subject", "")),
            anchor=anchor,
        )
        return self.channel.look_up(self.api, probe, content, self._known_ids())

    def _known_ids(self) -> set[str]:
        whole = self.ledger.frame("tracking_id", "parent_tracking_id")
        ids = pl.concat([whole["tracking_id"], whole["parent_tracking_id"]]).drop_nulls()
        return set(ids.to_list())

    def _content(self, key: str) -> dict[str, Any] | None:
        try:
            message = next(iter(render_keys(self.job, self.frame, [key])), None)
        except errors.InputError:
            return None
        return message.content if message else None
