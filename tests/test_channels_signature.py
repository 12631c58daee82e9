"""Electronic signatures: the channel's own rules, and the example job end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from channels_world import (
    JOBS,
    SIGNATURE_JOB,
    SIGNED,
    World,
    by_key,
    cli,
    make_world,
    with_ready_made_pdfs,
    with_signer_list,
)

from batch import errors
from batch.addresses import parse_signers
from batch.certificates import download_certificates
from batch.channels.signature import SIGNATURE
from batch.export import export
from batch.jobfile import load_job
from batch.jobmodel import JobSpec
from batch.ledger import SENT, Entry
from batch.message import Message
from batch.report import campaign_report
from batch.runner import NullReporter, RunStats, run, validate
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


# -- signatures ----------------------------------------------------------------------------


def test_signature_example_validates(world: World) -> None:
    job = world.job(SIGNATURE_JOB)
    _, result = validate(job)
    assert result.errors == [] and result.ok.height == 10  # the premium customers
    assert result.ok["address"][0] == "carla.sanchez@example.com"


def test_signature_row_errors(world: World) -> None:
    premium = ["C-1003", "C-1006", "C-1009", "C-1012", "C-1015"]
    premium += ["C-1018", "C-1021", "C-1024", "C-1027", "C-1030"]
    contracts = with_ready_made_pdfs(world, premium)
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
    assert data["status_at_send"] == "pending" and data["document_name"] == "Contrato C-1003.pdf"
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
    assert row["lmbatch_email"] == "carla.sanchez@example.com"


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


# -- the channel's own rules ---------------------------------------------------------------

SIGNER = {"name": "{{ name }}", "email": "{{ email }}"}
SIGNATURE_SPEC: dict[str, Any] = {
    "campaign": "c",
    "channel": "signature",
    "dataset": {"path": "d.csv", "key": "id"},
    "signers": [SIGNER],
    "document": {"path": "contracts/{{ id }}.pdf"},
}


def signature_spec(**changes: Any) -> JobSpec:
    return JobSpec.model_validate(SIGNATURE_SPEC | changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"signers": [SIGNER] * 6}, [(("signers",), "at most 5 signers, found 6")]),
        ({"signers": []}, [(("signers",), "at least one signer required for channel signature")]),
        ({"document": None}, [(("document",), "field required for channel signature")]),
        (
            {"message": {"text": "x", "reply_to": "a@example.com"}},
            [
                (("message", "reply_to"), "only for channel email"),
                (("message", "text"), "only for channel sms"),
            ],
        ),
    ],
)
def test_signature_job_file_rules(changes: dict[str, Any], expected: list[Any]) -> None:
    assert sorted(SIGNATURE.job_problems(signature_spec(**changes))) == expected


def test_signature_address_and_default_key() -> None:
    assert SIGNATURE.address_source(signature_spec()) == "{{ email }}"
    other = signature_spec(signers=[{"name": "x", "email": "{{ contact }}"}])
    assert SIGNATURE.address_source(other) == "{{ contact }}"
    written = [" Ann@Example.com", "bob@example.com"]
    assert SIGNATURE.keys_of(pl.Series(written)).to_list() == ["ann@example.com", "bob@example.com"]
    assert SIGNATURE.key_of(SIGNATURE.normalize_address("Ann@Example.com")) == "ann@example.com"


def test_a_signature_answer_moves_the_anchor() -> None:
    """A later lost answer is looked up among requests newer than the latest one."""
    data = {"data": {"uuid": "S-9"}, "status": "pending", "document_name": "c.pdf"}
    answer = SIGNATURE.answer(data, [Entry("K", "a@example.com", "", "h")])
    assert answer.parent == answer.anchor == "S-9"
    assert [(o.key, o.status, o.tracking_id) for o in answer.outcomes] == [("K", SENT, "S-9")]
    content = {"signers": [{"name": "Ann", "email": "a@example.com"}]}
    assert SIGNATURE.send_data(data, content) == {
        "status_at_send": "pending",
        "document_name": "c.pdf",
        "created_at": None,
        "signers": [{"name": "Ann", "email": "a@example.com", "status": "pending"}],
    }
    assert SIGNATURE.payload(content, ["a@example.com"]) == content
    assert not SIGNATURE.groups and SIGNATURE.anchored and SIGNATURE.hashes_address


def test_a_declined_request_becomes_ledger_fields_with_its_certificates() -> None:
    detail = {
        "status": "declined",
        "document_hash": "ABC",
        "download_original_url": "/o.pdf",
        "signers": [{"signer_name": "Ann", "signer_email": "a@example.com", "status": "declined"}],
    }
    fields = SIGNATURE.fields(detail, {"status": SENT, "channel_data": None})
    assert fields["status"] == "declined" and fields["error_status"] == "declined"
    assert [c["type"] for c in json.loads(fields["certificates"])] == ["original"]
    assert json.loads(fields["channel_data"])["signers"][0]["status"] == "declined"
    signed = SIGNATURE.fields({"status": "signed", "download_acta_url": "/a.pdf"}, {"status": SENT})
    assert "error_status" not in signed and SIGNATURE.is_final("signed")
    assert not SIGNATURE.is_final("pending")


def test_the_signature_preview_names_signers_and_document() -> None:
    content = {
        "signers": [{"name": "Ann", "email": "a@example.com"}],
        "document_name": "c.pdf",
        "language": "es",
    }
    parts = SIGNATURE.preview(Message("K", 2, "a@example.com", "Ann", content, "h"))
    assert parts.after == [
        ("signers", "Ann <a@example.com>"),
        ("document", "c.pdf"),
        ("language", "es"),
    ]
    assert parts.summary == ("document", "c.pdf")
    content["signers"] = [{"name": "Ann", "email": "a@example.com", "phone": "+34612345678"}]
    parts = SIGNATURE.preview(Message("K", 2, "a@example.com", "Ann", content, "h"))
    assert ("signers", "Ann <a@example.com> +34612345678") in parts.after
