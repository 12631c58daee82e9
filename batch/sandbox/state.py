"""The sandbox's memory: accepted sends, credits, request counters; thread-safe throughout.

Every change happens under one lock and, with a database, is written before memory changes,
so a request that fails half-way leaves nothing behind. Tests read the state from their own
thread (`log()`, `request_count()`) while the server's event loop writes it.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from batch.sandbox.config import SandboxConfig
from batch.sandbox.faults import Faults
from batch.sandbox.pdf import sha256_hex
from batch.sandbox.ratelimit import SlidingWindowLimiter
from batch.sandbox.records import (
    REJECTED_DETAILS,
    EmailRecipient,
    EmailRecord,
    SignatureRecord,
    SmsRecord,
    Timing,
    email_progress,
    format_time,
    local_part,
    signer_progress,
    sms_progress,
)
from batch.sandbox.store import SqliteStore
from batch.sandbox.validate import ApiProblem, EmailRequest, SignatureRequest, SmsRequest

REQUEST_HISTORY = 10_000
LOST = 0
"""Status recorded for a lost response: the client got no usable answer."""


class SandboxState:
    """Accepted sends, credits, fault table, rate limiter and request counters of one sandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock: Callable[[], float] = config.clock
        self.timing = Timing(config.delivered_after, config.read_after)
        self.faults = Faults(
            config.faults,
            seed=config.fault_seed,
            endpoints=config.fault_endpoints,
            burst_length=config.burst_length,
        )
        self.limiter = SlidingWindowLimiter(config.rate_limit, config.rate_window, config.clock)
        self._lock = threading.RLock()
        self._emails: dict[str, EmailRecord] = {}
        self._recipient_parent: dict[str, str] = {}
        self._sms: dict[str, SmsRecord] = {}
        self._signatures: dict[str, SignatureRecord] = {}
        self._documents: dict[str, bytes] = {}
        self._credits = config.credits
        self._next_id = 1
        self._statuses: Counter[int] = Counter()
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_HISTORY)
        self._store = SqliteStore(config.db) if config.db is not None else None
        self.token = config.token or secrets.token_urlsafe(24)
        if self._store is not None:
            self._load(self._store)

    def _load(self, store: SqliteStore) -> None:
        loaded = store.load()
        for email in loaded.emails:
            self._remember_email(email)
        for sms in loaded.sms:
            self._sms[sms.uuid] = sms
        for record, document in loaded.signatures:
            self._signatures[record.uuid] = record
            self._documents[record.uuid] = document
        ids = [r.id for r in loaded.emails] + [r.id for r in loaded.sms]
        ids += [r.id for r, _ in loaded.signatures]
        self._next_id = max(ids, default=0) + 1
        # The file outranks the config: a restarted sandbox keeps its balance and its token,
        # so a client configured against the first run still works against the second.
        if loaded.credits is not None:
            self._credits = loaded.credits
        else:
            store.set_meta("credits", str(self._credits))
        if self.config.token is None and loaded.token is not None:
            self.token = loaded.token
        store.set_meta("token", self.token)

    def close(self) -> None:
        """Release the database file, if any."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # --- sending ---------------------------------------------------------------------------

    @property
    def credits(self) -> int:
        """Credits left: one per e-mail recipient accepted, SMS or signature request."""
        with self._lock:
            return self._credits

    def set_credits(self, credits: int) -> None:
        """Set the remaining credits (tests use it to reach the 403 quickly)."""
        if credits < 0:
            raise ValueError("credits cannot be negative")
        with self._lock:
            self._credits = credits
            if self._store is not None:
                self._store.set_meta("credits", str(credits))

    def _charge(self, needed: int) -> None:
        if needed > self._credits:
            raise ApiProblem(
                403, f"Insufficient credits: {needed} needed, {self._credits} remaining"
            )

    def _new_id(self) -> int:
        new = self._next_id
        self._next_id += 1
        return new

    def _remember_email(self, record: EmailRecord) -> None:
        self._emails[record.tracking_id] = record
        for recipient in record.recipients:
            self._recipient_parent[recipient.tracking_id] = record.tracking_id

    def send_email(self, request: EmailRequest) -> EmailRecord:
        """Accept a send: reject `fail*` recipients, charge the rest, or refuse it whole (403)."""
        with self._lock:
            # The check counts every recipient, as a client can only know the total; rejected
            # recipients are then not charged, since nothing was delivered to them.
            self._charge(len(request.recipients))
            recipients = tuple(
                EmailRecipient(
                    address,
                    f"cm_{secrets.token_hex(8)}",
                    REJECTED_DETAILS if local_part(address).startswith("fail") else None,
                )
                for address in request.recipients
            )
            cost = sum(1 for r in recipients if r.rejected is None)
            record = EmailRecord(
                id=self._new_id(),
                tracking_id=f"cm_{secrets.token_hex(10)}",
                mailsender_id=f"mail_{secrets.token_hex(6)}",
                subject=request.subject,
                message=request.message,
                message_sha256=sha256_hex(request.message.encode()),
                reply_to=request.reply_to,
                reply_to_name=request.reply_to_name,
                attachments=request.attachments,
                recipients=recipients,
                sent_at=self.clock(),
                credits=cost,
            )
            self._commit("email", record, cost)
            self._remember_email(record)
            return record

    def send_sms(self, request: SmsRequest) -> SmsRecord:
        """Accept an SMS for one credit, or refuse it (403)."""
        with self._lock:
            self._charge(1)
            record = SmsRecord(
                id=self._new_id(),
                uuid=str(uuid.uuid4()),
                phone=request.phone,
                message=request.message,
                message_sha256=sha256_hex(request.message.encode()),
                sent_at=self.clock(),
                credits=1,
            )
            self._commit("sms", record, 1)
            self._sms[record.uuid] = record
            return record

    def send_signature(self, request: SignatureRequest) -> SignatureRecord:
        """Accept a signature request for one credit, or refuse it (403)."""
        with self._lock:
            self._charge(1)
            record = SignatureRecord(
                id=self._new_id(),
                uuid=str(uuid.uuid4()),
                document_name=request.document_name,
                document_sha256=sha256_hex(request.document),
                language=request.language,
                signers=request.signers,
                created_at=self.clock(),
                credits=1,
            )
            self._commit("signature", record, 1, request.document)
            self._signatures[record.uuid] = record
            self._documents[record.uuid] = request.document
            return record

    def _commit(
        self,
        kind: str,
        record: EmailRecord | SmsRecord | SignatureRecord,
        cost: int,
        blob: bytes | None = None,
    ) -> None:
        if self._store is not None:
            self._store.save(kind, record, self._credits - cost, blob)
        self._credits -= cost

    # --- lookups ---------------------------------------------------------------------------

    def email(self, tracking_id: str) -> EmailRecord | None:
        """The send with this parent or recipient tracking_id."""
        with self._lock:
            parent = self._recipient_parent.get(tracking_id, tracking_id)
            return self._emails.get(parent)

    def emails(self, limit: int) -> list[EmailRecord]:
        """The last `limit` sends, newest first."""
        with self._lock:
            return sorted(self._emails.values(), key=lambda r: r.id, reverse=True)[:limit]

    def sms(self, sms_uuid: str) -> SmsRecord | None:
        """The SMS with this uuid."""
        with self._lock:
            return self._sms.get(sms_uuid)

    def signature(self, sig_uuid: str) -> SignatureRecord | None:
        """The signature request with this uuid."""
        with self._lock:
            return self._signatures.get(sig_uuid)

    def signatures(self, limit: int) -> list[SignatureRecord]:
        """The last `limit` signature requests, newest first."""
        with self._lock:
            return sorted(self._signatures.values(), key=lambda r: r.id, reverse=True)[:limit]

    def document(self, sig_uuid: str) -> bytes | None:
        """The original document of a signature request."""
        with self._lock:
            return self._documents.get(sig_uuid)

    # --- inspection ------------------------------------------------------------------------

    def log(self) -> list[dict[str, Any]]:
        """Everything accepted, one dict per recipient / SMS / signer, oldest first."""
        now = self.clock()
        entries: list[tuple[int, dict[str, Any]]] = []
        with self._lock:
            for email in self._emails.values():
                for r in email.recipients:
                    entry = {
                        "channel": "email",
                        "tracking_id": r.tracking_id,
                        "parent_tracking_id": email.tracking_id,
                        "recipient": r.email,
                        "subject": email.subject,
                        "sha256": email.message_sha256,
                        "message": email.message,
                        "attachments": [
                            {"filename": a.filename, "mime_type": a.mime_type, "sha256": a.sha256}
                            for a in email.attachments
                        ],
                        "reply_to": email.reply_to,
                        "sent_at": format_time(email.sent_at),
                        "sent_ts": email.sent_at,
                        "status": email_progress(r, email.sent_at, now, self.timing).status,
                        "error_details": r.rejected,
                    }
                    entries.append((email.id, entry))
            for sms in self._sms.values():
                entry = {
                    "channel": "sms",
                    "tracking_id": sms.uuid,
                    "parent_tracking_id": None,
                    "recipient": sms.phone,
                    "subject": None,
                    "sha256": sms.message_sha256,
                    "message": sms.message,
                    "attachments": [],
                    "reply_to": None,
                    "sent_at": format_time(sms.sent_at),
                    "sent_ts": sms.sent_at,
                    "status": sms_progress(sms, now, self.timing).status,
                    "error_details": None,
                }
                entries.append((sms.id, entry))
            for sig in self._signatures.values():
                for signer in sig.signers:
                    entry = {
                        "channel": "signature",
                        "tracking_id": sig.uuid,
                        "parent_tracking_id": None,
                        "recipient": signer.email,
                        "subject": sig.document_name,
                        "sha256": sig.document_sha256,
                        "message": None,
                        "attachments": [],
                        "reply_to": None,
                        "sent_at": format_time(sig.created_at),
                        "sent_ts": sig.created_at,
                        "status": signer_progress(signer, sig.created_at, now, self.timing).status,
                        "error_details": None,
                    }
                    entries.append((sig.id, entry))
        entries.sort(key=lambda pair: pair[0])
        return [entry for _, entry in entries]

    def record_request(
        self, method: str, path: str, client: str, status: int, fault: str | None
    ) -> None:
        """Count one /api request by the status the client got (0: lost response)."""
        with self._lock:
            self._statuses[status] += 1
            self._requests.append(
                {
                    "at": self.clock(),
                    "method": method,
                    "path": path,
                    "client": client,
                    "status": status,
                    "fault": fault,
                }
            )

    def request_count(self, status: int | None = None) -> int:
        """How many /api requests were answered with `status` (all of them when None)."""
        with self._lock:
            if status is None:
                return sum(self._statuses.values())
            return self._statuses[status]

    def requests(self) -> list[dict[str, Any]]:
        """The last /api requests, oldest first: at, method, path, client, status, fault."""
        with self._lock:
            return list(self._requests)

    def stats(self) -> dict[str, Any]:
        """Request counters, fault counters and credits, as GET /_sandbox/stats returns them."""
        with self._lock:
            by_status = {str(code): n for code, n in sorted(self._statuses.items())}
            return {
                "requests": sum(self._statuses.values()),
                "by_status": by_status,
                "lost_responses": self._statuses[LOST],
                "faults": self.faults.counts,
                "fault_rates": self.faults.rates,
                "credits": self._credits,
                "emails": len(self._emails),
                "sms": len(self._sms),
                "signatures": len(self._signatures),
            }
