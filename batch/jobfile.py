"""The job file: YAML validated into the job model, errors located as `file:line key.path`.

The model itself (the specs, `Job`, `Period`) lives in batch.jobmodel; this module reads,
checks and resolves a file into one. What each channel requires is the channel's own
check (`Channel.job_problems`).
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import ValidationError

from batch.channels import channel_for
from batch.errors import JobFileError
from batch.jobmodel import (
    ApiSpec,
    AttachmentSpec,
    DatasetSpec,
    DocumentSpec,
    Job,
    JobSpec,
    LimitsSpec,
    MessageSpec,
    Period,
    RecipientSpec,
    RetrySpec,
    ScheduleSpec,
    SendWindowSpec,
    SignerSpec,
)
from batch.schedule import resolve_period
from batch.templating import explain, spec_environments, template_dirs

# The model's names stay importable from here, where callers have always found them.
__all__ = [
    "ApiSpec",
    "AttachmentSpec",
    "DatasetSpec",
    "DocumentSpec",
    "Job",
    "JobSpec",
    "LimitsSpec",
    "MessageSpec",
    "Period",
    "RecipientSpec",
    "RetrySpec",
    "ScheduleSpec",
    "SendWindowSpec",
    "SignerSpec",
    "load_job",
]


# --- loading -------------------------------------------------------------------------------

_UNSAFE_CAMPAIGN = re.compile(r"[/\\\x00-\x1f]")


# A job file is a page of YAML; anything this big is a mistake (or /dev/zero).
MAX_JOB_FILE_BYTES = 1024 * 1024


def load_job(path: Path, *, period: str | None = None, now: datetime | None = None) -> Job:
    """Read, validate and resolve a job file; every problem is reported at once, located."""
    shown = str(path)
    text = _read_text(path, shown)
    root = _compose(text, shown)
    data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    if not isinstance(data, dict):
        raise JobFileError("the job file must be a mapping of keys", path=shown, line=1)
    problems: list[tuple[tuple[str | int, ...], str]] = []
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        problems = [(tuple(e["loc"]), _pydantic_message(e)) for e in err.errors()]
        raise _located(shown, root, problems) from None
    problems = list(channel_for(spec).job_problems(spec))
    problems += _template_problems(spec, path)
    if problems:
        raise _located(shown, root, problems)
    now = now or datetime.now(UTC)
    resolved = _resolve_period(spec, now, period, shown, root)
    campaign = _render_campaign(spec, now, resolved, shown, root)
    return Job(spec=spec, path=path, campaign=campaign, period=resolved)


def _read_text(path: Path, shown: str) -> str:
    """The file's text, if it is a regular file of sane size.

    Opened non-blocking and checked by `fstat` before a byte is read: a FIFO would block the
    open (or the read) forever, and /dev/zero would grow memory without bound.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise JobFileError("job file not found", path=shown) from err
    except OSError as err:
        raise JobFileError(f"cannot read the job file: {err.strerror or err}", path=shown) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise JobFileError(f"the job file must be a regular file; this is {kind}", path=shown)
        if info.st_size > MAX_JOB_FILE_BYTES:
            raise JobFileError(
                f"the job file is {info.st_size:,} bytes; a job file holds at most "
                f"{MAX_JOB_FILE_BYTES:,}",
                path=shown,
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as err:
        raise JobFileError(f"cannot read the job file: {err.strerror or err}", path=shown) from err
    finally:
        os.close(fd)
    if len(raw) > MAX_JOB_FILE_BYTES:  # grew after the check
        raise JobFileError(f"the job file holds more than {MAX_JOB_FILE_BYTES:,} bytes", path=shown)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JobFileError(f"cannot read the job file: {err}", path=shown) from err


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
        _check_duplicate_keys(root, shown)
    return root


def _check_duplicate_keys(root: yaml.Node, shown: str) -> int:
    """Refuse a mapping with a key twice; returns how many nodes it visited.

    Each node is visited once, even if a loader let aliases through (a node reachable along
    many paths, as in an alias bomb, would otherwise be walked exponentially often).
    """
    visited: set[int] = set()
    todo: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    while todo:
        node, where = todo.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
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
                todo.append((value, (*where, name)))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, (*where, i)) for i, item in enumerate(node.value))
    return len(visited)


def _pydantic_message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = str(error["msg"])
    if kind == "value_error":  # our own validators' messages stand as they are
        msg = msg.removeprefix("Value error, ")
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


def _template_problems(spec: JobSpec, path: Path) -> list[tuple[tuple[str | int, ...], str]]:
    """Compile every template now so a typo fails before any row is read."""
    text_env, html_env = spec_environments(spec, path.parent)
    out: list[tuple[tuple[str | int, ...], str]] = []
    for loc, source in _inline_templates(spec):
        try:
            text_env.from_string(source)
        except jinja2.TemplateSyntaxError as err:
            out.append((loc, f"template error: {err.message} (template line {err.lineno})"))
    for loc, name in channel_for(spec).template_files(spec):
        try:
            html_env.get_template(name)
        except jinja2.TemplateNotFound as err:
            out.append(
                (
                    loc,
                    f"template not found: {err.name} (looked in "
                    + ", ".join(str(p) for p in template_dirs(path.parent))
                    + ")",
                )
            )
        except jinja2.TemplateSyntaxError as err:
            place = f"{err.filename or err.name}:{err.lineno}"
            out.append((loc, f"template error in {place}: {err.message}"))
    return out


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
    tz = period.start.tzinfo if period is not None else None
    local_now = now.astimezone(tz) if tz is not None else now
    text_env, _ = spec_environments(spec, Path("."))
    try:
        name = (
            text_env.from_string(spec.campaign)
            .render(today=local_now.date(), now=local_now, period=period)
            .strip()
        )
    except jinja2.UndefinedError as err:
        hint = " (period needs schedule: or --period)" if period is None else ""
        raise _located(shown, root, [(("campaign",), f"{err.message}{hint}")]) from err
    except Exception as err:  # a filter or method failing on today/now/period, the sandbox
        raise _located(shown, root, [(("campaign",), explain(err))]) from err
    if not name or name in {".", ".."} or name.startswith(".") or _UNSAFE_CAMPAIGN.search(name):
        problem = f"renders to {name!r}, which is not a safe folder name (no /, \\, leading dot)"
        raise _located(shown, root, [(("campaign",), problem)])
    return name


class _Loader(yaml.SafeLoader):
    """SafeLoader: a job file never constructs Python objects, and holds no aliases.

    An alias (`*name`) lets 500 bytes of YAML stand for a structure of billions of nodes (the
    "billion laughs"); a job file has no need of them, so they are refused where they appear.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{getattr(event, 'anchor', '')}) are not allowed in a job file; "
                "write the value out in full",
                event.start_mark,
            )
        return super().compose_node(parent, index)
