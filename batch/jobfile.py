"""The job file: YAML validated into a typed model, errors located as `file:line key.path`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batch.errors import JobFileError


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
    output: str = "output"  # folder relative to the job file


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
    def output_dir(self) -> Path:
        """`<output>/<campaign>/`: ledger, journal, preview, certificates, report."""
        return (self.base_dir / self.spec.output / self.campaign).resolve()


# --- loading -------------------------------------------------------------------------------

_MAX_SIGNERS = 5  # the API accepts at most 5 signers per request
_UNSAFE_CAMPAIGN = re.compile(r"[/\\\x00-\x1f]")


def load_job(path: Path, *, period: str | None = None, now: datetime | None = None) -> Job:
    """Read, validate and resolve a job file; every problem is reported at once, located."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise JobFileError("job file not found", path=shown) from err
    except (OSError, UnicodeDecodeError) as err:
        raise JobFileError(f"cannot read the job file: {err}", path=shown) from err
    root = _compose(text, shown)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise JobFileError("the job file must be a mapping of keys", path=shown, line=1)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        problems = [(tuple(e["loc"]), _pydantic_message(e)) for e in err.errors()]
        raise _located(shown, root, problems) from None
    problems = _channel_problems(spec)
    problems += _template_problems(spec, path)
    if problems:
        raise _located(shown, root, problems)
    now = now or datetime.now(UTC)
    resolved = _resolve_period(spec, now, period, shown, root)
    campaign = _render_campaign(spec, now, resolved, shown, root)
    return Job(spec=spec, path=path, campaign=campaign, period=resolved)


def _compose(text: str, shown: str) -> yaml.Node | None:
    """Parse to YAML nodes (which keep line marks); refuse duplicate keys, which YAML hides."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise JobFileError(f"invalid YAML: {err.problem}", path=shown, line=line) from err
    except yaml.YAMLError as err:
        raise JobFileError(f"invalid YAML: {err}", path=shown) from err
    if root is not None:
        _check_duplicate_keys(root, shown, ())
    return root


def _check_duplicate_keys(node: yaml.Node, shown: str, where: tuple[str | int, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                raise JobFileError(
                    "key appears twice",
                    path=shown,
                    line=key.start_mark.line + 1,
                    key=_dotted((*where, name)),
                )
            seen.add(name)
            _check_duplicate_keys(value, shown, (*where, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, shown, (*where, i))


def _pydantic_message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest node the location reaches (a missing key: its parent's line)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if str(k.value) == part), None)
            if match is None:
                return line
            key, node = match
            # A scalar points at its own line; a nested block starts on the line of its key.
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _located(
    shown: str, root: yaml.Node | None, problems: list[tuple[tuple[str | int, ...], str]]
) -> JobFileError:
    """One error holding every problem, one per line, each as `file:line key.path: message`."""
    placed = sorted(((_line_of(root, loc) or 0, _dotted(loc), msg) for loc, msg in problems))
    lines = [
        f"{shown}:{line} {key}: {msg}" if line else f"{shown} {key}: {msg}"
        for line, key, msg in placed
    ]
    first_line, first_key, first_msg = placed[0]
    if len(lines) == 1:
        return JobFileError(first_msg, path=shown, line=first_line or None, key=first_key)
    err = JobFileError("\n".join(lines))
    err.path, err.line, err.key = shown, first_line or None, first_key
    return err


def _channel_problems(spec: JobSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """What each channel needs beyond the shared model."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    msg = spec.message
    if spec.channel == "email":
        if not msg.subject:
            out.append((("message", "subject"), "field required for channel email"))
        if not msg.html:
            out.append((("message", "html"), "field required for channel email"))
        if msg.text is not None:
            out.append((("message", "text"), "only for channel sms"))
    elif spec.channel == "sms":
        if not msg.text:
            out.append((("message", "text"), "field required for channel sms"))
        out += [(("message", k), "only for channel email") for k in _email_only(msg)]
    else:
        if spec.signer_list is not None:
            if spec.signers:
                out.append((("signer_list",), "give either signers or signer_list, not both"))
            if spec.dataset.key is None:
                out.append((("dataset", "key"), "required with signer_list (a key column)"))
        elif not spec.signers:
            out.append((("signers",), "at least one signer required for channel signature"))
        elif len(spec.signers) > _MAX_SIGNERS:
            out.append((("signers",), f"at most {_MAX_SIGNERS} signers, found {len(spec.signers)}"))
        if spec.document is None:
            out.append((("document",), "field required for channel signature"))
        out += [(("message", k), "only for channel email") for k in _email_only(msg)]
        if msg.text is not None:
            out.append((("message", "text"), "only for channel sms"))
    if spec.channel != "signature":
        if spec.signers:
            out.append((("signers",), "only for channel signature"))
        if spec.signer_list is not None:
            out.append((("signer_list",), "only for channel signature"))
        if spec.document is not None:
            out.append((("document",), "only for channel signature"))
    return out


