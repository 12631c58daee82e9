"""Certified SMS and e-signature campaigns end to end: the example jobs against the sandbox.

Each test copies `jobs/` (job files, data, contracts) into a temporary folder, scales the
rate window to one second and drives validate → run → track → certificates → status,
report and export. Statuses move when the test moves the sandbox's clock, never with sleeps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from batch import errors
from batch.addresses import parse_signers
from batch.certificates import download_certificates
from batch.cli import main
from batch.export import export
from batch.jobfile import Job, load_job
from batch.ledger import Entry, Ledger, read_ledger
from batch.render import SMS_MAX_CHARS
from batch.report import campaign_report
from batch.runner import NullReporter, RunStats, run, validate
from batch.sandbox import RunningSandbox, ShiftedClock
from batch.track import track

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SMS_JOB, SIGNATURE_JOB = "reminders-sms.yaml", "contracts.yaml"
DELIVERED, SIGNED = 100.0, 200.0  # sandbox seconds after a send: far beyond any test's runtime
SCALED = """
limits: {requests_per_window: 10, window_seconds: 1.0}
retry: {attempts: 4, max_backoff_seconds: 0.2}
"""


@dataclass
class World:
    """The sandbox, its clock, and a private copy of jobs/ scaled to a one-second window."""

    sandbox: RunningSandbox
    clock: ShiftedClock
    jobs: Path

    def job(self, name: str) -> Job:
        """Load a copied example job file."""
        return load_job(self.jobs / name)

    def edit_rows(self, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
        """Rewrite the copied customers.csv (an example job with bad or special rows)."""
        path = self.jobs / "data" / "customers.csv"
        change(pl.read_csv(path, infer_schema=False)).write_csv(path)

    def log(self, channel: str) -> list[dict[str, object]]:
        """What the sandbox accepted on this channel."""
        return [e for e in self.sandbox.state.log() if e["channel"] == channel]


@pytest.fixture
def world(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    tmp_path: Path,
) -> Iterator[World]:
    """A sandbox at 10 requests per second and the example jobs pointed at it."""
    clock = ShiftedClock()
    sandbox = sandbox_factory(
        rate_limit=10, rate_window=1.0, delivered_after=DELIVERED, read_after=SIGNED, clock=clock
    )
    jobs = tmp_path / "jobs"
    shutil.copytree(JOBS, jobs)
    for name in (SMS_JOB, SIGNATURE_JOB):
        path = jobs / name
        path.write_text(path.read_text(encoding="utf-8") + SCALED, encoding="utf-8")
    use_sandbox(sandbox)
    yield World(sandbox, clock, jobs)


def cli(*args: str) -> str:
    """Run `lmbatch ARGS` in-process; its output (the exit code must be 0)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def by_key(job: Job) -> dict[str, dict[str, object]]:
    """The ledger's rows by key."""
    return {str(r["key"]): r for r in read_ledger(job.output_dir).iter_rows(named=True)}


def with_signer_list(job_text: str, template: str) -> str:
    """The example signature job with its `signers:` block replaced by a `signer_list`."""
    start, end = job_text.index("signers:"), job_text.index("document:")
    return f"{job_text[:start]}signer_list: '{template}'\n{job_text[end:]}"


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


# -- signatures ----------------------------------------------------------------------------


def test_signature_example_validates(world: World) -> None:
    job = world.job(SIGNATURE_JOB)
    _, result = validate(job)
    assert result.errors == [] and result.ok.height == 10  # the premium customers
    assert result.ok["address"][0] == "carla.sanchez@example.com"


def test_signature_row_errors(world: World) -> None:
    contracts = world.jobs / "data" / "contracts"
    (contracts / "C-1006.pdf").unlink()
    (contracts / "C-1009.pdf").write_text("not a pdf", encoding="utf-8")
    with open(contracts / "C-1012.pdf", "r+b") as fh:
        fh.truncate(10 * 1024 * 1024 + 1)  # sparse: over the API's 10 MB
    world.edit_rows(
        lambda f: f.with_columns(
            pl.when(pl.col("id") == "C-1015")
            .then(pl.lit("paula@"))
            .otherwise(pl.col("email"))
            .alias("email")
        )
    )
    _, result = validate(world.job(SIGNATURE_JOB))
    found = {(e.key, e.field): e.message for e in result.errors}
    assert set(found) == {
        ("C-1006", "document.path"),
        ("C-1009", "document.path"),
        ("C-1012", "document.path"),
        ("C-1015", "signers[0].email"),
    }
    assert "file not found" in found["C-1006", "document.path"]
    assert "not a PDF" in found["C-1009", "document.path"]
    assert "limit is 10 MB" in found["C-1012", "document.path"]


