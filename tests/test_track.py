"""Tracking against the sandbox: statuses move with the sandbox's clock, never with sleeps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import polars as pl
import pytest

from batch.client import LegallyMailClient
from batch.jobfile import Job, load_job
from batch.ledger import Entry, Ledger, Outcome, read_ledger
from batch.runner import run
from batch.sandbox import RunningSandbox, ShiftedClock
from batch.sandbox.pdf import render_pdf
from batch.track import DEFAULT_DEADLINE, TrackSummary, is_final, track

DELIVERED, READ = 100.0, 200.0  # sandbox seconds after a send: far beyond any test's runtime


@dataclass
class World:
    """A sandbox on loopback, the clock it reads, and the environment pointing at it."""

    sandbox: RunningSandbox
    clock: ShiftedClock
    folder: Path


@pytest.fixture
def world(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    tmp_path: Path,
) -> Iterator[World]:
    """A sandbox at 10 requests per second whose statuses move only when the clock jumps."""
    clock = ShiftedClock()
    sandbox = sandbox_factory(
        rate_limit=10, rate_window=1.0, delivered_after=DELIVERED, read_after=READ, clock=clock
    )
    use_sandbox(sandbox)
    yield World(sandbox, clock, tmp_path)


def write_job(
    folder: Path,
    rows: list[dict[str, str]],
    *,
    channel: str = "email",
    same_message: bool = False,
) -> Path:
    """A job file, its CSV and what the channel needs (template, documents) in `folder`."""
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = "<p>Same for all</p>" if same_message else "<p>Dear {{ name }}</p>"
    (folder / "notice.html").write_text(body, encoding="utf-8")
    if channel == "email":
        subject = "Hello" if same_message else "Notice {{ id }}"
        specific = f"""recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "{subject}", html: notice.html}}"""
    elif channel == "sms":
        specific = """recipient: {phone: "{{ phone }}"}
message: {text: "Hello {{ name }}"}"""
    else:
        docs = folder / "docs"
        docs.mkdir(exist_ok=True)
        for row in rows:
            (docs / f"{row['id']}.pdf").write_bytes(render_pdf("Contract", (row["id"],)))
        specific = """signers:
  - {name: "{{ name }}", email: "{{ email }}"}
document: {path: "docs/{{ id }}.pdf", name: "Contract {{ id }}.pdf"}
language: en"""
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: test
channel: {channel}
dataset: {{path: people.csv, key: id}}
{specific}
limits: {{requests_per_window: 10, window_seconds: 1.0, max_recipients_per_request: 10}}
retry: {{attempts: 4, max_backoff_seconds: 0.2}}
output: out
""",
        encoding="utf-8",
    )
    return job


def people(*emails: str) -> list[dict[str, str]]:
    """Rows with keys K-00, K-01, … for the given addresses."""
    return [
        {"id": f"K-{i:02d}", "name": f"Name {i}", "email": e, "phone": f"+3461{i:04d}789"}
        for i, e in enumerate(emails)
    ]


def sent_job(world: World, rows: list[dict[str, str]], **options: Any) -> Job:
    """Write the job and send it through the real runner."""
    job = load_job(write_job(world.folder, rows, **options))
    assert run(job).exit_code in (0, 5)  # 5: done, some refused (the test's `fail-` rows)
    return job


def tracked(world: World, job: Job, **options: Any) -> TrackSummary:
    """One tracking pass on lmbatch's side of the same (shifted) clock."""
    return track(job, clock=world.clock.utc, **options)


def by_key(job: Job) -> dict[str, dict[str, Any]]:
    """The ledger as {key: row}."""
    return {r["key"]: r for r in read_ledger(job.output_dir).iter_rows(named=True)}


def test_statuses_progress_sent_delivered_read(world: World) -> None:
    job = sent_job(world, people("a@example.com", "b@example.com"))
    first = tracked(world, job)
    assert first.counts == {"sent": 2} and first.open == 2
    assert all(r["final"] is False for r in by_key(job).values())

    world.clock.advance(DELIVERED + 1)
    tracked(world, job)
    rows = by_key(job)
    assert {r["status"] for r in rows.values()} == {"delivered"}
    assert all(r["delivered_at"] is not None and r["read_at"] is None for r in rows.values())

    world.clock.advance(READ - DELIVERED)
    summary = tracked(world, job)
    rows = by_key(job)
    assert summary.counts == {"read": 2} and summary.open == 0 and summary.final == 2
    row = rows["K-00"]
    assert row["final"] is True and row["read_at"] > row["delivered_at"]
    certificates = json.loads(row["certificates"])
    assert [c["type"] for c in certificates] == ["delivered", "read"]
    assert all(len(c["file_hash"]) == 64 and c["url"] and c["has_tsr"] for c in certificates)

    again = tracked(world, job)
    assert again.calls_total == 0  # nothing open: not a single request


