"""Generated documents end to end: validate renders them, run sends them, the ledger vouches.

A 20-row certified e-mail campaign attaching a demand letter generated per row, and a
10-row signature campaign whose contracts are generated per row, run against a real
sandbox on loopback. What the sandbox received is compared with the row (the PDF's text),
with the ledger (SHA-256) and with a second rendering (the same bytes).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pypdf
import pytest
from click.testing import CliRunner

from batch.cli import main
from batch.documents import document_path
from batch.jobfile import Job, load_job
from batch.ledger import read_ledger
from batch.preview import write_preview
from batch.report import write_report
from batch.runner import run, validate
from batch.sandbox import FakeClock, RunningSandbox
from batch.templating import make_environments
from batch.track import track

REPO = Path(__file__).resolve().parent.parent
FIRST = ["Ana", "Bruno", "Carla", "Dávid", "Elena", "Fermín", "Gloria", "Héctor", "Inés", "Jon"]
LAST = ["López", "Martín", "Sánchez", "Pérez", "Núñez"]
LIMITS = "limits: {requests_per_window: 100, window_seconds: 1.0}\n"


def people(n: int) -> list[dict[str, str]]:
    """`n` rows with distinct accented names and amounts."""
    return [
        {
            "id": f"K-{i:03d}",
            "name": f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]} {i}",
            "email": f"person{i}@example.com",
            "amount": f"{1000 + i * 37.25:.2f}",
            "due": f"2026-{1 + i % 12:02d}-{1 + i % 27:02d}",
            "plan": "premium",
        }
        for i in range(n)
    ]


def folder_with(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    """`tmp_path/jobs` holding people.csv and terms.pdf, with the project's templates beside."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy(REPO / "jobs" / "data" / "terms.pdf", jobs / "terms.pdf")
    with open(jobs / "people.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return jobs


EMAIL_JOB = """campaign: demands
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message:
  subject: "Requerimiento {{ id }}"
  html: letters/demand-email.html
  attachments:
    - {template: letters/demand.html, name: "Requerimiento {{ id }}.pdf"}
    - {path: terms.pdf, name: Condiciones.pdf}
output: out
"""
SIGNATURE_JOB = """campaign: contracts
channel: signature
dataset: {path: people.csv, key: id}
signers: [{name: "{{ name }}", email: "{{ email }}"}]
document: {template: contracts/contract.html, name: "Contrato {{ id }}.pdf"}
output: out
"""


def write_job(jobs: Path, text: str, name: str = "job.yaml") -> Job:
    path = jobs / name
    path.write_text(text + LIMITS, encoding="utf-8")
    return load_job(path)


def text_of(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


def money(job: Job, amount: str) -> str:
    """The amount as the job's `money` filter prints it."""
    env = make_environments(job.base_dir)[0]
    return env.from_string('{{ amount|money("EUR") }}').render(amount=amount)


def ledger_documents(job: Job) -> dict[str, list[dict[str, str]]]:
    frame = read_ledger(job.output_dir)
    return {str(r["key"]): json.loads(r["documents"]) for r in frame.iter_rows(named=True)}


def stored(job: Job) -> dict[Path, bytes]:
    folder = job.output_dir / "documents"
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*.pdf"))}


@pytest.fixture
def api(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
) -> RunningSandbox:
    """A sandbox taking 100 requests a second, lmbatch pointed at it."""
    return use_sandbox(sandbox_factory(rate_limit=100, rate_window=1.0))


# --- e-mail -------------------------------------------------------------------------------


def test_an_email_campaign_sends_each_row_its_own_generated_letter(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(20)
    job = write_job(folder_with(tmp_path, rows), EMAIL_JOB)
    _, scanned = validate(job)
    assert scanned.errors == [] and scanned.ok.height == 20
    # Every row's letter is rendered and kept before anything is sent.
    assert len(stored(job)) == 20
    assert len(set(scanned.ok["content_hash"])) == 20  # no grouping: each letter differs

    summary = run(job)
    assert summary.counts == {"sent": 20} and summary.stats.requests_done == 20
    log = [e for e in api.state.log() if e["channel"] == "email"]
    assert len(log) == 20
    by_address = {str(e["recipient"]): e for e in log}
    recorded = ledger_documents(job)
    terms = hashlib.sha256((REPO / "jobs" / "data" / "terms.pdf").read_bytes()).hexdigest()
    for row in rows:
        attachments: Any = by_address[row["email"]]["attachments"]
        letter, fixed = attachments
        name = f"Requerimiento {row['id']}.pdf"
        assert (letter["filename"], letter["mime_type"]) == (name, "application/pdf")
        assert fixed["sha256"] == terms
        assert recorded[row["id"]] == [{"name": name, "sha256": letter["sha256"]}]
        data = document_path(job.output_dir, row["id"], name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == letter["sha256"]
        text = text_of(data)
        assert row["name"] in text and money(job, row["amount"]) in text

    # A second rendering from scratch gives the very same bytes.
    first = stored(job)
    shutil.rmtree(job.output_dir / "documents")
    _, again = validate(job)
    assert again.errors == [] and stored(job) == first
    assert set(again.ok["content_hash"]) == set(scanned.ok["content_hash"])
    assert run(job).stats.requests_done == 0  # nothing left: every letter went once


def test_run_sends_the_stored_bytes_and_renders_again_only_what_changed(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(3)
    job = write_job(folder_with(tmp_path, rows), EMAIL_JOB)
    validate(job)
    path = document_path(job.output_dir, "K-001", "Requerimiento K-001.pdf")
    before = path.read_bytes()
    path.write_bytes(before[:-10] + b"tampered\n")  # the stored file no longer matches
    untouched = document_path(job.output_dir, "K-002", "Requerimiento K-002.pdf")
    mtime = untouched.stat().st_mtime_ns
    assert run(job).counts == {"sent": 3}
    assert path.read_bytes() == before  # rendered again, identical
    assert untouched.stat().st_mtime_ns == mtime  # still current: not rendered again
    sent = {str(e["recipient"]): e for e in api.state.log()}
    letter: Any = sent["person1@example.com"]["attachments"]
    assert letter[0]["sha256"] == hashlib.sha256(before).hexdigest()


def test_a_letter_over_the_limit_and_a_resource_outside_the_folder_are_row_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = folder_with(tmp_path, people(4))
    letter = tmp_path / "templates" / "letters" / "demand.html"
    text = letter.read_text(encoding="utf-8").replace(
        "</body>",
        '{% if id == "K-002" %}<img src="file:///etc/hostname">{% endif %}'
        '{% if id == "K-003" %}<img src="../../../outside.png">{% endif %}</body>',
    )
    letter.write_text(text, encoding="utf-8")
    job = write_job(jobs, EMAIL_JOB)
    _, scanned = validate(job)
    found = {e.key: e for e in scanned.errors}
    assert set(found) == {"K-002", "K-003"}
    assert all(e.field == "message.attachments[0].template" for e in found.values())
    assert "outside the job's folder" in found["K-002"].message
    assert "outside the job's folder" in found["K-003"].message
    assert scanned.ok.height == 2

    shutil.rmtree(job.output_dir / "documents")
    job.path.write_text(
        EMAIL_JOB + "limits: {requests_per_window: 100, window_seconds: 1.0, "
        "max_attachment_bytes: 10000}\n",
        encoding="utf-8",
    )
    _, scanned = validate(load_job(job.path))
    over = [e for e in scanned.errors if "over the limit" in e.message]
    assert {e.key for e in over} == {"K-000", "K-001"}


def test_a_template_error_is_a_row_error_and_both_sources_are_a_job_file_error(
    tmp_path: Path,
) -> None:
    jobs = folder_with(tmp_path, people(2))
    letter = tmp_path / "templates" / "letters" / "demand.html"
    letter.write_text(
        letter.read_text(encoding="utf-8").replace("{{ name }}", "{{ name }} {{ nickname }}", 1),
        encoding="utf-8",
    )
    _, scanned = validate(write_job(jobs, EMAIL_JOB))
    assert [e.key for e in scanned.errors] == ["K-000", "K-001"]
    assert "nickname" in scanned.errors[0].message

    both = EMAIL_JOB.replace("- {template:", "- {path: terms.pdf, template:")
    (jobs / "both.yaml").write_text(both, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(jobs / "both.yaml")])
    assert result.exit_code == 2
    assert "both.yaml:8 message.attachments[0]: give either `path`" in result.output
    assert "not both" in result.output
    unnamed = SIGNATURE_JOB.replace(', name: "Contrato {{ id }}.pdf"', "")
    (jobs / "unnamed.yaml").write_text(unnamed, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(jobs / "unnamed.yaml")])
    assert result.exit_code == 2 and "unnamed.yaml:5 document" in result.output
    assert "`name` is required with `template`" in result.output


# --- signatures ---------------------------------------------------------------------------


def test_a_signature_campaign_sends_generated_contracts_and_track_compares_the_hash(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    fake_clock: FakeClock,
    tmp_path: Path,
) -> None:
    api = use_sandbox(sandbox_factory(rate_limit=100, rate_window=1.0, clock=fake_clock))
    rows = people(10)
    job = write_job(folder_with(tmp_path, rows), SIGNATURE_JOB)
    assert run(job).counts == {"sent": 10}
    recorded = ledger_documents(job)
    ledger = {str(r["key"]): r for r in read_ledger(job.output_dir).iter_rows(named=True)}
    for row in rows:
        uid = str(ledger[row["id"]]["tracking_id"])
        data = api.state.document(uid)
        assert data is not None
        sha = hashlib.sha256(data).hexdigest()
        assert recorded[row["id"]] == [{"name": f"Contrato {row['id']}.pdf", "sha256": sha}]
        text = text_of(data)
        assert row["name"] in text and money(job, row["amount"]) in text

    fake_clock.advance(60)  # every contract signed
    assert track(job).counts == {"signed": 10}
    channel_data = json.loads(read_ledger(job.output_dir)["channel_data"][0])
    assert channel_data["document_matches"] is True
    html = write_report(job).read_text(encoding="utf-8")
    assert html.count("the API&#x27;s document_hash matches") == 10
    assert "Contrato K-000.pdf</a>" in html and "= as sent" in html


def test_preview_links_the_generated_documents(tmp_path: Path) -> None:
    job = write_job(folder_with(tmp_path, people(2)), SIGNATURE_JOB)
    frame, _ = validate(job)
    index = write_preview(job, frame, job.output_dir / "preview")
    page = next(p for p in index.parent.glob("0001-*.html")).read_text(encoding="utf-8")
    assert 'href="../documents/K-000/Contrato%20K-000.pdf"' in page


# --- evidence -----------------------------------------------------------------------------


def test_lmbatch_evidence_writes_a_verifiable_reproducible_bundle(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(6)
    job = write_job(folder_with(tmp_path, rows), EMAIL_JOB)
    assert run(job).counts == {"sent": 6}
    result = CliRunner().invoke(main, ["evidence", str(job.path)])
    assert result.exit_code == 0, result.output
    bundle = job.output_dir / "evidence-demands.zip"
    assert "evidence-demands.zip" in result.output
    assert "not downloaded yet" in result.output or "no certificate known yet" in result.output
    first = bundle.read_bytes()
    again = CliRunner().invoke(main, ["evidence", str(job.path)])
    assert again.exit_code == 0 and bundle.read_bytes() == first

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(unpacked)
    top = unpacked / "evidence-demands"
    check = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with open(top / "manifest.csv", encoding="utf-8-sig", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert [m["key"] for m in manifest] == [r["id"] for r in rows]
    recorded = ledger_documents(job)
    for m in manifest:
        assert m["document_1_sha256"] == recorded[m["key"]][0]["sha256"]
        assert (top / m["document_1_file"]).is_file()
    assert (top / "inputs" / "templates" / "letters" / "demand.html").is_file()
    assert (top / "inputs" / "templates" / "letters" / "letter.css").is_file()


# --- the examples -------------------------------------------------------------------------


def test_the_spanish_demand_letter_example_validates_with_a_letter_per_row(
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    job = load_job(tmp_path / "jobs" / "requerimiento-carta.yaml")
    _, scanned = validate(job)
    assert scanned.errors == [] and scanned.ok.height == 27  # the active customers
    letter = document_path(job.output_dir, "C-1001", "Requerimiento C-1001.pdf").read_bytes()
    text = text_of(letter)
    assert "Ana López" in text and money(job, "637.99") in text
    assert "Requerimiento de pago" in text


def test_a_contract_over_the_signature_limit_is_a_row_error_and_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batch.channels.signature.DOCUMENT_MAX_BYTES", 10_000)
    job = write_job(folder_with(tmp_path, people(2)), SIGNATURE_JOB)
    _, scanned = validate(job)
    assert [(e.key, e.field) for e in scanned.errors] == [
        ("K-000", "document.template"),
        ("K-001", "document.template"),
    ]
    assert "over the limit of 10,000 bytes" in scanned.errors[0].message
    assert not (job.output_dir / "documents" / "K-000" / "Contrato K-000.pdf").exists()
