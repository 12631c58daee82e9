"""Certified SMS: one text to one phone per request, E.164 addresses.

There is no listing of sent SMS, so an SMS in doubt can never be proven absent: it is never
re-sent automatically and the operator settles it (`lmbatch resolve`). Delivery is final
once the API gives its certificate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from html import escape
from typing import Any

import polars as pl

from batch.addresses import normalize_phone
from batch.answers import api_time, certificate, dumps, json_object, ledger_status, merged, utc
from batch.attachments import JobFiles
from batch.channels.base import (
    Answer,
    Built,
    Evidence,
    Loc,
    PreviewParts,
    Problem,
    Row,
    TrackContext,
    email_only,
    key_column,
    per_row,
    recipient_name,
    sender,
    signature_only,
)
from batch.client import LegallyMailClient
from batch.compiled import RowContext, Templates
from batch.jobmodel import JobSpec
from batch.ledger import FAILED, SENT, Entry, Outcome
from batch.message import Message, text_digest
from batch.reconcile import Finding, Ownership, Probe, Verdict

SMS_MAX_CHARS = 300  # the API charges one credit per message up to 300 characters
# Certified SMS have no listing to look them up in: only the operator can settle them.
IN_DOUBT_SMS_NEXT = (
    "never sent again automatically; find each in the LegallyMail panel, then settle it with "
    "`lmbatch resolve JOB KEY --sent` (found) or `--not-sent` (absent: the next run sends it)"
)


class SmsBuilder:
    """An SMS job's compiled templates."""

    def __init__(self, spec: JobSpec, templates: Templates) -> None:
        self._region = spec.recipient.default_region
        self._name = templates.inline(spec.recipient.name)
        self._address = templates.inline(SMS.address_source(spec))
        self._text = templates.inline(spec.message.text)

    def build(self, row: RowContext) -> Built | None:
        """The phone in E.164 and the text, within the API's length."""
        raw = row.render("recipient.phone", self._address)
        region = self._region
        phone = (
            None
            if raw is None
            else row.check("recipient.phone", lambda: SMS.normalize_address(raw, region))
        )
        name = recipient_name(row, self._name)
        text = row.text("message.text", self._text, multiline=True)
        if text is not None:
            if not text:
                row.fail("message.text", "text is empty")
            elif len(text) > SMS_MAX_CHARS:
                row.fail(
                    "message.text", f"text is {len(text)} characters; the limit is {SMS_MAX_CHARS}"
                )
        if phone is None or text is None or row.errors:
            return None
        content: dict[str, Any] = {"message": text}
        return phone, name, content, {"message": text_digest(text)}, ""


