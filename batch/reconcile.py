"""Reconciliation: did a send whose answer was lost happen or not?

The API has no idempotency key, so a send that may have been processed (lost response,
read timeout, 5xx) is looked up before anything is retried. `GET /api/emails` lists the
account's last 25 e-mails; we look for ours among those newer than an *anchor*: the newest
send this campaign knew of before the intent was written (or a listing taken before the
campaign's first send). The anchor orders candidates without any clock; time only decides
whether a candidate is ours (below), never that a send is absent.

- Found: the listing shows our subject and recipient (a group send shows "Multiple
  Recipients", so `GET /api/email` confirms its recipient list), and the send is shown to
  be ours. Its tracking ids are recorded as sent.
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

What a look-up compares is what was sent, never today's render: the intent records it
(`probe_record`, the ledger's `probe` column) — the exact subject or document name, every
address of the request, its recipient count, and our clock when the intent was written.

A listed send that matches by content counts as ours only when it can be shown to be
(`Ownership`): no other campaign under this output root recorded its id (batch.registry),
and its server time lies inside the intent's window, converted with the server's clock
offset this campaign learned from its own answers (batch.server_clock), within TOLERANCE.
Without a learned offset (no answer of this campaign carried a time yet) the time proves
nothing, and the match is accepted only for a look-up made within the request's own span
after the intent: then only sends made after the anchor and before the look-up are
candidates, so ordering bounds the time. A match that fails these checks keeps the rows
in doubt with the reason (a send of another campaign's id is set aside outright: it is
proven not ours). Only when nothing matched by content is the send proven absent.

Which rule applies is the channel's choice (`Channel.look_up` in batch.channels); the
orchestration around it (what is recorded, when the run stops) is batch.settle.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from batch.errors import ApiError
from batch.ledger import FAILED, SENT, Ledger, Outcome, resolve
from batch.registry import TrackingRegistry
from batch.server_clock import ServerClock, parse_server_time

LISTING_LIMIT = 25  # the API's max_limit for /api/emails and /api/signatures
# error_details of a recipient an accepted send's answer did not name (status in_doubt):
# `reconcile_in_send` looks it up in that send's own detail.
MISSING_FROM_ANSWER = "missing from the answer"
# Slack around an intent's window: clock drift since the offset was learned, the server's
# whole seconds, the time between the intent and the request leaving.
TOLERANCE = timedelta(seconds=60)
PROBE_VERSION = 1


class Verdict(enum.Enum):
    """What a look-up proved about one in-doubt send."""

    FOUND = "found"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Probe:
    """What we know of a send whose outcome is unknown: what was sent, as recorded."""

    addresses: tuple[str, ...]  # the addresses of the rows in doubt, one per key
    keys: tuple[str, ...]
    subject: str
    anchor: str | None  # tracking id of the newest send known before this one's intent
    recipients: tuple[str, ...] = ()  # every address the request named (empty: `addresses`)
    count: int | None = None  # how many recipients the request named
    document_name: str = ""  # a signature request's document name

    @property
    def sent_to(self) -> tuple[str, ...]:
        """Every address the request named."""
        return self.recipients or self.addresses


def probe_record(
    fields: dict[str, Any], addresses: Sequence[str], at: datetime, span: float
) -> dict[str, Any]:
    """What the intent records for a later look-up (the ledger's `probe` cell).

    `fields` are the channel's (`subject`, `document_name`); `at` is our clock at the
    intent, `span` the longest the request could take to be processed (every attempt,
    back-off and rate-limit wait included).
    """
    return {
        "v": PROBE_VERSION,
        **fields,
        "addresses": list(addresses),
        "count": len(addresses),
        "at": at.astimezone(UTC).isoformat(),
        "span": span,
    }


def probe_from(
    record: dict[str, Any], keys: Sequence[str], addresses: Sequence[str], anchor: str | None
) -> Probe:
    """The Probe a recorded `probe_record` stands for, for the rows `keys` still in doubt."""
    return Probe(
        addresses=tuple(addresses),
        keys=tuple(keys),
        subject=str(record.get("subject") or ""),
        anchor=anchor,
        recipients=tuple(str(a) for a in record.get("addresses") or ()),
        count=record["count"] if isinstance(record.get("count"), int) else None,
        document_name=str(record.get("document_name") or ""),
    )


def window_of(record: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """Our clock at the intent, and the latest the request could have been processed."""
    try:
        at = datetime.fromisoformat(str(record["at"]))
        span = float(record.get("span") or 0.0)
    except (KeyError, ValueError, TypeError):
        return None, None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at, at + timedelta(seconds=span)


@dataclass(frozen=True)
class Ownership:
    """What shows a send that matches ours by content is ours: its time, whose id it is."""

    at: datetime | None  # our clock when the intent was written (None: not recorded)
    until: datetime | None  # the latest it could have been processed (our clock)
    clock: ServerClock | None  # the server's offset as this campaign learned it
    registry: TrackingRegistry | None  # ids other campaigns on this machine recorded
    prompt: bool = False  # the look-up follows the intent within its span (see the module)

    def foreign(self, tracking_id: str) -> str | None:
        """Why the send is proven not ours (another campaign recorded it), or None."""
        owner = self.registry.other_owner(tracking_id) if self.registry else None
        return f"{tracking_id} belongs to campaign {owner!r}" if owner else None

    def time_doubt(self, tracking_id: str, server_time: object) -> str | None:
        """Why its time does not show it ours, or None when it does."""
        if self.at is None:
            return f"{tracking_id}: when this send was attempted is not recorded"
        if parse_server_time(server_time) is None:
            return f"{tracking_id} carries no send time"
        ours = self.clock.to_ours(server_time) if self.clock else None
        if ours is None:
            if self.prompt:
                return None
            return (
                f"{tracking_id} (sent {server_time}, server time): the server's clock offset is "
                "not known yet (no answer of this campaign carried a time), so its time proves "
                "nothing"
            )
        start, end = self.at - TOLERANCE, (self.until or self.at) + TOLERANCE
        if ours[1] < start or ours[0] > end:
            return (
                f"{tracking_id} was sent at {server_time} (server time), outside this send's "
                f"window {start:%Y-%m-%d %H:%M:%S}..{end:%Y-%m-%d %H:%M:%S} UTC"
            )
        return None


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
    client: LookupClient,
    probe: Probe,
    *,
    known_tracking_ids: Collection[str],
    ownership: Ownership | None = None,
) -> Finding:
    """Look one in-doubt e-mail send up; never raises for an API failure (gives UNKNOWN).

    Without `ownership` a content match is taken as ours (no time or registry checks).
    """
    try:
        listing = client.list_emails(LISTING_LIMIT)
    except ApiError as err:
        return Finding(Verdict.UNKNOWN, reason=f"look-up failed: {err}", lookup_failed=True)
    candidates, complete = newer_than_anchor(listing, probe.anchor)
    wanted = {a.lower() for a in probe.sent_to}
    count = probe.count or len(wanted)
    doubts: list[str] = []
    for item in candidates:
        tracking_id = str(item.get("tracking_id") or "")
        if not tracking_id or tracking_id in known_tracking_ids:
            continue
        if str(item.get("subject") or "") != probe.subject:
            continue
        if count == 1 and not item.get("is_multi_recipient"):
            if str(item.get("recipient") or "").strip().lower() not in wanted:
                continue
        elif int(item.get("recipient_count") or 0) != count:
            continue
        if ownership is not None and ownership.foreign(tracking_id):
            continue  # another campaign's send: proven not ours
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
        if {str(r.get("email") or "").lower() for r in recipients} != wanted:
            continue
        # The record's creation is when the request was processed; sent_at may come later.
        when = item.get("created_at") or item.get("sent_at") or detail.get("sent_at")
        doubt = ownership.time_doubt(tracking_id, when) if ownership is not None else None
        if doubt:
            doubts.append(doubt)
            continue
        return _found(detail, probe)
    return _not_found(
        doubts,
        complete,
        absent="not among the account's latest sends",
        beyond="the send could not be located: more than 25 e-mails were sent since",
    )


def _not_found(doubts: list[str], complete: bool, *, absent: str, beyond: str) -> Finding:
    """Nothing shown ours: in doubt when something like it was seen, else absent if provable."""
    if doubts:
        return Finding(
            Verdict.UNKNOWN,
            reason="a send like this one was found but cannot be shown to be ours: "
            + "; ".join(doubts),
        )
    if complete:
        return Finding(Verdict.ABSENT, reason=absent)
    return Finding(Verdict.UNKNOWN, reason=beyond)


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
    known_tracking_ids: Collection[str],
    ownership: Ownership | None = None,
) -> Finding:
    """Look one in-doubt signature request up by signer e-mail and document name."""
    try:
        listing = client.signatures(LISTING_LIMIT)
    except ApiError as err:
        return Finding(Verdict.UNKNOWN, reason=f"look-up failed: {err}", lookup_failed=True)
    candidates, complete = newer_than_anchor(listing, probe.anchor, id_field="uuid")
    wanted = probe.sent_to[0].lower()
    doubts: list[str] = []
    for item in candidates:
        uuid = str(item.get("uuid") or "")
        if not uuid or uuid in known_tracking_ids:
            continue
        if str(item.get("signer_email") or "").lower() != wanted:
            continue
        if str(item.get("document_name") or "") != probe.document_name:
            continue
        if ownership is not None:
            if ownership.foreign(uuid):
                continue
            doubt = ownership.time_doubt(uuid, item.get("created_at"))
            if doubt:
                doubts.append(doubt)
                continue
        outcome = Outcome(key=probe.keys[0], status=SENT, tracking_id=uuid)
        return Finding(
            Verdict.FOUND,
            parent_tracking_id=uuid,
            outcomes=[outcome],
            reason="found in the account's latest signature requests",
        )
    return _not_found(
        doubts,
        complete,
        absent="not among the account's latest signature requests",
        beyond="the request could not be located: more than 25 were sent since",
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
    done = resolve(ledger, keys, sent=sent, tracking_id=tracking_id, note=note)
    if sent and tracking_id:
        TrackingRegistry(ledger.path.parent).record([tracking_id])
    return done
