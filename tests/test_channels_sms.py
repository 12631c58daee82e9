"""Certified SMS: the channel's own rules, and the example job end to end against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from channels_world import DELIVERED, SMS_JOB, World, by_key, cli, make_world

from batch import errors
from batch.certificates import download_certificates
from batch.channels.sms import SMS_MAX_CHARS
from batch.ledger import Entry, Ledger
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
        str(r["email"]) for r in rows.values()
    )
    assert {e["tracking_id"] for e in accepted} == {r["tracking_id"] for r in rows.values()}
    first = rows["C-1001"]
    assert first["email"] == "+34653464097"
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
    assert rows["C-1007"]["status"] == "failed" and rows["C-1007"]["email"] == "+34600000000"
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
    assert row["lmbatch_address"] == "'+34653464097"  # formula-safe: "+" would be run
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
