"""The recipient dataset: CSV, Excel, ODS or Parquet read into polars, filtered, keyed and numbered.

Every frame `read_dataset` returns has two extra columns: `__row__` (Int64, where the record is
in the file: the CSV line it starts on, the sheet row, or the 1-based Parquet position) and
`__key__` (String, the row's identity in the ledger). CSV, Excel and ODS cells are text as the
file or the sheet shows them, so "007" stays "007", `TRUE` stays `TRUE`, and empty cells are "".

Numbers and dates keep the text the person wrote (`1.234,56`, `02/11/2026`): the notice shows
what the spreadsheet shows. The dataset's conventions (`decimal`, `date_format`) are used where
a value is computed with: in `where:` (batch.where), numeric-looking cells are compared as
canonical numbers (`1234.56`) and dates as ISO dates (`2026-11-02`), see `values.canonical`;
the `money`, `number` and `date` filters parse cells with `batch.formats`.

The default key is the recipient's identity: the address template rendered in the renderer's
own environment (same filters, `campaign`, `period`), normalised by the channel (E.164 phones,
e-mail domains in lower-case ASCII) and keyed (`channel.key_of`). A row whose address does not
normalise gets an empty key; the renderer reports why. A ledger written before keys were
normalised keyed the address as written (`channel.keys_of`); both rules agree whenever the
address was written in its normal form, and where they differ a campaign under way keeps the
key its ledger already holds, so it resumes rather than sending again.

Every structural problem (broken records, duplicate or empty keys) is reported together with
the row errors of the records that could be read, in one `DatasetProblems`.

Modules: `csv` (CSV and TSV; `records` is its exact scanner, `decode` its encodings), `excel`
(xlsx and ODS read from their XML, legacy xls/xlsb via calamine), `values` (number and date
conventions), `problems` (structural problems, reported all at once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batch.channels import channel_for
from batch.dataset.csv import read_csv
from batch.dataset.excel import read_excel
from batch.dataset.problems import DatasetProblems, Problem
from batch.dataset.values import canonical
from batch.errors import BatchError, DatasetError, JobFileError
from batch.jobmodel import Job
from batch.ledger import read_ledger
from batch.render import scan
from batch.templating import job_environments, render_limits
from batch.where import apply_where

__all__ = [
    "Dataset",
    "DatasetProblems",
    "Problem",
    "load_dataset",
    "read_dataset",
]

_CSV = {".csv", ".tsv", ".txt"}
_EXCEL = {".xlsx", ".xlsm", ".xlsb", ".xls", ".ods"}
_PARQUET = {".parquet", ".pq"}
_SHOWN = 10  # rows named in one error message before "…"
_PLAIN_VARIABLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


@dataclass
class Dataset:
    """The rows to send and what the reader decided that the user should be told."""

    frame: pl.DataFrame
    notes: list[str] = field(default_factory=list)  # e.g. "delimiter: auto picked ';'"


def _where_note(where: str, shown: str, read: int, kept: int) -> str:
    """What `where` did: a filter that keeps nothing is said as such (a typo, or a month with
    nobody due: the operator tells which), not left to show as "0 rows valid"."""
    if kept:
        return f"where: kept {kept} of {read} row(s) of {shown}"
    return f"where: no row of the {read} in {shown} matches {where}; nothing to send"


def read_dataset(job: Job) -> pl.DataFrame:
    """Read the job's dataset, apply `where`, add `__row__` and `__key__`; keys are unique."""
    return load_dataset(job).frame


def load_dataset(job: Job) -> Dataset:
    """`read_dataset`, plus the notes a CLI prints (the delimiter picked, the sheet read)."""
    spec = job.spec.dataset
    path = job.base_dir / spec.path
    shown = _shown(path)
    if not path.is_file():
        raise DatasetError(f"{shown}: dataset not found", hint="check dataset.path in the job file")
    suffix = path.suffix.lower()
    notes: list[str] = []
    broken: DatasetProblems | None = None
    try:
        try:
            if suffix in _CSV:
                frame, notes = read_csv(path, shown, spec)
            elif suffix in _EXCEL:
                frame, notes = read_excel(path, shown, spec)
            elif suffix in _PARQUET:
                frame = pl.read_parquet(path).with_row_index("__row__", offset=1)
            else:
                raise DatasetError(
                    f"{shown}: unsupported file type {suffix!r} (csv, tsv, xlsx, ods, parquet)"
                )
        except DatasetProblems as err:
            if err.frame is None:
                raise
            broken, frame = err, err.frame  # check the readable records too, then report all
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        reason = str(err).strip().split("\n", 1)[0]
        raise DatasetError(f"{shown}: cannot read: {reason}") from err
    frame = frame.with_columns(pl.col("__row__").cast(pl.Int64))
    if spec.where:
        try:
            kept = apply_where(canonical(frame, spec.decimal, spec.date_format), spec.where)
        except ValueError as err:
            raise JobFileError(str(err), path=str(job.path), key="dataset.where") from err
        read = frame.height
        frame = frame.filter(pl.col("__row__").is_in(kept["__row__"].implode()))
        notes.append(_where_note(spec.where, shown, read, frame.height))
    try:
        frame, problems, hint = _with_keys(frame, job, shown)
    except DatasetError as err:  # e.g. no key column: said together with the broken lines
        if broken is None:
            raise
        problems = [*broken.problems, Problem(None, err.message)]
        raise DatasetProblems(shown, problems, sheet=broken.sheet, hint=broken.hint) from err
    if broken is not None or problems:
        if broken is not None:
            problems = [*broken.problems, *problems]
            hint = broken.hint or hint
        rows = scan(job, frame).errors
        raise DatasetProblems(
            shown,
            problems,
            sheet=broken.sheet if broken is not None else None,
            hint=hint,
            row_errors=rows,
        )
    return Dataset(frame, notes)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- keys --------------------------------------------------------------------------------


