"""Excel and ODS datasets read as the sheet shows them, every message naming the sheet row.

Workbooks are written by xlsxwriter (the XML Excel writes); a formula without a saved value is
the `<f>…</f><v></v>` cell openpyxl writes; the ODS is the content.xml LibreOffice writes.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from batch.dataset import DatasetProblems, load_dataset, read_dataset
from batch.dataset.excel import _calamine
from batch.dataset.sheetxml import show_number
from batch.errors import DatasetError
from batch.jobfile import Job, load_job


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    return tmp_path


def make_job(job_dir: Path, dataset: str) -> Job:
    text = f"campaign: c\ndataset: {dataset}\nmessage: {{subject: hi, html: body.html}}\n"
    (job_dir / "job.yaml").write_text(text)
    return load_job(job_dir / "job.yaml")


def clientes(path: Path, *, title: bool = False, hidden_first: bool = False) -> None:
    """Spanish client list: padded postal codes, dates, times, booleans, amounts."""
    book = xlsxwriter.Workbook(str(path))
    if hidden_first:
        secret = book.add_worksheet("Plantilla")
        secret.write_row(0, 0, ["id", "email"])
        secret.write_row(1, 0, ["X-1", "wrong@example.com"])
        secret.hide()
    sheet = book.add_worksheet("Clientes")
    sheet.activate()
    postal = book.add_format({"num_format": "00000"})
    day = book.add_format({"num_format": "dd/mm/yyyy"})
    clock = book.add_format({"num_format": "hh:mm"})
    stamp = book.add_format({"num_format": "dd/mm/yyyy hh:mm"})
    amount = book.add_format({"num_format": "#,##0.00"})
    top = 0
    if title:
        sheet.write(0, 0, "Listado de clientes, noviembre 2026")
        top = 2
    sheet.write_row(top, 0, ["id", "cp", "vence", "hora", "cita", "activo", "importe", "email"])
    sheet.write_string(top + 1, 0, "C-1")
    sheet.write_number(top + 1, 1, 8001, postal)
    sheet.write_datetime(top + 1, 2, dt.datetime(2026, 11, 2), day)
    sheet.write_datetime(top + 1, 3, dt.time(9, 30), clock)
    sheet.write_datetime(top + 1, 4, dt.datetime(2026, 11, 2, 9, 30), stamp)
    sheet.write_boolean(top + 1, 5, True)
    sheet.write_number(top + 1, 6, 1234.5, amount)
    sheet.write_string(top + 1, 7, "ana@example.com")
    sheet.write_string(top + 3, 0, "C-2")  # a blank row between: rows keep their numbers
    sheet.write_number(top + 3, 1, 28013, postal)
    sheet.write_boolean(top + 3, 5, False)
    sheet.write_number(top + 3, 6, 12)
    sheet.write_string(top + 3, 7, "bob@example.com")
    book.close()


def test_cells_read_as_the_sheet_shows_them(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx")
    frame = read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))
    assert frame["cp"].to_list() == ["08001", "28013"]  # the 00000 format keeps its zeros
    assert frame["vence"].to_list() == ["2026-11-02", ""]  # a date, no 00:00:00
    assert frame["hora"].to_list() == ["09:30", ""]  # a time, no 1899-12-31
    assert frame["cita"].to_list() == ["2026-11-02 09:30", ""]
    assert frame["activo"].to_list() == ["TRUE", "FALSE"]  # as a CSV export says
    assert frame["importe"].to_list() == ["1234.5", "12"]
    assert frame["__row__"].to_list() == [2, 4]


def test_hidden_first_sheet_is_skipped_and_said(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx", hidden_first=True)
    dataset = load_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))
    assert dataset.frame["email"].to_list() == ["ana@example.com", "bob@example.com"]
    assert dataset.notes == ["sheet 'Clientes' (the first visible sheet)"]


def test_wrong_sheet_lists_the_sheets(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx", hidden_first=True)
    with pytest.raises(
        DatasetError,
        match=r"no sheet named 'Clients' \(sheets: "
        r"'Plantilla' \(hidden\), 'Clientes'\)",
    ):
        read_dataset(make_job(job_dir, "{path: d.xlsx, sheet: Clients, key: id}"))


def test_title_rows_above_the_header(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx", title=True)
    frame = read_dataset(make_job(job_dir, "{path: d.xlsx, key: id, header_row: 3}"))
    assert frame["cp"].to_list() == ["08001", "28013"]
    assert frame["__row__"].to_list() == [4, 6]  # the rows Excel shows


def test_title_row_without_header_row_is_refused_with_a_hint(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx", title=True)
    with pytest.raises(DatasetProblems, match=r"row 4, column B") as info:
        read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))
    assert "header_row: 3" in (info.value.hint or "")


def test_sheet_starting_with_empty_rows_keeps_sheet_rows(job_dir: Path) -> None:
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    sheet = book.add_worksheet("S")
    sheet.write_row(4, 1, ["id", "email"])
    sheet.write_row(5, 1, ["1", "a@example.com"])
    sheet.write_row(6, 1, ["1", "b@example.com"])
    book.close()
    with pytest.raises(DatasetError, match=r"'1' on rows 6, 7"):
        read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))


def test_error_cells_are_refused_all_at_once_with_sheet_row_and_column(job_dir: Path) -> None:
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    sheet = book.add_worksheet("Clientes")
    sheet.write_row(0, 0, ["id", "importe", "email"])
    sheet.write_row(1, 0, ["C-1", 10, "a@example.com"])
    sheet.write_string(2, 0, "C-2")
    sheet.write_formula(2, 1, "=1/0", None, "#DIV/0!")
    sheet.write_string(3, 0, "C-3")
    sheet.write_formula(3, 1, "=VLOOKUP(A4,X:Y,2,0)", None, "#N/A")
    sheet.write_formula(3, 2, "=#REF!", None, "#REF!")
    book.close()
    with pytest.raises(DatasetProblems) as info:
        read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))
    text = str(info.value)
    assert "d.xlsx [Clientes] row 3, column B (importe): the cell shows the error #DIV/0!" in text
    assert "d.xlsx [Clientes] row 4, column B (importe): the cell shows the error #N/A" in text
    assert "d.xlsx [Clientes] row 4, column C (email): the cell shows the error #REF!" in text
    assert [(p.row, p.column) for p in info.value.problems] == [
        (3, "B (importe)"),
        (4, "B (importe)"),
        (4, "C (email)"),
    ]


def _without_cached_values(path: Path) -> None:
    """Rewrite formula cells as openpyxl writes them: `<f>…</f><v></v>`, no saved value."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    parts["xl/worksheets/sheet1.xml"] = re.sub(r"(</f>)<v>[^<]*</v>", r"\1<v></v>", sheet).encode()
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)