def test_group_send_with_mixed_outcomes(world: World) -> None:
    rows = people("ok1@example.com", "bounce1@example.com", "fail1@example.com", "ok2@x.org")
    job = sent_job(world, rows, same_message=True)
    ledger = by_key(job)
    assert len({r["parent_tracking_id"] for r in ledger.values()}) == 1  # one request
    assert ledger["K-02"]["status"] == "failed"

    world.clock.advance(DELIVERED + 1)
    summary = tracked(world, job)
    # One detail call with the parent id covers every recipient of the group.
    assert summary.calls == {"GET /api/email": 1}
    ledger = by_key(job)
    assert ledger["K-01"]["status"] == "bounced" and ledger["K-01"]["final"] is True
    assert ledger["K-01"]["error_status"] == "Hard Bounce"
    assert "bounce" in ledger["K-01"]["error_details"].lower()
    assert ledger["K-02"]["final"] is True and ledger["K-02"]["error_details"]
    assert ledger["K-00"]["status"] == ledger["K-03"]["status"] == "delivered"

    world.clock.advance(READ)
    summary = tracked(world, job)
    assert summary.counts == {"bounced": 1, "failed": 1, "read": 2} and summary.open == 0


def test_listing_spares_detail_calls(world: World) -> None:
    """Measured: 30 single sends cost 6 calls a quiet pass, 1 + 30 when all change."""
    job = sent_job(world, people(*(f"p{i}@example.com" for i in range(30))))
    unchanged = tracked(world, job)
    # The listing covers the 25 newest sends; the 5 older need one look-up each.
    assert unchanged.calls == {"GET /api/emails": 1, "GET /api/email": 5}
    assert unchanged.updated == 30  # first look: final=False recorded once

    world.clock.advance(DELIVERED + 1)
    delivered = tracked(world, job)
    # A change is worth a detail call: the delivery time and certificate come only with it.
    assert delivered.calls == {"GET /api/emails": 1, "GET /api/email": 30}
    assert delivered.counts == {"delivered": 30}

    quiet = tracked(world, job)
    assert quiet.calls_total == 6 and quiet.updated == 0  # unchanged: no ledger writes

    world.clock.advance(READ)
    read = tracked(world, job)
    assert read.calls == {"GET /api/emails": 1, "GET /api/email": 30}
    assert read.counts == {"read": 30} and read.open == 0
    assert world.sandbox.state.request_count(status=429) == 0


def test_watch_polls_until_every_recipient_is_final(world: World) -> None:
    job = sent_job(world, people("a@example.com", "bounce@example.com"))
    waits: list[float] = []
    seen: list[int] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        world.clock.advance(seconds)

    summary = tracked(
        world, job, watch=True, interval=60, sleep=sleep, reporter=lambda s: seen.append(s.open)
    )
    assert summary.open == 0 and summary.counts == {"bounced": 1, "read": 1}
    assert waits == [60, 60, 60, 60]  # read lands 200 s after the send
    assert summary.passes == 5 and seen[-1] == 0


def test_watch_ends_at_the_deadline_with_the_last_status_kept(world: World) -> None:
    job = sent_job(world, people("a@example.com"))
    world.clock.advance(DELIVERED + 1)
    until = world.clock.utc() + timedelta(seconds=30)
    summary = tracked(world, job, watch=True, until=until, interval=20, sleep=world.clock.advance)
    row = by_key(job)["K-00"]
    assert row["status"] == "delivered" and row["final"] is True  # closed by the deadline
    assert summary.passes == 3 and summary.open == 0
    assert tracked(world, job).calls_total == 0


def test_default_deadline_is_two_weeks_after_the_send(world: World) -> None:
    job = sent_job(world, people("a@example.com"))
    world.clock.advance(DELIVERED + 1)
    assert tracked(world, job).open == 1
    world.clock.advance(DEFAULT_DEADLINE.total_seconds())
    # The first look after the deadline still fetches the status, then settles the row.
    summary = tracked(world, job)
    assert summary.calls_total == 1 and summary.open == 0
    assert by_key(job)["K-00"]["status"] == "read"


def test_sms_delivered_and_failed(world: World) -> None:
    rows = people("x@example.com", "y@example.com")
    rows[1]["phone"] = "+34600000000"  # the sandbox fails numbers ending in 0000
    job = sent_job(world, rows, channel="sms")
    world.clock.advance(DELIVERED + 1)
    summary = tracked(world, job)
    assert summary.calls == {"GET /api/sms": 2}
    ledger = by_key(job)
    ok, failed = ledger["K-00"], ledger["K-01"]
    assert ok["status"] == "delivered" and ok["final"] is True and ok["delivered_at"]
    assert json.loads(ok["certificates"])[0]["type"] == "sms"
    assert failed["status"] == "failed" and failed["final"] is True
    assert json.loads(failed["channel_data"])["failed_at"]