def _email_only(msg: MessageSpec) -> list[str]:
    keys = ("subject", "html", "reply_to", "reply_to_name")
    found = [k for k in keys if getattr(msg, k) is not None]
    return found + (["attachments"] if msg.attachments else [])


def _template_problems(spec: JobSpec, path: Path) -> list[tuple[tuple[str | int, ...], str]]:
    """Compile every template now so a typo fails before any row is read."""
    from batch.render import make_environments  # render imports this module

    text_env, html_env = make_environments(path.parent)
    out: list[tuple[tuple[str | int, ...], str]] = []
    for loc, source in _inline_templates(spec):
        try:
            text_env.from_string(source)
        except jinja2.TemplateSyntaxError as err:
            out.append((loc, f"template error: {err.message} (template line {err.lineno})"))
    if spec.channel == "email" and spec.message.html:
        try:
            html_env.get_template(spec.message.html)
        except jinja2.TemplateNotFound as err:
            out.append(
                (
                    ("message", "html"),
                    f"template not found: {err.name} (looked in "
                    + ", ".join(str(p) for p in template_dirs(path.parent))
                    + ")",
                )
            )
        except jinja2.TemplateSyntaxError as err:
            place = f"{err.filename or err.name}:{err.lineno}"
            out.append((("message", "html"), f"template error in {place}: {err.message}"))
    return out


def template_dirs(base_dir: Path) -> list[Path]:
    """Where template files are looked up: next to the job file, then the templates/ folders."""
    base = base_dir.resolve()  # a job named as `job.yaml` has parent `.`, whose parent is `.`
    return [base, base / "templates", base.parent / "templates"]


def _inline_templates(spec: JobSpec) -> list[tuple[tuple[str | int, ...], str]]:
    found: list[tuple[tuple[str | int, ...], str | None]] = [
        (("campaign",), spec.campaign),
        (("recipient", "email"), spec.recipient.email),
        (("recipient", "name"), spec.recipient.name),
        (("recipient", "phone"), spec.recipient.phone),
        (("message", "subject"), spec.message.subject),
        (("message", "text"), spec.message.text),
        (("message", "reply_to"), spec.message.reply_to),
        (("message", "reply_to_name"), spec.message.reply_to_name),
    ]
    for i, att in enumerate(spec.message.attachments):
        found += [(("message", "attachments", i, "path"), att.path)]
        found += [(("message", "attachments", i, "name"), att.name)]
    for i, signer in enumerate(spec.signers):
        for field in ("name", "email", "phone"):
            found.append((("signers", i, field), getattr(signer, field)))
    found.append((("signer_list",), spec.signer_list))
    if spec.document is not None:
        found += [(("document", "path"), spec.document.path)]
        found += [(("document", "name"), spec.document.name)]
    return [(loc, src) for loc, src in found if src is not None]


def _resolve_period(
    spec: JobSpec, now: datetime, explicit: str | None, shown: str, root: yaml.Node | None
) -> Period | None:
    if spec.schedule is None:
        # Without a schedule an explicit --period is just a label for the campaign name.
        return Period(start=now, label=explicit) if explicit else None
    from batch.schedule import resolve_period  # written alongside; keeps import cycles out

    try:
        return resolve_period(spec.schedule, now, explicit=explicit)
    except JobFileError:
        raise
    except (ValueError, KeyError) as err:
        raise _located(shown, root, [(("schedule",), str(err))]) from err


def _render_campaign(
    spec: JobSpec, now: datetime, period: Period | None, shown: str, root: yaml.Node | None
) -> str:
    """Render the campaign name and make sure it is one safe folder name."""
    from batch.render import make_environments

    tz = period.start.tzinfo if period is not None else None
    local_now = now.astimezone(tz) if tz is not None else now
    text_env, _ = make_environments(Path("."))
    try:
        name = (
            text_env.from_string(spec.campaign)
            .render(today=local_now.date(), now=local_now, period=period)
            .strip()
        )
    except jinja2.UndefinedError as err:
        hint = " (period needs schedule: or --period)" if period is None else ""
        raise _located(shown, root, [(("campaign",), f"{err.message}{hint}")]) from err
    except Exception as err:  # a filter or method failing on today/now/period
        raise _located(shown, root, [(("campaign",), f"cannot render: {err}")]) from err
    if not name or name in {".", ".."} or name.startswith(".") or _UNSAFE_CAMPAIGN.search(name):
        problem = f"renders to {name!r}, which is not a safe folder name (no /, \\, leading dot)"
        raise _located(shown, root, [(("campaign",), problem)])
    return name


class _Loader(yaml.SafeLoader):
    """SafeLoader: a job file never constructs Python objects."""
