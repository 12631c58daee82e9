"""The job model: what a job file may say (pydantic specs) and a loaded `Job`.

It imports nothing from batch but the pure URL rule (batch.guard), so every stage
(templating, rendering, scheduling, channels) can name the model without importing how a job
file is read (batch.jobfile).

Numbers are finite and bounded (`allow_inf_nan=False`, a maximum each): `.inf` or `1e9` in a
job file would make a run unstoppable (a request that never times out) or crash it after the
lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from batch.guard import check_base_url

# Upper bounds of the job file's numbers: far above any sensible value, low enough that a
# typo cannot hang a run (a timeout of 1e9 s) or overflow a computation.
MAX_TIMEOUT_SECONDS = 120.0  # a request in flight: the first SIGTERM waits at most this long
MAX_WINDOW_SECONDS = 86_400.0  # one day
MAX_BACKOFF_SECONDS = 3_600.0
MAX_REQUESTS_PER_WINDOW = 100_000
MAX_ATTEMPTS = 100
MAX_RECIPIENTS = 1_000
# Attachments (e-mail): read only after `stat` says they fit. The API's documented limit is
# per message; these defaults stay under it and a job file may lower or raise them.
DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The API documents no limit for e-mail; mail servers commonly refuse messages over 20-25 MB and
# base64 adds a third: 15 MB of files in all keeps a message under 20 MB.
DEFAULT_MAX_MESSAGE_ATTACHMENT_BYTES = 15 * 1024 * 1024
MAX_ATTACHMENT_LIMIT = 1024 * 1024 * 1024  # the most a job file may allow: 1 GiB


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(StrictModel):
    path: str
    sheet: str | None = None
    key: str | None = None  # column name; default: the recipient address
    where: str | None = None  # polars SQL condition over the columns
    delimiter: str = ","  # one character, or "auto": pick among , ; tab | and say which
    encoding: str = "utf-8"  # a byte-order mark (UTF-8, UTF-16) overrides it
    header_row: int = Field(default=1, ge=1)  # file line / sheet row of the header
    decimal: Literal[",", "."] = "."  # the dataset's number convention (1.234,56 vs 1,234.56)
    date_format: str | None = None  # how CSV date cells are written, e.g. "%d/%m/%Y"


class RecipientSpec(StrictModel):
    email: str | None = None  # template over the row (channel email)
    name: str | None = None  # template over the row
    phone: str | None = None  # template over the row (channel sms)
    default_region: str | None = None  # for numbers written without +country code


class AttachmentSpec(StrictModel):
    """A fixed file (`path`) or a PDF generated per row (`template`): exactly one of them."""

    path: str | None = None  # template over the row, relative to the job file, inside its folder
    template: str | None = None  # HTML + CSS template file rendered to PDF (batch.documents)
    name: str | None = None  # template; default: the file's name (required with `template`)

    @model_validator(mode="after")
    def _one_source(self) -> AttachmentSpec:
        _one_of(self.path, self.template, self.name)
        return self


class MessageSpec(StrictModel):
    subject: str | None = None  # inline template (email)
    html: str | None = None  # template file: next to the job file, then templates/ (email)
    text: str | None = None  # inline template (sms)
    reply_to: str | None = None
    reply_to_name: str | None = None
    attachments: list[AttachmentSpec] = Field(default_factory=list)


class SignerSpec(StrictModel):
    name: str
    email: str
    phone: str | None = None


class DocumentSpec(StrictModel):
    """A ready-made PDF (`path`) or one generated per row (`template`): exactly one of them."""

    path: str | None = None  # template over the row: a PDF ≤ 10 MB inside the job's folder
    template: str | None = None  # HTML + CSS template file rendered to PDF (batch.documents)
    name: str | None = None  # template; default: the file's name (required with `template`)

    @model_validator(mode="after")
    def _one_source(self) -> DocumentSpec:
        _one_of(self.path, self.template, self.name)
        return self


def _one_of(path: str | None, template: str | None, name: str | None) -> None:
    """Exactly one of `path` and `template`; a generated document needs a `name`."""
    # PydanticCustomError: the message as written, without pydantic's "Value error, ".
    if path is not None and template is not None:
        raise PydanticCustomError(
            "source", "give either `path` (a file) or `template` (a generated PDF), not both"
        )
    if path is None and template is None:
        raise PydanticCustomError(
            "source", "`path` (a file) or `template` (a generated PDF) is required"
        )
    if template is not None and not (name or "").strip():
        raise PydanticCustomError(
            "source", '`name` is required with `template`, e.g. name: "Contrato {{ id }}.pdf"'
        )


class ApiSpec(StrictModel):
    base_url: str = "https://legallymail.com"
    token_env: str = "LEGALLYMAIL_TOKEN"
    timeout_seconds: float = Field(default=30.0, gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)

    @field_validator("base_url")
    @classmethod
    def _only_legallymail(cls, value: str) -> str:
        """The token goes where the job file says: only LegallyMail itself (batch.guard)."""
        return check_base_url(value, from_environment=False)


class LimitsSpec(StrictModel):
    requests_per_window: int = Field(default=10, ge=1, le=MAX_REQUESTS_PER_WINDOW)
    window_seconds: float = Field(default=60.0, gt=0, le=MAX_WINDOW_SECONDS, allow_inf_nan=False)
    max_recipients_per_request: int = Field(default=10, ge=1, le=MAX_RECIPIENTS)
    # Per attachment file and per message (all its attachments), checked by size before reading.
    max_attachment_bytes: int = Field(
        default=DEFAULT_MAX_ATTACHMENT_BYTES, ge=1, le=MAX_ATTACHMENT_LIMIT
    )
    max_message_attachment_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_ATTACHMENT_BYTES, ge=1, le=MAX_ATTACHMENT_LIMIT
    )


class RetrySpec(StrictModel):
    attempts: int = Field(default=5, ge=1, le=MAX_ATTEMPTS)
    max_backoff_seconds: float = Field(
        default=60.0, gt=0, le=MAX_BACKOFF_SECONDS, allow_inf_nan=False
    )


class SendWindowSpec(StrictModel):
    days: str = "mon-sun"  # e.g. "mon-fri" or "mon,wed,fri"
    hours: str = "00:00-24:00"  # e.g. "09:00-18:00", in the schedule's timezone


class ScheduleSpec(StrictModel):
    cron: str
    timezone: str = "UTC"
    window: SendWindowSpec | None = None


class JobSpec(StrictModel):
    """What the user writes; key names are the interface and must stay stable."""

    campaign: str  # may be a template: rent-{{ today.strftime('%Y-%m') }}, rent-{{ period.label }}
    channel: Literal["email", "sms", "signature"] = "email"
    dataset: DatasetSpec
    recipient: RecipientSpec = Field(default_factory=RecipientSpec)
    message: MessageSpec = Field(default_factory=MessageSpec)
    signers: list[SignerSpec] = Field(default_factory=list)  # channel signature, 1 to 5
    # Channel signature, instead of `signers`: a template rendering, per row, to the signers
    # (a JSON list of {name, email, phone?}, or `Name <email> [phone]` entries split by `;`).
    signer_list: str | None = None
    document: DocumentSpec | None = None  # channel signature
    language: Literal["es", "en", "fr", "it"] = "es"  # channel signature
    grouping: Literal["auto", "off"] = "auto"
    api: ApiSpec = Field(default_factory=ApiSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    schedule: ScheduleSpec | None = None
    # IANA name of the zone every time a person reads is shown in (report, exports' local
    # columns); default: the schedule's, else the machine's. The ledger stays in UTC.
    timezone: str | None = None
    # CLDR locale of amounts and dates in messages (`money`, `number`, `date`): es_ES prints
    # 1.234,50 € and 29 de noviembre de 2026; `en` keeps lmbatch's own 1,234.50 EUR.
    locale: str = "en"
    output: str = "output"  # folder relative to the job file

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        try:
            Locale.parse(value)
        except (UnknownLocaleError, ValueError, TypeError):
            raise ValueError(
                f"unknown locale {value!r}: use a CLDR name such as en, es_ES, fr_FR or pt_PT"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and zone(value) is None:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as Europe/Madrid, "
                "America/New_York or UTC"
            )
        return value


@dataclass(frozen=True)
class Period:
    """A scheduled campaign's period: the latest fire time at or before now."""

    start: datetime  # aware, in the schedule's timezone
    label: str  # e.g. "2026-11" for a monthly schedule


