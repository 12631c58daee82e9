"""What the sandbox stores for each send, and how each item's status moves with time.

Status is never stored: it is computed from the send time, the clock and the timing settings,
so a test that moves a fake clock sees the whole life of a message without waiting.

Per-item rules (by address, case-insensitive):
    e-mail     local part `fail*`    rejected at send time: status failed, error_details set,
                                     no credit charged
               local part `bounce*`  sent, then bounced at sent + delivered_after (charged)
               anything else         sent -> delivered (sent + delivered_after)
                                          -> read (sent + read_after)
    SMS        digits end in 0000    sent, then failed at sent + delivered_after (charged)
               anything else         sent -> delivered (sent + delivered_after)
    signature  signer `decline*`     pending -> declined (created + read_after)
               anything else         pending -> signed (created + read_after)
               the request is signed when every signer signed, declined when any declined
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SIGNATURE_LIFETIME = 7 * 24 * 3600.0
REJECTED_DETAILS = "550 5.1.1 Recipient address rejected: user unknown"
BOUNCED_DETAILS = "Hard bounce: mailbox does not exist"
SMS_FAILED_DETAILS = "Carrier rejected the message: number not in service"


def format_time(stamp: float | None) -> str | None:
    """Render seconds since the epoch as the API does: "YYYY-MM-DD HH:MM:SS", UTC, no zone."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).strftime(TIME_FORMAT)


def local_part(address: str) -> str:
    """The part of an address before the last @, lower-cased."""
    return address.rpartition("@")[0].lower()


@dataclass(frozen=True)
class Timing:
    """How long after sending each later status arrives."""

    delivered_after: float
    read_after: float


@dataclass(frozen=True)
class Attachment:
    """An attachment as stored: its bytes are hashed, not kept."""

    filename: str
    mime_type: str
    sha256: str
    size: int


@dataclass(frozen=True)
class EmailRecipient:
    """One recipient of a send; `rejected` holds error_details when refused at send time."""

    email: str
    tracking_id: str
    rejected: str | None = None


@dataclass(frozen=True)
class EmailRecord:
    """One accepted POST /api/send: the parent and its recipients."""

    id: int
    tracking_id: str
    mailsender_id: str
    subject: str
    message: str
    message_sha256: str
    reply_to: str | None
    reply_to_name: str | None
    attachments: tuple[Attachment, ...]
    recipients: tuple[EmailRecipient, ...]
    sent_at: float
    credits: int


@dataclass(frozen=True)
class SmsRecord:
    """One accepted POST /api/sms/send."""

    id: int
    uuid: str
    phone: str
    message: str
    message_sha256: str
    sent_at: float
    credits: int


@dataclass(frozen=True)
class Signer:
    """One signer of a signature request."""

    name: str
    email: str
    phone: str | None = None


@dataclass(frozen=True)
class SignatureRecord:
    """One accepted POST /api/signature/send; the document bytes live beside it in the state."""

    id: int
    uuid: str
    document_name: str
    document_sha256: str
    language: str
    signers: tuple[Signer, ...]
    created_at: float
    credits: int


@dataclass(frozen=True)
class Progress:
    """An item's status at one instant, with the times of the steps it has passed."""

    status: str
    delivered_at: float | None = None
    read_at: float | None = None
    failed_at: float | None = None
    error: str | None = None


def email_progress(recipient: EmailRecipient, sent_at: float, now: float, t: Timing) -> Progress:
    """Status of one e-mail recipient at `now`."""
    if recipient.rejected is not None:
        return Progress("failed", failed_at=sent_at, error=recipient.rejected)
    delivered = sent_at + t.delivered_after
    if now < delivered:
        return Progress("sent")
    if local_part(recipient.email).startswith("bounce"):
        return Progress("bounced", failed_at=delivered, error=BOUNCED_DETAILS)
    read = sent_at + t.read_after
    if now < read:
        return Progress("delivered", delivered_at=delivered)
    return Progress("read", delivered_at=delivered, read_at=read)


def sms_fails(phone: str) -> bool:
    """Whether an SMS to `phone` is one the sandbox lets fail (digits ending in 0000)."""
    return "".join(ch for ch in phone if ch.isdigit()).endswith("0000")


def sms_progress(sms: SmsRecord, now: float, t: Timing) -> Progress:
    """Status of an SMS at `now`."""
    done = sms.sent_at + t.delivered_after
    if now < done:
        return Progress("sent")
    if sms_fails(sms.phone):
        return Progress("failed", failed_at=done, error=SMS_FAILED_DETAILS)
    return Progress("delivered", delivered_at=done)


def signer_progress(signer: Signer, created_at: float, now: float, t: Timing) -> Progress:
    """Status of one signer at `now`: pending, then signed (read_at holds signed_at) or declined."""
    done = created_at + t.read_after
    if now < done:
        return Progress("pending")
    if local_part(signer.email).startswith("decline"):
        return Progress("declined", failed_at=done)
    return Progress("signed", read_at=done)


def signature_progress(record: SignatureRecord, now: float, t: Timing) -> Progress:
    """Status of a whole signature request: declined if any signer declined, signed if all did."""
    steps = [signer_progress(s, record.created_at, now, t) for s in record.signers]
    declined = [p.failed_at for p in steps if p.status == "declined" and p.failed_at is not None]
    if declined:
        return Progress("declined", failed_at=min(declined))
    signed = [p.read_at for p in steps if p.read_at is not None]
    if len(signed) == len(steps):
        return Progress("signed", read_at=max(signed))
    return Progress("pending")