def test_signature_campaign_runs_tracks_and_downloads(world: World) -> None:
    world.edit_rows(  # one signer who declines (the sandbox declines decline*)
        lambda f: f.with_columns(
            pl.when(pl.col("id") == "C-1006")
            .then(pl.lit("decline.felipe@example.com"))
            .otherwise(pl.col("email"))
            .alias("email")
        )
    )
    job = world.job(SIGNATURE_JOB)
    summary = run(job)
    assert summary.exit_code == 0 and summary.counts == {"sent": 10}
    rows = by_key(job)
    accepted = world.log("signature")
    assert len(accepted) == 10
    assert {e["tracking_id"] for e in accepted} == {r["tracking_id"] for r in rows.values()}
    carla = rows["C-1003"]
    assert carla["address"] == "carla.sanchez@example.com"
    data = json.loads(str(carla["channel_data"]))
    assert data["status_at_send"] == "pending" and data["document_name"] == "Contract C-1003.pdf"
    assert data["signers"] == [
        {
            "name": "Carla Sánchez",
            "email": "carla.sanchez@example.com",
            "phone": "+34617784483",
            "status": "pending",
        }
    ]

    assert track(job).counts == {"sent": 10}
    world.clock.advance(SIGNED + 1)
    tracked = track(job)
    assert tracked.counts == {"signed": 9, "declined": 1} and tracked.open == 0
    carla = by_key(job)["C-1003"]
    data = json.loads(str(carla["channel_data"]))
    assert data["signed_at"] and data["expires_at"] and data["document_hash"]
    assert data["signers"][0]["status"] == "signed"
    got = download_certificates(job)
    assert got.downloaded == 9 * 2 + 1 and not got.failures  # acta + original; declined: original
    folder = job.output_dir / "certificates"
    assert (folder / "C-1003-acta.pdf").is_file() and (folder / "C-1003-original.pdf").is_file()

    report = campaign_report(job)
    assert report.rate_label == "signed rate" and report.rate == pytest.approx(0.9)
    assert [(p["key"], p["email"], p["status"]) for p in report.problems] == [
        ("C-1006", "decline.felipe@example.com", "declined")
    ]
    out = cli("status", str(world.jobs / SIGNATURE_JOB))
    assert "C-1006 decline.felipe@example.com: declined" in out
    export(job, "csv")
    exported = pl.read_csv(job.output_dir / "export.csv", infer_schema=False)
    assert exported.height == 10  # the rows the job selects (plan = premium)
    row = exported.filter(pl.col("id") == "C-1003").row(0, named=True)
    assert row["lmbatch_status"] == "signed"
    assert row["lmbatch_address"] == "carla.sanchez@example.com"


def test_signature_in_doubt_is_found_in_the_listing_not_sent_again(world: World) -> None:
    world.edit_rows(lambda f: f.filter(pl.col("plan") == "premium").head(4))
    job = world.job(SIGNATURE_JOB)
    world.sandbox.state.faults.force("lost_response", 2)
    summary = run(job)
    assert summary.exit_code == 0 and summary.counts == {"sent": 4}
    accepted = world.log("signature")
    assert len(accepted) == 4, "a lost answer must be looked up, not sent again"
    rows = by_key(job)
    assert {e["tracking_id"] for e in accepted} == {r["tracking_id"] for r in rows.values()}
    assert {e["recipient"] for e in accepted} == {r["address"] for r in rows.values()}


def test_a_late_request_that_never_took_effect_is_proven_absent(world: World) -> None:
    """After 25 requests the first anchor is out of the listing: the anchor must move on."""
    world.edit_rows(lambda f: f.with_columns(pl.lit("premium").alias("plan")))
    contracts = world.jobs / "data" / "contracts"
    for i in range(1001, 1031):
        if not (contracts / f"C-{i}.pdf").exists():
            shutil.copy(contracts / "C-1003.pdf", contracts / f"C-{i}.pdf")
    faults = world.sandbox.state.faults

    class FailOneLate(NullReporter):
        armed = True

        def update(self, stats: RunStats) -> None:
            if stats.requests_done == 27 and self.armed:
                self.armed = False
                faults.force("error_500", 1)  # a 500: in doubt to us, nothing recorded

    summary = run(world.job(SIGNATURE_JOB), reporter=FailOneLate())
    assert faults.counts.get("error_500") == 1
    assert summary.counts == {"sent": 30}, "provably not sent: it must be sent, not left in doubt"
    assert len(world.log("signature")) == 30


