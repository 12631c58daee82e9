"""The campaign report's figures, gathered from the ledger once for every view of them.

`campaign_report` reads the ledger and asks the job's channel (batch.channels) for what
differs: the rate, the times it keeps, what the campaign sends, credits. Times stay aware
UTC here; `local_time` shows one in the campaign's zone (`Job.tz`), saying which. The
terminal views are batch.report's, the page batch.report_html's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from batch.answers import UNTRACKED, json_object, utc
from batch.attachments import recorded_documents
from batch.certificates import FOLDER, safe_name
from batch.channels import CHANNELS, channel_for
from batch.channels.base import Evidence
from batch.documents import FOLDER as DOCUMENTS
from batch.jobmodel import Job
from batch.ledger import (
    FAILED,
    IN_DOUBT,
    JOURNAL_NAME,
    PARQUET_NAME,
    PENDING,
    SENT,
    SKIPPED,
    read_ledger,
)


def ledger_frame(job: Job) -> pl.DataFrame:
    """The campaign's ledger, or an empty frame when nothing was recorded yet."""
    folder = job.output_dir
    if not (folder / PARQUET_NAME).exists() and not (folder / JOURNAL_NAME).exists():
        return pl.DataFrame()
    return read_ledger(folder)


# Final statuses that are not success: failed, bounced, declined, rejected, expired, cancelled.
PROBLEMS = tuple(
    sorted({s for c in CHANNELS.values() for s in c.final_statuses - set(c.done_statuses)})
)
# Ended on purpose (`lmbatch cancel`, or withdrawn in the LegallyMail panel).
_ENDED = ("cancelled", "canceled", "withdrawn")
# The not-reached list's order: what needs attention first.
_ATTENTION = {**{s: 0 for s in PROBLEMS}, IN_DOUBT: 1, SKIPPED: 2, SENT: 3, PENDING: 4}


@dataclass(frozen=True)
class CertificateFile:
    """One certificate on disk, with the SHA-256 of its bytes and the API's word on them."""

    kind: str
    path: Path  # absolute
    sha256: str
    api_sha256: str | None  # the hash the API reported, when it did

    @property
    def matches(self) -> bool | None:
        """Whether the file is the one the API certified (None: the API gave no hash)."""
        return None if self.api_sha256 is None else self.api_sha256 == self.sha256


@dataclass(frozen=True)
class Recipient:
    """One ledger row as the report shows it."""

    key: str
    name: str
    address: str
    status: str
    sent_at: datetime | None  # aware UTC
    evidence: Evidence
    certificates: list[CertificateFile]
    reason: str | None  # why it was not reached; None when it was, or is on its way
    # The generated documents as sent (kind "document"): the ledger's SHA-256 vs the file's.
    documents: list[CertificateFile] = field(default_factory=list)


@dataclass
class CampaignReport:
    """Everything the terminal summary and the HTML page show."""

    campaign: str
    channel: str
    counts: dict[str, int]
    sent: int  # recipients the API accepted (a send time is recorded)
    rate_label: str
    rate: float | None  # None before anything was sent or tracked
    problems: list[dict[str, Any]]  # key, email, status, reason: final and not success
    requests: list[datetime]  # start of each send request
    limit: int
    window: float
    certificates: list[tuple[str, str, list[tuple[str, str]]]]  # key, status, [(type, path)]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tz: tzinfo = UTC
    job_file: Path = Path()
    facts: list[tuple[str, str]] = field(default_factory=list)  # what the channel sends
    evidence_times: tuple[str, ...] = ()  # the channel's times after sent_at
    recipients: list[Recipient] = field(default_factory=list)
    not_reached: list[Recipient] = field(default_factory=list)
    tracked: bool = False  # `lmbatch track` has looked at least once
    credits: int | None = None  # None: the API does not report them for this channel
    credit_unit: str = ""
    certificates_folder: Path = Path()

    @property
    def first_send(self) -> datetime | None:
        """The first send request's time."""
        return self.requests[0] if self.requests else None

    @property
    def last_send(self) -> datetime | None:
        """The last send request's time."""
        return self.requests[-1] if self.requests else None

    @property
    def tz_name(self) -> str:
        """The zone's IANA name (e.g. Europe/Madrid)."""
        return getattr(self.tz, "key", None) or str(self.tz)

    def local(self, at: datetime | None) -> str:
        """`at` as people here read it: `2026-03-02 10:00:00 CET`."""
        return local_time(at, self.tz)