@dataclass(frozen=True)
class Job:
    """A loaded job: the spec plus everything resolved from where and when it runs."""

    spec: JobSpec
    path: Path  # the job file
    campaign: str  # rendered campaign name, safe as a folder name
    period: Period | None

    @property
    def base_dir(self) -> Path:
        """The job file's folder: dataset, templates and attachments resolve from here."""
        return self.path.parent.resolve()

    @property
    def tz(self) -> ZoneInfo:
        """The campaign's time zone: `timezone:`, else the schedule's, else the machine's."""
        return job_zone(self.spec)

    @property
    def output_dir(self) -> Path:
        """`<output>/<campaign>/`: ledger, journal, preview, certificates, report."""
        return (self.base_dir / self.spec.output / self.campaign).resolve()


def job_zone(spec: JobSpec) -> ZoneInfo:
    """A job's time zone: `timezone:`, else the schedule's, else the machine's."""
    if spec.timezone is not None:
        return ZoneInfo(spec.timezone)
    if spec.schedule is not None:
        return zone(spec.schedule.timezone) or local_zone()
    return local_zone()


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def local_zone() -> ZoneInfo:
    """The machine's zone by its IANA name, for headers such as "sent_at (Europe/Madrid)".

    The C library's own sources, in its order: `$TZ`, then the zone /etc/localtime links to
    (or /etc/timezone names); UTC when none names a zone.
    """
    names = [os.environ.get("TZ", "").lstrip(":")]
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        names.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        names.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in names:
        found = zone(name) if name else None
        if found is not None:
            return found
    return ZoneInfo("UTC")
