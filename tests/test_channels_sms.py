"""Certified SMS: the channel's own rules, and the example job end to end against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from channels_world import DELIVERED, SMS_JOB, World, by_key, cli, make_world

from batch import errors
from batch.certificates import download_certificates
from batch.channels.sms import SMS, SMS_MAX_CHARS, sms_fields
from batch.jobmodel import JobSpec
from batch.ledger import SENT, Entry, Ledger
from batch.message import Message
from batch.reconcile import Probe, Verdict
from batch.report import campaign_report
from batch.runner import run, validate
from batch.sandbox import RunningSandbox
from batch.track import track


@pytest.fixture
def world(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    tmp_path: Path,
) -> World:
    """The sandbox and a private copy of jobs/ (channels_world)."""
    return make_world(sandbox_factory, use_sandbox, tmp_path)


# -- SMS ---------------------------------------------------------------------------------------


def test_sms_example_validates_to_e164_numbers(world: World) -> None:
    job = world.job(SMS_JOB)
    frame, result = validate(job)
    assert result.errors == [] and result.ok.height == frame.height == 30
    assert all(a.startswith("+34") and len(a) == 12 for a in result.ok["address"])
    assert not any(a.endswith("0000") for a in result.ok["address"])  # the sandbox fails those


def test_sms_row_errors_name_the_field_and_the_length(world: World) -> None:
    world.edit_rows(
        lambda f: f.with_columns(
            pl.when(pl.col("id") == "C-1002")
            .then(pl.lit("12"))
            .otherwise(pl.col("phone"))
            .alias("phone"),
            pl.when(pl.col("id") == "C-1004")
            .then(pl.lit("D" * 280))
            .otherwise(pl.col("name"))
            .alias("name"),
        )
    )
    job = world.job(SMS_JOB)
    _, result = validate(job)
    found = {(e.key, e.field): e.message for e in result.errors}
    assert set(found) == {("C-1002", "recipient.phone"), ("C-1004", "message.text")}
    assert "invalid phone number '12'" in found["C-1002", "recipient.phone"]
    length = len(f"Hola {'D' * 280}, su recibo C-1004 vence el 2026-04-03.")
    assert found["C-1004", "message.text"] == (
        f"text is {length} characters; the limit is {SMS_MAX_CHARS}"
    )
    with pytest.raises(errors.RowErrors, match="C-1004"):
        run(job)
    assert world.log("sms") == []


def test_sms_campaign_runs_tracks_and_reports(world: World) -> None:
    world.edit_rows(  # one number the carrier rejects (the sandbox fails ...0000)
        lambda f: f.with_columns(
            pl.when(pl.col("id") == "C-1007")
            .then(pl.lit("600000000"))
            .otherwise(pl.col("phone"))
            .alias("phone")
        )
    )
    job = world.job(SMS_JOB)
    summary = run(job)
    assert summary.exit_code == 0 and summary.counts == {"sent": 30}
    rows = by_key(job)
    accepted = world.log("sms")
    assert sorted(str(e["recipient"]) for e in accepted) == sorted(
        str(r["address"]) for r in rows.values()
    )
    assert {e["tracking_id"] for e in accepted} == {r["tracking_id"] for r in rows.values()}
    first = rows["C-1001"]
    assert first["address"] == "+34653464097"
    assert json.loads(str(first["channel_data"])) == {
        "status_at_send": "sent",
        "credits_deducted": 1,
    }
    assert world.sandbox.state.request_count(status=429) == 0

    assert track(job).counts == {"sent": 30}  # nothing delivered yet
    world.clock.advance(DELIVERED + 1)
    tracked = track(job)
    assert tracked.counts == {"delivered": 29, "failed": 1} and tracked.open == 0
    rows = by_key(job)
    assert rows["C-1007"]["status"] == "failed" and rows["C-1007"]["address"] == "+34600000000"
    assert rows["C-1001"]["final"] is True and rows["C-1001"]["delivered_at"] is not None

    got = download_certificates(job)
    assert got.downloaded == 29 and not got.failures
    assert (job.output_dir / "certificates" / "C-1001-sms.pdf").read_bytes().startswith(b"%PDF")

    report = campaign_report(job)
    assert report.rate_label == "delivery rate" and report.rate == pytest.approx(29 / 30)
    assert [(p["key"], p["email"]) for p in report.problems] == [("C-1007", "+34600000000")]
    assert len(report.certificates) == 29
    out = cli("status", str(world.jobs / SMS_JOB))
    assert "C-1007 +34600000000" in out and "nothing left to send" in out
    out = cli("report", str(world.jobs / SMS_JOB), "--export", "csv")
    assert "delivery rate: 96.7% of 30 sent" in out and "+34600000000" in out
    exported = pl.read_csv(job.output_dir / "export.csv", infer_schema=False)
    row = exported.filter(pl.col("id") == "C-1001").row(0, named=True)
    assert row["lmbatch_status"] == "delivered"
    assert row["lmbatch_phone"] == "+34653464097"  # a phone is not a formula: kept as is
    assert row["lmbatch_tracking_id"] == first["tracking_id"]


def test_sms_in_doubt_is_never_sent_again_and_resolve_settles_it(world: World) -> None:
    world.edit_rows(lambda f: f.head(3))
    job = world.job(SMS_JOB)
    world.sandbox.state.faults.force("lost_response", 1)  # the first SMS goes, its answer is lost
    first = run(job)
    assert first.counts == {"in_doubt": 1, "sent": 2} and first.exit_code == errors.EXIT_PENDING
    assert len(world.log("sms")) == 3  # the lost one did reach the API
    again = run(job)
    assert again.counts == {"in_doubt": 1, "sent": 2}
    assert len(world.log("sms")) == 3, "an SMS in doubt must never be re-sent automatically"

    out = cli("status", str(world.jobs / SMS_JOB))
    assert "C-1001 +34653464097" in out and "lmbatch resolve" in out
    lost = next(e for e in world.log("sms") if e["recipient"] == "+34653464097")
    path = str(world.jobs / SMS_JOB)
    cli("resolve", path, "C-1001", "--sent", "--tracking-id", str(lost["tracking_id"]))
    assert run(job).counts == {"sent": 3}
    assert len(world.log("sms")) == 3
    world.clock.advance(DELIVERED + 1)
    assert track(job).counts == {"delivered": 3}
    assert by_key(job)["C-1001"]["tracking_id"] == lost["tracking_id"]


def test_sms_in_doubt_said_not_sent_by_hand_is_sent_once(world: World) -> None:
    world.edit_rows(lambda f: f.head(2))
    job = world.job(SMS_JOB)
    _, result = validate(job)
    row = result.ok.row(0, named=True)
    job.output_dir.mkdir(parents=True)
    with Ledger.open(job.output_dir) as ledger:  # a crash after the intent, before the POST
        entry = Entry(row["key"], row["address"], row["name"], row["content_hash"])
        ledger.queue(pl.DataFrame([entry._asdict()]))
        ledger.intent("crashed-request", [entry])
    assert run(job).counts == {"in_doubt": 1, "sent": 1}
    assert [e["recipient"] for e in world.log("sms")] == ["+34619722233"]
    cli("resolve", str(world.jobs / SMS_JOB), row["key"], "--not-sent")
    assert run(job).counts == {"sent": 2}
    assert sorted(str(e["recipient"]) for e in world.log("sms")) == ["+34619722233", row["address"]]


# -- the channel's own rules ---------------------------------------------------------------

SMS_SPEC: dict[str, Any] = {
    "campaign": "c",
    "channel": "sms",
    "dataset": {"path": "d.csv"},
    "message": {"text": "Hola {{ name }}"},
}


def sms_spec(**changes: Any) -> JobSpec:
    return JobSpec.model_validate(SMS_SPEC | changes)


def test_sms_job_file_rules() -> None:
    assert SMS.job_problems(sms_spec()) == []
    problems = SMS.job_problems(sms_spec(message={"subject": "s"}, document={"path": "x.pdf"}))
    assert sorted(problems) == [
        (("document",), "only for channel signature"),
        (("message", "subject"), "only for channel email"),
        (("message", "text"), "field required for channel sms"),
    ]
    assert SMS.template_files(sms_spec()) == []


def test_sms_address_and_default_key() -> None:
    assert SMS.address_source(sms_spec()) == "{{ phone }}"
    assert SMS.address_source(sms_spec(recipient={"phone": "{{ mobile }}"})) == "{{ mobile }}"
    written = [" +34 (612) 345-678 ", "612.345.678", "+34612345678"]
    assert SMS.keys_of(pl.Series(written)).to_list() == [
        "+34612345678",
        "612345678",
        "+34612345678",
    ]


@pytest.mark.parametrize("spelling", ["612 345 678", "+34 612 345 678", "0034612345678"])
def test_one_phone_has_one_identity_however_it_is_written(spelling: str) -> None:
    assert SMS.key_of(SMS.normalize_address(spelling, "ES")) == "+34612345678"


def test_a_landline_cannot_receive_a_certified_sms() -> None:
    with pytest.raises(ValueError):
        SMS.normalize_address("912 345 678", "ES")


def test_an_sms_request_is_one_text_to_one_phone() -> None:
    assert SMS.payload({"message": "hi"}, ["+34612345678"]) == {
        "message": "hi",
        "phone": "+34612345678",
    }
    assert not SMS.groups and SMS.hashes_address and not SMS.anchored


@pytest.mark.parametrize(
    "data", [{"uuid": "U-1", "status": "sent"}, {"data": {"uuid": "U-1"}, "status": "sent"}]
)
def test_the_sms_answer_gives_its_uuid(data: dict[str, Any]) -> None:
    answer = SMS.answer(data, [Entry("K", "+34612345678", "", "h")])
    assert answer.parent == "U-1" and answer.anchor is None
    assert [(o.key, o.status, o.tracking_id) for o in answer.outcomes] == [("K", SENT, "U-1")]
    assert SMS.send_data(data | {"credits_deducted": 1}, {}) == {
        "status_at_send": "sent",
        "credits_deducted": 1,
    }


def test_an_sms_in_doubt_is_never_decided_by_a_look_up() -> None:
    probe = Probe(("+34612345678",), ("K",), "", None)
    finding = SMS.look_up(None, probe, set(), None)  # type: ignore[arg-type]
    assert finding.verdict is Verdict.UNKNOWN and "lmbatch resolve" in finding.reason
    assert SMS.newest_send(None) is None  # type: ignore[arg-type]
    assert SMS.remaining_credits({"user": {"remaining_emails": 3}}) is None


@pytest.mark.parametrize(
    ("status", "data", "final"),
    [
        ("failed", None, True),
        ("delivered", {"has_certificate": True}, True),
        ("delivered", {"has_certificate": False}, False),  # the certificate comes later
        ("sent", None, False),
    ],
)
def test_sms_final_statuses(status: str, data: dict[str, Any] | None, final: bool) -> None:
    assert SMS.is_final(status, data) is final


def test_an_sms_status_becomes_ledger_fields() -> None:
    row = {"status": SENT, "channel_data": '{"credits_deducted": 1}'}
    data = {
        "status": "delivered",
        "delivered_at": "2026-11-21 10:00:00",
        "download_certificate_url": "/sms/U-1.pdf",
        "credits": 1,
    }
    fields = sms_fields(data, row)
    assert fields["status"] == "delivered" and fields["delivered_at"].hour == 10
    assert json.loads(fields["channel_data"])["has_certificate"] is True
    assert json.loads(fields["channel_data"])["credits_deducted"] == 1  # kept from the send
    assert json.loads(fields["certificates"])[0]["type"] == "sms"
    assert sms_fields({"status": "failed"}, row)["error_status"] == "failed"


def test_the_sms_preview_shows_the_text_and_its_length() -> None:
    parts = SMS.preview(Message("K", 2, "+34612345678", "Ann", {"message": "<b>hi</b>"}, "h"))
    assert parts.body == "<pre>&lt;b&gt;hi&lt;/b&gt;</pre><p>9 characters</p>"
    assert parts.summary == ("text", "<b>hi</b>")  # the index shows the text, escaped there
