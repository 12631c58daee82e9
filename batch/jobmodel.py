"""The job model: what a job file may say (pydantic specs) and a loaded `Job`.

It imports nothing from batch, so every stage (templating, rendering,
scheduling, channels) can name the model without importing how a job file is read
(batch.jobfile).
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
from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    path: str  # template over the row, relative to the job file, inside its folder
    name: str | None = None  # template; default: the file's name


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
    path: str  # template over the row: a PDF ≤ 10 MB inside the job's folder
    name: str | None = None  # template; default: the file's name


class ApiSpec(StrictModel):
    base_url: str = "https://legallymail.com"
    token_env: str = "LEGALLYMAIL_TOKEN"
    timeout_seconds: float = Field(default=30.0, gt=0)


class LimitsSpec(StrictModel):
    requests_per_window: int = Field(default=10, ge=1)
    window_seconds: float = Field(default=60.0, gt=0)
    max_recipients_per_request: int = Field(default=10, ge=1)


class RetrySpec(StrictModel):
    attempts: int = Field(default=5, ge=1)
    max_backoff_seconds: float = Field(default=60.0, gt=0)


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
