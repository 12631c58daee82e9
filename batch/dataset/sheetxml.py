"""xlsx and ODS sheets read from their XML, cell by cell, as the sheet shows them.

calamine (polars' engine) gives a cell's value but not its number format, its cached-value
state or the sheet's visibility, so `08001` formatted `00000` came out `8001`, `#N/A` empty
and a time `1899-12-31 09:30:00`. Reading the XML (the standard library is enough) gives:

- dates as `2026-11-02`, times as `09:30` (`09:30:15` when the format shows seconds),
  date-times as `2026-11-02 09:30`; zero-padded formats keep their zeros; `0.00` keeps its
  decimals; `0%` shows `15%`; other numbers in their shortest form (`1234.5`, `12`), with
  the dataset's decimal separator (`1234,5` under `decimal: ","`, as a Spanish sheet shows);
- booleans as `TRUE`/`FALSE`, as a CSV exported from the sheet would say;
- error cells (`#N/A`, `#DIV/0!`, …) and formulas without a saved value as `CellProblem`s.

A `Sheet` holds rows by their real sheet row number, so messages name the row Excel shows.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import IO
from xml.etree import ElementTree as ET

_ERRORS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA"}
_BUILTIN_DATE = {14, 15, 16, 17, 22, *range(27, 37), *range(50, 59)}
_BUILTIN_TIME = {
    18: "h:mm",
    19: "h:mm:ss",
    20: "h:mm",
    21: "h:mm:ss",
    45: "mm:ss",
    46: "[h]:mm:ss",
    47: "mm:ss.0",
}
_BUILTIN = {1: "0", 2: "0.00", 9: "0%", 10: "0.00%", 49: "@"}
_ODS_TIME = re.compile(r"PT(\d+)H(\d+)M(\d+(?:\.\d+)?)S")
FORMULA_HINT = "open the file in Excel or LibreOffice and save it again"


@dataclass(frozen=True)
class CellProblem:
    """A cell that cannot be read as the sheet shows it."""

    row: int
    column: int  # 0-based
    message: str


@dataclass
class Sheet:
    """Cells as text, by sheet row (1-based) and column (0-based)."""

    name: str
    rows: dict[int, dict[int, str]] = field(default_factory=dict)
    problems: list[CellProblem] = field(default_factory=list)


@dataclass(frozen=True)
class SheetInfo:
    name: str
    visible: bool
    target: str  # xlsx: the part's path in the zip; ODS: unused


def letter(column: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    out = ""
    column += 1
    while column:
        column, rest = divmod(column - 1, 26)
        out = chr(65 + rest) + out
    return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(element: ET.Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


# --- xlsx -----------------------------------------------------------------------------------


class Xlsx:
    """An open .xlsx/.xlsm: its sheets, shared strings and number formats."""

    def __init__(self, archive: zipfile.ZipFile, decimal: str = ".") -> None:
        self.zip, self.decimal = archive, decimal
        # Parts are found through the package's relationships, as Excel does: most writers
        # use xl/workbook.xml and xl/sharedStrings.xml, but nothing obliges them to.
        main = _related(archive, "", "_rels/.rels", "/officeDocument")
        book_path = main[0] if main else "xl/workbook.xml"
        folder = book_path.rsplit("/", 1)[0] + "/" if "/" in book_path else ""
        rels_path = f"{folder}_rels/{book_path.rsplit('/', 1)[-1]}.rels"
        book = ET.fromstring(archive.read(book_path))
        rels = ET.fromstring(archive.read(rels_path))
        targets = {r.get("Id"): _resolve(folder, r.get("Target", "")) for r in rels}
        self.date1904 = any(
            _local(e.tag) == "workbookPr" and e.get("date1904") in {"1", "true"} for e in book
        )
        self.sheets = []
        for element in book.iter():
            if _local(element.tag) == "sheet":
                target = targets.get(_attr(element, "id"), "")
                state = element.get("state", "visible")
                self.sheets.append(SheetInfo(element.get("name", ""), state == "visible", target))
        strings = _related(archive, folder, rels_path, "/sharedStrings")
        styles = _related(archive, folder, rels_path, "/styles")
        self.strings = self._strings(strings[0]) if strings else []
        self.formats = self._formats(styles[0]) if styles else []

    def _strings(self, path: str) -> list[str]:
        root = ET.fromstring(self.zip.read(path))
        return [_rich_text(si) for si in root if _local(si.tag) == "si"]

    def _formats(self, path: str) -> list[str]:
        """Format code per style index (`s` attribute)."""
        root = ET.fromstring(self.zip.read(path))
        custom: dict[int, str] = {}
        codes: list[str] = []
        for element in root:
            if _local(element.tag) == "numFmts":
                for fmt in element:
                    custom[int(fmt.get("numFmtId", "0"))] = fmt.get("formatCode", "")
            elif _local(element.tag) == "cellXfs":
                for xf in element:
                    number = int(xf.get("numFmtId", "0"))
                    codes.append(custom.get(number) or _builtin(number))
        return codes

    def read(self, info: SheetInfo) -> Sheet:
        """Every non-empty cell of the sheet as the sheet shows it."""
        sheet = Sheet(info.name)
        row_number = 0
        row_tag = ""
        with self.zip.open(info.target) as part:
            for _, element in ET.iterparse(part):
                tag = element.tag
                if tag != row_tag:
                    if _local(tag) != "row":
                        continue
                    row_tag = tag  # the namespace is the writer's: learn it once
                row_number = int(element.get("r") or row_number + 1)
                cells: dict[int, str] = {}
                column = -1
                for cell in element:
                    ref = cell.get("r")
                    column = _column(ref) if ref else column + 1
                    text = self._cell(cell, sheet, row_number, column)
                    if text:
                        cells[column] = text
                if cells:
                    sheet.rows[row_number] = cells
                element.clear()
        return sheet

    def _cell(self, cell: ET.Element, sheet: Sheet, row: int, column: int) -> str:
        kind = cell.get("t", "n")
        value = formula = None
        inline = ""
        for child in cell:
            name = child.tag[-1] if child.tag[-2] == "}" else _local(child.tag)
            if name == "v":
                value = child.text or ""
            elif name == "f":
                formula = child
            elif name == "is":
                inline = _rich_text(child)
        if kind == "inlineStr":
            return inline
        if formula is not None and (value is None or (value == "" and kind != "str")):
            sheet.problems.append(
                CellProblem(row, column, f"a formula without a saved value: {FORMULA_HINT}")
            )
            return ""
        if value is None:
            return ""
        if kind == "s":
            return self.strings[int(value)]
        if kind == "str":
            return value
        if kind == "b":
            return "TRUE" if value in {"1", "true"} else "FALSE"
        if kind == "e":
            sheet.problems.append(CellProblem(row, column, f"the cell shows the error {value}"))
            return ""
        if kind == "d":
            return value.removesuffix("T00:00:00").replace("T", " ")
        style = int(cell.get("s", "0"))
        code = self.formats[style] if style < len(self.formats) else "General"
        return show_number(float(value), code, self.date1904, self.decimal)


def _related(archive: zipfile.ZipFile, folder: str, rels_path: str, kind: str) -> list[str]:
    """The parts a relationships file points to with a type ending in `kind`."""
    try:
        rels = ET.fromstring(archive.read(rels_path))
    except KeyError:
        return []
    return [_resolve(folder, r.get("Target", "")) for r in rels if r.get("Type", "").endswith(kind)]


def _resolve(folder: str, target: str) -> str:
    """A relationship target as a path in the zip (absolute `/xl/…` or relative to `folder`)."""
    if target.startswith("/"):
        return target[1:]
    parts: list[str] = []
    for piece in (folder + target).split("/"):
        if piece == "..":
            if parts:
                parts.pop()
        elif piece and piece != ".":
            parts.append(piece)
    return "/".join(parts)


def _builtin(number: int) -> str:
    if number in _BUILTIN_DATE:
        return "yyyy-mm-dd"
    if number in _BUILTIN_TIME:
        return _BUILTIN_TIME[number]
    return _BUILTIN.get(number, "General")


@lru_cache(maxsize=4096)
def _column(ref: str) -> int:
    """The 0-based column of a cell reference like `AB12`."""
    number = 0
    for ch in ref:
        if ch.isdigit():
            break
        number = number * 26 + ord(ch) - 64
    return number - 1


def _rich_text(element: ET.Element) -> str:
    """The text of an `<si>`/`<is>`: its `<t>`s, without phonetic (`<rPh>`) runs."""
    parts = []
    for child in element:
        name = _local(child.tag)
        if name == "t":
            parts.append(child.text or "")
        elif name == "r":
            parts.extend(t.text or "" for t in child if _local(t.tag) == "t")
    return "".join(parts)


def show_number(value: float, code: str, date1904: bool = False, decimal: str = ".") -> str:
    """A number cell as its format shows it (ISO for dates and times, see the docstring).

    Numbers use the dataset's decimal separator, as a sheet in that locale shows them.
    """
    shape, size = _shape(code)
    base = shape.removesuffix("+s")
    if base in {"date", "time", "datetime"}:
        return _date_time(value, base != "time", base != "date", shape != base, date1904)
    if shape == "padded":
        digits = f"{round(abs(value)):0{size}d}"
        return digits if value >= 0 else "-" + digits
    if shape == "fixed":
        return f"{value:.{size}f}".replace(".", decimal)
    if shape == "percent":
        return f"{value * 100:.{size}f}%".replace(".", decimal)
    return general(value, decimal)


@lru_cache(maxsize=256)
def _shape(code: str) -> tuple[str, int]:
    """What a format code does to a number: ("date"|"time"|"datetime"[+s], 0), ("padded",
    width), ("fixed", decimals), ("percent", decimals) or ("general", 0)."""
    section = code.split(";", 1)[0]
    bare = re.sub(r'"[^"]*"|\\.|\[(?!h\]|m\]|s\])[^\]]*\]|_.|\*.', "", section).lower()
    has_date = any(ch in bare for ch in "yd") or ("m" in bare and not any(c in bare for c in "hs"))
    has_time = any(ch in bare for ch in "hs")
    if has_date or has_time:
        shape = "datetime" if has_date and has_time else "date" if has_date else "time"
        return shape + ("+s" if "s" in bare else ""), 0
    plain = bare.strip()
    if re.fullmatch(r"0+", plain):
        return "padded", len(plain)
    fixed = re.fullmatch(r"0(?:\.(0+))?(%?)", plain)
    if fixed:
        decimals = len(fixed.group(1) or "")
        return ("percent" if fixed.group(2) else "fixed"), decimals
    return "general", 0


def general(value: float, decimal: str = ".") -> str:
    """The shortest text for a number as Excel's General format shows it (15 digits)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(f"{value:.15g}")).replace(".", decimal)