def test_signatures_signed_and_declined(world: World) -> None:
    job = sent_job(world, people("ana@example.com", "decline@example.com"), channel="signature")
    pending = tracked(world, job)
    assert pending.counts == {"sent": 2}  # the API's "pending" is our "sent"
    assert pending.calls == {"GET /api/signatures": 1}  # unchanged: the listing is enough

    world.clock.advance(READ + 1)
    summary = tracked(world, job)
    assert summary.calls == {"GET /api/signatures": 1, "GET /api/signature": 2}
    ledger = by_key(job)
    signed, declined = ledger["K-00"], ledger["K-01"]
    assert signed["status"] == "signed" and signed["final"] is True
    data = json.loads(signed["channel_data"])
    assert data["signed_at"] and data["expires_at"] and len(data["document_hash"]) == 64
    assert data["signers"][0]["status"] == "signed"
    assert data["download_acta_url"] and data["download_original_url"]
    assert {c["type"] for c in json.loads(signed["certificates"])} == {"acta", "original"}
    assert declined["status"] == "declined" and declined["error_status"] == "declined"


# -- rules, with a stand-in client ------------------------------------------------------------


class ScriptedApi:
    """Answers GET /api/email with whatever status the test sets."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.calls = 0

    def email(self, tracking_id: str) -> dict[str, Any]:
        self.calls += 1
        return {
            "tracking_id": tracking_id,
            "recipients": [{"email": "a@example.com", "tracking_id": "t-1", "status": self.status}],
        }

    def list_emails(self, limit: int) -> list[dict[str, Any]]:
        raise AssertionError("one open send never needs a listing")


def one_sent_row(tmp_path: Path) -> Job:
    """A job whose ledger holds one e-mail recorded as sent (no API involved)."""
    job = load_job(write_job(tmp_path, people("a@example.com")))
    with Ledger.open(job.output_dir) as ledger:
        ledger.intent("r1", [Entry("K-00", "a@example.com", "A", "h")])
        outcome = Outcome("K-00", "sent", "t-1")
        ledger.sent("r1", parent_tracking_id="p-1", outcomes=[outcome], sent_at=None)
    return job


@pytest.mark.parametrize(
    ("channel", "status", "final"),
    [
        ("email", "read", True),
        ("email", "bounced", True),
        ("email", "delivered", False),
        ("email", "opened-twice", False),
        ("sms", "delivered", True),
        ("sms", "sent", False),
        ("signature", "expired", True),
        ("signature", "pending", False),
    ],
)
def test_final_rule(channel: str, status: str, final: bool) -> None:
    assert is_final(channel, status) is final


def test_unknown_status_is_kept_and_stays_open_until_the_deadline(tmp_path: Path) -> None:
    job = one_sent_row(tmp_path)
    api = ScriptedApi("quarantined")
    now = datetime.now(UTC)
    track(job, client=cast(LegallyMailClient, api), clock=lambda: now)
    row = by_key(job)["K-00"]
    assert row["status"] == "quarantined" and row["final"] is False
    track(job, client=cast(LegallyMailClient, api), clock=lambda: now + timedelta(days=15))
    assert by_key(job)["K-00"]["final"] is True
    assert api.calls == 2


def test_api_pending_never_makes_a_row_resendable(tmp_path: Path) -> None:
    job = one_sent_row(tmp_path)
    track(job, client=cast(LegallyMailClient, ScriptedApi("pending")))
    row = by_key(job)["K-00"]
    assert row["status"] == "sent"
    assert json.loads(row["channel_data"]) == {"api_status": "pending"}


def test_ledger_rows_never_sent_are_not_looked_up(tmp_path: Path) -> None:
    job = one_sent_row(tmp_path)
    with Ledger.open(job.output_dir) as ledger:
        ledger.queue(pl.DataFrame({"key": ["K-09"], "email": ["z@example.com"]}))
    api = ScriptedApi("sent")
    summary = track(job, client=cast(LegallyMailClient, api))
    assert api.calls == 1 and summary.counts == {"pending": 1, "sent": 1}


def test_tracking_while_the_campaign_is_still_sending(world: World) -> None:
    """Two writers on one ledger, one shared rate limit: nothing lost, no 429."""
    job = load_job(write_job(world.folder, people(*(f"p{i}@example.com" for i in range(24)))))
    errors: list[BaseException] = []

    def send() -> None:
        try:
            run(job)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    sender = threading.Thread(target=send)
    sender.start()
    passes = 0
    while sender.is_alive():
        if (job.output_dir / "journal.jsonl").exists():
            tracked(world, job)
            passes += 1
        time.sleep(0.05)
    sender.join()
    assert not errors and passes >= 1
    world.clock.advance(DELIVERED + 1)
    summary = tracked(world, job)
    assert summary.counts == {"delivered": 24}
    assert world.sandbox.state.request_count(status=429) == 0
