"""The dataset's number and date conventions: `dataset.decimal` and `dataset.date_format`.

Cells keep the text the file shows (`1.234,56`, `02/11/2026`): that text is what a notice
quotes when a template prints the cell as is. A value is *parsed* only where it is computed
with, and then by the dataset's own convention, never by guessing:

- one value at a time (the `money`, `number` and `date` filters): `batch.formats.parse_number`
  and `parse_date`, the one home of those rules (`1.234,56` under `","` is 1234.56; under
  `"."` it is refused with the likely cause, never read as 1.23456);
- `canonical(frame, …)` is the view `where:` runs on: numeric-looking cells rewritten as
  `1234.56`, date cells as `2026-11-02`, so `CAST(importe AS DOUBLE) > 100` and
  `vence >= '2026-11-01'` mean what they say. With the defaults (`"."`, no date_format) the
  view is the frame itself.
"""

from __future__ import annotations

import polars as pl

_NUMBER = {
    ",": r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?$",
    ".": r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$",
}


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
