"""Electronic signature: one PDF to 1–5 signers per request.

A signature request is found again by its first signer's e-mail and its document name in
`GET /api/signatures`; its certificates are the signed record (`acta`) and the original.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from batch.addresses import normalize_email, normalize_phone, parse_signers
from batch.answers import api_time, certificate, dumps, json_object, ledger_status, merged
from batch.attachments import (
    DOCUMENTS,
    Generated,
    JobFiles,
    generated_templates,
    recorded_documents,
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
    email_only,
    key_column,
    per_row,
    sender,
    sms_only,
)
from batch.client import LegallyMailClient
from batch.compiled import RowContext, Templates
from batch.jobmodel import JobSpec
from batch.ledger import SENT, Entry, Outcome
from batch.message import Message
from batch.reconcile import Finding, Ownership, Probe, reconcile_signature
from batch.text import check_plain_text

MAX_SIGNERS = 5  # the API accepts at most 5 signers per request
DOCUMENT_MAX_BYTES = 10 * 1024 * 1024  # the API refuses signature documents over 10 MB


class SignatureBuilder:
    """A signature job's compiled templates."""

    def __init__(self, spec: JobSpec, templates: Templates, files: JobFiles) -> None:
        inline = templates.inline
        self._files = files
        self._region = spec.recipient.default_region
        self._language = spec.language
        self._signers = [(inline(s.name), inline(s.email), inline(s.phone)) for s in spec.signers]
        self._signer_list = inline(spec.signer_list)
        self._doc_path = inline(spec.document.path) if spec.document else None
        self._doc_name = inline(spec.document.name) if spec.document else None
        self._doc_template = spec.document.template if spec.document else None

    def build(self, row: RowContext) -> Built | None:
        """The signers, validated, and the PDF document."""
        signers: list[dict[str, str]] = []
        for where, raw_name, raw_email, raw_phone in self._raw_signers(row):
            name = row.check(f"{where}.name", partial(check_plain_text, "signer name", raw_name))
            signer = {"name": name or ""}
            if raw_email is not None:
                email = row.check(f"{where}.email", partial(normalize_email, raw_email))
                signer["email"] = email or ""
            if raw_phone:  # the phone is optional: an empty cell means none
                phone = row.check(
                    f"{where}.phone", partial(normalize_phone, raw_phone, self._region)
                )
                signer["phone"] = phone or ""
            signers.append(signer)
        doc_name = (row.render("document.name", self._doc_name) or "").strip()
        generated = None
        if self._doc_template is not None:
            if row.errors or not signers:  # no document for a row that cannot be sent
                return None
            generated = self._generated(row, doc_name, signers[0].get("email") or "")
            document = None if generated is None else (generated.name, generated.b64)
            digest = generated.digest if generated is not None else ""
        else:
            doc_path = row.render("document.path", self._doc_path)
            found = None if doc_path is None else self._document(row, doc_path)
            document = None if found is None else (doc_name or found[0].name, found[1])
            digest = found[2] if found is not None else ""
        if document is None or row.errors or not signers:
            return None
        content: dict[str, Any] = {
            "signers": signers,
            "document": document[1],
            "document_name": document[0],
            "language": self._language,
        }
        hashable = {**content, "document": digest}
        if generated is not None:
            content[DOCUMENTS] = [{"name": generated.name, "sha256": generated.sha256}]
        return signers[0]["email"], signers[0]["name"], content, hashable, ""

    def _generated(self, row: RowContext, name: str, first_email: str) -> Generated | None:
        """The row's PDF generated from the document template (≤ 10 MB)."""
        key = row.key or first_email
        template = self._doc_template
        assert template is not None
        return row.check(
            "document.template",
            lambda: self._files.generate(
                key, template, name, row.variables, limit=DOCUMENT_MAX_BYTES
            ),
        )

    def _raw_signers(self, row: RowContext) -> list[tuple[str, str, str | None, str]]:
        """(field, name, e-mail, phone) of each signer as rendered, before validation."""
        if self._signer_list is None:
            out = []
            for i, (name_t, email_t, phone_t) in enumerate(self._signers):
                where = f"signers[{i}]"
                name = (row.render(f"{where}.name", name_t) or "").strip()
                email = row.render(f"{where}.email", email_t)
                phone = (row.render(f"{where}.phone", phone_t) or "").strip()
                out.append((where, name, email, phone))
            return out
        rendered = row.render("signer_list", self._signer_list)
        listed = (
            None if rendered is None else row.check("signer_list", partial(parse_signers, rendered))
        )
        return [
            (f"signer_list[{i}]", name, email, phone)
            for i, (name, email, phone) in enumerate(listed or [])
        ]

    def _document(self, row: RowContext, rendered: str) -> tuple[Path, str, str] | None:
        path = row.check("document.path", lambda: self._files.resolve(rendered))
        if path is None:
            return None
        size = path.stat().st_size
        if size > DOCUMENT_MAX_BYTES:
            row.fail("document.path", f"{rendered!r} is {size:,} bytes; the limit is 10 MB")
            return None
        entry = row.check("document.path", lambda: self._files.read(path))
        if entry is None:
            return None
        if not entry[0].startswith(b"%PDF"):
            row.fail("document.path", f"{rendered!r} is not a PDF (it does not start with %PDF)")
            return None
        return path, entry[1], entry[2]