def _with_keys(
    frame: pl.DataFrame, job: Job, shown: str
) -> tuple[pl.DataFrame, list[Problem], str | None]:
    """Add `__key__`: the key column as text, or by default the recipient's identity.

    Rows with an empty or a shared key are left out and returned as problems (with a hint):
    the caller reports them together with every other problem.
    """
    column = job.spec.dataset.key
    problems: list[Problem] = []
    hint = None
    if column is not None:
        if column not in frame.columns:
            raise DatasetError(
                f"{shown}: key column {column!r} not found (columns: {', '.join(_data(frame))})"
            )
        frame = frame.with_columns(
            pl.col(column).cast(pl.String).str.strip_chars().alias("__key__")
        )
        empty = frame.filter(pl.col("__key__").is_null() | (pl.col("__key__") == ""))
        if empty.height:
            problems.append(
                Problem(None, f"empty key {column!r} on rows {_rows(empty['__row__'])}")
            )
            hint = f"every row needs a value in its key column {column!r}"
            frame = frame.filter(pl.col("__key__").is_not_null() & (pl.col("__key__") != ""))
    else:
        frame = frame.with_columns(_default_keys(frame, job).alias("__key__"))
    # Blank default keys are rows without a usable address: scan reports those as row errors.
    keyed = frame.select("__key__", "__row__").filter(pl.col("__key__") != "")
    dupes = keyed.filter(pl.col("__key__").is_duplicated())
    if dupes.height:
        groups = dupes.group_by("__key__", maintain_order=True).agg("__row__")
        name = f"key {column!r}" if column else "recipient address (the default key)"
        problems += [
            Problem(None, f"duplicate {name} {k!r} on rows {_rows(rows)}")
            for k, rows in groups.iter_rows()
        ]
        hint = "each row must have its own key: fix the data or set dataset.key"
        frame = frame.join(dupes.select("__row__"), on="__row__", how="anti")
    return frame, problems, hint


def _default_keys(frame: pl.DataFrame, job: Job) -> pl.Series:
    """Each row's normalised recipient identity; "" where the address does not normalise.

    A plain `{{ column }}` is read vectorized; anything else is rendered once per row in the
    renderer's environment. Each distinct address is normalised once.
    """
    spec = job.spec
    channel = channel_for(spec)
    source = channel.address_source(spec)
    plain = _PLAIN_VARIABLE.match(source)
    if plain and plain.group(1) in frame.columns:
        raw = frame[plain.group(1)].cast(pl.String).fill_null("")
    elif plain:
        raw = pl.Series([""] * frame.height, dtype=pl.String)
    else:
        raw = pl.Series(_render_all(frame, job, source), dtype=pl.String)
    region = spec.recipient.default_region

    def identity(address: str) -> str:
        try:
            return channel.key_of(channel.normalize_address(address, region))
        except ValueError:
            return ""  # the renderer reports the address's problem with its field

    distinct = raw.unique().to_list()
    keys = raw.replace_strict(
        {a: identity(a) for a in distinct}, default="", return_dtype=pl.String
    )
    legacy = channel.keys_of(raw)
    changed = (keys != legacy) & (keys != "")
    if changed.any():
        keys = _keep_ledger_keys(job, keys, legacy, changed)
    return keys


def _render_all(frame: pl.DataFrame, job: Job, source: str) -> list[str]:
    text_env, _ = job_environments(job)
    template = text_env.from_string(source)
    base = dict(text_env.globals)
    values = []
    for row in frame.iter_rows(named=True):
        try:
            with render_limits():
                values.append(str(template.render({**base, **row})).strip())
        except Exception:  # the renderer reports the row's real error with its field
            values.append("")
    return values


def _keep_ledger_keys(
    job: Job, keys: pl.Series, legacy: pl.Series, changed: pl.Series
) -> pl.Series:
    """Where a ledger already holds a row's key as written and not its normalised key, keep
    the ledger's: a campaign begun before keys were normalised resumes, never sends again."""
    folder = job.output_dir
    if not folder.is_dir():
        return keys
    try:
        held = read_ledger(folder)["key"].implode()
    except (BatchError, OSError):  # no ledger yet (or unreadable: the run reports that itself)
        return keys
    old = legacy.is_in(held) & ~keys.is_in(held) & changed
    return keys.zip_with(~old, legacy)


def _data(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith("__")]


def _rows(rows: pl.Series | list[int]) -> str:
    values = list(rows)
    text = ", ".join(str(r) for r in values[:_SHOWN])
    return text + (f", … ({len(values)} rows)" if len(values) > _SHOWN else "")
