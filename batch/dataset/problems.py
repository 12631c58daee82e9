"""Structural problems in a dataset, collected so that one run reports all of them.

A person fixing a CSV wants every broken line in one message, not one per attempt. Readers
append `Problem`s (the line or sheet row a person sees, the column when known, why) and raise
one `DatasetProblems` at the end; its `problems` list lets a renderer report them per row.
When every problem is confined to its own records, the reader also hands over `frame`, the
records it could read, so that `load_dataset` checks those too and one message holds every
structural problem and every row problem (`row_errors`), each row once.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from batch.errors import DatasetError, RowError, format_row_errors

SHOWN = 20  # problems named in one message before "… and N more"


@dataclass(frozen=True)
class Problem:
    """One structural problem: where a person finds it and why it stops the read."""

    row: int | None  # CSV: the file line; Excel/ODS: the sheet row; None: the whole file
    message: str
    column: str | None = None  # the column's header, or its letter in a sheet


class DatasetProblems(DatasetError):
    """Every structural problem found in the dataset, in file order."""

    def __init__(
        self,
        shown: str,
        problems: list[Problem],
        *,
        sheet: str | None = None,
        hint: str | None = None,
        frame: pl.DataFrame | None = None,
        row_errors: list[RowError] | None = None,
    ) -> None:
        self.shown, self.sheet = shown, sheet
        self.frame = frame  # the records that could be read, when the problems are per record
        self.row_errors = row_errors or []
        self.problems = sorted(problems, key=lambda p: p.row or 0)
        lines = [f"  {self.place(p)}: {p.message}" for p in self.problems[:SHOWN]]
        if len(self.problems) > SHOWN:
            lines.append(f"  … and {len(self.problems) - SHOWN} more")
        count = len(self.problems)
        head = f"{shown}: {count} problem(s) in the file:\n" if count > 1 else ""
        text = head + "\n".join(lines) if count > 1 else lines[0].strip()
        if self.row_errors:
            text += "\n" + format_row_errors(self.row_errors, source=shown)
        super().__init__(text, hint=hint)

    def with_rows(self, row_errors: list[RowError], hint: str | None = None) -> DatasetProblems:
        """The same problems plus the row errors found in the records that could be read."""
        return DatasetProblems(
            self.shown,
            self.problems,
            sheet=self.sheet,
            hint=hint or self.hint,
            row_errors=row_errors,
        )

    def place(self, problem: Problem) -> str:
        """`data.csv:12`, or `data.xlsx [Clients] row 12, column C` for a sheet."""
        if self.sheet is None:
            return f"{self.shown}:{problem.row}" if problem.row else self.shown
        place = f"{self.shown} [{self.sheet}]"
        if problem.row:
            place += f" row {problem.row}"
        if problem.column:
            place += f", column {problem.column}"
        return place