def test_formula_without_a_saved_value_is_refused(job_dir: Path) -> None:
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    sheet = book.add_worksheet("Hoja1")
    sheet.write_row(0, 0, ["id", "total"])
    sheet.write_row(1, 0, ["C-1"])
    sheet.write_formula(1, 1, "=2*21")
    book.close()
    _without_cached_values(job_dir / "d.xlsx")
    with pytest.raises(
        DatasetProblems,
        match=r"row 2, column B \(total\): a formula without "
        r"a saved value: open the file in Excel or LibreOffice and save it",
    ):
        read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))


@pytest.mark.parametrize(
    ("value", "code", "shown"),
    [
        (8001, "00000", "08001"),
        (46328, "yyyy-mm-dd", "2026-11-02"),
        (46328.5, "d/m/yy h:mm", "2026-11-02 12:00"),
        (0.39583333333, "h:mm:ss AM/PM", "09:30:00"),
        (0.15, "0%", "15%"),
        (1234.5, "0.00", "1234.50"),
        (0.1 + 0.2, "General", "0.3"),
        (1234.5, '#,##0.00 "€"', "1234.5"),
        (46328, '[$-es-ES]d "de" mmmm "de" yyyy', "2026-11-02"),
    ],
)
def test_number_formats(value: float, code: str, shown: str) -> None:
    assert show_number(value, code) == shown


