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
from dataclasses import dataclass
from functools import partial
from typing import Any

import polars as pl

from batch.attachments import JobFiles, generated_templates
from batch.channels import channel_for
from batch.compiled import RowContext, Templates
from batch.errors import DatasetError, RowError
from batch.jobmodel import Job
from batch.message import Message, hash_of
from batch.parallel import CHUNK_ROWS, ChunkFn, Columns, scan_parallel
from batch.templating import make_environments

__all__ = [
    "PARALLEL_THRESHOLD",
    "SCAN_SCHEMA",
    "Renderer",
    "RowProblems",
    "Scan",
    "render_keys",
    "scan",
    "with_meta",
]

PARALLEL_THRESHOLD = 2_000  # below this, starting processes costs more than it saves
DOCUMENT_THRESHOLD = 64  # the same, for a job generating a PDF per row


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

_Summary = tuple[int, str, str, str, str, str]  # row, key, address, name, content_hash, subject


class Renderer:
    """Renders and validates one row at a time; templates are compiled once, here."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.channel = channel_for(job.spec)
        text_env, html_env = make_environments(job.base_dir)
        for env in (text_env, html_env):
            # Every message may name its campaign and period (rent-2026-11); row columns win.
            env.globals.update(campaign=job.campaign, period=job.period)
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
        built = self._builder.build(row)
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


def scan(job: Job, frame: pl.DataFrame, *, workers: int | None = None) -> Scan:
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
    errors.extend(_duplicate_errors(ok))
    errors.sort(key=lambda e: e.row)
    return Scan(ok=ok, errors=errors)


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