COSIGNED = """signer_list: >-
  {{ name }} <{{ email }}> {{ phone }}{% if amount|float > 2000 %};
  Legal Department <legal@example.com>{% endif %}
"""


def test_signers_from_a_list_template(world: World) -> None:
    """`signer_list` renders per row to 1-5 signers: here a co-signer for large contracts."""
    path = world.jobs / SIGNATURE_JOB
    text = path.read_text(encoding="utf-8")
    start, end = text.index("signers:"), text.index("document:")
    path.write_text(text[:start] + COSIGNED + text[end:], encoding="utf-8")
    job = world.job(SIGNATURE_JOB)
    assert run(job).counts == {"sent": 10}
    signed_by: dict[str, list[str]] = {}
    for entry in world.log("signature"):
        signed_by.setdefault(str(entry["tracking_id"]), []).append(str(entry["recipient"]))
    rows = by_key(job)
    assert signed_by[str(rows["C-1003"]["tracking_id"])] == [
        "carla.sanchez@example.com",
        "legal@example.com",
    ]  # 2098.50: co-signed
    assert signed_by[str(rows["C-1018"]["tracking_id"])] == ["sergio.moreno@example.com"]
    world.clock.advance(SIGNED + 1)
    assert track(job).counts == {"signed": 10}
    signers = json.loads(str(by_key(job)["C-1003"]["channel_data"]))["signers"]
    assert [(s["email"], s["status"]) for s in signers] == [
        ("carla.sanchez@example.com", "signed"),
        ("legal@example.com", "signed"),
    ]


@pytest.mark.parametrize(
    ("rendered", "fragment"),
    [
        ("Ana <ana@example.com>; ana@example.com", "is not `Name <email> [phone]`"),
        ("; ".join(f"S{i} <s{i}@example.com>" for i in range(6)), "6 signer(s); the API takes 1"),
        ("Ana <ana@>", "invalid e-mail"),
        ('[{"name": "Ana"}]', "needs an object with name, email"),
        ('[{"name": "Ana", "email": "ana@example.com", "phone": "12"}]', "invalid phone"),
    ],
)
def test_signer_list_errors_are_row_errors(world: World, rendered: str, fragment: str) -> None:
    world.edit_rows(lambda f: f.head(3).with_columns(pl.lit(rendered).alias("signers")))
    path = world.jobs / SIGNATURE_JOB
    text = path.read_text(encoding="utf-8").replace("plan = 'premium'", "true")
    path.write_text(with_signer_list(text, "{{ signers }}"), encoding="utf-8")
    contracts = world.jobs / "data" / "contracts"
    for key in ("C-1001", "C-1002"):
        shutil.copy(contracts / "C-1003.pdf", contracts / f"{key}.pdf")
    _, result = validate(world.job(SIGNATURE_JOB))
    assert len(result.errors) == 3
    assert all(e.field.startswith("signer_list") for e in result.errors)
    assert fragment in result.errors[0].message


def test_signer_list_forms() -> None:
    assert parse_signers("Ana López <ana@example.com> +34 600 111 222;\n Bo <bo@example.com>") == [
        ("Ana López", "ana@example.com", "+34 600 111 222"),
        ("Bo", "bo@example.com", ""),
    ]
    rendered = '[{"name": "Ana", "email": "ana@example.com"}, {"email": "x@example.com"}]'
    assert parse_signers(rendered) == [("Ana", "ana@example.com", ""), ("", "x@example.com", "")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t + "signer_list: '{{ signers }}'\n", "give either signers or signer_list"),
        (
            lambda t: with_signer_list(t.replace("key: id, ", ""), "{{ signers }}"),
            "dataset.key: required with signer_list",
        ),
    ],
)
def test_signer_list_job_file_rules(
    tmp_path: Path, change: Callable[[str], str], expected: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(change((JOBS / SIGNATURE_JOB).read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(errors.JobFileError, match=expected):
        load_job(path)
