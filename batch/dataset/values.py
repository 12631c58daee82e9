"""The dataset's number and date conventions: `dataset.decimal` and `dataset.date_format`.

Cells keep the text the file shows (`1.234,56`, `02/11/2026`): that text is what a notice
quotes when a template prints the cell as is. A value is *parsed* only where it is computed
with, and then by the dataset's own convention, never by guessing:

- `parse_number("1.234,56", ",")` is `Decimal("1234.56")`; under `"."` the same text is not a
  number (None), so a filter can refuse it with the likely cause instead of reading 1.23456.
  Thousands separators count only in groups of three (`1.234.567,8`).
- `parse_date("02/11/2026", "%d/%m/%Y")` is `date(2026, 11, 2)`; ISO dates (what Excel and ODS
  date cells read as) are always understood.
- `canonical(frame, …)` is the view `where:` runs on: numeric-looking cells rewritten as
  `1234.56`, date cells as `2026-11-02`, so `CAST(importe AS DOUBLE) > 100` and
  `vence >= '2026-11-01'` mean what they say. With the defaults (`"."`, no date_format) the
  view is the frame itself.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import polars as pl

_NUMBER = {
    ",": r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?$",
    ".": r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$",
}
_COMPILED = {sep: re.compile(pattern) for sep, pattern in _NUMBER.items()}
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_number(text: str, decimal: str = ".") -> Decimal | None:
    """The number a cell holds under the dataset's decimal separator, or None if it is none."""
    value = text.strip()
    if not _COMPILED[decimal].match(value):
        return None
    grouping = "." if decimal == "," else ","
    try:
        return Decimal(value.replace(grouping, "").replace(decimal, "."))
    except InvalidOperation:  # pragma: no cover - the pattern admits only digits
        return None


def parse_date(text: str, date_format: str | None = None) -> date | None:
    """The date a cell holds: ISO (`2026-11-02`, also Excel date cells), or `date_format`."""
    value = text.strip()
    if _ISO.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if date_format:
        try:
            return datetime.strptime(value, date_format).date()
        except ValueError:
            return None
    return None


def canonical(frame: pl.DataFrame, decimal: str, date_format: str | None) -> pl.DataFrame:
    """The frame with numeric-looking cells as `1234.56` and dates as ISO, for `where:`."""
    if decimal == "." and not date_format:
        return frame
    grouping = "." if decimal == "," else ","
    exprs = []
    for name, dtype in frame.schema.items():
        if name.startswith("__") or dtype != pl.String:
            continue
        cell = pl.col(name)
        value = (
            pl.when(cell.str.strip_chars().str.contains(_NUMBER[decimal]))
            .then(
                cell.str.strip_chars()
                .str.replace_all(grouping, "", literal=True)
                .str.replace_all(decimal, ".", literal=True)
            )
            .otherwise(cell)
        )
        if date_format:
            parsed = cell.str.strip_chars().str.to_date(date_format, strict=False)
            value = (
                pl.when(parsed.is_not_null()).then(parsed.dt.strftime("%Y-%m-%d")).otherwise(value)
            )
        exprs.append(value.alias(name))
    return frame.with_columns(exprs)
