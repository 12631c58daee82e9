"""The recipient dataset: CSV, Excel, ODS or Parquet read into polars, filtered, keyed and numbered.

Every frame `read_dataset` returns has two extra columns: `__row__` (Int64, where the record is
in the file: the CSV line it starts on, the sheet row, or the 1-based Parquet position) and
`__key__` (String, the row's identity in the ledger). CSV, Excel and ODS cells are text as the
file or the sheet shows them, so "007" stays "007", `TRUE` stays `TRUE`, and empty cells are "".

Numbers and dates keep the text the person wrote (`1.234,56`, `02/11/2026`): the notice shows
what the spreadsheet shows. The dataset's conventions (`decimal`, `date_format`) are used where
a value is computed with: in `where:`, numeric-looking cells are compared as canonical numbers
(`1234.56`) and dates as ISO dates (`2026-11-02`), see `values.canonical`; the `money`, `number`
and `date` filters parse cells with `values.parse_number` and `values.parse_date`.

Modules: `csv` (CSV and TSV; `records` is its exact scanner, `decode` its encodings), `excel`
(xlsx and ODS read from their XML, legacy xls/xlsb via calamine), `values` (number and date
conventions), `problems` (structural problems, reported all at once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import polars as pl

from batch.channels import channel_for
from batch.dataset.csv import read_csv
from batch.dataset.excel import read_excel
from batch.dataset.problems import DatasetProblems, Problem
from batch.dataset.values import canonical, parse_date, parse_number
from batch.errors import DatasetError, JobFileError
from batch.jobmodel import Job

__all__ = [
    "Dataset",
    "DatasetProblems",
    "Problem",
    "load_dataset",
    "parse_date",
    "parse_number",
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
    except (pl.exceptions.PolarsError, OSError, ValueError) as err:
        if isinstance(err, DatasetError):
            raise
        reason = str(err).strip().split("\n", 1)[0]
        raise DatasetError(f"{shown}: cannot read: {reason}") from err
    frame = frame.with_columns(pl.col("__row__").cast(pl.Int64))
    if spec.where:
        kept = _where(canonical(frame, spec.decimal, spec.date_format), spec.where, job)
        frame = frame.filter(pl.col("__row__").is_in(kept["__row__"].implode()))
    return Dataset(_with_keys(frame, job, shown), notes)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- filter and keys ----------------------------------------------------------------------


def _where(frame: pl.DataFrame, where: str, job: Job) -> pl.DataFrame:
    """Keep the rows matching a polars SQL condition, e.g. `status = 'active' AND amount > 0`."""
    try:
        return frame.sql(f"SELECT * FROM self WHERE {where}")
    except Exception as err:  # polars raises several error types for SQL problems
        reason = str(err).split("\n", 1)[0]
        raise JobFileError(
            f"invalid condition: {reason}", path=str(job.path), key="dataset.where"
        ) from err


def _with_keys(frame: pl.DataFrame, job: Job, shown: str) -> pl.DataFrame:
    """Add `__key__`: the key column as text, or by default the recipient address."""
    column = job.spec.dataset.key
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
            raise DatasetError(f"{shown}: empty key {column!r} on rows {_rows(empty['__row__'])}")
    else:
        frame = frame.with_columns(_default_keys(frame, job).alias("__key__"))
    # Blank default keys are rows without an address: scan reports those as row errors.
    keyed = frame.select("__key__", "__row__").filter(pl.col("__key__") != "")
    dupes = keyed.filter(pl.col("__key__").is_duplicated())
    if dupes.height:
        groups = dupes.group_by("__key__", maintain_order=True).agg("__row__")
        listed = [f"  {k!r} on rows {_rows(rows)}" for k, rows in groups.head(_SHOWN).iter_rows()]
        more = f"\n  … and {groups.height - _SHOWN} more" if groups.height > _SHOWN else ""
        name = f"key {column!r}" if column else "recipient address (the default key)"
        raise DatasetError(
            f"{shown}: {groups.height} duplicate {name} value(s):\n" + "\n".join(listed) + more,
            hint="each row must have its own key: fix the data or set dataset.key",
        )
    return frame


def _default_keys(frame: pl.DataFrame, job: Job) -> pl.Series:
    """The recipient address as written (trimmed; e-mail lowercased, phone without spacing).

    A plain `{{ column }}` is computed vectorized; anything else is rendered once per row.
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
        template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source)
        values = []
        for row in frame.iter_rows(named=True):
            try:
                values.append(template.render(row))
            except Exception:  # scan reports the row's real error with its field
                values.append("")
        raw = pl.Series(values, dtype=pl.String)
    return channel.keys_of(raw)


def _data(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith("__")]


def _rows(rows: pl.Series | list[int]) -> str:
    values = list(rows)
    text = ", ".join(str(r) for r in values[:_SHOWN])
    return text + (f", … ({len(values)} rows)" if len(values) > _SHOWN else "")