def _date_time(value: float, has_date: bool, has_time: bool, seconds: bool, d1904: bool) -> str:
    epoch = datetime(1904, 1, 1) if d1904 else datetime(1899, 12, 30)
    if not d1904 and value < 60:
        epoch += timedelta(days=1)  # Excel's 1900-02-29 that never was
    moment = epoch + timedelta(seconds=round(value * 86400))
    clock = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
    if has_date and has_time:
        return f"{moment.date().isoformat()} {clock}"
    if has_date:
        return moment.date().isoformat()
    return clock


# --- ODS ------------------------------------------------------------------------------------

_NS = {
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
}


def _q(prefix: str, name: str) -> str:
    return f"{{{_NS[prefix]}}}{name}"


def read_ods(source: IO[bytes], decimal: str = ".") -> tuple[list[SheetInfo], dict[str, Sheet]]:
    """Every table of an .ods with its visibility, read as the sheet shows it."""
    with zipfile.ZipFile(source) as archive:
        root = ET.fromstring(archive.read("content.xml"))
    hidden = {
        style.get(_q("style", "name"))
        for style in root.iter(_q("style", "style"))
        for props in style.iter(_q("style", "table-properties"))
        if props.get(_q("table", "display")) == "false"
    }
    infos, sheets = [], {}
    for table in root.iter(_q("table", "table")):
        name = table.get(_q("table", "name"), "")
        infos.append(SheetInfo(name, table.get(_q("table", "style-name")) not in hidden, ""))
        sheets[name] = _ods_table(table, name, decimal)
    return infos, sheets


