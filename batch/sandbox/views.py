"""The JSON shapes of the documented responses, and the certificate PDFs behind their links.

Certificates are rebuilt from the stored record on every request; `render_pdf` is
deterministic, so the `file_hash` shown in a listing is the SHA-256 of what the link serves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from batch.sandbox.pdf import render_pdf, sha256_hex
from batch.sandbox.records import (
    SIGNATURE_LIFETIME,
    EmailRecipient,
    EmailRecord,
    Progress,
    SignatureRecord,
    SmsRecord,
    Timing,
    email_progress,
    format_time,
    signature_progress,
    signer_progress,
    sms_progress,
)

ERROR_STATUS = {"failed": "Rejected", "bounced": "Hard Bounce"}
DISCLAIMER = "Issued by the lmbatch LegallyMail sandbox: a test document with no legal value."


def send_response(record: EmailRecord) -> dict[str, Any]:
    """Body of a POST /api/send answer."""
    sent = [r for r in record.recipients if r.rejected is None]
    total = len(record.recipients)
    failed = total - len(sent)
    return {
        "success": bool(sent),
        "message": f"Email sent to {len(sent)} of {total} recipients",
        "data": {
            "tracking_id": record.tracking_id,
            "recipients": [
                {
                    "email": r.email,
                    "status": "failed" if r.rejected else "sent",
                    "tracking_id": r.tracking_id,
                    "error_details": r.rejected,
                }
                for r in record.recipients
            ],
            "subject": record.subject,
            "sent_at": format_time(record.sent_at),
            "success_count": len(sent),
            "fail_count": failed,
            "error_status": f"{failed} of {total} recipients failed" if failed else None,
        },
    }


def _email_steps(record: EmailRecord, now: float, t: Timing) -> list[Progress]:
    return [email_progress(r, record.sent_at, now, t) for r in record.recipients]


def email_summary(record: EmailRecord, now: float, t: Timing) -> dict[str, Any]:
    """One entry of GET /api/emails."""
    steps = _email_steps(record, now, t)
    statuses = {p.status for p in steps}
    # A group whose recipients stand at different steps reads "pending", as in the docs.
    status = statuses.pop() if len(statuses) == 1 else "pending"
    read_times = [p.read_at for p in steps if p.read_at is not None]
    errors = [ERROR_STATUS[p.status] for p in steps if p.status in ERROR_STATUS]
    multi = len(record.recipients) > 1
    return {
        "id": record.id,
        "tracking_id": record.tracking_id,
        "recipient": "Multiple Recipients" if multi else record.recipients[0].email,
        "subject": record.subject,
        "status": status,
        "sent_at": format_time(record.sent_at),
        "read_at": format_time(max(read_times)) if len(read_times) == len(steps) else None,
        "created_at": format_time(record.sent_at),
        "mailsender_id": record.mailsender_id,
        "is_multi_recipient": multi,
        "recipient_count": len(record.recipients),
        "error_status": errors[0] if errors else None,
    }


def email_certificate(
    record: EmailRecord, recipient: EmailRecipient, kind: str, confirmed_at: float
) -> bytes:
    """The PDF certificate of delivery or reading for one recipient."""
    return render_pdf(
        f"LegallyMail certificate of {'delivery' if kind == 'delivered' else 'reading'}",
        (
            f"Tracking ID: {recipient.tracking_id}",
            f"Parent tracking ID: {record.tracking_id}",
            f"Recipient: {recipient.email}",
            f"Subject: {record.subject}",
            f"Message SHA-256: {record.message_sha256}",
            f"Sent at: {format_time(record.sent_at)} UTC",
            f"{kind.capitalize()} at: {format_time(confirmed_at)} UTC",
            DISCLAIMER,
        ),
    )


def certificate_times(progress: Progress) -> dict[str, float]:
    """Which certificates a recipient has at this step, with their confirmation times."""
    found: dict[str, float] = {}
    if progress.delivered_at is not None:
        found["delivered"] = progress.delivered_at
    if progress.read_at is not None:
        found["read"] = progress.read_at
    return found


def email_detail(record: EmailRecord, now: float, t: Timing, base_url: str) -> dict[str, Any]:
    """The `email` object of GET /api/email, recipients and certificates included."""
    detail = email_summary(record, now, t)
    detail["certificates"] = []
    recipients = []
    for recipient, progress in zip(record.recipients, _email_steps(record, now, t), strict=True):
        certificates = []
        for kind, confirmed in certificate_times(progress).items():
            pdf = email_certificate(record, recipient, kind, confirmed)
            query = urlencode({"id": recipient.tracking_id, "status": kind})
            certificates.append(
                {
                    "certificate_type": kind,
                    "file_hash": sha256_hex(pdf),
                    "confirmed_at": format_time(confirmed),
                    "has_tsr": True,
                    "has_tsq": True,
                    "pdf_download_url": f"{base_url}emails/download-certificate?{query}",
                }
            )
        recipients.append(
            {
                "email": recipient.email,
                "name": None,
                "status": progress.status,
                "tracking_id": recipient.tracking_id,
                "sent_at": format_time(record.sent_at),
                "delivered_at": format_time(progress.delivered_at),
                "read_at": format_time(progress.read_at),
                "error_details": progress.error,
                "certificates": certificates,
            }
        )
    detail["recipients"] = recipients
    return detail


def sms_certificate(sms: SmsRecord, delivered_at: float) -> bytes:
    """The PDF certificate of a delivered SMS."""
    return render_pdf(
        "LegallyMail certified SMS certificate",
        (
            f"SMS ID: {sms.uuid}",
            f"Recipient: {sms.phone}",
            f"Message SHA-256: {sms.message_sha256}",
            f"Sent at: {format_time(sms.sent_at)} UTC",
            f"Delivered at: {format_time(delivered_at)} UTC",
            DISCLAIMER,
        ),
    )


def sms_detail(sms: SmsRecord, now: float, t: Timing, base_url: str) -> dict[str, Any]:
    """The `data` object of GET /api/sms."""
    progress = sms_progress(sms, now, t)
    url = None
    if progress.delivered_at is not None:
        url = f"{base_url}dashboard/certified-sms/download-certificate/{quote(sms.uuid)}"
    return {
        "uuid": sms.uuid,
        "recipient": sms.phone,
        "message": sms.message,
        "status": progress.status,
        "credits": sms.credits,
        "sent_at": format_time(sms.sent_at),
        "delivered_at": format_time(progress.delivered_at),
        "failed_at": format_time(progress.failed_at),
        "ts_confirmed_at": format_time(progress.delivered_at),
        "download_certificate_url": url,
    }


def signature_summary(record: SignatureRecord, now: float, t: Timing) -> dict[str, Any]:
    """One entry of GET /api/signatures (the first signer stands for the request)."""
    progress = signature_progress(record, now, t)
    first = record.signers[0]
    return {
        "uuid": record.uuid,
        "signer_name": first.name,
        "signer_email": first.email,
        "document_name": record.document_name,
        "status": progress.status,
        "created_at": format_time(record.created_at),
        "signed_at": format_time(progress.read_at),
    }


def signature_acta(record: SignatureRecord, now: float, t: Timing) -> bytes:
    """The PDF record (acta) of a completed signature request."""
    lines = [
        f"Signature request: {record.uuid}",
        f"Document: {record.document_name}",
        f"Document SHA-256: {record.document_sha256}",
    ]
    for signer in record.signers:
        step = signer_progress(signer, record.created_at, now, t)
        lines.append(f"{signer.name} <{signer.email}>: {step.status} {format_time(step.read_at)}")
    lines.append(DISCLAIMER)
    return render_pdf("LegallyMail electronic signature record", tuple(lines))


def signature_detail(
    record: SignatureRecord, now: float, t: Timing, base_url: str
) -> dict[str, Any]:
    """The `data` object of GET /api/signature."""
    detail = signature_summary(record, now, t)
    signed = detail["status"] == "signed"
    path = f"{base_url}dashboard/electronic-signature"
    detail.update(
        {
            "expires_at": format_time(record.created_at + SIGNATURE_LIFETIME),
            "document_hash": record.document_sha256,
            "signed_document_hash": sha256_hex(signature_acta(record, now, t)) if signed else None,
            "signers": [
                {
                    "signer_name": s.name,
                    "signer_email": s.email,
                    "signer_phone": s.phone,
                    "status": (step := signer_progress(s, record.created_at, now, t)).status,
                    "signed_at": format_time(step.read_at),
                }
                for s in record.signers
            ],
            "download_original_url": f"{path}/download-original/{quote(record.uuid)}",
            "download_acta_url": f"{path}/download-acta/{quote(record.uuid)}" if signed else None,
        }
    )
    return detail
