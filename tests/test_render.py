"""Rendering: every row validated up front, data never treated as markup or template."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batch.dataset import read_dataset
from batch.errors import RowError
from batch.jobfile import Job, load_job
from batch.message import content_hash
from batch.preview import write_preview
from batch.render import Renderer, RowProblems, render_keys, scan
from batch.templating import format_date, money

PDF = b"%PDF-1.4\n%tiny\n%%EOF\n"

EMAIL = """\
campaign: c
dataset: {path: d.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message:
  subject: "Notice {{ id }}"
  html: body.html
"""


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    base = tmp_path / "project"
    (base / "jobs").mkdir(parents=True)
    (base / "templates").mkdir()
    (base / "templates" / "base.html").write_text(
        "<html>{% block body %}{% endblock %}{% include 'foot.html' %}</html>"
    )
    (base / "templates" / "foot.html").write_text("<footer>bye</footer>")
    (base / "jobs" / "body.html").write_text(
        "{% extends 'base.html' %}{% block body %}<p>Hi {{ name }}</p>{% endblock %}"
    )
    (base / "jobs" / "terms.pdf").write_bytes(PDF)
    return base / "jobs"


def make_job(job_dir: Path, text: str = EMAIL) -> Job:
    (job_dir / "job.yaml").write_text(text)
    return load_job(job_dir / "job.yaml")


def row(**values: Any) -> dict[str, Any]:
    base = {"__row__": 2, "__key__": "1", "id": "1", "name": "Ann", "email": "ann@example.com"}
    return base | values


def test_email_message(job_dir: Path) -> None:
    message = Renderer(make_job(job_dir)).render(row(email=" Ann@EXAMPLE.com "))
    assert message.address == "Ann@example.com"
    assert message.name == "Ann"
    assert message.key == "1" and message.row == 2
    assert message.content == {
        "subject": "Notice 1",
        "message": "<html><p>Hi Ann</p><footer>bye</footer></html>",
    }
    assert message.content_hash == content_hash(message.content)


def test_html_is_autoescaped_but_subject_is_plain_text(job_dir: Path) -> None:
    job = make_job(job_dir, EMAIL.replace("Notice {{ id }}", "Notice {{ name }}"))
    message = Renderer(job).render(row(name="<script>x</script> & co"))
    assert "<script>" not in message.content["message"]
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in message.content["message"]
    assert message.content["subject"] == "Notice <script>x</script> & co"


def test_cell_values_are_never_rendered_as_templates(job_dir: Path) -> None:
    message = Renderer(make_job(job_dir)).render(row(name="{{ 7 * 7 }}"))
    assert "{{ 7 * 7 }}" in message.content["message"]


def test_identical_bodies_share_a_hash_and_personal_ones_do_not(job_dir: Path) -> None:
    renderer = Renderer(make_job(job_dir, EMAIL.replace("Notice {{ id }}", "Notice")))
    a = renderer.render(row(email="a@example.com"))
    b = renderer.render(row(email="b@example.com", __key__="2", id="2"))
    c = renderer.render(row(email="c@example.com", __key__="3", name="Cy"))
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize(
    ("value", "args", "expected"),
    [
        ("1234.5", (), "1,234.50 EUR"),
        (1234.5, ("USD",), "1,234.50 USD"),
        ("-3", ("", 0), "-3"),
        ("1000000", ("EUR", 1), "1,000,000.0 EUR"),
    ],
)
def test_money(value: Any, args: tuple[Any, ...], expected: str) -> None:
    assert money(value, *args) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2026-01-31", "%d/%m/%Y", "31/01/2026"),
        ("2026-01-31T09:30:00", "%H:%M", "09:30"),
        ("2026-01-31 09:30", "%Y", "2026"),
    ],
)
def test_date(value: str, fmt: str, expected: str) -> None:
    assert format_date(value, fmt) == expected


ERROR_CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("missing variable", EMAIL.replace("{{ id }}", "{{ ref }}"), {}, "message.subject", "'ref'"),
    ("invalid address", EMAIL, {"email": "not-an-address"}, "recipient.email", "invalid e-mail"),
    (
        "empty subject",
        EMAIL.replace("Notice {{ id }}", "{{ id }}"),
        {"id": " "},
        "message.subject",
        "empty",
    ),
    (
        "bad money",
        EMAIL.replace("Notice {{ id }}", "{{ name|money }}"),
        {"name": "lots"},
        "message.subject",
        "money: not an amount",
    ),
    (
        "bad date",
        EMAIL.replace("Notice {{ id }}", "{{ name|date }}"),
        {"name": "31/12/2026"},
        "message.subject",
        "not an ISO date",
    ),
    (
        "attachment missing",
        EMAIL + "  attachments: [{path: '{{ id }}.pdf'}]\n",
        {},
        "message.attachments[0].path",
        "file not found",
    ),
    (
        "attachment outside the folder",
        EMAIL + "  attachments: [{path: '../templates/base.html'}]\n",
        {},
        "message.attachments[0].path",
        "outside the job's folder",
    ),
    (
        "bad reply_to",
        EMAIL + "  reply_to: '{{ name }}'\n",
        {},
        "message.reply_to",
        "invalid e-mail",
    ),
]


@pytest.mark.parametrize(
    ("text", "values", "field", "fragment"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_row_errors(
    job_dir: Path, text: str, values: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(RowProblems) as info:
        Renderer(make_job(job_dir, text)).render(row(**values))
    [error] = info.value.errors
    assert (error.row, error.key, error.field) == (2, "1", field)
    assert fragment in error.message


def test_all_problems_of_a_row_are_reported(job_dir: Path) -> None:
    with pytest.raises(RowProblems) as info:
        Renderer(make_job(job_dir)).render({"__row__": 5, "__key__": "k", "email": "bad"})
    fields = sorted(e.field for e in info.value.errors)
    assert fields == ["message.html", "message.subject", "recipient.email", "recipient.name"]


def test_attachments_are_encoded_and_hashed(job_dir: Path) -> None:
    job = make_job(job_dir, EMAIL + "  attachments: [{path: terms.pdf, name: Terms.pdf}]\n")
    first = Renderer(job).render(row())
    [attachment] = first.content["attachments"]
    assert attachment == {
        "filename": "Terms.pdf",
        "content": base64.b64encode(PDF).decode(),
        "mime_type": "application/pdf",
    }
    (job_dir / "terms.pdf").write_bytes(PDF + b"changed")
    second = Renderer(job).render(row())
    assert second.content_hash != first.content_hash
    assert second.content_hash == content_hash(second.content)


def test_symlink_escaping_the_folder_is_refused(job_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", job_dir / "link.txt")
    job = make_job(job_dir, EMAIL + "  attachments: [{path: link.txt}]\n")
    with pytest.raises(RowProblems, match="outside the job's folder"):
        Renderer(job).render(row())


SMS = """\
campaign: s
channel: sms
dataset: {path: d.csv, key: id}
recipient: {phone: "{{ phone }}", default_region: ES}
message: {text: "Hola {{ name }}"}
"""


def test_sms_normalizes_to_e164_and_hashes_the_address(job_dir: Path) -> None:
    renderer = Renderer(make_job(job_dir, SMS))
    a = renderer.render(row(phone="612 345 678"))
    b = renderer.render(row(phone="+34 612345679"))
    assert (a.address, b.address) == ("+34612345678", "+34612345679")
    assert a.content == b.content == {"message": "Hola Ann"}
    assert a.content_hash != b.content_hash


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"phone": "12"}, "recipient.phone", "invalid phone number"),
        ({"phone": "hello"}, "recipient.phone", "invalid phone number"),
        ({"phone": "612345678", "name": "x" * 300}, "message.text", "is 305 characters"),
    ],
)
def test_sms_errors(job_dir: Path, values: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(RowProblems) as info:
        Renderer(make_job(job_dir, SMS)).render(row(**values))
    [error] = info.value.errors
    assert error.field == field and fragment in error.message


SIGNATURE = """\
campaign: contracts
channel: signature
dataset: {path: d.csv, key: id}
recipient: {default_region: ES}
signers:
  - {name: "{{ name }}", email: "{{ email }}", phone: "{{ phone }}"}
  - {name: Notary, email: notary@example.com}
document: {path: "docs/{{ id }}.pdf", name: "Contract {{ id }}.pdf"}
language: en
"""


def test_signature_message(job_dir: Path) -> None:
    (job_dir / "docs").mkdir()
    (job_dir / "docs" / "1.pdf").write_bytes(PDF)
    message = Renderer(make_job(job_dir, SIGNATURE)).render(row(phone=""))
    assert message.address == "ann@example.com"
    assert message.content == {
        "signers": [
            {"name": "Ann", "email": "ann@example.com"},
            {"name": "Notary", "email": "notary@example.com"},
        ],
        "document": base64.b64encode(PDF).decode(),
        "document_name": "Contract 1.pdf",
        "language": "en",
    }


@pytest.mark.parametrize(
    ("setup", "values", "field", "fragment"),
    [
        (None, {}, "document.path", "file not found"),
        (b"hello", {}, "document.path", "not a PDF"),
        (b"%PDF" + b"0" * (10 * 1024 * 1024), {}, "document.path", "the limit is 10 MB"),
        (PDF, {"email": "nope"}, "signers[0].email", "invalid e-mail"),
        (PDF, {"phone": "123"}, "signers[0].phone", "invalid phone"),
    ],
)
def test_signature_errors(
    job_dir: Path, setup: bytes | None, values: dict[str, Any], field: str, fragment: str
) -> None:
    (job_dir / "docs").mkdir()
    if setup is not None:
        (job_dir / "docs" / "1.pdf").write_bytes(setup)
    with pytest.raises(RowProblems) as info:
        Renderer(make_job(job_dir, SIGNATURE)).render(row(phone="612345678") | values)
    [error] = info.value.errors
    assert error.field == field and fragment in error.message


def dataset(job_dir: Path, rows: int, bad_every: int = 0) -> None:
    lines = ["id,name,email"]
    for i in range(rows):
        email = "broken" if bad_every and i % bad_every == 0 else f"user{i}@example.com"
        lines.append(f"K{i},Name {i % 7},{email}")
    (job_dir / "d.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("value", [None, "", " Ann ", 0, 1.5, True, "a & <b>", "{{ x }}"])
def test_a_plain_variable_renders_exactly_as_jinja_does(job_dir: Path, value: Any) -> None:
    # `{{ name }}` takes a shortcut past Jinja; `{{ name }}{{ "" }}` cannot: same result.
    plain = Renderer(make_job(job_dir)).render(row(name=value))
    full = Renderer(make_job(job_dir, EMAIL.replace('"{{ name }}"', "'{{ name }}{{ \"\" }}'")))
    assert plain.name == full.render(row(name=value)).name


def test_a_plain_variable_missing_from_the_row_is_named(job_dir: Path) -> None:
    data = {k: v for k, v in row().items() if k != "email"}
    with pytest.raises(RowProblems, match="variable 'email' is missing from the row"):
        Renderer(make_job(job_dir)).render(data)


def test_a_plain_variable_may_name_a_global(job_dir: Path) -> None:
    job = make_job(job_dir, EMAIL.replace('"{{ name }}"', '"{{ campaign }}"'))
    assert Renderer(job).render(row()).name == "c"


def test_scan_reports_all_errors_and_keeps_a_compact_summary(job_dir: Path) -> None:
    dataset(job_dir, 50, bad_every=10)
    job = make_job(job_dir)
    result = scan(job, read_dataset(job))
    assert result.ok.columns == ["row", "key", "address", "name", "content_hash", "subject"]
    assert result.ok.height == 45
    assert [e.row for e in result.errors] == [2, 12, 22, 32, 42]
    assert all(e.field == "recipient.email" for e in result.errors)


def test_scan_parallel_equals_serial(job_dir: Path) -> None:
    dataset(job_dir, 5_000, bad_every=97)
    job = make_job(job_dir)
    frame = read_dataset(job)
    serial = scan(job, frame, workers=1)
    parallel = scan(job, frame, workers=2)
    assert serial.ok.equals(parallel.ok)
    assert serial.errors == parallel.errors
    assert len(serial.errors) == 52


def test_scan_catches_duplicate_keys_in_a_raw_frame(job_dir: Path) -> None:
    job = make_job(job_dir)
    frame = pl.DataFrame(
        {"id": ["1", "2"], "name": ["a", "b"], "email": ["a@example.com", "b@example.com"]}
    ).with_columns(pl.lit("same").alias("__key__"))
    errors = scan(job, frame).errors
    assert errors == [
        RowError(1, "same", "key", "duplicate key, also on row(s) 2"),
        RowError(2, "same", "key", "duplicate key, also on row(s) 1"),
    ]


def test_render_keys_in_the_order_given(job_dir: Path) -> None:
    dataset(job_dir, 10)
    job = make_job(job_dir)
    frame = read_dataset(job)
    messages = list(render_keys(job, frame, ["K7", "K2"]))
    assert [(m.key, m.row, m.address) for m in messages] == [
        ("K7", 9, "user7@example.com"),
        ("K2", 4, "user2@example.com"),
    ]


def test_write_preview(job_dir: Path, tmp_path: Path) -> None:
    dataset(job_dir, 5, bad_every=4)
    job = make_job(job_dir)
    index = write_preview(job, read_dataset(job), tmp_path / "preview", limit=3)
    pages = sorted(p.name for p in index.parent.iterdir())
    assert pages == ["0002-K1.html", "0003-K2.html", "index.html"]
    text = index.read_text()
    assert "user1@example.com" in text and "invalid e-mail" in text
    assert "Notice K1" in (index.parent / "0002-K1.html").read_text()
