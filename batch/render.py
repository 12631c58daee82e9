"""Rendering: one message per row, validated before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """One recipient's rendered message, ready to send.

    `content` holds the API payload fields every recipient of this exact message shares
    (email: subject, message, reply_to, reply_to_name, attachments; sms: message;
    signature: signers, document, document_name, language). `content_hash` is the SHA-256
    of its canonical JSON (attachment bytes included): equal hashes may share a request.
    """

    key: str
    row: int
    address: str  # e-mail address, E.164 phone, or first signer's e-mail
    name: str
    content: dict[str, Any]
    content_hash: str