def _ods_table(table: ET.Element, name: str, decimal: str) -> Sheet:
    sheet = Sheet(name)
    row_number = 0
    for row in table.iter(_q("table", "table-row")):
        repeat = int(row.get(_q("table", "number-rows-repeated"), "1"))
        cells: dict[int, str] = {}
        column = 0
        for cell in row:
            if _local(cell.tag) not in {"table-cell", "covered-table-cell"}:
                continue
            span = int(cell.get(_q("table", "number-columns-repeated"), "1"))
            text = _ods_cell(cell, sheet, row_number + 1, column, decimal)
            if text:
                for offset in range(span):
                    cells[column + offset] = text
            column += span
        if cells:
            for offset in range(repeat):
                sheet.rows[row_number + 1 + offset] = dict(cells)
        row_number += repeat
    return sheet


def _ods_cell(cell: ET.Element, sheet: Sheet, row: int, column: int, decimal: str) -> str:
    kind = cell.get(_q("office", "value-type"))
    calc = next(
        (v for k, v in cell.attrib.items() if _local(k) == "value-type" and "calcext" in k), None
    )
    shown = "\n".join(_ods_text(p) for p in cell if _local(p.tag) == "p")
    formula = cell.get(_q("table", "formula"))
    if calc == "error" or (formula and shown.strip() in _ERRORS) or shown.startswith("Err:"):
        sheet.problems.append(CellProblem(row, column, f"the cell shows the error {shown}"))
        return ""
    if formula and kind is None:
        sheet.problems.append(
            CellProblem(row, column, f"a formula without a saved value: {FORMULA_HINT}")
        )
        return ""
    if kind in {"float", "currency"}:
        value = float(cell.get(_q("office", "value"), "0"))
        if re.fullmatch(r"0\d+", shown) and int(shown) == value:
            return shown  # a zero-padded format: keep what the sheet shows
        return general(value, decimal)
    if kind == "percentage":
        return general(float(cell.get(_q("office", "value"), "0")) * 100, decimal) + "%"
    if kind == "date":
        raw = cell.get(_q("office", "date-value"), "")
        if "T" not in raw:
            return raw
        moment = datetime.fromisoformat(raw)
        if moment.time() == datetime.min.time():
            return moment.date().isoformat()
        return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")
    if kind == "time":
        match = _ODS_TIME.fullmatch(cell.get(_q("office", "time-value"), ""))
        if match:
            hours, minutes, secs = int(match.group(1)), int(match.group(2)), float(match.group(3))
            return f"{hours:02d}:{minutes:02d}" + (f":{round(secs):02d}" if round(secs) else "")
        return shown
    if kind == "boolean":
        return "TRUE" if cell.get(_q("office", "boolean-value")) == "true" else "FALSE"
    return shown


def _ods_text(element: ET.Element) -> str:
    parts = [element.text or ""]
    for child in element:
        name = _local(child.tag)
        if name == "s":
            parts.append(" " * int(child.get(_q("text", "c"), "1")))
        elif name == "tab":
            parts.append("\t")
        elif name == "line-break":
            parts.append("\n")
        else:
            parts.append(_ods_text(child))
        parts.append(child.tail or "")
    return "".join(parts)