# --- ODS, as LibreOffice writes content.xml ----------------------------------------------------

_ODS_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:calcext="urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0" '
    'office:version="1.3"><office:automatic-styles>'
    '<style:style style:name="ta1" style:family="table" style:master-page-name="Default">'
    '<style:table-properties table:display="true" style:writing-mode="lr-tb"/></style:style>'
    '<style:style style:name="ta2" style:family="table" style:master-page-name="Default">'
    '<style:table-properties table:display="false" style:writing-mode="lr-tb"/></style:style>'
    "</office:automatic-styles><office:body><office:spreadsheet>"
)


def _ods(path: Path, tables: str) -> None:
    content = _ODS_HEAD + tables + "</office:spreadsheet></office:body></office:document-content>"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet"
        )
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)


def _cell(text: str, attrs: str = "") -> str:
    return f"<table:table-cell {attrs}><text:p>{text}</text:p></table:table-cell>"


def _string(text: str) -> str:
    return _cell(text, 'office:value-type="string" calcext:value-type="string"')


_ODS_TABLES = (
    '<table:table table:name="Oculta" table:style-name="ta2"><table:table-row>'
    + _string("id")
    + "</table:table-row></table:table>"
    '<table:table table:name="Clientes" table:style-name="ta1">'
    '<table:table-column table:number-columns-repeated="6"/>'
    '<table:table-row table:number-rows-repeated="2"><table:table-cell '
    'table:number-columns-repeated="6"/></table:table-row><table:table-row>'
    + "".join(_string(h) for h in ("id", "cp", "vence", "hora", "activo", "total"))
    + "</table:table-row><table:table-row>"
    + _string("C-1")
    + _cell("08001", 'office:value-type="float" office:value="8001" calcext:value-type="float"')
    + _cell(
        "02/11/26",
        'office:value-type="date" office:date-value="2026-11-02" calcext:value-type="date"',
    )
    + _cell(
        "09:30",
        'office:value-type="time" office:time-value="PT09H30M00S" calcext:value-type="time"',
    )
    + _cell(
        "VERDADERO",
        'office:value-type="boolean" office:boolean-value="true" calcext:value-type="boolean"',
    )
    + _cell("1.234,5", 'office:value-type="float" office:value="1234.5" calcext:value-type="float"')
    + "</table:table-row><table:table-row>"
    + _string("C-2")
    + '<table:table-cell table:number-columns-repeated="4"/>'
    + _cell(
        "#DIV/0!",
        'table:formula="of:=1/[.A1]" office:value-type="float" office:value="" '
        'calcext:value-type="error"',
    )
    + '</table:table-row><table:table-row table:number-rows-repeated="1048570">'
    '<table:table-cell table:number-columns-repeated="6"/></table:table-row></table:table>'
)


def test_ods_first_visible_sheet_as_shown_with_sheet_rows(job_dir: Path) -> None:
    _ods(job_dir / "d.ods", _ODS_TABLES)
    with pytest.raises(DatasetProblems) as info:
        read_dataset(make_job(job_dir, "{path: d.ods, key: id}"))
    assert (
        str(info.value)
        .splitlines()[0]
        .endswith("d.ods [Clientes] row 5, column F (total): the cell shows the error #DIV/0!")
    )
    # The other rows are checked too: this job's template wants columns the sheet lacks.
    assert info.value.row_errors


