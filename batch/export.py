"""Spreadsheet exports: the dataset's rows with their ledger columns, and the failed rows.

What a spreadsheet shows must be what the campaign holds, and opening an export must not run
anything:

* CSV has no types, so a spreadsheet evaluates a cell that starts with `=`, `+`, `-` or `@`,
  also after leading whitespace (space, NBSP, LF, ideographic space, BOM...) or written with
  the full-width signs (`＝＋－＠`) that CJK input methods produce, and treats a leading tab or
  CR as a formula prefix. Such cells (and headers) get a leading `'`, the convention spreadsheet
  users know. A cell that is plainly a number or a phone number (`-12.50`, `-1.234,50`,
  `+34 612 345 678`) cannot run anything and is kept as itself.
* .xlsx has types: every text cell is written as a string cell (never a formula, URL or number),
  so `=SUM(A1)` is the text `=SUM(A1)`, with no apostrophe added.

The address column is named for the channel: `lmbatch_email` (e-mail, signature: the first
signer) or `lmbatch_phone` (SMS, E.164); the ledger may call it `email` or `address`.
Every file is written atomically (temp file, fsync, rename).

Times come twice: `lmbatch_<time>_utc` as the ledger keeps them, and `lmbatch_<time> (<zone>)`
in the campaign's time zone (`Job.tz`), the zone named in the header because a spreadsheet
cell cannot say it. The channel adds its own times and notes (a signature's `signed_at`,
`expires_at` and signers with their statuses, batch.channels); every export has one
`lmbatch_certificate_<type>` column per certificate type, the file's absolute path.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

import polars as pl
import xlsxwriter

from batch.answers import json_object, utc
from batch.channels import channel_for
from batch.dataset import read_dataset
from batch.errors import BatchError, InputError
from batch.files import atomic_path
from batch.jobmodel import Job
from batch.ledger import BOUNCED, FAILED
from batch.report import ledger_frame

# Blanks a spreadsheet skips before looking for a formula sign (Unicode White_Space, spelled
# out so that polars' Rust regex and Python's `re` agree, plus zero-width ones and the BOM).
_BLANKS = (
    "\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
)
_SIGNS = "=+\\-@\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b"  # ASCII, full-width, small
RISKY = f"^(?:[\t\r]|[{_BLANKS}]*[{_SIGNS}])"
# A signed number or a phone number: digits in groups separated by `.`, `,` or a space.
PLAIN = "^[+-]?[0-9]+(?:[., \xa0\u202f][0-9]+)*$"
_RISKY_RE, _PLAIN_RE = re.compile(RISKY), re.compile(PLAIN)

ADDRESS_COLUMNS = ("address", "email")  # the ledger's name for it, newest first
ADDRESS_HEADER = {"email": "lmbatch_email", "signature": "lmbatch_email", "sms": "lmbatch_phone"}
_EXPORTED = {  # ledger column -> export column (the address is added per channel)
    "tracking_id": "lmbatch_tracking_id",
    "status": "lmbatch_status",
    "sent_at": "lmbatch_sent_at_utc",
    "delivered_at": "lmbatch_delivered_at_utc",
    "read_at": "lmbatch_read_at_utc",
    "error_details": "lmbatch_error",
}


def is_risky(text: str) -> bool:
    """Whether a spreadsheet opening `text` from a CSV would run it as a formula."""
    return _RISKY_RE.match(text) is not None and _PLAIN_RE.match(text) is None


def address_header(channel: str) -> str:
    """The export header for the address as sent, named for what the channel sends to."""
    return ADDRESS_HEADER.get(channel, "lmbatch_address")


def export(job: Job, fmt: Literal["xlsx", "csv"], path: Path | None = None) -> Path:
    """Write the dataset's rows joined with their ledger columns, formula-safe."""
    if fmt not in ("xlsx", "csv"):
        raise InputError(f"unknown export format {fmt!r}", hint="use --export xlsx or csv")
    target = path or job.output_dir / f"export.{fmt}"
    rows = read_dataset(job)
    ledger = ledger_frame(job)
    address = next((c for c in ADDRESS_COLUMNS if c in ledger.columns), ADDRESS_COLUMNS[0])
    exported = {address: address_header(job.spec.channel), **_EXPORTED}
    if not ledger.height:
        ledger = pl.DataFrame(schema={c: pl.String for c in ["key", *exported]})
    evidence = _evidence_columns(job, ledger)
    ledger = ledger.select(
        pl.col("key").cast(pl.String).alias("__key__"),
        *(_naive(pl.col(c), ledger.schema[c]).alias(name) for c, name in exported.items()),
    ).join(evidence, on="__key__", how="left")
    clash = [c for c in ledger.columns if c != "__key__" and c in rows.columns]
    if clash:
        raise InputError(f"the dataset already has column(s) {', '.join(clash)}")
    joined = (
        rows.join(ledger, on="__key__", how="left", maintain_order="left")
        .sort("__row__")
        .drop("__row__")
        .rename({"__key__": "lmbatch_key"})
    )
    _write(joined, target, fmt)
    return target


