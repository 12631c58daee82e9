"""The channel protocol: everything that differs between e-mail, SMS and signatures.

The stages (job file checks, dataset keys, rendering, the send loop, reconciliation,
tracking, preview, report) are written once and ask the job's channel (`channel_for`) for
whatever depends on it; nothing outside batch.channels branches on a channel's name. A new
channel, or generated documents for an existing one, is one module here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import polars as pl

from batch.attachments import JobFiles
from batch.client import LegallyMailClient
from batch.compiled import Compiled, RowContext, Templates
from batch.jobmodel import JobSpec
from batch.ledger import Entry, Outcome
from batch.message import Message
from batch.reconcile import Finding, Ownership, Probe
from batch.text import check_plain_text

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]  # a job-file location and what is wrong there
# What a channel builds from one row: address, name, content, hashable content, subject.
Built = tuple[str, str, dict[str, Any], dict[str, Any], str]
Row = dict[str, Any]

# What the next run does with a send in doubt, for channels with a listing to look in.
IN_DOUBT_NEXT = (
    "looked up against the API's latest sends before anything else; found ones are "
    "recorded as sent, proven-absent ones are sent, the rest stay in doubt (never re-sent blindly)"
)


class RowBuilder(Protocol):
    """A channel's compiled templates: builds one row's message content."""

    def build(self, row: RowContext) -> Built | None:
        """The row's message parts, or None when `row` collected errors."""
        ...


@dataclass(frozen=True)
class Answer:
    """What an accepted send's answer says, per recipient."""

    parent: str | None  # the request's own id (group tracking id, SMS or signature uuid)
    outcomes: list[Outcome]
    anchor: str | None = None  # the newest send on the account now, when the answer proves it
    server_time: str | None = None  # the server's zone-less time of the send, if the answer says


@dataclass(frozen=True)
class PreviewParts:
    """A channel's share of a message's preview page."""

    before: list[tuple[str, str]] = field(default_factory=list)  # header rows before "to"
    after: list[tuple[str, str]] = field(default_factory=list)  # header rows after "row"
    body: str = ""  # HTML below the header
    summary: tuple[str, str] = ("", "")  # the index's column for this channel: (label, value)


@dataclass(frozen=True)
class Evidence:
    """What one ledger row says beyond the shared columns, for the report and the exports."""

    times: dict[str, datetime | None]  # the channel's `evidence_times`, aware UTC
    notes: dict[str, str] = field(default_factory=dict)  # e.g. the signers and their statuses
    waiting: str | None = None  # sent, yet not reached until someone acts ("awaiting signature")
    credits: int | None = None  # credits this row used, when the channel knows


