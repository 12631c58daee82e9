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

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from rich.console import Console

from batch import errors
from batch.client import LegallyMailClient
from batch.jobfile import Job
from batch.ledger import IN_DOUBT, PENDING, SENT, SKIPPED, Ledger, utcnow

FINAL_STATUSES: dict[str, frozenset[str]] = {
    "email": frozenset({"read", "bounced", "failed"}),
    "sms": frozenset({"delivered", "failed"}),
    "signature": frozenset({"signed", "declined", "expired", "cancelled", "canceled", "rejected"}),
}
UNTRACKED = frozenset({PENDING, IN_DOUBT, SKIPPED})  # never sent (or not known to be)
DEFAULT_DEADLINE = timedelta(days=14)
DEFAULT_INTERVAL = 300.0  # seconds between passes of --watch: statuses move on human time
LISTING = 25  # the API's max_limit for /api/emails and /api/signatures
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

Row = dict[str, Any]


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


Reporter = Callable[[TrackSummary], None]


def is_final(channel: str, status: str | None, data: Row | None = None) -> bool:
    """Whether `status` ends tracking for `channel` (see the module docstring)."""
    if status is None or status not in FINAL_STATUSES.get(channel, frozenset()):
        return False
    if channel == "sms" and status == "delivered":
        # The certificate can come after the delivery report; it is what the user needs.
        return bool((data or {}).get("has_certificate", True))
    return True


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
) -> TrackSummary:
    """Bring the ledger's statuses up to date: one pass, or with `watch` until all are final."""
    stop = stop or threading.Event()
    summary = TrackSummary(job.campaign)
    folder = job.output_dir
    if not (folder / "ledger.parquet").exists() and not (folder / "journal.jsonl").exists():
        raise errors.LedgerError(
            f"{folder}: no ledger here: nothing was sent yet",
            hint="run `lmbatch run` first",
        )
    own = client is None
    api = client if client is not None else _build_client(job, stop)
    wait = sleep or (lambda seconds: _stop_wait(stop, seconds))
    try:
        with Ledger.open(folder, clock=clock) as ledger:
            tracker = _Tracker(job, api, ledger, summary, clock, until)
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
        if own:
            api.close()
    if reporter is not None:
        reporter(summary)
    return summary


def console_reporter(console: Console) -> Reporter:
    """A progress display for `lmbatch track --watch`: one line per pass."""

    def show(summary: TrackSummary) -> None:
        done = summary.final
        total = summary.final + summary.open
        shown = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
        line = f"pass {summary.passes}: {done}/{total} final ({shown}); {summary.calls_total} calls"
        if summary.next_pass_at is not None:
            line += f"; next look at {summary.next_pass_at:%Y-%m-%d %H:%M:%S} UTC"
        console.print(line)

    return show


def _build_client(job: Job, stop: threading.Event) -> LegallyMailClient:
    from batch.client import build_client_from_env as build_client

    return build_client(job, stop=stop)


def _stop_wait(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(0.0, seconds)):
        raise errors.WorkPending("interrupted while waiting for the next pass")


