"""Optional SQLite persistence, so a sandbox restarted on the same file keeps its history.

The database holds the accepted sends, the remaining credits and the token; request counters,
the rate limiter and faults are per run and stay in memory. Each send is written in one
transaction together with the new credit balance, before memory changes, so a failed write
leaves both unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batch.sandbox.records import (
    Attachment,
    EmailRecipient,
    EmailRecord,
    SignatureRecord,
    Signer,
    SmsRecord,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id INTEGER NOT NULL,
    doc TEXT NOT NULL,
    blob BLOB,
    PRIMARY KEY (kind, id)
);
"""


@dataclass
class Loaded:
    """Everything read back from a database file."""

    emails: list[EmailRecord] = field(default_factory=list)
    sms: list[SmsRecord] = field(default_factory=list)
    signatures: list[tuple[SignatureRecord, bytes]] = field(default_factory=list)
    credits: int | None = None
    token: str | None = None


def _email_from(doc: dict[str, Any]) -> EmailRecord:
    doc = dict(doc)
    doc["attachments"] = tuple(Attachment(**a) for a in doc["attachments"])
    doc["recipients"] = tuple(EmailRecipient(**r) for r in doc["recipients"])
    return EmailRecord(**doc)


def _signature_from(doc: dict[str, Any]) -> SignatureRecord:
    doc = dict(doc)
    doc["signers"] = tuple(Signer(**s) for s in doc["signers"])
    return SignatureRecord(**doc)


def _add_email(loaded: Loaded, doc: dict[str, Any], blob: bytes | None) -> None:
    loaded.emails.append(_email_from(doc))


def _add_sms(loaded: Loaded, doc: dict[str, Any], blob: bytes | None) -> None:
    loaded.sms.append(SmsRecord(**doc))


def _add_signature(loaded: Loaded, doc: dict[str, Any], blob: bytes | None) -> None:
    loaded.signatures.append((_signature_from(doc), bytes(blob or b"")))


# How each record kind is read back, by the kind it was saved under.
_LOADERS: dict[str, Callable[[Loaded, dict[str, Any], bytes | None], None]] = {
    "email": _add_email,
    "sms": _add_sms,
    "signature": _add_signature,
}


class SqliteStore:
    """One sandbox database file; callers serialise access (the state's lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The server's event loop thread and test threads both use it, under the state lock.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.executescript(SCHEMA)

    def load(self) -> Loaded:
        """Read every record and the saved settings."""
        loaded = Loaded()
        rows = self._conn.execute("SELECT kind, doc, blob FROM records ORDER BY kind, id")
        for kind, doc_text, blob in rows:
            add = _LOADERS.get(kind)
            if add is not None:  # a kind this version does not know is left in the file
                add(loaded, json.loads(doc_text), blob)
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if "credits" in meta:
            loaded.credits = int(meta["credits"])
        loaded.token = meta.get("token")
        return loaded

    def save(
        self,
        kind: str,
        record: EmailRecord | SmsRecord | SignatureRecord,
        credits: int,
        blob: bytes | None = None,
    ) -> None:
        """Write one record and the new credit balance in a single transaction."""
        doc = json.dumps(asdict(record), ensure_ascii=False)
        with self._transaction():
            self._conn.execute(
                "INSERT INTO records (kind, id, doc, blob) VALUES (?, ?, ?, ?)",
                (kind, record.id, doc, blob),
            )
            self._set("credits", str(credits))

    def set_meta(self, key: str, value: str) -> None:
        """Store one setting (the token, the starting credits)."""
        with self._transaction():
            self._set(key, value)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def _set(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    # sqlite3's own context manager does not BEGIN in autocommit mode; this one does.
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
