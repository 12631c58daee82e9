"""Rendering: one message per row, validated before anything is sent.

Cell values are data: they are passed to templates as variables and never compiled. HTML
bodies are autoescaped; subjects, SMS texts and addresses are plain text. `scan` checks
every row up front (in parallel for large datasets) and keeps only a compact summary;
`render_keys` re-renders the rows that are about to be sent. Addresses are checked in
batch.addresses; `lmbatch preview` pages are written by batch.preview.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import multiprocessing
import multiprocessing.context
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import polars as pl
from jinja2.runtime import new_context

from batch.addresses import normalize_email, normalize_phone, parse_signers
from batch.errors import DatasetError, RowError
from batch.jobfile import Job, template_dirs

SMS_MAX_CHARS = 300  # the API charges one credit per message up to 300 characters
DOCUMENT_MAX_BYTES = 10 * 1024 * 1024  # the API refuses signature documents over 10 MB
PARALLEL_THRESHOLD = 2_000  # below this, starting processes costs more than it saves
_CHUNK_ROWS = 5_000
_FILE_CACHE_ENTRIES = 256  # signature documents differ per row: bound the memory they hold


@dataclass(frozen=True)
class Message:
    """One recipient's rendered message, ready to send.

    `content` holds the API payload fields every recipient of this exact message shares
    (email: subject, message, reply_to, reply_to_name, attachments; sms: message;
    signature: signers, document, document_name, language). `content_hash` is the SHA-256
    of its canonical JSON (attachment bytes included): equal hashes may share a request.
    """

    key: str
    row: int
    address: str  # e-mail address, E.164 phone, or first signer's e-mail
    name: str
    content: dict[str, Any]
    content_hash: str


class RowProblems(Exception):
    """One row failed to render or validate; `errors` says every reason."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class Scan:
    """Every row checked: the compact summary of the good ones and all the errors."""

    ok: pl.DataFrame  # row, key, address, name, content_hash, subject
    errors: list[RowError]


SCAN_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "key": pl.String(),
    "address": pl.String(),
    "name": pl.String(),
    "content_hash": pl.String(),
    "subject": pl.String(),
}


# --- environment and filters ------------------------------------------------------------


class FilterValueError(ValueError):
    """A filter got a value it cannot format; reported as a row error."""


def money(value: Any, currency: str = "EUR", decimals: int = 2) -> str:
    """Format an amount locale-free: `1234.5|money` → "1,234.50 EUR"."""
    if isinstance(value, bool) or value is None or value == "":
        raise FilterValueError(f"money: not an amount: {value!r}")
    try:
        amount = Decimal(str(value).strip().replace("_", ""))
    except InvalidOperation as err:
        raise FilterValueError(f"money: not an amount: {value!r}") from err
    if not amount.is_finite():
        raise FilterValueError(f"money: not an amount: {value!r}")
    text = f"{amount:,.{int(decimals)}f}"
    return f"{text} {currency}" if currency else text


def format_date(value: Any, fmt: str = "%Y-%m-%d") -> str:
    """Format an ISO date or datetime (string or object) with strftime: `due|date("%d/%m/%Y")`."""
    if isinstance(value, datetime | date):
        return value.strftime(fmt)
    text = str(value).strip() if value is not None else ""
    try:
        parsed: date = (
            datetime.fromisoformat(text)
            if "T" in text or " " in text
            else (date.fromisoformat(text))
        )
    except ValueError as err:
        raise FilterValueError(f"date: not an ISO date: {value!r}") from err
    return parsed.strftime(fmt)


def _finalize(value: Any) -> Any:
    # Empty cells (None in Parquet) print as nothing rather than "None".
    return "" if value is None else value


def make_environments(base_dir: Path) -> tuple[jinja2.Environment, jinja2.Environment]:
    """The (plain text, autoescaped HTML) Jinja environments for a job folder."""
    loader = jinja2.FileSystemLoader([str(p) for p in template_dirs(base_dir)])
    envs = []
    for escape in (False, True):
        env = jinja2.Environment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=escape,
            finalize=_finalize,
            keep_trailing_newline=True,
        )
        env.filters["money"] = money
        env.filters["date"] = format_date
        envs.append(env)
    return envs[0], envs[1]


# --- hashing ------------------------------------------------------------------------------


