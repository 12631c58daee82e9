"""Turn request bodies and query strings into checked requests, or an ApiProblem (400).

Every check names the field it refused, the way the API's 400 answers do.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from batch.sandbox.pdf import sha256_hex
from batch.sandbox.records import Attachment, Signer

MAX_LIST_LIMIT = 25
SMS_MAX_CHARS = 300
LANGUAGES = ("es", "en", "fr", "it")
_EMAIL = re.compile(
    r"[^@\s,;<>()\[\]\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
_WHITESPACE = re.compile(r"\s+")


class ApiProblem(Exception):
    """A request the API refuses: HTTP status plus the message for the JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EmailRequest:
    """A checked POST /api/send body."""

    recipients: tuple[str, ...]
    subject: str
    message: str
    reply_to: str | None
    reply_to_name: str | None
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class SmsRequest:
    """A checked POST /api/sms/send body."""

    phone: str
    message: str


@dataclass(frozen=True)
class SignatureRequest:
    """A checked POST /api/signature/send body."""

    signers: tuple[Signer, ...]
    document: bytes
    document_name: str
    language: str


def is_email(text: str) -> bool:
    """Whether `text` looks like one plain e-mail address (no display name)."""
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


def _pick(body: dict[str, Any], names: tuple[str, ...]) -> Any:
    # Documented aliases: the first one present wins.
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return None


def _text(body: dict[str, Any], names: tuple[str, ...], *, required: bool = True) -> str | None:
    value = _pick(body, names)
    label = " / ".join(names)
    if value is None:
        if required:
            raise ApiProblem(400, f"Missing required field: {label}")
        return None
    if not isinstance(value, str):
        raise ApiProblem(400, f"Field {label} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON escapes can smuggle lone surrogates that no response or database could hold.
        raise ApiProblem(400, f"Field {label} is not valid Unicode text") from None
    if required and not value.strip():
        raise ApiProblem(400, f"Field {label} cannot be empty")
    return value


def _required(body: dict[str, Any], *names: str) -> str:
    value = _text(body, names)
    assert value is not None
    return value


def decode_base64(text: Any, label: str) -> bytes:
    """Decode strict base64 (line breaks allowed), or refuse the field with 400."""
    if not isinstance(text, str):
        raise ApiProblem(400, f"Field {label} must be a base64 string")
    try:
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise ApiProblem(400, f"Field {label} is not valid base64") from None


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ApiProblem(400, "Field attachments must be an array")
    found = []
    for index, item in enumerate(value):
        place = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise ApiProblem(400, f"Field {place} must be an object")
        filename = _text(item, ("filename",))
        mime_type = _text(item, ("mime_type",))
        if "content" not in item:
            raise ApiProblem(400, f"Missing required field: {place}.content")
        data = decode_base64(item["content"], f"{place}.content")
        assert filename is not None and mime_type is not None
        found.append(Attachment(filename, mime_type, sha256_hex(data), len(data)))
    return tuple(found)


def parse_email_request(body: dict[str, Any], max_recipients: int) -> EmailRequest:
    """Check a send body: recipients (alias to), subject, message (alias body/content)."""
    raw = _required(body, "recipient", "to")
    recipients = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not recipients:
        raise ApiProblem(400, "Field recipient / to cannot be empty")
    if len(recipients) > max_recipients:
        raise ApiProblem(
            400, f"Too many recipients: {len(recipients)} (maximum {max_recipients} per request)"
        )
    for address in recipients:
        if not is_email(address):
            raise ApiProblem(400, f"Invalid email address: {address[:100]}")
    subject = _required(body, "subject")
    message = _required(body, "message", "body", "content")
    reply_to = _text(body, ("reply_to",), required=False)
    if reply_to is not None:
        if not is_email(reply_to):
            raise ApiProblem(400, f"Invalid reply_to address: {reply_to[:100]}")
        if reply_to.lower().startswith("unverified"):
            raise ApiProblem(400, "reply_to must be a registered and verified sender")
    reply_to_name = _text(body, ("reply_to_name",), required=False)
    attachments = _attachments(body.get("attachments"))
    return EmailRequest(recipients, subject, message, reply_to, reply_to_name, attachments)


def parse_sms_request(body: dict[str, Any]) -> SmsRequest:
    """Check an SMS body: phone (alias recipient) with country code, message (alias text)."""
    phone = re.sub(r"[\s\-()]", "", _required(body, "phone", "recipient"))
    if _PHONE.fullmatch(phone) is None:
        raise ApiProblem(400, "Invalid phone number: use the country code, e.g. +34600000000")
    message = _required(body, "message", "text")
    if len(message) > SMS_MAX_CHARS:
        raise ApiProblem(400, f"SMS message too long: {len(message)} characters (max 300)")
    return SmsRequest(phone, message)


def _signer(item: Any, place: str) -> Signer:
    if not isinstance(item, dict):
        raise ApiProblem(400, f"Field {place} must be an object")
    name = _required(item, "name")
    email = _required(item, "email")
    phone = _text(item, ("phone",), required=False)
    if not is_email(email):
        raise ApiProblem(400, f"Invalid email address in {place}: {email[:100]}")
    return Signer(name, email, phone)


def parse_signature_request(
    body: dict[str, Any], max_signers: int, max_document_bytes: int
) -> SignatureRequest:
    """Check a signature body: signer_* or signers[], document (base64 PDF), document_name."""
    signers_value = body.get("signers")
    if signers_value is not None:
        if not isinstance(signers_value, list) or not signers_value:
            raise ApiProblem(400, "Field signers must be a non-empty array")
        if len(signers_value) > max_signers:
            raise ApiProblem(400, f"Too many signers: {len(signers_value)} (max {max_signers})")
        signers = tuple(_signer(s, f"signers[{i}]") for i, s in enumerate(signers_value))
    else:
        single = {
            "name": _required(body, "signer_name"),
            "email": _required(body, "signer_email"),
            "phone": body.get("signer_phone"),
        }
        signers = (_signer(single, "signer"),)
    if "document" not in body or body["document"] is None:
        raise ApiProblem(400, "Missing required field: document")
    document = decode_base64(body["document"], "document")
    if len(document) > max_document_bytes:
        raise ApiProblem(400, f"Document too large: {len(document)} bytes (max 10 MB)")
    if not document.startswith(b"%PDF-"):
        raise ApiProblem(400, "Field document must be a base64-encoded PDF")
    document_name = _required(body, "document_name")
    language = _text(body, ("language",), required=False) or "es"
    if language not in LANGUAGES:
        raise ApiProblem(400, f"Unsupported language {language[:20]!r}: use es, en, fr or it")
    return SignatureRequest(signers, document, document_name, language)


def parse_limit(raw: str | None) -> int:
    """Check the `limit` query parameter: required, an integer in 1..25."""
    if raw is None or not raw.strip():
        raise ApiProblem(400, "Missing required parameter: limit (1 to 25)")
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 3):
        raise ApiProblem(400, "Parameter limit must be an integer between 1 and 25")
    limit = int(text)
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ApiProblem(400, "Parameter limit must be an integer between 1 and 25")
    return limit