def local_time(at: datetime | None, tz: tzinfo) -> str:
    """An instant in `tz`, saying which (`2026-03-02 10:00:00 CET`); "" for None."""
    if at is None:
        return ""
    return utc(at).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def campaign_report(job: Job, *, now: datetime | None = None) -> CampaignReport:
    """Gather the report's figures from the ledger (`now`: the "generated at" time)."""
    ledger = ledger_frame(job)
    channel = channel_for(job.spec)
    tz: ZoneInfo = job.tz
    counts: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    requests: list[datetime] = []
    certificates: list[tuple[str, str, list[tuple[str, str]]]] = []
    recipients: list[Recipient] = []
    sent = 0
    tracked = False
    credits: int | None = 0
    if ledger.height:
        counts = {str(k): int(n) for k, n in ledger.group_by("status").len().sort("status").rows()}
        sent = ledger.filter(pl.col("sent_at").is_not_null()).height
        tracked = _tracked(ledger)
        for row in ledger.filter(pl.col("status").is_in(list(PROBLEMS))).iter_rows(named=True):
            problems.append(
                {
                    "key": row["key"],
                    "email": row.get("address") or "",
                    "status": row["status"],
                    "reason": _failure(row),
                    "error_status": row.get("error_status") or "",
                }
            )
        requests = [
            utc(at)
            for at in ledger.filter(pl.col("sent_at").is_not_null())
            .group_by(pl.coalesce("request_id", "parent_tracking_id", "key"))
            .agg(pl.col("sent_at").min())
            .sort("sent_at")["sent_at"]
            .to_list()
        ]
        for row in ledger.sort("key").iter_rows(named=True):
            evidence = channel.evidence(row)
            if row.get("sent_at") is not None:
                credits = (
                    None
                    if credits is None or evidence.credits is None
                    else (credits + evidence.credits)
                )
            files = _certificate_files(job.output_dir, row)
            if files:
                found = [(f.kind, f.path.relative_to(job.output_dir).as_posix()) for f in files]
                certificates.append((str(row["key"]), str(row["status"]), found))
            recipients.append(
                Recipient(
                    key=str(row["key"]),
                    name=str(row.get("name") or ""),
                    address=str(row.get("address") or ""),
                    status=str(row["status"]),
                    sent_at=utc(row["sent_at"]) if row.get("sent_at") else None,
                    evidence=evidence,
                    certificates=files,
                    reason=_not_reached(row, evidence, tz, channel.in_doubt_advice),
                    documents=_document_files(job.output_dir, row),
                )
            )
    done_count = sum(counts.get(s, 0) for s in channel.done_statuses)
    not_reached = sorted(
        (r for r in recipients if r.reason is not None),
        key=lambda r: (_ATTENTION.get(r.status, 5), r.status, r.key),
    )
    return CampaignReport(
        campaign=job.campaign,
        channel=channel.name,
        counts=counts,
        sent=sent,
        rate_label=channel.rate_label,
        rate=done_count / sent if sent and tracked else None,
        problems=problems,
        requests=requests,
        limit=job.spec.limits.requests_per_window,
        window=job.spec.limits.window_seconds,
        certificates=certificates,
        generated_at=utc(now) if now is not None else datetime.now(UTC),
        tz=tz,
        job_file=job.path.resolve(),
        facts=channel.report_facts(job.spec),
        evidence_times=channel.evidence_times,
        recipients=recipients,
        not_reached=not_reached,
        tracked=tracked,
        credits=credits if sent else 0,
        credit_unit=channel.credit_unit,
        certificates_folder=job.output_dir / FOLDER,
    )


def _tracked(ledger: pl.DataFrame) -> bool:
    """Whether tracking ever looked: a look-up time, or a status only tracking can give."""
    if "tracked_at" in ledger.columns and ledger["tracked_at"].is_not_null().any():
        return True
    beyond = UNTRACKED | {SENT, FAILED}
    return bool(ledger.filter(~pl.col("status").is_in(list(beyond))).height)


def _failure(row: dict[str, Any]) -> str:
    return str(row.get("error_details") or row.get("error_status") or row["status"])


def _not_reached(row: dict[str, Any], evidence: Evidence, tz: tzinfo, advice: str) -> str | None:
    """Why the row's recipient was not reached, or None when they were (or it is on its way)."""
    status = str(row["status"])
    if status in PROBLEMS or status in _ENDED or status == SKIPPED:
        return _failure(row)
    if status == FAILED:  # refused at send time
        return _failure(row)
    if status == IN_DOUBT:
        lost = row.get("error_details") or "the send's answer was lost"
        return f"in doubt ({lost}): {advice}"
    if status == PENDING:
        return "not sent yet"
    if evidence.waiting is not None:
        expires = evidence.times.get("expires_at")
        return evidence.waiting + (f"; expires {local_time(expires, tz)}" if expires else "")
    return None


def _certificate_files(out: Path, row: dict[str, Any]) -> list[CertificateFile]:
    """The row's certificates that are on disk, hashed; the API's hash by type alongside."""
    api = {
        str(c.get("type")): str(c["file_hash"]).lower()
        for c in _json_list(row.get("certificates"))
        if c.get("file_hash")
    }
    files = []
    for kind, relative in sorted(json_object(row.get("certificate_paths")).items()):
        path = (out / str(relative)).resolve()
        if path.is_file():
            files.append(CertificateFile(str(kind), path, _sha256(path), api.get(str(kind))))
    return files


def _document_files(out: Path, row: dict[str, Any]) -> list[CertificateFile]:
    """The row's generated documents as recorded at send time, hashed as they are on disk.

    `sha256` is the file's now; `api_sha256` the ledger's record of what was sent.
    """
    files = []
    for name, recorded in recorded_documents(row.get("documents")):
        path = (out / DOCUMENTS / safe_name(str(row["key"])) / name).resolve()
        sha = _sha256(path) if path.is_file() else ""
        files.append(CertificateFile("document", path, sha, recorded or None))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_list(value: Any) -> list[dict[str, Any]]:
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return []
    return [c for c in loaded if isinstance(c, dict)] if isinstance(loaded, list) else []