def content_hash(content: Mapping[str, Any], address: str | None = None) -> str:
    """SHA-256 of the canonical JSON of `content` (and `address`, for one-recipient channels).

    The body and base64 blobs (attachments, documents) enter as the SHA-256 of their bytes, so
    the hash still changes with every byte but large files are digested once, not per row.
    """
    return _hash_of(_hashable(content), address)


def _hash_of(hashable: Mapping[str, Any], address: str | None) -> str:
    payload = {"content": hashable, "address": address} if address is not None else hashable
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _hashable(content: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(content)
    if isinstance(out.get("message"), str):
        out["message"] = _text_digest(out["message"])
    if "attachments" in out:
        out["attachments"] = [
            {**a, "content": _blob_digest(a["content"])} for a in out["attachments"]
        ]
    if "document" in out:
        out["document"] = _blob_digest(out["document"])
    return out


def _text_digest(text: str) -> str:
    # JSON-escaping a 2 KB body costs several times more than digesting it.
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=_FILE_CACHE_ENTRIES)
def _blob_digest(b64: str) -> str:
    return "sha256:" + hashlib.sha256(base64.b64decode(b64)).hexdigest()


class _Files:
    """Reads files for attachments and documents once per path, within the job's folder."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir.resolve()
        self._cache: OrderedDict[Path, tuple[bytes, str, str]] = OrderedDict()

    def resolve(self, rendered: str) -> Path:
        """The real path of a rendered file name; ValueError if missing or outside the folder."""
        if not rendered.strip():
            raise ValueError("file path is empty")
        path = (self.base_dir / rendered.strip()).resolve()
        # resolve() follows symlinks and `..`, so this also catches links pointing outside.
        if not path.is_relative_to(self.base_dir):
            raise ValueError(f"{rendered!r} is outside the job's folder {self.base_dir}")
        if not path.is_file():
            raise ValueError(f"file not found: {rendered!r}")
        return path

    def read(self, path: Path) -> tuple[bytes, str, str]:
        """(first bytes, base64, digest) of a file, cached by path: rows share attachments."""
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            return hit
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        entry = (data[:8], base64.b64encode(data).decode("ascii"), digest)
        self._cache[path] = entry
        if len(self._cache) > _FILE_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return entry


# --- the renderer -------------------------------------------------------------------------

_Summary = tuple[int, str, str, str, str, str]  # row, key, address, name, content_hash, subject
_Built = tuple[
    str, str, dict[str, Any], dict[str, Any], str
]  # address, name, content, hashable, subject
_T = TypeVar("_T")
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")
_PLAIN_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_RESERVED = frozenset({"self", "loop", "super", "caller", "varargs", "kwargs"})
_MISSING = object()


def _undefined(err: jinja2.UndefinedError) -> str:
    found = _UNDEFINED.match(err.message or "")
    if found:
        return f"variable {found.group(1)!r} is missing from the row (no such column)"
    return f"missing value: {err.message}"


class _Compiled:
    """A template rendered straight from a row's variables (the row merged over the globals).

    `Template.render` copies the row and merges it with the template's globals through a
    ChainMap on every call, which costs more than rendering a 2 KB body: the row is merged
    once per row instead (`_Row.variables`) and shared by every field's template. A plain
    text `{{ column }}` (the usual recipient e-mail and name) skips Jinja altogether: it
    prints the value exactly as Jinja would, and raises the same UndefinedError.
    """

    def __init__(self, template: jinja2.Template, source: str | None = None) -> None:
        self._env = template.environment
        self._name = template.name
        self._blocks = template.blocks
        self._root = template.root_render_func
        plain = _PLAIN_VARIABLE.fullmatch(source) if source is not None else None
        self._plain = plain.group(1) if plain and plain.group(1) not in _RESERVED else None

    def __call__(self, variables: dict[str, Any]) -> str:
        if self._plain is not None:
            value = variables.get(self._plain, _MISSING)
            if value is _MISSING:
                raise jinja2.UndefinedError(f"{self._plain!r} is undefined")
            return str(_finalize(value))
        context = new_context(self._env, self._name, self._blocks, variables, shared=True)
        return str(self._env.concat(self._root(context)))


class _Row:
    """Collects one row's errors while its fields are rendered and checked."""

    def __init__(self, row: Mapping[str, Any], globals_: Mapping[str, Any]) -> None:
        self.data = row
        self.variables = {**globals_, **row}  # what every field's template sees
        self.number = int(row.get("__row__") or 0)
        self.key = str(row.get("__key__") or "")
        self.errors: list[RowError] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(RowError(self.number, self.key, field, message))

    def render(self, field: str, template: _Compiled | None) -> str | None:
        """The rendered field, or None (and an error) when the row's data cannot fill it."""
        if template is None:
            return None
        try:
            return template(self.variables)
        except jinja2.UndefinedError as err:
            self.fail(field, _undefined(err))
        except FilterValueError as err:
            self.fail(field, str(err))
        except Exception as err:  # a template's own logic failing on this row's data
            self.fail(field, f"cannot render: {err}")
        return None

    def check(self, field: str, fn: Callable[[], _T]) -> _T | None:
        """fn's result, or None (and an error) when it raises ValueError or OSError."""
        try:
            return fn()
        except (ValueError, OSError) as err:
            self.fail(field, str(err))
            return None