class TrackContext(Protocol):
    """What a channel's tracking pass may use of the tracker (batch.tracker)."""

    api: LegallyMailClient

    def call(self, endpoint: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One counted API call; None when the API refused it (the pass goes on)."""
        ...

    def write(self, row: Row, fields: Row) -> None:
        """Record `fields` where they differ from the ledger row."""
        ...

    def error(self, message: str) -> None:
        """Report a problem found in an answer."""
        ...

    def changed_groups(
        self,
        open_rows: list[Row],
        sent: pl.DataFrame,
        endpoint: str,
        listing: Callable[[int], list[Row]],
        id_field: str,
    ) -> Iterator[tuple[str, list[Row]]]:
        """Open rows by parent send, skipping sends a listing proves unchanged."""
        ...


class Channel(Protocol):
    """One delivery channel of the LegallyMail API."""

    name: str
    groups: bool  # identical messages may share one request (several recipients)
    anchored: bool  # a lost send can be looked up among sends newer than an anchor
    checks_credits: bool  # the account's credits can be checked before a run
    credit_unit: str  # what the account's credits are called for it ("e-mail")
    hashes_address: bool  # the address enters the content hash (one recipient per request)
    final_statuses: frozenset[str]
    rate_label: str  # the report's rate: what "done" means
    done_statuses: tuple[str, ...]
    certificate_kinds: tuple[str, ...]  # the `type`s its certificates are stored under
    in_doubt_advice: str  # `lmbatch status`: what happens to a send in doubt
    evidence_times: tuple[str, ...]  # the report's and exports' times after `sent_at`

    # -- job file and dataset ---------------------------------------------------------------
    def job_problems(self, spec: JobSpec) -> list[Problem]:
        """What this channel needs of a job file beyond the shared model."""
        ...

    def template_files(self, spec: JobSpec) -> list[tuple[Loc, str]]:
        """Template files the job names for this channel, to compile up front."""
        ...

    def address_source(self, spec: JobSpec) -> str:
        """The template giving a row's recipient address (the default key's source)."""
        ...

    def normalize_address(self, raw: str, region: str | None = None) -> str:
        """The address to send, as the API wants it; ValueError saying why it cannot be."""
        ...

    def key_of(self, address: str) -> str:
        """The recipient's identity, from an address `normalize_address` returned.

        Rows with equal identity are the same person (batch.addresses explains the rule).
        """
        ...

    def keys_of(self, addresses: pl.Series) -> pl.Series:
        """The default key of each address as written, vectorized (the dataset's fast path).

        Trimmed; e-mail lower-cased, a phone without spaces, dots, dashes or parentheses.
        """
        ...

    # -- rendering -------------------------------------------------------------------------
    def builder(self, spec: JobSpec, templates: Templates, files: JobFiles) -> RowBuilder:
        """Compile this channel's templates for a job; `files` reads attachments."""
        ...

    # -- sending ---------------------------------------------------------------------------
    def payload(self, content: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
        """The request body for one send to `addresses`."""
        ...

    def post(self, api: LegallyMailClient, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request."""
        ...

    def answer(self, data: dict[str, Any], entries: Iterable[Entry]) -> Answer:
        """Per-recipient outcomes from an accepted send's answer."""
        ...

    def send_data(self, data: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """What the answer says beyond its id, for the ledger's channel_data (or None)."""
        ...

    def remaining_credits(self, info: dict[str, Any]) -> int | None:
        """The credits left for this channel in `GET /api/info`'s answer, if it says."""
        ...

    # -- in doubt --------------------------------------------------------------------------
    def newest_send(self, api: LegallyMailClient) -> str | None:
        """The account's newest send before our first: what "newer" means if one is lost."""
        ...

    def look_up_fields(self, content: dict[str, Any]) -> dict[str, Any]:
        """What of a send's content its look-up compares, recorded with the intent."""
        ...

    def look_up(
        self,
        api: LegallyMailClient,
        probe: Probe,
        known_tracking_ids: Collection[str],
        ownership: Ownership | None,
    ) -> Finding:
        """Whether a send in doubt took effect (batch.reconcile's rules), from what was sent."""
        ...

    # -- tracking, preview -----------------------------------------------------------------
    def is_final(self, status: str | None, data: Row | None = None) -> bool:
        """Whether `status` ends tracking (batch.track)."""
        ...

    def track(self, ctx: TrackContext, open_rows: list[Row], sent: pl.DataFrame) -> None:
        """Look up every open row once, the cheapest way, and write what changed."""
        ...

    def preview(self, message: Message) -> PreviewParts:
        """This channel's part of a message's preview page."""
        ...

    # -- report and exports ----------------------------------------------------------------
    def report_facts(self, spec: JobSpec) -> list[tuple[str, str]]:
        """What the campaign sends, as the report's header rows (subject, reply-to, …)."""
        ...

    def evidence(self, row: Row) -> Evidence:
        """A ledger row's channel-specific times, notes and credits."""
        ...


# -- helpers shared by the channel modules ---------------------------------------------------


def recipient_name(row: RowContext, template: Compiled | None) -> str:
    """The recipient's name: the job's template, else the row's `name` column."""
    if template is not None:
        return row.text("recipient.name", template) or ""
    value = row.data.get("name")  # the obvious column, when the job names none
    if value is None:
        return ""
    return row.check("recipient.name", lambda: check_plain_text("name", str(value))) or ""


def sender(spec: JobSpec) -> str:
    """Who sends: the API account the job's token belongs to (the report's "sender")."""
    return f"the LegallyMail account of the token in ${spec.api.token_env} ({spec.api.base_url})"


def per_row(template: str) -> str:
    """A job-file template as the report shows it: marked when it varies per recipient."""
    return f"{template} (per recipient)" if "{{" in template or "{%" in template else template


def email_only(spec: JobSpec) -> list[Problem]:
    """The e-mail fields a job for another channel gives."""
    msg = spec.message
    keys = ("subject", "html", "reply_to", "reply_to_name")
    found = [k for k in keys if getattr(msg, k) is not None]
    found += ["attachments"] if msg.attachments else []
    return [(("message", k), "only for channel email") for k in found]


def sms_only(spec: JobSpec) -> list[Problem]:
    """The SMS fields a job for another channel gives."""
    if spec.message.text is not None:
        return [(("message", "text"), "only for channel sms")]
    return []


def signature_only(spec: JobSpec) -> list[Problem]:
    """The signature fields a job for another channel gives."""
    out: list[Problem] = []
    if spec.signers:
        out.append((("signers",), "only for channel signature"))
    if spec.signer_list is not None:
        out.append((("signer_list",), "only for channel signature"))
    if spec.document is not None:
        out.append((("document",), "only for channel signature"))
    return out


def key_column(addresses: pl.Series, lowercase: bool) -> pl.Series:
    """Trimmed addresses, lower-cased for e-mail: the default key rule, vectorized."""
    keys = addresses.cast(pl.String).str.strip_chars()
    return keys.str.to_lowercase() if lowercase else keys
