"""Rendering: one message per row, validated before anything is sent.

Cell values are data: they are passed to templates as variables and never compiled. HTML
bodies are autoescaped; subjects, SMS texts and addresses are plain text. What a row's
message holds is the channel's business (batch.channels); the environments are
batch.templating's, the Jinja fast path batch.compiled's, the content hash
batch.message's. `scan` checks every row up front (in parallel for large datasets, through
batch.parallel) and keeps only a compact summary; `render_keys` re-renders the rows that
are about to be sent. `lmbatch preview` pages are written by batch.preview.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import polars as pl

from batch.attachments import JobFiles, generated_templates
from batch.channels import channel_for
from batch.compiled import RowContext, Templates
from batch.errors import DatasetError, RowError, RowErrors
from batch.jobmodel import Job
from batch.message import Message, hash_of
from batch.parallel import CHUNK_ROWS, ChunkFn, Columns, scan_parallel
from batch.templating import (
    explain,
    format_date,
    job_environments,
    money,
    render_limits,
    rows_timed,
)

__all__ = [
    "PARALLEL_THRESHOLD",
    "SCAN_SCHEMA",
    "Renderer",
    "RowProblems",
    "Scan",
    "format_date",  # the filters, where document templates have always imported them
    "money",
    "render_keys",
    "scan",
    "with_meta",
]

PARALLEL_THRESHOLD = 2_000  # below this, starting processes costs more than it saves
DOCUMENT_THRESHOLD = 64  # the same, for a job generating a PDF per row


class RowProblems(RowErrors):
    """One row failed to render or validate now (`errors` says every reason): part of the
    error tree, so a row re-rendered at send time (e.g. after it was settled in doubt) and
    found invalid is reported, located, with exit 2, never as a traceback."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(errors)
        self.hint = "fix the row in the dataset, then run again"


@dataclass
class Scan:
    """Every row checked: the compact summary of the good ones and all the errors."""

    ok: pl.DataFrame  # row, key, address, name, content_hash, subject
    errors: list[RowError]
    notes: list[str] = field(default_factory=list)  # what the dataset reader decided

    def problem(self, source: str = "") -> RowErrors:
        """The error to raise for these row errors; `--skip-invalid` is suggested only when
        some row would still be sent."""
        return RowErrors(self.errors, source=source, valid_rows=self.ok.height)


SCAN_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),
    "key": pl.String(),
    "address": pl.String(),
    "name": pl.String(),
    "content_hash": pl.String(),
    "subject": pl.String(),
}

_Summary = tuple[int, str, str, str, str, str]  # row, key, address, name, content_hash, subject


class Renderer:
    """Renders and validates one row at a time; templates are compiled once, here."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channel = channel_for(job.spec)
        # Every message may name its campaign and period (rent-2026-11); row columns win.
        text_env, html_env = job_environments(job)
        # Both environments hold the same globals; a row's columns override them.
        self._globals = dict(text_env.globals)
        templates = Templates(text_env, html_env)
        # Generated documents render through the bodies' HTML environment, stored per campaign.
        files = JobFiles(job.base_dir, html_env=html_env, output_dir=job.output_dir)
        self._builder = self.channel.builder(job.spec, templates, files)

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
        row = RowContext(data, self._globals)
        try:
            with render_limits():  # a runaway template fails this row, not the run
                built = self._builder.build(row)
        except Exception as err:  # the time bound can strike between two fields
            row.fail("", explain(err))
            built = None
        if row.errors or built is None:
            return None, "", row.errors
        address, name, content, hashable, subject = built
        # Distinct SMS or signature requests must never look identical: hash the address too.
        digest = hash_of(hashable, address if self.channel.hashes_address else None)
        message = Message(row.key or address, row.number, address, name, content, digest)
        return message, subject, []


# --- whole datasets -----------------------------------------------------------------------


def _scan_columns(columns: Columns, renderer: Renderer) -> tuple[Columns, list[RowError]]:
    """Summarize a chunk given as columns (cheap to pickle); returns compact columns."""
    names = list(columns)
    out: Columns = {name: [] for name in SCAN_SCHEMA}
    appends = [out[name].append for name in SCAN_SCHEMA]
    errors: list[RowError] = []
    with rows_timed():  # each row keeps its own time limit, without a system call per row
        for values in zip(*columns.values(), strict=True):
            summary, problems = renderer.summarize(dict(zip(names, values, strict=True)))
            if summary is None:
                errors.extend(problems)
                continue
            for append, value in zip(appends, summary, strict=True):
                append(value)
    return out, errors


def _chunk_worker(job: Job) -> ChunkFn:
    """What one worker process runs on each chunk: its own Renderer over the job."""
    return partial(_scan_columns, renderer=Renderer(job))


def scan(
    job: Job, frame: pl.DataFrame, *, workers: int | None = None, notes: list[str] | None = None
) -> Scan:
    """Render and validate every row, keeping a compact summary; parallel for large frames."""
    frame = with_meta(frame)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    parts: list[pl.DataFrame] = []
    errors: list[RowError] = []
    # A generated document costs ~100x a body: processes pay for themselves much sooner.
    threshold = DOCUMENT_THRESHOLD if generated_templates(job.spec) else PARALLEL_THRESHOLD
    if workers <= 1 or frame.height < threshold:
        renderer = Renderer(job)
        for chunk in frame.iter_slices(CHUNK_ROWS):
            columns, problems = _scan_columns(chunk.to_dict(as_series=False), renderer)
            parts.append(pl.DataFrame(columns, schema=SCAN_SCHEMA))
            errors.extend(problems)
    else:
        parts, errors = scan_parallel(frame, workers, SCAN_SCHEMA, _chunk_worker, job)
    ok = pl.concat(parts) if parts else pl.DataFrame(schema=SCAN_SCHEMA)
    ok, duplicates = _without_duplicates(ok, job)
    errors.extend(duplicates)
    errors.sort(key=lambda e: e.row)
    return Scan(ok=ok, errors=errors, notes=notes or [])


def _without_duplicates(ok: pl.DataFrame, job: Job) -> tuple[pl.DataFrame, list[RowError]]:
    """Every row sharing a key, or by default a recipient, is an error and is not sent: which
    of them was meant cannot be told, and one person must not get two certified messages.

    Without `dataset.key` the identity is the normalised address (`612 345 678`,
    `+34 612 345 678` and `0034612345678` are one phone; `user@münchen.de` and
    `user@xn--mnchen-3ya.de` one mailbox), also for rows whose ledger key predates it.
    """
    if job.spec.dataset.key is None:
        identity = channel_for(job.spec).keys_of(ok["address"])
        what = "recipient"
    else:
        identity = ok["key"]
        what = "key"
    shared = identity.is_duplicated()
    if not shared.any():
        return ok, []
    dupes = ok.with_columns(identity.alias("__identity__")).filter(shared)
    errors = []
    groups = dupes.group_by("__identity__", maintain_order=True).agg("row", "key")
    for identity_value, rows, keys in groups.iter_rows():
        shared_by = f"{what} {identity_value}" if what == "recipient" else what
        for row, key in zip(rows, keys, strict=True):
            others = ", ".join(str(r) for r in rows if r != row)
            message = f"duplicate {shared_by}, also on row(s) {others}"
            errors.append(RowError(row, key, "key", message))
    return ok.filter(~shared), errors


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