def test_ods_values(job_dir: Path) -> None:
    tables = _ODS_TABLES.replace(
        'table:formula="of:=1/[.A1]" office:value-type="float" office:value="" '
        'calcext:value-type="error"><text:p>#DIV/0!',
        'office:value-type="float" office:value="7" calcext:value-type="float"><text:p>7',
    )
    _ods(job_dir / "d.ods", tables)
    dataset = load_dataset(make_job(job_dir, "{path: d.ods, key: id}"))
    frame = dataset.frame
    assert frame["cp"].to_list() == ["08001", ""]
    assert frame["vence"].to_list() == ["2026-11-02", ""]
    assert frame["hora"].to_list() == ["09:30", ""]
    assert frame["activo"].to_list() == ["TRUE", ""]
    assert frame["total"].to_list() == ["1234.5", "7"]
    assert frame["__row__"].to_list() == [4, 5]
    assert dataset.notes == ["sheet 'Clientes' (the first visible sheet)"]


def test_legacy_formats_through_calamine_clean_dates_times_and_booleans(tmp_path: Path) -> None:
    # .xls/.xlsb cannot be written here; calamine reads the xlsx the same way it reads them.
    clientes(tmp_path / "d.xlsx", hidden_first=True)
    sheet, info = _calamine(tmp_path / "d.xlsx", "d.xlsx", None)
    assert info.name == "Clientes"  # the first visible sheet
    assert [sheet.rows[2][i] for i in (2, 3, 4, 5)] == [
        "2026-11-02",
        "09:30",
        "2026-11-02 09:30",
        "TRUE",
    ]


def test_decimal_comma_shows_sheet_numbers_as_a_spanish_sheet_does(job_dir: Path) -> None:
    clientes(job_dir / "d.xlsx")
    where = "where: 'CAST(importe AS DOUBLE) > 100'"
    frame = read_dataset(make_job(job_dir, f"{{path: d.xlsx, key: id, decimal: ',', {where}}}"))
    assert frame["importe"].to_list() == ["1234,5"]  # one convention for the whole dataset
    assert frame["cp"].to_list() == ["08001"]
    assert frame["vence"].to_list() == ["2026-11-02"]


def test_decimal_comma_in_ods(job_dir: Path) -> None:
    tables = _ODS_TABLES.replace(
        'table:formula="of:=1/[.A1]" office:value-type="float" office:value="" '
        'calcext:value-type="error"><text:p>#DIV/0!',
        'office:value-type="percentage" office:value="0.125" calcext:value-type="percentage">'
        "<text:p>12,50 %",
    )
    _ods(job_dir / "d.ods", tables)
    frame = read_dataset(make_job(job_dir, "{path: d.ods, key: id, decimal: ','}"))
    assert frame["total"].to_list() == ["1234,5", "12,5%"]


def test_1904_date_system() -> None:
    assert show_number(45000 - 1462, "dd/mm/yyyy", date1904=True) == "2023-03-15"
    assert show_number(45000, "dd/mm/yyyy") == "2023-03-15"


def test_inline_strings_formula_strings_and_cells_without_references(job_dir: Path) -> None:
    # Written by tools that skip shared strings and cell references (allowed by the standard).
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    book.add_worksheet("S").write_row(0, 0, ["placeholder"])
    book.close()
    rows = (
        '<row r="1"><c t="inlineStr"><is><t>id</t></is></c>'
        '<c t="inlineStr"><is><r><t>na</t></r><r><t>me</t></r></is></c></row>'
        '<row r="2"><c t="inlineStr"><is><t xml:space="preserve">C-1 </t></is></c>'
        '<c t="str"><f>"An"&amp;"n"</f><v>Ann</v></c></row>'
    )
    with zipfile.ZipFile(job_dir / "d.xlsx") as source:
        parts = {name: source.read(name) for name in source.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    sheet = re.sub(r"<sheetData>.*</sheetData>", f"<sheetData>{rows}</sheetData>", sheet)
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(job_dir / "d.xlsx", "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)
    frame = read_dataset(make_job(job_dir, "{path: d.xlsx, key: id}"))
    assert frame["id"].to_list() == ["C-1 "]
    assert frame["name"].to_list() == ["Ann"]