class Renderer:
    """Renders and validates one row at a time; templates are compiled once, here."""

    def __init__(self, job: Job) -> None:
        self.job = job
        spec = job.spec
        self.channel = spec.channel
        self.region = spec.recipient.default_region
        self._files = _Files(job.base_dir)
        text_env, html_env = make_environments(job.base_dir)
        for env in (text_env, html_env):
            # Every message may name its campaign and period (rent-2026-11); row columns win.
            env.globals.update(campaign=job.campaign, period=job.period)

        # Both environments hold the same globals; a row's columns override them.
        self._globals = dict(text_env.globals)

        def inline(source: str | None) -> _Compiled | None:
            if source is None:
                return None
            return _Compiled(text_env.from_string(source), source)

        msg = spec.message
        self._name = inline(spec.recipient.name)
        default_address = "{{ phone }}" if self.channel == "sms" else "{{ email }}"
        address = spec.recipient.phone if self.channel == "sms" else spec.recipient.email
        self._address = inline(address or default_address)
        self._subject = inline(msg.subject)
        self._html = _Compiled(html_env.get_template(msg.html)) if msg.html else None
        self._text = inline(msg.text)
        self._reply_to = inline(msg.reply_to)
        self._reply_to_name = inline(msg.reply_to_name)
        self._attachments = [(inline(a.path), inline(a.name)) for a in msg.attachments]
        self._signers = [(inline(s.name), inline(s.email), inline(s.phone)) for s in spec.signers]
        self._signer_list = inline(spec.signer_list)
        self._doc_path = inline(spec.document.path) if spec.document else None
        self._doc_name = inline(spec.document.name) if spec.document else None

    def render(self, row: Mapping[str, Any]) -> Message:
        """The row's message; RowProblems listing every reason if it cannot be sent."""
        message, _, errors = self._render(row)
        if message is None:
            raise RowProblems(errors)
        return message

    def summarize(self, row: Mapping[str, Any]) -> tuple[_Summary | None, list[RowError]]:
        """(row, key, address, name, content_hash, subject), or None and the row's errors."""
        m, subject, errors = self._render(row)
        if m is None:
            return None, errors
        return (m.row, m.key, m.address, m.name, m.content_hash, subject), []

    def _render(self, data: Mapping[str, Any]) -> tuple[Message | None, str, list[RowError]]:
        row = _Row(data, self._globals)
        if self.channel == "email":
            built = self._email(row)
        elif self.channel == "sms":
            built = self._sms(row)
        else:
            built = self._signature(row)
        if row.errors or built is None:
            return None, "", row.errors
        address, name, content, hashable, subject = built
        # Distinct SMS or signature requests must never look identical: hash the address too.
        digest = _hash_of(hashable, address if self.channel != "email" else None)
        message = Message(row.key or address, row.number, address, name, content, digest)
        return message, subject, []

    def _recipient_name(self, row: _Row) -> str:
        if self._name is not None:
            return (row.render("recipient.name", self._name) or "").strip()
        value = row.data.get("name")  # the obvious column, when the job names none
        return "" if value is None else str(value).strip()

    def _email(self, row: _Row) -> _Built | None:
        raw = row.render("recipient.email", self._address)
        address = (
            None if raw is None else row.check("recipient.email", lambda: normalize_email(raw))
        )
        name = self._recipient_name(row)
        subject = row.render("message.subject", self._subject)
        if subject is not None:
            # A subject is one header line: newlines coming from data would break it.
            subject = " ".join(subject.split()) if "\n" in subject else subject.strip()
            if not subject:
                row.fail("message.subject", "subject is empty")
        body = row.render("message.html", self._html)
        content: dict[str, Any] = {"subject": subject, "message": body}
        reply = (row.render("message.reply_to", self._reply_to) or "").strip()
        if reply:
            content["reply_to"] = row.check("message.reply_to", lambda: normalize_email(reply))
        reply_name = (row.render("message.reply_to_name", self._reply_to_name) or "").strip()
        if reply_name:
            content["reply_to_name"] = reply_name
        hashable = dict(content)
        if body is not None:
            hashable["message"] = _text_digest(body)
        if self._attachments:
            files: list[dict[str, str]] = []
            digests: list[dict[str, str]] = []
            for i, (path_t, name_t) in enumerate(self._attachments):
                found = self._attachment(row, f"message.attachments[{i}]", path_t, name_t)
                if found is not None:
                    files.append(found[0])
                    digests.append(found[1])
            content["attachments"] = files
            hashable["attachments"] = digests
        if address is None or not subject or body is None or row.errors:
            return None
        return address, name, content, hashable, subject

    def _attachment(
        self,
        row: _Row,
        where: str,
        path_t: _Compiled | None,
        name_t: _Compiled | None,
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        rendered = row.render(f"{where}.path", path_t)
        shown = row.render(f"{where}.name", name_t)
        if rendered is None:
            return None
        path = row.check(f"{where}.path", lambda: self._files.resolve(rendered))
        entry = None if path is None else row.check(f"{where}.path", lambda: self._files.read(path))
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

    def _sms(self, row: _Row) -> _Built | None:
        raw = row.render("recipient.phone", self._address)
        region = self.region
        phone = (
            None
            if raw is None
            else row.check("recipient.phone", lambda: normalize_phone(raw, region))
        )
        name = self._recipient_name(row)
        text = row.render("message.text", self._text)
        if text is not None:
            text = text.strip()
            if not text:
                row.fail("message.text", "text is empty")
            elif len(text) > SMS_MAX_CHARS:
                row.fail(
                    "message.text", f"text is {len(text)} characters; the limit is {SMS_MAX_CHARS}"
                )
        if phone is None or text is None or row.errors:
            return None
        content: dict[str, Any] = {"message": text}
        return phone, name, content, {"message": _text_digest(text)}, ""

    def _signature(self, row: _Row) -> _Built | None:
        signers: list[dict[str, str]] = []
        for where, name, raw_email, raw_phone in self._raw_signers(row):
            signer = {"name": name}
            if raw_email is not None:
                email = row.check(f"{where}.email", partial(normalize_email, raw_email))
                signer["email"] = email or ""
            if raw_phone:  # the phone is optional: an empty cell means none
                phone = row.check(
                    f"{where}.phone", partial(normalize_phone, raw_phone, self.region)
                )
                signer["phone"] = phone or ""
            signers.append(signer)
        doc_path = row.render("document.path", self._doc_path)
        doc_name = (row.render("document.name", self._doc_name) or "").strip()
        document = None if doc_path is None else self._document(row, doc_path)
        if document is None or row.errors or not signers:
            return None
        path, b64, digest = document
        language = self.job.spec.language
        name = doc_name or path.name
        content = {"signers": signers, "document": b64, "document_name": name, "language": language}
        hashable = {**content, "document": digest}
        return signers[0]["email"], signers[0]["name"], content, hashable, ""

    def _raw_signers(self, row: _Row) -> list[tuple[str, str, str | None, str]]:
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

    def _document(self, row: _Row, rendered: str) -> tuple[Path, str, str] | None:
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


# --- whole datasets -----------------------------------------------------------------------

_worker_renderer: Renderer | None = None  # one per worker process, built by _init_worker


def _init_worker(job: Job) -> None:
    global _worker_renderer
    _worker_renderer = Renderer(job)


def _scan_columns(
    columns: dict[str, list[Any]], renderer: Renderer | None = None
) -> tuple[dict[str, list[Any]], list[RowError]]:
    """Summarize a chunk given as columns (cheap to pickle); returns compact columns."""
    renderer = renderer or _worker_renderer
    assert renderer is not None
    names = list(columns)
    out: dict[str, list[Any]] = {name: [] for name in SCAN_SCHEMA}
    appends = [out[name].append for name in SCAN_SCHEMA]
    errors: list[RowError] = []
    for values in zip(*columns.values(), strict=True):
        summary, problems = renderer.summarize(dict(zip(names, values, strict=True)))
        if summary is None:
            errors.extend(problems)
            continue
        for append, value in zip(appends, summary, strict=True):
            append(value)
    return out, errors


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and they never touch polars (rows arrive as plain
    # lists); elsewhere spawn is the only safe choice.
    if sys.platform == "linux" and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def scan(job: Job, frame: pl.DataFrame, *, workers: int | None = None) -> Scan:
    """Render and validate every row, keeping a compact summary; parallel for large frames."""
    frame = with_meta(frame)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    parts: list[pl.DataFrame] = []
    errors: list[RowError] = []
    if workers <= 1 or frame.height < PARALLEL_THRESHOLD:
        renderer = Renderer(job)
        for chunk in frame.iter_slices(_CHUNK_ROWS):
            columns, problems = _scan_columns(chunk.to_dict(as_series=False), renderer)
            parts.append(pl.DataFrame(columns, schema=SCAN_SCHEMA))
            errors.extend(problems)
    else:
        parts, errors = _scan_parallel(job, frame, workers)
    ok = pl.concat(parts) if parts else pl.DataFrame(schema=SCAN_SCHEMA)
    errors.extend(_duplicate_errors(ok))
    errors.sort(key=lambda e: e.row)
    return Scan(ok=ok, errors=errors)


def _scan_parallel(
    job: Job, frame: pl.DataFrame, workers: int
) -> tuple[list[pl.DataFrame], list[RowError]]:
    # At most two chunks in flight per worker, so a 1M-row dataset never sits in memory
    # as Python objects all at once; results are turned back into columns as they arrive.
    size = min(_CHUNK_ROWS, -(-frame.height // (workers * 4)))
    slices = frame.iter_slices(size)
    results: dict[int, tuple[pl.DataFrame, list[RowError]]] = {}
    pending: dict[Any, int] = {}

    def collect(future: Any, index: int) -> None:
        # As Python lists 1M summaries take ~450 MB; as a frame, a third of that.
        columns, problems = future.result()
        results[index] = (pl.DataFrame(columns, schema=SCAN_SCHEMA), problems)

    with ProcessPoolExecutor(
        workers, mp_context=_pool_context(), initializer=_init_worker, initargs=(job,)
    ) as pool:
        for index, chunk in enumerate(slices):
            while len(pending) >= 2 * workers:
                done = next(iter(_first_completed(pending)))
                collect(done, pending.pop(done))
            pending[pool.submit(_scan_columns, chunk.to_dict(as_series=False))] = index
        for future, i in pending.items():
            collect(future, i)
    parts = [results[i][0] for i in sorted(results)]
    errors = [e for i in sorted(results) for e in results[i][1]]
    return parts, errors


def _first_completed(pending: dict[Any, int]) -> set[Any]:
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return done


def _duplicate_errors(ok: pl.DataFrame) -> list[RowError]:
    """Keys must be unique: name every row sharing one (read_dataset catches most earlier)."""
    dupes = ok.filter(pl.col("key").is_duplicated())
    errors = []
    for key, rows in dupes.group_by("key", maintain_order=True).agg("row").iter_rows():
        for row in rows:
            others = ", ".join(str(r) for r in rows if r != row)
            errors.append(RowError(row, key, "key", f"duplicate key, also on row(s) {others}"))
    return errors


def with_meta(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with `__row__` and `__key__`, adding 1-based positions and empty keys if absent."""
    if "__row__" not in frame.columns:
        frame = frame.with_row_index("__row__", offset=1).with_columns(
            pl.col("__row__").cast(pl.Int64)
        )
    if "__key__" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("__key__"))
    return frame


def render_keys(job: Job, frame: pl.DataFrame, keys: Iterable[str]) -> Iterator[Message]:
    """Re-render the rows with these keys, in the order given (RowProblems if one fails now)."""
    wanted = list(keys)
    frame = with_meta(frame)
    found = frame.filter(pl.col("__key__").is_in(wanted))
    by_key = {str(row["__key__"]): row for row in found.iter_rows(named=True)}
    missing = [k for k in wanted if k not in by_key]
    if missing:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        raise DatasetError(
            f"{len(missing)} key(s) no longer in the dataset: {shown}",
            hint="the dataset changed since the campaign began: restore it or start a new one",
        )
    renderer = Renderer(job)
    for key in wanted:
        yield renderer.render(by_key[key])
