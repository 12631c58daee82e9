"""The sandbox speaks the documented API: endpoints, aliases, shapes, errors, progression."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from batch.sandbox import FakeClock, RunningSandbox, SandboxConfig, running_sandbox

SandboxFactory = Callable[..., RunningSandbox]
TEST_TOKEN = "test-token"  # the token conftest's sandboxes use

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
PDF_B64 = base64.b64encode(PDF).decode()


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def server(clock: FakeClock) -> Iterator[RunningSandbox]:
    # One server for the module keeps it fast; tests only look at what they send themselves.
    config = SandboxConfig(
        token=TEST_TOKEN, clock=clock, rate_limit=100_000, delivered_after=10, read_after=60
    )
    with running_sandbox(config) as sandbox:
        yield sandbox


@pytest.fixture
def api(server: RunningSandbox) -> Iterator[httpx.Client]:
    with server.client(timeout=5) as client:
        yield client


def send(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"recipient": "ana@example.com", "subject": "Rent", "message": "<p>Hi</p>", **fields}
    response = api.post("/api/send", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def signature(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {
        "signer_name": "Ana Diaz",
        "signer_email": "ana@example.com",
        "document": PDF_B64,
        "document_name": "Contract.pdf",
        **fields,
    }
    response = api.post("/api/signature/send", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body_token"),
    [
        ({"Authorization": f"Bearer {TEST_TOKEN}"}, None),
        ({"Authorization": f"bearer  {TEST_TOKEN}"}, None),
        ({"Authorization": TEST_TOKEN}, None),
        ({}, TEST_TOKEN),
    ],
    ids=["bearer", "bearer-lowercase", "bare-header", "body-token"],
)
def test_documented_ways_to_pass_the_token_are_accepted(
    server: RunningSandbox, headers: dict[str, str], body_token: str | None
) -> None:
    body: dict[str, Any] = {"to": "ana@example.com", "subject": "s", "message": "m"}
    if body_token:
        body["token"] = body_token
    with httpx.Client(base_url=server.base_url, headers=headers) as client:
        assert client.post("/api/send", json=body).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/info", {}),
        ("GET", "/api/info", {"Authorization": "Bearer wrong"}),
        ("GET", "/api/info", {"Authorization": "Bearer"}),
        ("GET", "/api/emails?limit=5", {"Authorization": "wrong"}),
        ("POST", "/api/send", {}),
        ("POST", "/api/sms/send", {"Authorization": f"Basic {TEST_TOKEN}"}),
        ("GET", "/api/signatures?limit=1", {}),
    ],
)
def test_missing_or_wrong_token_is_401_with_json_error(
    server: RunningSandbox, method: str, path: str, headers: dict[str, str]
) -> None:
    response = httpx.request(method, server.base_url + path, headers=headers, json={"token": "x"})
    assert response.status_code == 401
    assert response.json() == {"success": False, "message": "Invalid or missing token"}


SANDBOX_ENDPOINTS = [
    ("GET", "/_sandbox/log"),
    ("GET", "/_sandbox/stats"),
    ("GET", "/_sandbox/requests"),
    ("GET", "/_sandbox/faults"),
    ("POST", "/_sandbox/faults"),
]


@pytest.mark.parametrize("method, path", SANDBOX_ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TEST_TOKEN},  # the API's bare form is not enough here
        {"Authorization": f"Basic {TEST_TOKEN}"},
    ],
)
def test_sandbox_endpoints_refuse_a_missing_or_wrong_token(
    server: RunningSandbox, method: str, path: str, headers: dict[str, str]
) -> None:
    body = {"error_500": 1.0, "token": TEST_TOKEN}  # a body token is not accepted either
    response = httpx.request(method, server.base_url + path, headers=headers, json=body)
    assert response.status_code == 401
    assert response.json()["success"] is False
    assert server.state.faults.rates == {}


@pytest.mark.parametrize("method, path", SANDBOX_ENDPOINTS)
def test_sandbox_endpoints_answer_with_the_token(
    server: RunningSandbox, method: str, path: str
) -> None:
    response = httpx.request(method, server.base_url + path, headers=server.headers, json={})
    assert response.status_code == 200


# --- routing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing-here", 404),
        ("GET", "/elsewhere", 404),
        ("GET", "/api/send", 405),
        ("PUT", "/api/send", 405),
        ("POST", "/api/info", 405),
        ("DELETE", "/api/email", 405),
        ("POST", "/api/signatures", 405),
    ],
)
def test_unknown_paths_and_wrong_methods(
    api: httpx.Client, method: str, path: str, status: int
) -> None:
    response = api.request(method, path)
    assert response.status_code == status
    assert response.json()["success"] is False


# --- /api/info, /api/send ------------------------------------------------------------------------


def test_info_reports_the_account_and_remaining_credits(
    api: httpx.Client, server: RunningSandbox
) -> None:
    info = api.get("/api/info").json()
    assert info["name"] == "LegallyMail API"
    assert set(info["user"]) >= {"email", "name", "plan", "plan_name", "plan_limit"}
    assert info["user"]["extra_emails"] == 0
    assert info["user"]["remaining_emails"] == server.state.credits


@pytest.mark.parametrize("to_key", ["recipient", "to"])
@pytest.mark.parametrize("body_key", ["message", "body", "content"])
def test_send_accepts_documented_aliases(
    api: httpx.Client, server: RunningSandbox, to_key: str, body_key: str
) -> None:
    address = f"alias-{to_key}-{body_key}@example.com"
    body = {to_key: address, "subject": "Aliases", body_key: f"<b>{body_key}</b>"}
    result = api.post("/api/send", json=body).json()
    entry = next(e for e in server.state.log() if e["recipient"] == address)
    assert result["data"]["recipients"][0]["tracking_id"] == entry["tracking_id"]
    assert entry["message"] == f"<b>{body_key}</b>"
    assert entry["sha256"] == hashlib.sha256(f"<b>{body_key}</b>".encode()).hexdigest()


def test_send_response_has_the_documented_shape_and_rejects_fail_recipients(
    api: httpx.Client, server: RunningSandbox
) -> None:
    credits = server.state.credits
    result = send(api, recipient="a@example.com, failing@example.com ,b@example.com")
    assert result["success"] is True
    assert result["message"] == "Email sent to 2 of 3 recipients"
    data = result["data"]
    assert data["tracking_id"].startswith("cm_")
    assert data["subject"] == "Rent"
    assert TIMESTAMP.fullmatch(data["sent_at"])
    assert (data["success_count"], data["fail_count"]) == (2, 1)
    assert data["error_status"] is not None
    statuses = [(r["email"], r["status"], r["error_details"] is None) for r in data["recipients"]]
    assert statuses == [
        ("a@example.com", "sent", True),
        ("failing@example.com", "failed", False),
        ("b@example.com", "sent", True),
    ]
    assert len({r["tracking_id"] for r in data["recipients"]}) == 3
    # Rejected at send time: nothing was delivered, so nothing is charged.
    assert server.state.credits == credits - 2


def test_send_where_every_recipient_fails_is_recorded_but_not_successful(
    api: httpx.Client,
) -> None:
    result = send(api, recipient="fail1@example.com, fail2@example.com")
    assert result["success"] is False
    assert result["message"] == "Email sent to 0 of 2 recipients"
    detail = api.get("/api/email", params={"tracking_id": result["data"]["tracking_id"]}).json()
    assert detail["email"]["status"] == "failed"
    assert detail["email"]["error_status"] == "Rejected"


def test_attachments_are_hashed_into_the_log(api: httpx.Client, server: RunningSandbox) -> None:
    content = b"invoice 42"
    attachment = {
        "filename": "invoice.txt",
        "content": base64.encodebytes(content).decode(),  # with line breaks: still valid
        "mime_type": "text/plain",
    }
    result = send(api, recipient="attach@example.com", attachments=[attachment])
    tracking_id = result["data"]["recipients"][0]["tracking_id"]
    entry = next(e for e in server.state.log() if e["tracking_id"] == tracking_id)
    assert entry["attachments"] == [
        {
            "filename": "invoice.txt",
            "mime_type": "text/plain",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    ]
    assert entry["channel"] == "email"
    assert entry["parent_tracking_id"] == result["data"]["tracking_id"]
    assert entry["subject"] == "Rent"
    assert entry["status"] == "sent"


GOOD = {"recipient": "ana@example.com", "subject": "s", "message": "m"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"recipient": None}, "recipient / to"),
        ({"subject": None}, "subject"),
        ({"message": None}, "message / body / content"),
        ({"subject": "   "}, "subject"),
        ({"subject": 42}, "must be a string"),
        ({"recipient": ["ana@example.com"]}, "must be a string"),
        ({"recipient": "not-an-address"}, "Invalid email"),
        ({"recipient": "ana@example.com; bo@example.com"}, "Invalid email"),
        ({"recipient": ", ,"}, "cannot be empty"),
        ({"recipient": ",".join(f"r{i}@example.com" for i in range(11))}, "Too many recipients"),
        ({"reply_to": "nope"}, "reply_to"),
        ({"reply_to": "unverified@example.com"}, "verified sender"),
        ({"attachments": "x"}, "attachments"),
        ({"attachments": [{"filename": "a", "mime_type": "t"}]}, "content"),
        ({"attachments": [{"filename": "a", "mime_type": "t", "content": "@@@"}]}, "base64"),
        ({"attachments": [{"filename": "a", "mime_type": "t", "content": "abc"}]}, "base64"),
        ({"attachments": [{"filename": 1, "mime_type": "t", "content": ""}]}, "filename"),
    ],
)
def test_invalid_send_is_400_and_records_nothing(
    api: httpx.Client, server: RunningSandbox, change: dict[str, Any], fragment: str
) -> None:
    before = (len(server.state.log()), server.state.credits)
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = api.post("/api/send", json=body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert fragment in response.json()["message"]
    assert (len(server.state.log()), server.state.credits) == before


def test_a_lone_surrogate_escape_is_400_not_a_crash(api: httpx.Client) -> None:
    raw = b'{"recipient": "ana@example.com", "subject": "\\ud800", "message": "m"}'
    response = api.post("/api/send", content=raw)
    assert response.status_code == 400
    assert "Unicode" in response.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"a": 1' + b"1" * 5000 + b"}",
    ],
    ids=["text", "array", "string", "bad-utf8", "deep-nesting", "huge-int"],
)
def test_bodies_that_are_not_a_json_object_are_400(api: httpx.Client, raw: bytes) -> None:
    response = api.post("/api/send", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert api.get("/api/info").status_code == 200


def test_a_body_over_the_size_limit_is_refused_unread(sandbox_factory: SandboxFactory) -> None:
    small = sandbox_factory(max_body_bytes=1000)
    with small.client() as client:
        big = client.post("/api/send", json={**GOOD, "message": "x" * 5000})
        assert big.status_code == 400
        assert "too large" in big.json()["message"]
        assert client.post("/api/send", json=GOOD).status_code == 200


# --- /api/emails, /api/email ---------------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, "", "0", "26", "-1", "abc", "1.5", "9" * 400])
def test_emails_limit_must_be_1_to_25(api: httpx.Client, limit: str | None) -> None:
    params = {} if limit is None else {"limit": limit}
    response = api.get("/api/emails", params=params)
    assert response.status_code == 400
    assert "limit" in response.json()["message"]


def test_emails_lists_newest_first_with_the_documented_fields(api: httpx.Client) -> None:
    single = send(api, recipient="list-single@example.com")["data"]["tracking_id"]
    group = send(api, recipient="g1@example.com, g2@example.com")["data"]["tracking_id"]
    listing = api.get("/api/emails", params={"limit": 2}).json()
    assert (listing["success"], listing["count"], listing["limit"]) == (True, 2, 2)
    assert listing["max_limit"] == 25
    newest, older = listing["emails"]
    assert (newest["tracking_id"], older["tracking_id"]) == (group, single)
    assert newest["recipient"] == "Multiple Recipients"
    assert (newest["is_multi_recipient"], newest["recipient_count"]) == (True, 2)
    assert older["recipient"] == "list-single@example.com"
    assert (older["is_multi_recipient"], older["recipient_count"]) == (False, 1)
    assert set(older) == {
        "id", "tracking_id", "recipient", "subject", "status", "sent_at", "read_at",
        "created_at", "mailsender_id", "is_multi_recipient", "recipient_count", "error_status",
    }  # fmt: skip
    assert newest["id"] > older["id"]
    assert older["status"] == "sent" and older["read_at"] is None
    assert len(api.get("/api/emails", params={"limit": 25}).json()["emails"]) <= 25


def test_email_is_found_by_parent_or_recipient_tracking_id(api: httpx.Client) -> None:
    data = send(api, recipient="p1@example.com, p2@example.com")["data"]
    by_parent = api.get("/api/email", params={"tracking_id": data["tracking_id"]}).json()
    by_child = api.get(
        "/api/email", params={"tracking_id": data["recipients"][1]["tracking_id"]}
    ).json()
    assert by_parent == by_child
    email = by_parent["email"]
    assert email["certificates"] == []
    assert [r["email"] for r in email["recipients"]] == ["p1@example.com", "p2@example.com"]
    assert set(email["recipients"][0]) == {
        "email", "name", "status", "tracking_id", "sent_at", "delivered_at", "read_at",
        "error_details", "certificates",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/email", {}, 400),
        ("/api/email", {"tracking_id": "cm_unknown"}, 404),
        ("/api/sms", {}, 400),
        ("/api/sms", {"uuid": "nope"}, 404),
        ("/api/sms", {"id": "nope"}, 404),
        ("/api/signature", {}, 400),
        ("/api/signature", {"uuid": "nope"}, 404),
        ("/api/signatures", {}, 400),
        ("/api/signatures", {"limit": "30"}, 400),
    ],
)
def test_lookups_without_or_with_unknown_ids(
    api: httpx.Client, path: str, params: dict[str, str], status: int
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.json()["success"] is False


# --- progression and certificates (fake clock) ---------------------------------------------------


def email_detail(api: httpx.Client, tracking_id: str) -> dict[str, Any]:
    return dict(api.get("/api/email", params={"tracking_id": tracking_id}).json()["email"])


def test_recipients_move_sent_delivered_read_with_certificates(
    api: httpx.Client, clock: FakeClock
) -> None:
    data = send(api, recipient="life@example.com, bounce.me@example.com")["data"]
    parent = data["tracking_id"]
    first = email_detail(api, parent)
    assert [r["status"] for r in first["recipients"]] == ["sent", "sent"]
    assert first["recipients"][0]["certificates"] == []
    cert_url = api.base_url.join("/emails/download-certificate")
    early = api.get(
        cert_url, params={"id": data["recipients"][0]["tracking_id"], "status": "delivered"}
    )
    assert early.status_code == 404

    clock.advance(10)
    middle = email_detail(api, parent)
    life, bounced = middle["recipients"]
    assert (life["status"], bounced["status"]) == ("delivered", "bounced")
    assert bounced["error_details"] and bounced["certificates"] == []
    assert middle["status"] == "pending"
    assert middle["error_status"] == "Hard Bounce"
    assert [c["certificate_type"] for c in life["certificates"]] == ["delivered"]
    assert TIMESTAMP.fullmatch(life["delivered_at"]) and life["read_at"] is None

    clock.advance(50)
    life = email_detail(api, parent)["recipients"][0]
    assert life["status"] == "read"
    assert TIMESTAMP.fullmatch(life["read_at"])
    assert [c["certificate_type"] for c in life["certificates"]] == ["delivered", "read"]
    for certificate in life["certificates"]:
        assert certificate["has_tsr"] is True and certificate["has_tsq"] is True
        assert certificate["pdf_download_url"].startswith(str(api.base_url))
        download = api.get(certificate["pdf_download_url"])
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/pdf"
        assert download.content.startswith(b"%PDF-") and download.content.endswith(b"%%EOF\n")
        assert hashlib.sha256(download.content).hexdigest() == certificate["file_hash"]


def test_single_recipient_email_status_follows_its_recipient(
    api: httpx.Client, clock: FakeClock
) -> None:
    parent = send(api, recipient="solo@example.com")["data"]["tracking_id"]
    clock.advance(60)
    listing = api.get("/api/emails", params={"limit": 25}).json()["emails"]
    entry = next(e for e in listing if e["tracking_id"] == parent)
    assert entry["status"] == "read" and TIMESTAMP.fullmatch(entry["read_at"])


# --- SMS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("phone_key", "text_key"), [("phone", "message"), ("recipient", "text")])
def test_sms_send_and_status_with_aliases(
    api: httpx.Client, clock: FakeClock, phone_key: str, text_key: str
) -> None:
    sent = api.post("/api/sms/send", json={phone_key: "+34 600 123 456", text_key: "Hola"}).json()
    assert sent["success"] is True
    assert (sent["status"], sent["credits_deducted"]) == ("sent", 1)
    assert sent["message"] == "Certified SMS sent successfully"
    data = api.get("/api/sms", params={"uuid": sent["uuid"]}).json()["data"]
    assert data["status"] == "sent" and data["download_certificate_url"] is None
    assert (data["recipient"], data["message"], data["credits"]) == ("+34600123456", "Hola", 1)
    clock.advance(10)
    data = api.get("/api/sms", params={"id": sent["uuid"]}).json()["data"]
    assert data["status"] == "delivered"
    assert TIMESTAMP.fullmatch(data["delivered_at"]) and TIMESTAMP.fullmatch(
        data["ts_confirmed_at"]
    )
    assert data["failed_at"] is None
    certificate = api.get(data["download_certificate_url"])
    assert certificate.status_code == 200 and certificate.content.startswith(b"%PDF-")


def test_sms_to_a_number_ending_0000_fails_after_sending(
    api: httpx.Client, clock: FakeClock
) -> None:
    sent = api.post("/api/sms/send", json={"phone": "+34600000000", "message": "x"}).json()
    assert sent["status"] == "sent"
    clock.advance(10)
    data = api.get("/api/sms", params={"uuid": sent["uuid"]}).json()["data"]
    assert data["status"] == "failed" and TIMESTAMP.fullmatch(data["failed_at"])
    assert data["download_certificate_url"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"message": "x"},
        {"phone": "600123456", "message": "x"},
        {"phone": "+34abc", "message": "x"},
        {"phone": 34600123456, "message": "x"},
        {"phone": "+34600123456"},
        {"phone": "+34600123456", "message": "x" * 301},
    ],
)
def test_invalid_sms_is_400(api: httpx.Client, body: dict[str, Any]) -> None:
    assert api.post("/api/sms/send", json=body).status_code == 400


# --- signatures ----------------------------------------------------------------------------------


def test_signature_request_moves_pending_to_signed_with_documents(
    api: httpx.Client, clock: FakeClock
) -> None:
    created = signature(api, language="en")
    assert created["status"] == "pending" and TIMESTAMP.fullmatch(created["created_at"])
    assert (created["signer_name"], created["document_name"]) == ("Ana Diaz", "Contract.pdf")
    detail = api.get("/api/signature", params={"uuid": created["uuid"]}).json()["data"]
    assert detail["status"] == "pending" and detail["download_acta_url"] is None
    assert detail["document_hash"] == hashlib.sha256(PDF).hexdigest()
    assert api.get(detail["download_original_url"]).content == PDF

    clock.advance(60)
    detail = api.get("/api/signature", params={"uuid": created["uuid"]}).json()["data"]
    assert detail["status"] == "signed" and TIMESTAMP.fullmatch(detail["signed_at"])
    assert TIMESTAMP.fullmatch(detail["expires_at"])
    assert detail["signers"] == [
        {
            "signer_name": "Ana Diaz",
            "signer_email": "ana@example.com",
            "signer_phone": None,
            "status": "signed",
            "signed_at": detail["signed_at"],
        }
    ]
    acta = api.get(detail["download_acta_url"])
    assert acta.status_code == 200 and acta.content.startswith(b"%PDF-")
    assert hashlib.sha256(acta.content).hexdigest() == detail["signed_document_hash"]
    listing = api.get("/api/signatures", params={"limit": 25}).json()
    entry = next(e for e in listing["data"] if e["uuid"] == created["uuid"])
    assert entry["status"] == "signed" and entry["signed_at"] == detail["signed_at"]


def test_multi_signer_request_is_declined_when_one_signer_declines(
    api: httpx.Client, clock: FakeClock, server: RunningSandbox
) -> None:
    signers = [
        {"name": "One", "email": "one@example.com"},
        {"name": "Two", "email": "decline.two@example.com", "phone": "+34600111222"},
    ]
    created = signature(api, signers=signers, signer_name=None, signer_email=None)
    assert created["signer_email"] == "one@example.com"
    logged = [e for e in server.state.log() if e["tracking_id"] == created["uuid"]]
    assert [e["recipient"] for e in logged] == ["one@example.com", "decline.two@example.com"]
    clock.advance(60)
    detail = api.get("/api/signature", params={"uuid": created["uuid"]}).json()["data"]
    assert detail["status"] == "declined"
    assert [s["status"] for s in detail["signers"]] == ["signed", "declined"]
    assert detail["signers"][1]["signer_phone"] == "+34600111222"
    assert (
        api.get(f"/dashboard/electronic-signature/download-acta/{created['uuid']}").status_code
        == 404
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"signer_name": None}, "signer_name"),
        ({"signer_email": "bad"}, "Invalid email"),
        ({"document": None}, "document"),
        ({"document": "***"}, "base64"),
        ({"document": base64.b64encode(b"plain text").decode()}, "PDF"),
        ({"document_name": None}, "document_name"),
        ({"language": "de"}, "language"),
        ({"signers": []}, "signers"),
        (
            {"signers": [{"name": f"S{i}", "email": f"s{i}@example.com"} for i in range(6)]},
            "signers",
        ),
        ({"signers": [{"name": "S"}]}, "email"),
        ({"signers": ["s@example.com"]}, "signers[0]"),
    ],
)
def test_invalid_signature_request_is_400(
    api: httpx.Client, change: dict[str, Any], fragment: str
) -> None:
    body = {
        "signer_name": "Ana",
        "signer_email": "ana@example.com",
        "document": PDF_B64,
        "document_name": "C.pdf",
        **change,
    }
    response = api.post(
        "/api/signature/send", json={k: v for k, v in body.items() if v is not None}
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_signature_document_size_limit(sandbox_factory: SandboxFactory) -> None:
    small = sandbox_factory(max_document_bytes=100)
    big = base64.b64encode(PDF + b"x" * 200).decode()
    body = {"signer_name": "A", "signer_email": "a@example.com", "document_name": "C.pdf"}
    with small.client() as client:
        assert client.post("/api/signature/send", json={**body, "document": big}).status_code == 400
        assert (
            client.post("/api/signature/send", json={**body, "document": PDF_B64}).status_code
            == 200
        )


# --- inspection, persistence, concurrency --------------------------------------------------------


def test_sandbox_log_over_http_matches_the_python_log(
    api: httpx.Client, server: RunningSandbox
) -> None:
    send(api, recipient="http-log@example.com")
    over_http = api.get("/_sandbox/log").json()
    assert over_http == json.loads(json.dumps(server.state.log()))
    stats = api.get("/_sandbox/stats").json()
    assert stats["requests"] == server.state.request_count()
    assert stats["by_status"]["200"] == server.state.request_count(200)
    recent = api.get("/_sandbox/requests").json()
    assert recent[-1]["path"] == "/api/send" and recent[-1]["status"] == 200


def test_a_restarted_sandbox_keeps_emails_credits_and_token(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.sqlite"
    config = SandboxConfig(db=db, credits=50, delivered_after=0, read_after=0)
    with running_sandbox(config) as first, first.client() as client:
        tracking_id = send(client, recipient="keep@example.com, fail@example.com")["data"][
            "tracking_id"
        ]
        client.post("/api/sms/send", json={"phone": "+34600123456", "message": "x"})
        signature(client)
        log, token = first.state.log(), first.token
    assert first.state.credits == 47
    with running_sandbox(replace(config, credits=999)) as second, second.client() as client:
        assert second.token == token
        assert second.state.credits == 47
        assert second.state.log() == log
        assert email_detail(client, tracking_id)["recipient_count"] == 2
        assert send(client)["data"]["tracking_id"] != tracking_id
        assert client.get("/api/emails", params={"limit": 5}).json()["count"] == 2


def test_concurrent_sends_and_log_reads_stay_consistent(
    server: RunningSandbox, clock: FakeClock
) -> None:
    before = len(server.state.log())
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with server.client() as client:
                for i in range(5):
                    send(client, recipient=f"t{n}-{i}@example.com, u{n}-{i}@example.com")
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        server.state.log()  # reading while the loop thread writes must never fail
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(server.state.log()) == before + 40
