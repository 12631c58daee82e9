"""Certified e-mail: the channel's own rules (job file, keys, payload, answers, tracking).

The send loop, the renderer and the tracker are written once and ask the channel; these
tests pin down what the e-mail channel answers. End-to-end e-mail runs are in
test_runner.py, test_exactly_once.py and test_crash.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batch.channels import CHANNELS, Channel, channel_for
from batch.channels.email import EMAIL, email_fields
from batch.jobfile import load_job
from batch.jobmodel import JobSpec
from batch.ledger import FAILED, IN_DOUBT, SENT, Entry
from batch.message import Message
from batch.reconcile import MISSING_FROM_ANSWER

SPEC: dict[str, Any] = {
    "campaign": "c",
    "dataset": {"path": "d.csv"},
    "message": {"subject": "Hi {{ name }}", "html": "body.html"},
}


def spec(**changes: Any) -> JobSpec:
    return JobSpec.model_validate(SPEC | changes)


def test_channel_for_finds_the_channel_by_name_spec_or_job(tmp_path: Path) -> None:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    (tmp_path / "job.yaml").write_text(
        "campaign: c\ndataset: {path: d.csv}\nmessage: {subject: s, html: body.html}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    assert channel_for("email") is channel_for(job.spec) is channel_for(job) is EMAIL
    assert set(CHANNELS) == {"email", "sms", "signature"}
    with pytest.raises(ValueError, match="unknown channel 'fax'"):
        channel_for("fax")


@pytest.mark.parametrize("name", ["email", "sms", "signature"])
def test_every_channel_has_the_whole_protocol(name: str) -> None:
    channel: Channel = channel_for(name)
    methods = {n for n, v in vars(Channel).items() if callable(v) and not n.startswith("_")}
    members = set(Channel.__annotations__) | methods
    assert {"job_problems", "address_source", "key_of", "look_up", "track"} <= members
    assert [m for m in sorted(members) if not hasattr(channel, m)] == []
    assert channel.name == name


def test_job_file_rules() -> None:
    assert EMAIL.job_problems(spec()) == []
    problems = EMAIL.job_problems(
        spec(message={"text": "x"}, signers=[{"name": "A", "email": "a@example.com"}])
    )
    assert sorted(problems) == [
        (("message", "html"), "field required for channel email"),
        (("message", "subject"), "field required for channel email"),
        (("message", "text"), "only for channel sms"),
        (("signers",), "only for channel signature"),
    ]
    assert EMAIL.template_files(spec()) == [(("message", "html"), "body.html")]


def test_the_recipient_address_and_default_key() -> None:
    assert EMAIL.address_source(spec()) == "{{ email }}"
    assert EMAIL.address_source(spec(recipient={"email": "{{ mail }}"})) == "{{ mail }}"
    written = [" Ann@Example.COM ", "bob@example.com", ""]
    assert EMAIL.keys_of(pl.Series(written)).to_list() == ["ann@example.com", "bob@example.com", ""]


@pytest.mark.parametrize("spelling", ["ana@münchen.de", "Ana@MÜNCHEN.de", "ana@xn--mnchen-3ya.de"])
def test_one_person_has_one_identity_however_the_domain_is_spelt(spelling: str) -> None:
    address = EMAIL.normalize_address(spelling)
    assert address.endswith("@xn--mnchen-3ya.de")
    assert EMAIL.key_of(address) == "ana@xn--mnchen-3ya.de"
    with pytest.raises(ValueError):
        EMAIL.normalize_address("ana@")


def test_one_request_carries_every_recipient_of_a_message() -> None:
    content = {"subject": "s", "message": "<p>x</p>"}
    payload = EMAIL.payload(content, ["a@example.com", "b@example.com"])
    assert payload == content | {"recipient": "a@example.com, b@example.com"}
    assert EMAIL.groups and not EMAIL.hashes_address


def test_the_answer_names_each_recipient() -> None:
    entries = [
        Entry("A", "a@example.com", "", "h"),
        Entry("B", "B@example.com", "", "h"),
        Entry("C", "c@example.com", "", "h"),
    ]
    data = {
        "tracking_id": "T-PARENT",
        "recipients": [
            {"email": "a@example.com", "status": "sent", "tracking_id": "R-A"},
            {"email": "b@example.com ", "status": "failed", "error_details": "mailbox full"},
        ],
    }
    answer = EMAIL.answer(data, entries)
    assert answer.parent == answer.anchor == "T-PARENT"
    assert [(o.key, o.status, o.tracking_id, o.error_details) for o in answer.outcomes] == [
        ("A", SENT, "R-A", None),
        ("B", FAILED, None, "mailbox full"),
        ("C", IN_DOUBT, None, MISSING_FROM_ANSWER),  # accepted, not named: looked up later
    ]
    assert EMAIL.send_data(data, {}) is None


def test_credits_come_from_the_account_info() -> None:
    assert EMAIL.checks_credits
    assert EMAIL.remaining_credits({"user": {"remaining_emails": 7}}) == 7
    assert EMAIL.remaining_credits({"user": {}}) is None


@pytest.mark.parametrize(
    ("status", "final"),
    [("read", True), ("bounced", True), ("failed", True), ("delivered", False), (None, False)],
)
def test_final_statuses(status: str | None, final: bool) -> None:
    assert EMAIL.is_final(status) is final


def test_a_recipients_detail_becomes_ledger_fields() -> None:
    recipient = {
        "email": "a@example.com",
        "status": "read",
        "delivered_at": "2026-11-21 10:00:00",
        "read_at": "2026-11-21 11:00:00",
        "certificates": [
            {
                "certificate_type": "read",
                "file_hash": "ABC",
                "pdf_download_url": "/c/1.pdf",
                "confirmed_at": "2026-11-21 11:00:01",
            }
        ],
    }
    fields = email_fields(recipient, {"tracking_id": "T"}, {"status": SENT})
    assert fields["status"] == "read" and fields["read_at"].hour == 11
    assert (
        '"file_hash": "abc"' in fields["certificates"]
        and '"type": "read"' in fields["certificates"]
    )
    pending = email_fields({"status": "pending"}, {}, {"status": SENT, "channel_data": None})
    assert pending["status"] == SENT and pending["channel_data"] == '{"api_status": "pending"}'
    bounced = email_fields({"status": "bounced"}, {"error_status": "hard"}, {"status": SENT})
    assert bounced["error_status"] == "hard"


def test_the_preview_shows_subject_attachments_and_an_isolated_body() -> None:
    content = {
        "subject": "Hi",
        "message": '<p onclick="x">"quoted"</p>',
        "attachments": [{"filename": "a.pdf"}],
    }
    parts = EMAIL.preview(Message("K", 2, "a@example.com", "Ann", content, "h"))
    assert parts.before == [("subject", "Hi")]
    assert parts.after == [
        ("reply-to", "none: replies go to the sender"),
        ("attachments", "a.pdf"),
    ]
    assert parts.summary == ("subject", "Hi")
    named = {**content, "reply_to": "legal@example.com", "reply_to_name": "Legal"}
    parts = EMAIL.preview(Message("K", 2, "a@example.com", "Ann", named, "h"))
    assert ("reply-to", "Legal <legal@example.com>") in parts.after
    assert 'srcdoc="&lt;p onclick=&quot;x&quot;&gt;' in parts.body
