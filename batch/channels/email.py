"""Certified e-mail: a subject and an HTML body, attachments, several recipients per request.

Identical messages share one request (grouping); the answer names each recipient with its
own tracking id. A lost send is looked up in `GET /api/emails` (batch.reconcile).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Collection, Iterable
from functools import partial
from html import escape
from typing import Any

import polars as pl

from batch.addresses import normalize_email
from batch.answers import api_time, certificate, dumps, ledger_status, merged, utc
from batch.attachments import (
    DOCUMENTS,
    JobFiles,
    decoded_size,
    generated_templates,
    without_documents,
)
from batch.channels.base import (
    IN_DOUBT_NEXT,
    Answer,
    Built,
    Evidence,
    Loc,
    PreviewParts,
    Problem,
    Row,
    TrackContext,
    key_column,
    per_row,
    recipient_name,
    sender,
    signature_only,
    sms_only,
)
from batch.client import LegallyMailClient
from batch.compiled import Compiled, RowContext, Templates
from batch.jobmodel import JobSpec
from batch.ledger import FAILED, IN_DOUBT, SENT, Entry, Outcome
from batch.message import Message, text_digest
from batch.reconcile import MISSING_FROM_ANSWER, Finding, Ownership, Probe, reconcile_email
from batch.text import check_body


class EmailBuilder:
    """An e-mail job's compiled templates."""

    def __init__(self, spec: JobSpec, templates: Templates, files: JobFiles) -> None:
        msg = spec.message
        self._files = files
        self._max_file = spec.limits.max_attachment_bytes
        self._max_message = spec.limits.max_message_attachment_bytes
        self._name = templates.inline(spec.recipient.name)
        self._address = templates.inline(EMAIL.address_source(spec))
        self._subject = templates.inline(msg.subject)
        self._html = templates.file(msg.html)
        self._reply_to = templates.inline(msg.reply_to)
        self._reply_to_name = templates.inline(msg.reply_to_name)
        # (path template, name template, generated document's template file) per attachment
        self._attachments = [
            (templates.inline(a.path), templates.inline(a.name), a.template)
            for a in msg.attachments
        ]

    def build(self, row: RowContext) -> Built | None:
        """Subject, body, reply-to and attachments of one row."""
        raw = row.render("recipient.email", self._address)
        address = (
            None
            if raw is None
            else row.check("recipient.email", lambda: EMAIL.normalize_address(raw))
        )
        name = recipient_name(row, self._name)
        # A subject is one header line: line breaks fold, control characters are refused.
        subject = row.text("message.subject", self._subject)
        if subject is not None and not subject:
            row.fail("message.subject", "subject is empty")
        body = row.render("message.html", self._html)
        if body is not None and ("\x00" in body or not body.isascii()):  # check_body's fast path
            body = row.check("message.html", partial(check_body, body))
        content: dict[str, Any] = {"subject": subject, "message": body}
        reply = (row.render("message.reply_to", self._reply_to) or "").strip()
        if reply:
            content["reply_to"] = row.check("message.reply_to", lambda: normalize_email(reply))
        reply_name = row.text("message.reply_to_name", self._reply_to_name) or ""
        if reply_name:
            content["reply_to_name"] = reply_name
        hashable = dict(content)
        if body is not None:
            hashable["message"] = text_digest(body)
        if self._attachments:
            files: list[dict[str, str]] = []
            digests: list[dict[str, str]] = []
            documents: list[dict[str, str]] = []
            for i, (path_t, name_t, template) in enumerate(self._attachments):
                where = f"message.attachments[{i}]"
                found: tuple[dict[str, str], dict[str, str]] | None
                if template is not None:
                    generated = self._generated(row, where, template, name_t, address)
                    found = None if generated is None else generated[:2]
                    if generated is not None:
                        documents.append({"name": generated[0]["filename"], "sha256": generated[2]})
                else:
                    found = self._attachment(row, where, path_t, name_t)
                if found is not None:
                    files.append(found[0])
                    digests.append(found[1])
            total = sum(decoded_size(f["content"]) for f in files)
            if total > self._max_message:
                row.fail(
                    "message.attachments",
                    f"the attachments hold {total:,} bytes; the limit per message is "
                    f"{self._max_message:,} (limits.max_message_attachment_bytes in the job file)",
                )
            content["attachments"] = files
            hashable["attachments"] = digests
            if documents:
                content[DOCUMENTS] = documents
        if address is None or not subject or body is None or row.errors:
            return None
        return address, name, content, hashable, subject

    def _generated(
        self,
        row: RowContext,
        where: str,
        template: str,
        name_t: Compiled | None,
        address: str | None,
    ) -> tuple[dict[str, str], dict[str, str], str] | None:
        """A PDF generated for this row: (API item, hashable item, SHA-256)."""
        shown = row.render(f"{where}.name", name_t)
        key = row.key or address
        if shown is None or not key or row.errors:
            return None
        found = row.check(
            f"{where}.template",
            lambda: self._files.generate(key, template, shown, row.variables, limit=self._max_file),
        )
        if found is None:
            return None
        item = {"filename": found.name, "content": found.b64, "mime_type": "application/pdf"}
        return item, {**item, "content": found.digest}, found.sha256

    def _attachment(
        self,
        row: RowContext,
        where: str,
        path_t: Compiled | None,
        name_t: Compiled | None,
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        rendered = row.render(f"{where}.path", path_t)
        shown = row.render(f"{where}.name", name_t)
        if rendered is None:
            return None
        path = row.check(f"{where}.path", lambda: self._files.resolve(rendered))
        limit = self._max_file
        entry = (
            None
            if path is None
            else row.check(f"{where}.path", lambda: self._files.read(path, max_bytes=limit))
        )
        if path is None or entry is None:
            return None
        filename = (shown or "").strip() or path.name
        mime = mimetypes.guess_type(filename)[0] or mimetypes.guess_type(path.name)[0]
        item = {
            "filename": filename,
            "content": entry[1],
            "mime_type": mime or "application/octet-stream",
        }
        return item, {**item, "content": entry[2]}


class EmailChannel:
    """Certified e-mail (`POST /api/send-email`)."""

    name = "email"
    groups = True
    anchored = True
    checks_credits = True
    credit_unit = "e-mail"
    hashes_address = False  # a group send's recipients share one message
    final_statuses = frozenset({"read", "bounced", "failed"})
    rate_label = "read rate"
    done_statuses: tuple[str, ...] = ("read",)
    certificate_kinds: tuple[str, ...] = ("delivered", "read")  # the API's certificate_type values
    in_doubt_advice = f"next run, {IN_DOUBT_NEXT}"
    evidence_times: tuple[str, ...] = ("delivered_at", "read_at")

    def job_problems(self, spec: JobSpec) -> list[Problem]:
        """A subject and an HTML template; no SMS text, no signature fields."""
        out: list[Problem] = []
        if not spec.message.subject:
            out.append((("message", "subject"), "field required for channel email"))
        if not spec.message.html:
            out.append((("message", "html"), "field required for channel email"))
        return out + sms_only(spec) + signature_only(spec)

    def template_files(self, spec: JobSpec) -> list[tuple[Loc, str]]:
        """The HTML body's template file and the generated attachments' templates."""
        body = [(("message", "html"), spec.message.html)] if spec.message.html else []
        return body + generated_templates(spec)

    def address_source(self, spec: JobSpec) -> str:
        """`recipient.email`, by default the `email` column."""
        return spec.recipient.email or "{{ email }}"

    def normalize_address(self, raw: str, region: str | None = None) -> str:
        """The e-mail address, its domain in lower-case ASCII."""
        return normalize_email(raw)

    def key_of(self, address: str) -> str:
        """The normalised address lower-cased: `Ana@x.es` and `ana@x.es` are one person."""
        return address.lower()

    def keys_of(self, addresses: pl.Series) -> pl.Series:
        """Addresses as written, trimmed and lower-cased."""
        return key_column(addresses, lowercase=True)

    def builder(self, spec: JobSpec, templates: Templates, files: JobFiles) -> EmailBuilder:
        """Compile the e-mail's templates."""
        return EmailBuilder(spec, templates, files)

    def payload(self, content: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
        """One message to a comma-separated list of recipients."""
        return {**without_documents(content), "recipient": ", ".join(addresses)}

    def post(self, api: LegallyMailClient, payload: dict[str, Any]) -> dict[str, Any]:
        """`POST /api/send-email`."""
        return api.send_email(payload)

    def answer(self, data: dict[str, Any], entries: Iterable[Entry]) -> Answer:
        """Each recipient by its address in the answer; one not named stays in doubt."""
        parent = data.get("tracking_id")
        answers = {
            str(r.get("email") or "").strip().lower(): r for r in data.get("recipients") or []
        }
        outcomes = []
        for entry in entries:
            found = answers.get((entry.address or "").lower())
            if found is None:  # accepted, yet not named in the answer: look it up later
                outcomes.append(Outcome(entry.key, IN_DOUBT, None, MISSING_FROM_ANSWER))
                continue
            status = FAILED if found.get("status") == FAILED else SENT
            outcomes.append(
                Outcome(entry.key, status, found.get("tracking_id"), found.get("error_details"))
            )
        sent_at = data.get("sent_at")
        return Answer(
            str(parent) if parent else None,
            outcomes,
            str(parent) if parent else None,
            sent_at if isinstance(sent_at, str) else None,
        )

    def send_data(self, data: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """Nothing: tracking brings everything an e-mail's answer could say."""
        return None

    def remaining_credits(self, info: dict[str, Any]) -> int | None:
        """`user.remaining_emails`."""
        remaining = (info.get("user") or {}).get("remaining_emails")
        return remaining if isinstance(remaining, int) else None

    def newest_send(self, api: LegallyMailClient) -> str | None:
        """The newest e-mail's tracking id."""
        listing = api.list_emails(1)
        return str(listing[0].get("tracking_id")) if listing else None

    def look_up_fields(self, content: dict[str, Any]) -> dict[str, Any]:
        """The exact subject sent."""
        return {"subject": str(content.get("subject") or "")}

    def look_up(
        self,
        api: LegallyMailClient,
        probe: Probe,
        known_tracking_ids: Collection[str],
        ownership: Ownership | None,
    ) -> Finding:
        """By subject and recipients among the e-mails newer than the anchor."""
        return reconcile_email(
            api, probe, known_tracking_ids=known_tracking_ids, ownership=ownership
        )

    def is_final(self, status: str | None, data: Row | None = None) -> bool:
        """Read, bounced or failed."""
        return status in self.final_statuses

    def track(self, ctx: TrackContext, open_rows: list[Row], sent: pl.DataFrame) -> None:
        """A listing when it pays, then one detail call per send that may have changed."""
        groups = ctx.changed_groups(
            open_rows, sent, "GET /api/emails", ctx.api.list_emails, "tracking_id"
        )
        for parent, rows in groups:
            detail = ctx.call("GET /api/email", ctx.api.email, parent)
            if detail is not None:
                _from_detail(ctx, detail, rows)

    def preview(self, message: Message) -> PreviewParts:
        """Subject, reply-to and attachments; the body in an iframe."""
        content = message.content
        names = [a["filename"] for a in content.get("attachments", [])]
        reply = content.get("reply_to") or "none: replies go to the sender"
        if content.get("reply_to") and content.get("reply_to_name"):
            reply = f"{content['reply_to_name']} <{content['reply_to']}>"
        # srcdoc isolates the body's markup and styles from the preview page around it; an
        # empty `sandbox` runs no script, submits no form and gives the body no origin, and the
        # page's CSP (batch.preview), which a srcdoc document inherits, forbids scripts again.
        body = (
            f'<iframe sandbox="" style="width:100%;height:80vh" '
            f'srcdoc="{escape(content["message"])}"></iframe>'
        )
        return PreviewParts(
            before=[("subject", content["subject"])],
            after=[("reply-to", reply), ("attachments", ", ".join(names) or "none")],
            body=body,
            summary=("subject", content["subject"]),
        )

    def report_facts(self, spec: JobSpec) -> list[tuple[str, str]]:
        """Subject, sender, reply-to, attachments and body template, as the job gives them."""
        msg = spec.message
        reply = msg.reply_to or "none: replies go to the sender"
        if msg.reply_to and msg.reply_to_name:
            reply = f"{msg.reply_to_name} <{msg.reply_to}>"
        files = [
            f"{a.name} (generated from {a.template})"
            if a.template
            else f"{a.name or a.path} ({a.path})"
            if a.name
            else a.path or ""
            for a in msg.attachments
        ]
        return [
            ("subject", per_row(msg.subject or "")),
            ("sender", sender(spec)),
            ("reply-to", per_row(reply)),
            ("attachments", per_row(", ".join(files)) if files else "none"),
            ("body template", msg.html or ""),
        ]

    def evidence(self, row: Row) -> Evidence:
        """Delivered and read times; one credit per recipient the API accepted."""
        times = {name: _aware(row.get(name)) for name in self.evidence_times}
        return Evidence(times, credits=1 if row.get("sent_at") is not None else 0)


def _aware(value: Any) -> Any:
    """A ledger time as aware UTC (None stays None)."""
    return utc(value) if value is not None else None


def _from_detail(ctx: TrackContext, detail: Row, rows: list[Row]) -> None:
    recipients = [r for r in detail.get("recipients") or [] if isinstance(r, dict)]
    by_id = {str(r.get("tracking_id")): r for r in recipients if r.get("tracking_id")}
    by_address = {str(r.get("email") or "").strip().lower(): r for r in recipients}
    for row in rows:
        found = by_id.get(str(row["tracking_id"])) or by_address.get(
            str(row.get("address") or "").strip().lower()
        )
        if found is None and not recipients:
            found = detail  # a single send described without its recipients list
        if found is None:
            ctx.error(
                f"key {row['key']}: not among the recipients of send {detail.get('tracking_id')}"
            )
            continue
        ctx.write(row, email_fields(found, detail, row))


def email_fields(recipient: Row, parent: Row, row: Row) -> Row:
    """Ledger fields from one recipient of `GET /api/email`."""
    raw = str(recipient.get("status") or row["status"])
    status, data = ledger_status(raw)
    fields: Row = {
        "status": status,
        "delivered_at": api_time(recipient.get("delivered_at")),
        "read_at": api_time(recipient.get("read_at")),
        "error_details": recipient.get("error_details") or None,
    }
    error_status = recipient.get("error_status")
    if not error_status and status in ("bounced", FAILED):
        error_status = parent.get("error_status") or status
    if error_status:
        fields["error_status"] = str(error_status)
    certificates = [
        certificate(
            str(c.get("certificate_type") or "certificate"),
            c.get("pdf_download_url"),
            c.get("file_hash"),
            c.get("confirmed_at"),
            c.get("has_tsr"),
            c.get("has_tsq"),
        )
        for c in recipient.get("certificates") or []
        if isinstance(c, dict)
    ]
    if certificates:
        fields["certificates"] = dumps(certificates)
    if data:
        fields["channel_data"] = merged(row, data)
    return fields


EMAIL = EmailChannel()
