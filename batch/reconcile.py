"""Reconciliation: did a send whose answer was lost happen or not?

The API has no idempotency key, so a send that may have been processed (lost response,
read timeout, 5xx) is looked up before anything is retried. `GET /api/emails` lists the
account's last 25 e-mails; we look for ours among those newer than an *anchor*: the newest
send this campaign knew of before the intent was written (or a listing taken before the
campaign's first send). Clock-free on purpose: the API's timestamps carry no zone.

- Found: the listing shows our subject and recipient (a group send shows "Multiple
  Recipients", so `GET /api/email` confirms its recipient list). Its tracking ids are
  recorded as sent.
- Provably absent: the anchor is in the listing and nothing newer matches, or the listing
  holds the account's whole history (fewer entries than asked for) and nothing matches.
  Safe to send again.
- Otherwise unknown: the rows stay `in_doubt`, are never re-sent blindly, and `status`
  says so. When the look-up itself failed (`lookup_failed`), the run stops there: sending
  on would push the send out of the 25-item listing, where no later run could settle it.

Signature requests are found the same way in `GET /api/signatures` (signer e-mail and
document name). Certified SMS have no listing endpoint, so an SMS in doubt can never be
proven absent: it is never re-sent automatically, and `lmbatch resolve` lets the operator
settle it after checking the LegallyMail panel (the safest policy: a duplicate legal SMS
cannot be taken back, a late one can be sent).

Which rule applies is the channel's choice (`Channel.look_up` in batch.channels); the
orchestration around it (what is recorded, when the run stops) is batch.settle.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch.errors import ApiError
from batch.ledger import FAILED, SENT, Ledger, Outcome, resolve

LISTING_LIMIT = 25  # the API's max_limit for /api/emails and /api/signatures
# error_details of a recipient an accepted send's answer did not name (status in_doubt):
# `reconcile_in_send` looks it up in that send's own detail.
MISSING_FROM_ANSWER = "missing from the answer"


class Verdict(enum.Enum):
    """What a look-up proved about one in-doubt send."""

    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Probe:
    """What we know of a send whose outcome is unknown."""

    addresses: tuple[str, ...]
    keys: tuple[str, ...]
    subject: str
    anchor: str | None  # tracking id of the newest send known before this one's intent


@dataclass
class Finding:
    """The verdict, with the per-recipient outcomes when the send was found."""

    verdict: Verdict
    parent_tracking_id: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    reason: str = ""
    lookup_failed: bool = False  # UNKNOWN because the API did not answer the look-up


class LookupClient(Protocol):
    """The two look-ups reconciliation needs (LegallyMailClient has them)."""

    def list_emails(self, limit: int = 25) -> list[dict[str, Any]]:
        """Last sent e-mails, newest first."""
        ...

    def email(self, tracking_id: str) -> dict[str, Any]:
        """One e-mail with its recipients."""
        ...

    def signatures(self, limit: int = 25) -> list[dict[str, Any]]:
        """Last signature requests, newest first."""
        ...


def newer_than_anchor(
    listing: Sequence[dict[str, Any]], anchor: str | None, *, id_field: str = "tracking_id"
) -> tuple[list[dict[str, Any]], bool]:
    """The listed items newer than the anchor, and whether that set is complete."""
    if anchor is not None:
        for position, item in enumerate(listing):
            if item.get(id_field) == anchor:
                anchor_id = item.get("id")
                if isinstance(anchor_id, int):
                    newer = [
                        i for i in listing if isinstance(i.get("id"), int) and i["id"] > anchor_id
                    ]
                else:  # no numeric ids: the documented order is newest first
                    newer = list(listing[:position])
                return newer, True
    # Without the anchor in view, the listing is complete only if it is the whole history.
    return list(listing), len(listing) < LISTING_LIMIT


def reconcile_email(
    client: LookupClient, probe: Probe, *, known_tracking_ids: Collection[str]
) -> Finding:
    """Look one in-doubt e-mail send up; never raises for an API failure (gives UNKNOWN)."""
    try:
        listing = client.list_emails(LISTING_LIMIT)
    except ApiError as err:
        return Finding(Verdict.UNKNOWN, reason=f"look-up failed: {err}", lookup_failed=True)
    candidates, complete = newer_than_anchor(listing, probe.anchor)
    wanted = {a.lower() for a in probe.addresses}
    for item in candidates:
        tracking_id = str(item.get("tracking_id") or "")
        if not tracking_id or tracking_id in known_tracking_ids:
            continue
        if str(item.get("subject") or "") != probe.subject:
            continue
        if len(wanted) == 1 and not item.get("is_multi_recipient"):
            if str(item.get("recipient") or "").strip().lower() not in wanted:
                continue
        elif int(item.get("recipient_count") or 0) != len(wanted):
            continue
        # The listing names the request; its detail gives each recipient's own tracking id.
        try:
            detail = client.email(tracking_id)
        except ApiError as err:
            return Finding(
                Verdict.UNKNOWN,
                reason=f"look-up of {tracking_id} failed: {err}",
                lookup_failed=True,
            )
        recipients = detail.get("recipients") or []
        if {str(r.get("email") or "").lower() for r in recipients} == wanted:
            return _found(detail, probe)
    if complete:
        return Finding(Verdict.ABSENT, reason="not among the account's latest sends")
    return Finding(
        Verdict.UNKNOWN,
        reason="the send could not be located: more than 25 e-mails were sent since",
    )


def reconcile_in_send(client: LookupClient, probe: Probe, *, tracking_id: str) -> Finding:
    """Recipients the answer to a send did not name: that send's own detail says.

    The listing cannot: the send's tracking id is already ours, and it has other recipients.
    """
    try:
        detail = client.email(tracking_id)
    except ApiError as err:
        return Finding(
            Verdict.UNKNOWN, reason=f"look-up of {tracking_id} failed: {err}", lookup_failed=True
        )
    found = _found(detail, probe)
    if found.outcomes:  # any not found stay in doubt and are looked up again next run
        found.reason = f"found among the recipients of {tracking_id}"
        return found
    return Finding(Verdict.ABSENT, reason=f"not among the recipients of {tracking_id}")


def _found(detail: dict[str, Any], probe: Probe) -> Finding:
    by_address = {a.lower(): k for a, k in zip(probe.addresses, probe.keys, strict=True)}
    outcomes = []
    for recipient in detail.get("recipients") or []:
        key = by_address.get(str(recipient.get("email") or "").lower())
        if key is None:
            continue
        status = str(recipient.get("status") or "sent")
        outcomes.append(
            Outcome(
                key=key,
                status=FAILED if status == FAILED else SENT,
                tracking_id=recipient.get("tracking_id"),
                error_details=recipient.get("error_details"),
            )
        )
    return Finding(
        Verdict.FOUND,
        parent_tracking_id=str(detail.get("tracking_id") or "") or None,
        outcomes=outcomes,
        reason="found in the account's latest sends",
    )


def reconcile_signature(
    client: LookupClient,
    probe: Probe,
    *,
    document_name: str,
    known_tracking_ids: Collection[str],
) -> Finding:
    """Look one in-doubt signature request up by signer e-mail and document name."""
    try:
        listing = client.signatures(LISTING_LIMIT)
    except ApiError as err:
        return Finding(Verdict.UNKNOWN, reason=f"look-up failed: {err}", lookup_failed=True)
    candidates, complete = newer_than_anchor(listing, probe.anchor, id_field="uuid")
    wanted = probe.addresses[0].lower()
    for item in candidates:
        uuid = str(item.get("uuid") or "")
        if not uuid or uuid in known_tracking_ids:
            continue
        if str(item.get("signer_email") or "").lower() != wanted:
            continue
        if str(item.get("document_name") or "") != document_name:
            continue
        outcome = Outcome(key=probe.keys[0], status=SENT, tracking_id=uuid)
        return Finding(
            Verdict.FOUND,
            parent_tracking_id=uuid,
            outcomes=[outcome],
            reason="found in the account's latest signature requests",
        )
    if complete:
        return Finding(Verdict.ABSENT, reason="not among the account's latest signature requests")
    return Finding(
        Verdict.UNKNOWN,
        reason="the request could not be located: more than 25 were sent since",
    )


def settle_by_hand(
    ledger: Ledger,
    keys: Sequence[str],
    *,
    sent: bool,
    tracking_id: str | None = None,
    note: str | None = None,
) -> list[str]:
    """Record the operator's verdict on in-doubt rows; the keys that were settled.

    `sent=True` after finding the message in the LegallyMail panel (it will not be sent
    again); `sent=False` after making sure it is not there (the next run sends it). Every
    key must be in doubt (an unknown key or a settled row is refused, naming it); the verdict
    is journalled with its time, `note` and the evidence (`tracking_id`), and kept in
    `resolutions.jsonl` (batch.ledger.rules).
    """
    return resolve(ledger, keys, sent=sent, tracking_id=tracking_id, note=note)