class SmsChannel:
    """Certified SMS (`POST /api/send-sms`)."""

    name = "sms"
    groups = False
    anchored = False  # no listing: nothing to anchor a look-up in
    checks_credits = False
    credit_unit = "SMS"
    hashes_address = True  # distinct requests must never look identical
    final_statuses = frozenset({"delivered", FAILED})
    rate_label = "delivery rate"
    done_statuses: tuple[str, ...] = ("delivered",)
    certificate_kinds: tuple[str, ...] = ("sms",)
    evidence_times: tuple[str, ...] = ("delivered_at",)
    in_doubt_advice = f"these SMS are {IN_DOUBT_SMS_NEXT}"

    def job_problems(self, spec: JobSpec) -> list[Problem]:
        """A text; no e-mail or signature fields."""
        out: list[Problem] = []
        if not spec.message.text:
            out.append((("message", "text"), "field required for channel sms"))
        return out + email_only(spec) + signature_only(spec)

    def template_files(self, spec: JobSpec) -> list[tuple[Loc, str]]:
        """None: the text is inline."""
        return []

    def address_source(self, spec: JobSpec) -> str:
        """`recipient.phone`, by default the `phone` column."""
        return spec.recipient.phone or "{{ phone }}"

    def normalize_address(self, raw: str, region: str | None = None) -> str:
        """The number in E.164, which must be able to receive an SMS (a mobile)."""
        return normalize_phone(raw, region, mobile_only=True)

    def key_of(self, address: str) -> str:
        """The E.164 number itself: `612 345 678` and `+34 612 345 678` are one person."""
        return address

    def keys_of(self, addresses: pl.Series) -> pl.Series:
        """Phones as written, trimmed, without spaces, dots, dashes or parentheses."""
        return key_column(addresses, lowercase=False).str.replace_all(r"[\s().-]", "")

    def builder(self, spec: JobSpec, templates: Templates, files: JobFiles) -> SmsBuilder:
        """Compile the SMS's templates."""
        return SmsBuilder(spec, templates)

    def payload(self, content: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
        """The text and its one phone."""
        return {**content, "phone": addresses[0]}

    def post(self, api: LegallyMailClient, payload: dict[str, Any]) -> dict[str, Any]:
        """`POST /api/send-sms`."""
        return api.send_sms(payload)

    def answer(self, data: dict[str, Any], entries: Iterable[Entry]) -> Answer:
        """The SMS's uuid is its tracking id."""
        uid = data.get("uuid") or (data.get("data") or {}).get("uuid")
        parent = str(uid) if uid else None
        return Answer(parent, [Outcome(e.key, SENT, parent, None) for e in entries])

    def send_data(self, data: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """The credits charged and the status at send time."""
        return {
            "status_at_send": data.get("status"),
            "credits_deducted": data.get("credits_deducted"),
        }

    def remaining_credits(self, info: dict[str, Any]) -> int | None:
        """Unknown: the API's info names e-mail credits only."""
        return None

    def newest_send(self, api: LegallyMailClient) -> str | None:
        """None: SMS cannot be listed."""
        return None

    def look_up_fields(self, content: dict[str, Any]) -> dict[str, Any]:
        """Nothing: an SMS is never looked up."""
        return {}

    def look_up(
        self,
        api: LegallyMailClient,
        probe: Probe,
        known_tracking_ids: Collection[str],
        ownership: Ownership | None,
    ) -> Finding:
        """Never decided here: only the operator can."""
        return Finding(
            Verdict.UNKNOWN,
            reason="certified SMS has no listing to check against: check the LegallyMail "
            "panel, then settle it with `lmbatch resolve`",
        )

    def is_final(self, status: str | None, data: Row | None = None) -> bool:
        """Failed; delivered once the certificate is there."""
        if status not in self.final_statuses:
            return False
        if status == "delivered":
            # The certificate can come after the delivery report; it is what the user needs.
            return bool((data or {}).get("has_certificate", True))
        return True

    def track(self, ctx: TrackContext, open_rows: list[Row], sent: pl.DataFrame) -> None:
        """One `GET /api/sms` per open SMS (there is no listing)."""
        for row in open_rows:
            data = ctx.call("GET /api/sms", ctx.api.sms, str(row["tracking_id"]))
            if data is not None:
                ctx.write(row, sms_fields(data, row))

    def preview(self, message: Message) -> PreviewParts:
        """The text and its length."""
        text = message.content["message"]
        return PreviewParts(
            body=f"<pre>{escape(text)}</pre><p>{len(text)} characters</p>", summary=("text", text)
        )

    def report_facts(self, spec: JobSpec) -> list[tuple[str, str]]:
        """The text template and the sender."""
        return [("text", per_row(spec.message.text or "")), ("sender", sender(spec))]

    def evidence(self, row: Row) -> Evidence:
        """The delivery time; the credits the API charged (one per message when it says none)."""
        delivered = row.get("delivered_at")
        data = json_object(row.get("channel_data"))
        charged = data.get("credits_deducted", data.get("credits"))
        if not isinstance(charged, int) or isinstance(charged, bool):
            charged = 1 if row.get("sent_at") is not None else 0
        return Evidence(
            {"delivered_at": utc(delivered) if delivered is not None else None}, credits=charged
        )


def sms_fields(data: Row, row: Row) -> Row:
    """Ledger fields from `GET /api/sms`."""
    status, extra = ledger_status(str(data.get("status") or row["status"]))
    url = data.get("download_certificate_url")
    certificates = []
    if url:
        certificates.append(certificate("sms", url, None, data.get("ts_confirmed_at"), None, None))
    extra |= {
        "failed_at": data.get("failed_at"),
        "ts_confirmed_at": data.get("ts_confirmed_at"),
        "credits": data.get("credits"),
        "has_certificate": bool(url),
    }
    fields: Row = {
        "status": status,
        "delivered_at": api_time(data.get("delivered_at")),
        "channel_data": merged(row, extra),
        "certificates": dumps(certificates) if certificates else None,
    }
    if status == FAILED:
        fields["error_status"] = FAILED
    return fields


SMS = SmsChannel()
