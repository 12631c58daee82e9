"""A rendered message and its content hash: what makes two requests the same request.

The hash decides grouping (equal hashes may share a request) and detects a dataset changed
under a running campaign, so every channel computes it here, the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_BLOB_CACHE_ENTRIES = 256  # signature documents differ per row: bound the memory they hold


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


def content_hash(content: Mapping[str, Any], address: str | None = None) -> str:
    """SHA-256 of the canonical JSON of `content` (and `address`, for one-recipient channels).

    The body and base64 blobs (attachments, documents) enter as the SHA-256 of their bytes, so
    the hash still changes with every byte but large files are digested once, not per row.
    """
    return hash_of(_hashable(content), address)


def hash_of(hashable: Mapping[str, Any], address: str | None) -> str:
    """The hash of content whose bodies and blobs are already replaced by their digests."""
    payload = {"content": hashable, "address": address} if address is not None else hashable
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _hashable(content: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(content)
    if isinstance(out.get("message"), str):
        out["message"] = text_digest(out["message"])
    if "attachments" in out:
        out["attachments"] = [
            {**a, "content": _blob_digest(a["content"])} for a in out["attachments"]
        ]
    if "document" in out:
        out["document"] = _blob_digest(out["document"])
    return out


def text_digest(text: str) -> str:
    """`sha256:<hex>` of a body: JSON-escaping a 2 KB body costs more than digesting it."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=_BLOB_CACHE_ENTRIES)
def _blob_digest(b64: str) -> str:
    return "sha256:" + hashlib.sha256(base64.b64decode(b64)).hexdigest()