class _Tracker:
    """One campaign's tracking passes over an open ledger."""

    def __init__(
        self,
        job: Job,
        api: LegallyMailClient,
        ledger: Ledger,
        summary: TrackSummary,
        clock: Callable[[], datetime],
        until: datetime | None,
    ) -> None:
        self.channel = job.spec.channel
        self.api, self.ledger, self.summary, self.clock = api, ledger, summary, clock
        self.until = _utc(until) if until is not None else None
        self.now = clock()

    # -- a pass ---------------------------------------------------------------------------

    def one_pass(self) -> None:
        """Look up every open row once, the cheapest way, and record what changed."""
        self.ledger.checkpoint()  # folds what a concurrent `run` wrote since we opened
        frame = self.ledger.frame()
        self.now = _utc(self.clock())
        self.summary.passes += 1
        sent = frame.filter(~pl.col("status").is_in(list(UNTRACKED)))
        open_rows: list[Row] = []
        for row in sent.iter_rows(named=True):
            data = _json(row.get("channel_data"))
            if is_final(self.channel, row["status"], data):
                if row.get("final") is not True:  # settled at send time (rejected address)
                    self._write(row, {"final": True})
            elif row.get("tracking_id") and not self._settled(row):
                open_rows.append(row)
        if open_rows:
            if self.channel == "email":
                self._emails(open_rows, sent)
            elif self.channel == "sms":
                self._sms(open_rows)
            else:
                self._signatures(open_rows, sent)
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
        data = _json(row.get("channel_data"))
        if is_final(self.channel, row["status"], data):
            return True
        looked, sent_at = row.get("tracked_at"), row.get("sent_at")
        return looked is not None and (sent_at is None or looked >= sent_at)

    def _deadline(self, row: Row) -> datetime:
        if self.until is not None:
            return self.until
        start = row.get("sent_at") or row.get("queued_at") or self.now
        return _utc(start) + DEFAULT_DEADLINE

    def _write(self, row: Row, fields: Row) -> None:
        """Record `fields` where they differ from the row, and whether the row is now final."""
        status = fields.get("status", row["status"])
        data = _json(fields.get("channel_data", row.get("channel_data")))
        final = is_final(self.channel, status, data) or self.now >= self._deadline(row)
        fields = {**fields, "final": final}
        changed = {k: v for k, v in fields.items() if v is not None and row.get(k) != v}
        if not changed:
            return
        changed["tracked_at"] = self.now
        self.ledger.update(row["key"], **changed)
        self.summary.updated += 1

    def _call(self, endpoint: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One API call, counted; a refused look-up is reported and the pass goes on."""
        self.summary.calls[endpoint] = self.summary.calls.get(endpoint, 0) + 1
        try:
            return fn(*args)
        except (errors.StopRun, errors.WorkPending):
            raise
        except errors.ApiError as err:
            self.summary.errors.append(str(err))
            return None

    # -- e-mail ----------------------------------------------------------------------------

    def _emails(self, open_rows: list[Row], sent: pl.DataFrame) -> None:
        groups = _groups(open_rows)
        listed: dict[str, Row] = {}
        if _worth_listing(groups, sent):
            listing = self._call("GET /api/emails", self.api.list_emails, LISTING) or []
            listed = {str(e.get("tracking_id")): e for e in listing}
        for parent, rows in groups.items():
            if self._unchanged(listed.get(parent), rows):
                continue
            detail = self._call("GET /api/email", self.api.email, parent)
            if detail is not None:
                self._email_from_detail(detail, rows)

    def _unchanged(self, entry: Row | None, rows: list[Row]) -> bool:
        """Whether a listing entry proves `rows` unchanged (then they need no detail call)."""
        raw = entry.get("status") if entry is not None else None
        if not isinstance(raw, str) or is_final(self.channel, raw):
            return False
        # A group's listing status is overall and carries no times nor certificates: it can
        # only prove that nothing changed; any change is worth a detail call, once.
        status, _ = _ledger_status(raw)
        if any(row["status"] != status for row in rows):
            return False
        for row in rows:
            self._write(row, {})  # a look all the same: the deadline may settle it
        return True

    def _email_from_detail(self, detail: Row, rows: list[Row]) -> None:
        recipients = [r for r in detail.get("recipients") or [] if isinstance(r, dict)]
        by_id = {str(r.get("tracking_id")): r for r in recipients if r.get("tracking_id")}
        by_address = {str(r.get("email") or "").strip().lower(): r for r in recipients}
        for row in rows:
            found = by_id.get(str(row["tracking_id"])) or by_address.get(
                str(row.get("email") or "").strip().lower()
            )
            if found is None and not recipients:
                found = detail  # a single send described without its recipients list
            if found is None:
                self.summary.errors.append(
                    f"key {row['key']}: not among the recipients of send "
                    f"{detail.get('tracking_id')}"
                )
                continue
            self._write(row, _email_fields(found, detail, row))

    # -- SMS -------------------------------------------------------------------------------

    def _sms(self, open_rows: list[Row]) -> None:
        for row in open_rows:
            data = self._call("GET /api/sms", self.api.sms, str(row["tracking_id"]))
            if data is None:
                continue
            status, extra = _ledger_status(str(data.get("status") or row["status"]))
            url = data.get("download_certificate_url")
            certificates = []
            if url:
                certificates.append(
                    _certificate("sms", url, None, data.get("ts_confirmed_at"), None, None)
                )
            extra |= {
                "failed_at": data.get("failed_at"),
                "ts_confirmed_at": data.get("ts_confirmed_at"),
                "credits": data.get("credits"),
                "has_certificate": bool(url),
            }
            fields: Row = {
                "status": status,
                "delivered_at": _time(data.get("delivered_at")),
                "channel_data": _merged(row, extra),
                "certificates": _dumps(certificates) if certificates else None,
            }
            if status == "failed":
                fields["error_status"] = "failed"
            self._write(row, fields)

    # -- signatures ------------------------------------------------------------------------

    def _signatures(self, open_rows: list[Row], sent: pl.DataFrame) -> None:
        groups = _groups(open_rows)
        listed: dict[str, Row] = {}
        if _worth_listing(groups, sent):
            listing = self._call("GET /api/signatures", self.api.signatures, LISTING) or []
            listed = {str(e.get("uuid")): e for e in listing}
        for uid, rows in groups.items():
            if self._unchanged(listed.get(uid), rows):
                continue
            detail = self._call("GET /api/signature", self.api.signature, uid)
            if detail is not None:
                for row in rows:
                    self._write(row, _signature_fields(detail, row))


# -- mapping API answers to ledger fields ----------------------------------------------------


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
        .head(LISTING)["__parent"]
        .to_list()
    )
    return sum(1 for p in parents if p in groups) >= 2


def _ledger_status(raw: str) -> tuple[str, Row]:
    """The status to store, and channel_data keeping the API's word when it had to change."""
    if raw in UNTRACKED:
        return SENT, {"api_status": raw}
    return raw, {}


def _email_fields(recipient: Row, parent: Row, row: Row) -> Row:
    raw = str(recipient.get("status") or row["status"])
    status, data = _ledger_status(raw)
    fields: Row = {
        "status": status,
        "delivered_at": _time(recipient.get("delivered_at")),
        "read_at": _time(recipient.get("read_at")),
        "error_details": recipient.get("error_details") or None,
    }
    error_status = recipient.get("error_status")
    if not error_status and status in ("bounced", "failed"):
        error_status = parent.get("error_status") or status
    if error_status:
        fields["error_status"] = str(error_status)
    certificates = [
        _certificate(
            str(c.get("certificate_type") or "certificate"),
            c.get("pdf_download_url"),
            c.get("file_hash"),
            c.get("confirmed_at"),
            c.get("has_tsr"),
            c.get("has_tsq"),
        )
        for c in recipient.get("certificates") or []
        if isinstance(c, dict)
    ]
    if certificates:
        fields["certificates"] = _dumps(certificates)
    if data:
        fields["channel_data"] = _merged(row, data)
    return fields


def _signature_fields(detail: Row, row: Row) -> Row:
    raw = str(detail.get("status") or row["status"])
    status, data = _ledger_status(raw)
    signers = [
        {
            "name": s.get("signer_name"),
            "email": s.get("signer_email"),
            "phone": s.get("signer_phone"),
            "status": s.get("status"),
            "signed_at": s.get("signed_at"),
        }
        for s in detail.get("signers") or []
        if isinstance(s, dict)
    ]
    data |= {
        "signed_at": detail.get("signed_at"),
        "expires_at": detail.get("expires_at"),
        "document_hash": detail.get("document_hash"),
        "signed_document_hash": detail.get("signed_document_hash"),
        "download_acta_url": detail.get("download_acta_url"),
        "download_original_url": detail.get("download_original_url"),
        "signers": signers,
    }
    certificates = []
    if detail.get("download_acta_url"):
        # The acta is the signed record: the API's signed_document_hash is its SHA-256.
        certificates.append(
            _certificate(
                "acta",
                detail["download_acta_url"],
                detail.get("signed_document_hash"),
                detail.get("signed_at"),
                None,
                None,
            )
        )
    if detail.get("download_original_url"):
        certificates.append(
            _certificate(
                "original",
                detail["download_original_url"],
                detail.get("document_hash"),
                detail.get("created_at"),
                None,
                None,
            )
        )
    fields: Row = {"status": status, "channel_data": _merged(row, data)}
    if certificates:
        fields["certificates"] = _dumps(certificates)
    if status in FINAL_STATUSES["signature"] and status != "signed":
        fields["error_status"] = status
    return fields


def _certificate(
    kind: str, url: Any, file_hash: Any, confirmed_at: Any, has_tsr: Any, has_tsq: Any
) -> Row:
    """One certificate's metadata, the same shape for every channel."""
    return {
        "type": kind,
        "file_hash": str(file_hash).lower() if file_hash else None,
        "confirmed_at": confirmed_at,
        "has_tsr": has_tsr,
        "has_tsq": has_tsq,
        "url": str(url) if url else None,
    }


def _merged(row: Row, extra: Row) -> str:
    """The row's channel_data with `extra` laid over it, as stable JSON."""
    return _dumps(_json(row.get("channel_data")) | extra)


def _json(value: Any) -> Row:
    if not value:
        return {}
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _dumps(value: Any) -> str:
    # Sorted keys: an unchanged answer serialises identically, so no ledger write is made.
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _time(value: Any) -> datetime | None:
    """An API time ("YYYY-MM-DD HH:MM:SS", no zone: taken as UTC), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.strptime(text, _TIME_FORMAT)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return _utc(parsed)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
