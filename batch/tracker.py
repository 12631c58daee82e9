"""One tracking pass over a campaign's ledger: which rows to look at, and the cheapest calls.

Rows looked at: every row recorded as sent (any status except pending, in_doubt and
skipped) that has a tracking id and is not final yet. Each channel plans its own calls
(`Channel.track`, batch.channels) with the tools here: counted calls, a listing used only
when it can save at least two look-ups, writes made only when a field changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from batch import errors
from batch.answers import UNTRACKED, Row, json_object, ledger_status, utc
from batch.channels import channel_for
from batch.client import LegallyMailClient
from batch.jobmodel import Job
from batch.ledger import Ledger
from batch.reconcile import LISTING_LIMIT

DEFAULT_DEADLINE = timedelta(days=14)


@dataclass
class TrackSummary:
    """What tracking found: statuses, API calls spent, rows still open; live while watching."""

    campaign: str
    counts: dict[str, int] = field(default_factory=dict)  # ledger rows per status
    calls: dict[str, int] = field(default_factory=dict)  # API calls per endpoint
    open: int = 0  # rows sent and not final yet
    final: int = 0  # rows final
    passes: int = 0
    updated: int = 0  # ledger writes made
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None  # why --watch ended early (interrupted)
    next_pass_at: datetime | None = None

    @property
    def calls_total(self) -> int:
        """API calls made, all endpoints together."""
        return sum(self.calls.values())

    @property
    def exit_code(self) -> int:
        """0, or 3 when interrupted before the watch was over."""
        return errors.EXIT_PENDING if self.stopped else errors.EXIT_OK


class Tracker:
    """One campaign's tracking passes over an open ledger (a channel's TrackContext)."""

    def __init__(
        self,
        job: Job,
        api: LegallyMailClient,
        ledger: Ledger,
        summary: TrackSummary,
        clock: Callable[[], datetime],
        until: datetime | None,
        *,
        on_pass: Callable[[int], None] | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        # Progress hooks (batch.track's display): a pass's planned look-ups, each call made.
        self.on_pass, self.on_call = on_pass, on_call
        self.channel = channel_for(job.spec)
        self.api, self.ledger, self.summary, self.clock = api, ledger, summary, clock
        self.until = utc(until) if until is not None else None
        self.now = clock()

    # -- a pass ---------------------------------------------------------------------------

    def one_pass(self) -> None:
        """Look up every open row once, the cheapest way, and record what changed."""
        self.ledger.checkpoint()  # folds what a concurrent `run` wrote since we opened
        frame = self.ledger.frame()
        self.now = utc(self.clock())
        self.summary.passes += 1
        sent = frame.filter(~pl.col("status").is_in(list(UNTRACKED)))
        open_rows: list[Row] = []
        for row in sent.iter_rows(named=True):
            data = json_object(row.get("channel_data"))
            if self.channel.is_final(row["status"], data):
                if row.get("final") is not True:  # settled at send time (rejected address)
                    self.write(row, {"final": True})
            elif row.get("tracking_id") and not self._settled(row):
                open_rows.append(row)
        if self.on_pass is not None:
            self.on_pass(len(_groups(open_rows)))
        if open_rows:
            self.channel.track(self, open_rows, sent)
        self.recount()

    def recount(self) -> None:
        """Refresh the summary's counts from the ledger."""
        frame = self.ledger.frame()
        self.summary.counts = {
            str(k): int(n) for k, n in frame.group_by("status").len().sort("status").iter_rows()
        }
        final = opened = 0
        for row in frame.iter_rows(named=True):
            if row["status"] in UNTRACKED:
                continue
            if row.get("final") is True and self._fresh_final(row):
                final += 1
            elif row.get("tracking_id"):
                opened += 1
        self.summary.final, self.summary.open = final, opened

    def _settled(self, row: Row) -> bool:
        """Closed by its deadline at a look made after its latest send."""
        return row.get("final") is True and self._fresh_final(row)

    def _fresh_final(self, row: Row) -> bool:
        data = json_object(row.get("channel_data"))
        if self.channel.is_final(row["status"], data):
            return True
        looked, sent_at = row.get("tracked_at"), row.get("sent_at")
        return looked is not None and (sent_at is None or looked >= sent_at)

    def _deadline(self, row: Row) -> datetime:
        if self.until is not None:
            return self.until
        start = row.get("sent_at") or row.get("queued_at") or self.now
        return utc(start) + DEFAULT_DEADLINE

    # -- what a channel's pass uses (TrackContext) ------------------------------------------

    def write(self, row: Row, fields: Row) -> None:
        """Record `fields` where they differ from the row, and whether the row is now final."""
        status = fields.get("status", row["status"])
        data = json_object(fields.get("channel_data", row.get("channel_data")))
        final = self.channel.is_final(status, data) or self.now >= self._deadline(row)
        fields = {**fields, "final": final}
        changed = {k: v for k, v in fields.items() if v is not None and row.get(k) != v}
        if not changed:
            return
        changed["tracked_at"] = self.now
        self.ledger.update(row["key"], **changed)
        self.summary.updated += 1

    def call(self, endpoint: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One API call, counted; a refused look-up is reported and the pass goes on."""
        self.summary.calls[endpoint] = self.summary.calls.get(endpoint, 0) + 1
        try:
            return fn(*args)
        except (errors.StopRun, errors.WorkPending):
            raise
        except errors.ApiError as err:
            self.summary.errors.append(str(err))
            return None
        finally:
            if self.on_call is not None:
                self.on_call()

    def error(self, message: str) -> None:
        """Report a problem found in an answer; the pass goes on."""
        self.summary.errors.append(message)

    def changed_groups(
        self,
        open_rows: list[Row],
        sent: pl.DataFrame,
        endpoint: str,
        listing: Callable[[int], list[Row]],
        id_field: str,
    ) -> Iterator[tuple[str, list[Row]]]:
        """Open rows by parent send, newest first, minus those a listing proves unchanged.

        One listing call when at least two open sends are among the campaign's 25 newest; a
        listed send whose status equals what every open recipient of it holds (and is not
        final) needs nothing more.
        """
        groups = _groups(open_rows)
        listed: dict[str, Row] = {}
        if _worth_listing(groups, sent):
            entries = self.call(endpoint, listing, LISTING_LIMIT) or []
            listed = {str(e.get(id_field)): e for e in entries}
        for parent, rows in groups.items():
            if not self._unchanged(listed.get(parent), rows):
                yield parent, rows

    def _unchanged(self, entry: Row | None, rows: list[Row]) -> bool:
        """Whether a listing entry proves `rows` unchanged (then they need no detail call)."""
        raw = entry.get("status") if entry is not None else None
        if not isinstance(raw, str) or self.channel.is_final(raw):
            return False
        # A group's listing status is overall and carries no times nor certificates: it can
        # only prove that nothing changed; any change is worth a detail call, once.
        status, _ = ledger_status(raw)
        if any(row["status"] != status for row in rows):
            return False
        for row in rows:
            self.write(row, {})  # a look all the same: the deadline may settle it
        return True


def _groups(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Open rows by the id one look-up covers (the parent send), newest send first."""
    out: dict[str, list[Row]] = {}
    ordered = sorted(rows, key=lambda r: r.get("sent_at") or datetime.min.replace(tzinfo=UTC))
    for row in reversed(ordered):
        parent = row.get("parent_tracking_id") or row["tracking_id"]
        out.setdefault(str(parent), []).append(row)
    return out


def _worth_listing(groups: dict[str, list[Row]], sent: pl.DataFrame) -> bool:
    """A listing pays off when it can cover at least two look-ups: open among the newest 25."""
    if len(groups) < 2:
        return False
    parents = (
        sent.filter(pl.col("sent_at").is_not_null())
        .with_columns(pl.coalesce("parent_tracking_id", "tracking_id").alias("__parent"))
        .group_by("__parent")
        .agg(pl.col("sent_at").max())
        .sort("sent_at", descending=True)
        .head(LISTING_LIMIT)["__parent"]
        .to_list()
    )
    return sum(1 for p in parents if p in groups) >= 2