class SignatureChannel:
    """Electronic signature requests (`POST /api/send-signature`)."""

    name = "signature"
    groups = False
    anchored = True
    checks_credits = False
    credit_unit = "signature"
    hashes_address = True  # distinct requests must never look identical
    final_statuses = frozenset(
        {"signed", "declined", "expired", "cancelled", "canceled", "rejected"}
    )
    rate_label = "signed rate"
    done_statuses: tuple[str, ...] = ("signed",)
    certificate_kinds: tuple[str, ...] = ("acta", "original")
    in_doubt_advice = f"next run, {IN_DOUBT_NEXT}"
    evidence_times: tuple[str, ...] = ("signed_at", "expires_at")

    def job_problems(self, spec: JobSpec) -> list[Problem]:
        """Signers (1 to 5, or a signer_list with a key column) and a document."""
        out: list[Problem] = []
        if spec.signer_list is not None:
            if spec.signers:
                out.append((("signer_list",), "give either signers or signer_list, not both"))
            if spec.dataset.key is None:
                out.append((("dataset", "key"), "required with signer_list (a key column)"))
        elif not spec.signers:
            out.append((("signers",), "at least one signer required for channel signature"))
        elif len(spec.signers) > MAX_SIGNERS:
            out.append((("signers",), f"at most {MAX_SIGNERS} signers, found {len(spec.signers)}"))
        if spec.document is None:
            out.append((("document",), "field required for channel signature"))
        return out + email_only(spec) + sms_only(spec)

    def template_files(self, spec: JobSpec) -> list[tuple[Loc, str]]:
        """The generated document's template, if the job generates it."""
        return generated_templates(spec)

    def address_source(self, spec: JobSpec) -> str:
        """The first signer's e-mail (with signer_list, a key column is required instead)."""
        return spec.signers[0].email if spec.signers else "{{ email }}"

    def normalize_address(self, raw: str, region: str | None = None) -> str:
        """The first signer's e-mail address, its domain in lower-case ASCII."""
        return normalize_email(raw)

    def key_of(self, address: str) -> str:
        """The normalised address lower-cased."""
        return address.lower()

    def keys_of(self, addresses: pl.Series) -> pl.Series:
        """Addresses as written, trimmed and lower-cased."""
        return key_column(addresses, lowercase=True)

    def builder(self, spec: JobSpec, templates: Templates, files: JobFiles) -> SignatureBuilder:
        """Compile the signers' and document's templates."""
        return SignatureBuilder(spec, templates, files)

    def payload(self, content: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
        """The content as built: the signers are in it."""
        return without_documents(content)

    def post(self, api: LegallyMailClient, payload: dict[str, Any]) -> dict[str, Any]:
        """`POST /api/send-signature`."""
        return api.send_signature(payload)

    def answer(self, data: dict[str, Any], entries: Iterable[Entry]) -> Answer:
        """The request's uuid is its tracking id, and the new anchor.

        A later lost answer is looked up among the requests newer than this one: with a
        stale anchor it would fall out of the 25-item listing in a long campaign.
        """
        uid = data.get("uuid") or (data.get("data") or {}).get("uuid")
        parent = str(uid) if uid else None
        created = data.get("created_at") or (data.get("data") or {}).get("created_at")
        outcomes = [Outcome(e.key, SENT, parent, None) for e in entries]
        return Answer(parent, outcomes, parent, created if isinstance(created, str) else None)

    def send_data(self, data: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """The status at send time, the document's name and each signer as sent.

        Tracking replaces the signers with the API's per-signer statuses.
        """
        status = data.get("status")
        signers = [
            {**signer, "status": status}
            for signer in content.get("signers") or []
            if isinstance(signer, dict)
        ]
        return {
            "status_at_send": status,
            "document_name": data.get("document_name"),
            "created_at": data.get("created_at"),
            "signers": signers,
        }

    def remaining_credits(self, info: dict[str, Any]) -> int | None:
        """Unknown: the API's info names e-mail credits only."""
        return None

    def newest_send(self, api: LegallyMailClient) -> str | None:
        """The newest signature request's uuid."""
        listing = api.signatures(1)
        return str(listing[0].get("uuid")) if listing else None

    def look_up_fields(self, content: dict[str, Any]) -> dict[str, Any]:
        """The exact document name sent."""
        return {"document_name": str(content.get("document_name") or "")}

    def look_up(
        self,
        api: LegallyMailClient,
        probe: Probe,
        known_tracking_ids: Collection[str],
        ownership: Ownership | None,
    ) -> Finding:
        """By first signer and document name among the requests newer than the anchor."""
        return reconcile_signature(
            api, probe, known_tracking_ids=known_tracking_ids, ownership=ownership
        )

    def is_final(self, status: str | None, data: Row | None = None) -> bool:
        """Signed, declined, expired, cancelled or rejected."""
        return status in self.final_statuses

    def track(self, ctx: TrackContext, open_rows: list[Row], sent: pl.DataFrame) -> None:
        """A listing when it pays, then one detail call per request that may have changed."""
        groups = ctx.changed_groups(
            open_rows, sent, "GET /api/signatures", ctx.api.signatures, "uuid"
        )
        for uid, rows in groups:
            detail = ctx.call("GET /api/signature", ctx.api.signature, uid)
            if detail is not None:
                for row in rows:
                    ctx.write(row, self.fields(detail, row))

    def fields(self, detail: Row, row: Row) -> Row:
        """Ledger fields from `GET /api/signature`."""
        status, data = ledger_status(str(detail.get("status") or row["status"]))
        signers = [
            {
                "name": s.get("signer_name"),
                "email": s.get("signer_email"),
                "phone": s.get("signer_phone"),
                "status": s.get("status"),
                "signed_at": s.get("signed_at"),
            }
            for s in detail.get("signers") or []
            if isinstance(s, dict)
        ]
        data |= {
            "signed_at": detail.get("signed_at"),
            "expires_at": detail.get("expires_at"),
            "document_hash": detail.get("document_hash"),
            "signed_document_hash": detail.get("signed_document_hash"),
            "download_acta_url": detail.get("download_acta_url"),
            "download_original_url": detail.get("download_original_url"),
            "signers": signers,
        }
        certificates = []
        if detail.get("download_acta_url"):
            # The acta is the signed record: the API's signed_document_hash is its SHA-256.
            certificates.append(
                certificate(
                    "acta",
                    detail["download_acta_url"],
                    detail.get("signed_document_hash"),
                    detail.get("signed_at"),
                    None,
                    None,
                )
            )
        if detail.get("download_original_url"):
            certificates.append(
                certificate(
                    "original",
                    detail["download_original_url"],
                    detail.get("document_hash"),
                    detail.get("created_at"),
                    None,
                    None,
                )
            )
        ours = _generated_sha(row)
        if ours and detail.get("document_hash"):
            # The document as the API received it is the one we generated and recorded.
            data["document_matches"] = str(detail["document_hash"]).lower() == ours
        fields: Row = {"status": status, "channel_data": merged(row, data)}
        if certificates:
            fields["certificates"] = dumps(certificates)
        if status in self.final_statuses and status != "signed":
            fields["error_status"] = status
        return fields

    def preview(self, message: Message) -> PreviewParts:
        """The signers (with their phones), the document's name and the language."""
        content = message.content
        signers = ", ".join(
            f"{s['name']} <{s['email']}>" + (f" {s['phone']}" if s.get("phone") else "")
            for s in content["signers"]
        )
        return PreviewParts(
            after=[
                ("signers", signers),
                ("document", content["document_name"]),
                ("language", content["language"]),
            ],
            summary=("document", content["document_name"]),
        )

    def report_facts(self, spec: JobSpec) -> list[tuple[str, str]]:
        """The document, the signers, the language and the sender."""
        document = spec.document
        name = (document.name or document.path or "") if document else ""
        if spec.signer_list is not None:
            signers = f"per recipient: {spec.signer_list}"
        else:
            signers = "; ".join(
                f"{s.name} <{s.email}>" + (f" {s.phone}" if s.phone else "") for s in spec.signers
            )
        return [
            ("document", per_row(name)),
            (
                "document file",
                f"generated from {document.template}"
                if document and document.template
                else per_row(document.path or "")
                if document
                else "",
            ),
            ("signers", per_row(signers)),
            ("language", spec.language),
            ("sender", sender(spec)),
        ]

    def evidence(self, row: Row) -> Evidence:
        """Signed and expiry times, each signer's status; a request still open is awaited.

        The API reports no credits for signatures, so none are counted.
        """
        data = json_object(row.get("channel_data"))
        signers = [s for s in data.get("signers") or [] if isinstance(s, dict)]
        notes = {}
        if signers:
            notes["signers"] = "; ".join(
                f"{s.get('name') or ''} <{s.get('email') or ''}>"
                + (f" {s['phone']}" if s.get("phone") else "")
                + f": {s.get('status') or 'unknown'}"
                for s in signers
            )
        if "document_matches" in data:
            name = data.get("document_name") or "the document"
            notes["document"] = (
                f"{name}: the API's document_hash matches the SHA-256 of the document generated"
                if data["document_matches"]
                else f"{name}: the API's document_hash {data.get('document_hash')} DIFFERS "
                "from the SHA-256 of the document generated"
            )
        waiting = None
        if row.get("status") == SENT:
            done = sum(1 for s in signers if s.get("status") == "signed")
            waiting = "awaiting signature" + (
                f" ({done} of {len(signers)} signers signed)" if len(signers) > 1 else ""
            )
        times = {name: api_time(data.get(name)) for name in self.evidence_times}
        return Evidence(times, notes, waiting)


def _generated_sha(row: Row) -> str | None:
    """The SHA-256 the ledger recorded for the row's generated document, if any."""
    recorded = recorded_documents(row.get(DOCUMENTS))
    return recorded[0][1] or None if recorded else None


SIGNATURE = SignatureChannel()
