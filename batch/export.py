"""Spreadsheet exports: the dataset's rows with their ledger columns, and the failed rows.

Cells a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR) are neutralised with
a leading `'`. Every file is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import polars as pl

from batch.dataset import read_dataset
from batch.errors import BatchError
from batch.files import fsync_dir
from batch.jobfile import Job
from batch.ledger import FAILED
from batch.report import ledger_frame

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_RISKY = r"^[=+\-@\t\r]"  # the same characters, as a regex
_EXPORTED = {  # ledger column -> export column
    "address": "lmbatch_address",  # as sent: normalised e-mail, E.164 phone, or first signer
    "tracking_id": "lmbatch_tracking_id",
    "status": "lmbatch_status",
    "sent_at": "lmbatch_sent_at_utc",
    "delivered_at": "lmbatch_delivered_at_utc",
    "read_at": "lmbatch_read_at_utc",
    "error_details": "lmbatch_error",
}


def export(job: Job, fmt: Literal["xlsx", "csv"], path: Path | None = None) -> Path:
    """Write the dataset's rows joined with their ledger columns, formula-safe."""
    if fmt not in ("xlsx", "csv"):
        raise BatchError(f"unknown export format {fmt!r}", hint="use --export xlsx or csv")
    target = path or job.output_dir / f"export.{fmt}"
    rows = read_dataset(job)
    ledger = ledger_frame(job)
    wanted = ["key", *_EXPORTED]
    if not ledger.height:
        ledger = pl.DataFrame(schema={c: pl.String for c in wanted})
    ledger = ledger.select(
        pl.col("key").cast(pl.String).alias("__key__"),
        *(_naive(pl.col(c), ledger.schema[c]).alias(name) for c, name in _EXPORTED.items()),
    )
    clash = [c for c in _EXPORTED.values() if c in rows.columns]
    if clash:
        raise BatchError(f"the dataset already has column(s) {', '.join(clash)}")
    joined = (
        rows.join(ledger, on="__key__", how="left", maintain_order="left")
        .sort("__row__")
        .drop("__row__")
        .rename({"__key__": "lmbatch_key"})
    )
    _write(neutralise(joined), target, fmt)
    return target


def export_failed(job: Job, path: Path) -> tuple[Path, int]:
    """Write the dataset rows whose send failed, in the dataset's own format, to fix and re-run.

    The format follows `path`'s extension (.csv, .xlsx, .parquet). After fixing them in the
    dataset, `lmbatch run --retry-failed` sends them again.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("csv", "xlsx", "parquet"):
        raise BatchError(f"{path}: use a .csv, .xlsx or .parquet file name")
    ledger = ledger_frame(job)
    failed = (
        ledger.filter(pl.col("status") == FAILED).select(pl.col("key").alias("__key__"))
        if ledger.height
        else pl.DataFrame(schema={"__key__": pl.String})
    )
    rows = read_dataset(job).join(failed, on="__key__", how="semi").sort("__row__")
    rows = rows.drop("__row__", "__key__")
    _write(neutralise(rows) if suffix != "parquet" else rows, path, suffix)
    return path, rows.height


def _write(frame: pl.DataFrame, target: Path, fmt: str) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            frame.write_csv(tmp, datetime_format="%Y-%m-%d %H:%M:%S")
        elif fmt == "parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_excel(tmp, worksheet="lmbatch", autofit=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except (OSError, pl.exceptions.PolarsError) as err:
        tmp.unlink(missing_ok=True)
        raise BatchError(f"{target}: cannot write the export: {err}") from err


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every text cell (and header) that a spreadsheet would run quoted by `'`."""
    out = frame.with_columns(
        pl.when(pl.col(c).str.contains(_RISKY)).then("'" + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )
    return out.rename({c: f"'{c}" for c in out.columns if c.startswith(FORMULA_START)})


def _naive(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Datetimes as naive UTC: spreadsheets have no time zones (the column name says UTC)."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            return column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return column
    return column
