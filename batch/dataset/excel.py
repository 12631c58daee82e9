"""Excel and ODS datasets: the sheet a person sees, read as it shows, numbered by sheet row.

Without `sheet:`, the first *visible* sheet is read (a hidden first sheet is what Excel users
never see); a `sheet:` that does not exist is refused with the list of sheets. The header is
the first non-empty row at or after `header_row` (title rows above it are skipped) and every
message names the real sheet row, also when the sheet starts with empty rows.

.xlsx/.xlsm and .ods are read from their XML (`sheetxml`) so number formats, booleans, error
cells and formulas without a saved value are seen; error cells and such formulas are refused
all at once with their sheet row and column. Legacy .xls/.xlsb go through calamine, which
cannot see number formats, error cells or missing saved values: their cells are calamine's
text with dates, times and booleans cleaned up (`2026-11-02`, `09:30`, `TRUE`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import fastexcel
import polars as pl

from batch.dataset import records
from batch.dataset.problems import DatasetProblems, Problem
from batch.dataset.sheetxml import FORMULA_HINT, Sheet, SheetInfo, Xlsx, letter, read_ods
from batch.errors import DatasetError
from batch.jobmodel import DatasetSpec

_FLOAT = re.compile(r"-?\d+\.\d+")
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})(:\d{2})(?:\.0+)?")


def read_excel(path: Path, shown: str, spec: DatasetSpec) -> tuple[pl.DataFrame, list[str]]:
    """The chosen sheet as text cells plus `__row__` (the sheet row), and notes."""
    suffix = path.suffix.lower()
    try:
        if suffix in {".xlsx", ".xlsm"}:
            with zipfile.ZipFile(path) as archive:
                book = Xlsx(archive, spec.decimal)
                info = _choose(book.sheets, spec.sheet, shown)
                sheet = book.read(info)
        elif suffix == ".ods":
            with path.open("rb") as source:
                infos, sheets = read_ods(source, spec.decimal)
            info = _choose(infos, spec.sheet, shown)
            sheet = sheets[info.name]
        else:
            sheet, info = _calamine(path, shown, spec.sheet, spec.decimal)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DatasetError(f"{shown}: not a readable {suffix} file ({err})") from err
    notes = [] if spec.sheet else [f"sheet {info.name!r} (the first visible sheet)"]
    return _frame(sheet, shown, spec.header_row), notes


def _choose(sheets: list[SheetInfo], wanted: str | None, shown: str) -> SheetInfo:
    names = ", ".join(repr(s.name) + ("" if s.visible else " (hidden)") for s in sheets)
    if wanted is not None:
        for info in sheets:
            if info.name == wanted:
                return info
        raise DatasetError(
            f"{shown}: no sheet named {wanted!r} (sheets: {names})",
            hint="set dataset.sheet to one of the sheets' names",
        )
    visible = [s for s in sheets if s.visible]
    if not visible:
        raise DatasetError(f"{shown}: every sheet is hidden ({names})", hint="set dataset.sheet")
    return visible[0]


def _calamine(
    path: Path, shown: str, wanted: str | None, decimal: str = "."
) -> tuple[Sheet, SheetInfo]:
    try:
        reader = fastexcel.read_excel(path)
        infos = []
        for index, name in enumerate(reader.sheet_names):
            visible = reader.load_sheet(index, n_rows=0).visible == "visible"
            infos.append(SheetInfo(name, visible, ""))
        info = _choose(infos, wanted, shown)
        frame = reader.load_sheet(info.name, header_row=None, dtypes="string").to_polars()
    except DatasetError:
        raise
    except Exception as err:  # fastexcel raises its own error types for unreadable files
        reason = str(err).strip().split("\n", 1)[0]
        raise DatasetError(f"{shown}: cannot read: {reason}") from err
    sheet = Sheet(info.name)
    for number, values in enumerate(frame.iter_rows(), start=1):
        cells = {i: _legacy(v, decimal) for i, v in enumerate(values) if v not in (None, "")}
        if cells:
            sheet.rows[number] = cells
    return sheet, info


def _legacy(text: str, decimal: str) -> str:
    """calamine's text for dates, times, booleans and numbers as the sheet shows (best effort)."""
    if text in {"true", "false"}:
        return text.upper()
    if decimal == "," and _FLOAT.fullmatch(text):
        return text.replace(".", ",")
    stamp = _STAMP.fullmatch(text)
    if stamp is None:
        return text
    day, clock, seconds = stamp.groups()
    clock = clock if seconds == ":00" else clock + seconds
    if day == "1899-12-31":
        return clock
    return day if clock == "00:00" else f"{day} {clock}"


def _frame(sheet: Sheet, shown: str, header_row: int) -> pl.DataFrame:
    numbers = sorted(n for n in sheet.rows if n >= header_row)
    problems: list[Problem] = []
    if not numbers:
        raise DatasetError(
            f"{shown} [{sheet.name}]: no header row at or after row {header_row}",
            hint="check dataset.sheet and dataset.header_row",
        )
    top = numbers[0]
    header = sheet.rows[top]
    width = max(header) + 1
    names = [header.get(i, "").strip() for i in range(width)]
    problems += [
        p for p in records.header_problems(names, top, ",") if "one column" not in p.message
    ]
    for cell in sheet.problems:
        if cell.row < top:
            continue
        name = names[cell.column] if cell.column < width else ""
        column = letter(cell.column) + (f" ({name})" if name else "")
        problems.append(Problem(cell.row, cell.message, column))
    body = numbers[1:]
    for number in body:
        extra = [i for i in sheet.rows[number] if i >= width or not names[i]]
        if extra:
            column = letter(extra[0])
            problems.append(
                Problem(number, "a cell outside the header's columns holds data", column)
            )
    if problems:
        hint = None
        if any("saved value" in p.message or "error" in p.message for p in problems):
            hint = f"fix the cells; for formulas without a value, {FORMULA_HINT}"
        wider = next((n for n in body if len(sheet.rows[n]) > 1), None)
        if len(header) == 1 and wider is not None:
            hint = (
                f"row {top} looks like a title above the header: set dataset.header_row: "
                f"{wider} (the row holding the column names)"
            )
        readable = None
        if all(p.row is not None and p.row > top for p in problems) and len(header) > 1:
            # Broken cells only: the other rows are read, so that they are checked too.
            broken = {p.row for p in problems}
            readable = _columns(sheet, names, width, [n for n in body if n not in broken])
        raise DatasetProblems(shown, problems, sheet=sheet.name, hint=hint, frame=readable)
    return _columns(sheet, names, width, body)


def _columns(sheet: Sheet, names: list[str], width: int, body: list[int]) -> pl.DataFrame:
    kept = [i for i in range(width) if names[i]]
    columns = {names[i]: [sheet.rows[n].get(i, "") for n in body] for i in kept}
    frame = pl.DataFrame(columns, schema={names[i]: pl.String for i in kept})
    return frame.with_columns(pl.Series("__row__", body, dtype=pl.Int64))