def export_failed(job: Job, path: Path) -> tuple[Path, int]:
    """Write the dataset rows whose send failed or bounced, in the dataset's own format.

    The format follows `path`'s extension (.csv, .xlsx, .parquet). Two columns are added:
    `lmbatch_status` (failed or bounced) and `lmbatch_reason` (the API's or the recipient
    server's words). After correcting those rows in the dataset itself, `lmbatch run
    --retry-failed` sends them again: a failed row as it is, a bounced row only to a
    corrected address (never again to the one it bounced at).
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("csv", "xlsx", "parquet"):
        raise InputError(f"{path}: use a .csv, .xlsx or .parquet file name")
    ledger = ledger_frame(job)
    schema = {"__key__": pl.String, "lmbatch_status": pl.String, "lmbatch_reason": pl.String}
    if ledger.height:
        reason = [c for c in ("error_details", "error_status") if c in ledger.columns]
        failed = ledger.filter(pl.col("status").is_in([FAILED, BOUNCED])).select(
            pl.col("key").alias("__key__"),
            pl.col("status").alias("lmbatch_status"),
            pl.coalesce(*reason, "status").alias("lmbatch_reason"),
        )
    else:
        failed = pl.DataFrame(schema=schema)
    rows = read_dataset(job).join(failed, on="__key__", how="inner").sort("__row__")
    rows = rows.drop("__row__", "__key__")
    _write(rows, path, suffix)
    return path, rows.height


def _write(frame: pl.DataFrame, target: Path, fmt: str) -> None:
    """Write `frame` as `fmt` atomically (batch.files); CSV cells neutralised, xlsx typed."""
    try:
        with atomic_path(target) as tmp:
            if fmt == "csv":
                neutralise(frame).write_csv(tmp, datetime_format="%Y-%m-%d %H:%M:%S")
            elif fmt == "parquet":
                frame.write_parquet(tmp)
            else:
                _write_xlsx(frame, tmp)
    except (OSError, pl.exceptions.PolarsError, xlsxwriter.exceptions.XlsxWriterException) as err:
        raise BatchError(f"{target}: cannot write the export: {err}") from err


def _write_xlsx(frame: pl.DataFrame, path: Path) -> None:
    """Text as string cells: xlsxwriter must never turn `=…` into a formula or `http…` a link."""
    options = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
    with xlsxwriter.Workbook(str(path), options) as book:
        frame.write_excel(book, worksheet="lmbatch", autofit=True)


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` for a CSV: every text cell (and header) a spreadsheet would run quoted by `'`."""
    out = frame.with_columns(
        pl.when(pl.col(c).str.contains(RISKY) & ~pl.col(c).str.contains(PLAIN))
        .then("'" + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )
    return out.rename({c: f"'{c}" for c in out.columns if is_risky(c)})


_LOCAL = ("sent_at", "delivered_at", "read_at")  # shared times that get a local column


def _evidence_columns(job: Job, ledger: pl.DataFrame) -> pl.DataFrame:
    """Per key: local times, the channel's own times and notes, certificate paths."""
    channel, tz = channel_for(job.spec), job.tz
    zone = getattr(tz, "key", None) or str(tz)
    own = [t for t in channel.evidence_times if t not in _LOCAL]
    times: dict[str, list[datetime | None]] = {}
    for name in own:
        times[f"lmbatch_{name}_utc"] = []
    for name in (*_LOCAL, *own):
        times[f"lmbatch_{name} ({zone})"] = []
    files: dict[str, list[str | None]] = {
        f"lmbatch_certificate_{kind}": [] for kind in channel.certificate_kinds
    }
    notes: list[dict[str, str]] = []
    keys: list[str] = []
    for row in ledger.iter_rows(named=True):
        keys.append(str(row["key"]))
        evidence = channel.evidence(row)
        found = evidence.times
        notes.append(evidence.notes)
        for name in own:
            times[f"lmbatch_{name}_utc"].append(_wall(found.get(name), None))
        for name in (*_LOCAL, *own):
            at = row.get(name) if name in _LOCAL else found.get(name)
            times[f"lmbatch_{name} ({zone})"].append(_wall(at, tz))
        paths = json_object(row.get("certificate_paths"))
        for kind in channel.certificate_kinds:
            path = job.output_dir / str(paths[kind]) if kind in paths else None
            files[f"lmbatch_certificate_{kind}"].append(
                str(path) if path is not None and path.is_file() else None
            )
    columns: dict[str, pl.Series] = {"__key__": pl.Series(keys, dtype=pl.String)}
    columns |= {c: pl.Series(v, dtype=pl.Datetime("us")) for c, v in times.items()}
    for name in sorted({n for row_notes in notes for n in row_notes}):
        columns[f"lmbatch_{name}"] = pl.Series([n.get(name) for n in notes], dtype=pl.String)
    columns |= {c: pl.Series(v, dtype=pl.String) for c, v in files.items()}
    return pl.DataFrame(columns)


def _wall(at: Any, tz: tzinfo | None) -> datetime | None:
    """An instant as a spreadsheet's naive wall time: in `tz`, or UTC when None."""
    if not isinstance(at, datetime):
        return None
    moment = utc(at)
    return (moment.astimezone(tz) if tz is not None else moment).replace(tzinfo=None)


def _naive(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Datetimes as naive UTC: spreadsheets have no time zones (the column name says UTC)."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            return column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return column
    return column
