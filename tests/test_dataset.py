"""The dataset: every format read as text, filtered, numbered by file line, keyed uniquely."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import xlsxwriter

from batch.dataset import load_dataset, read_dataset
from batch.errors import DatasetError, JobFileError
from batch.formats import parse_date, parse_number
from batch.jobfile import Job, load_job


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    return tmp_path


def make_job(job_dir: Path, dataset: str, recipient: str = "") -> Job:
    text = (
        f"campaign: c\ndataset: {dataset}\n{recipient}message: {{subject: hi, html: body.html}}\n"
    )
    (job_dir / "job.yaml").write_text(text)
    return load_job(job_dir / "job.yaml")


def csv_job(job_dir: Path, content: bytes, extra: str = "") -> Job:
    (job_dir / "d.csv").write_bytes(content)
    return make_job(job_dir, f"{{path: d.csv, key: id{extra}}}")


def test_csv_is_read_as_text_with_line_numbers(job_dir: Path) -> None:
    frame = read_dataset(csv_job(job_dir, b"id,name,email\n007,Ann,a@example.com\n8,Bob,\n"))
    assert frame["id"].to_list() == ["007", "8"]
    assert frame["email"].to_list() == ["a@example.com", ""]  # empty cells are "", not null
    assert frame["__row__"].to_list() == [2, 3]
    assert frame["__key__"].to_list() == ["007", "8"]
    assert frame.schema["__row__"] == pl.Int64


def test_quoted_newlines_and_blank_lines_keep_file_line_numbers(job_dir: Path) -> None:
    content = b'id,note\r\n1,"two\r\nlines, with comma"\r\n\r\n2,"say ""hi"""\r\n3,x\r\n'
    frame = read_dataset(csv_job(job_dir, content))
    assert frame["__row__"].to_list() == [2, 5, 6]
    assert frame["note"].to_list() == ["two\r\nlines, with comma", 'say "hi"', "x"]


def test_utf8_bom_is_tolerated(job_dir: Path) -> None:
    frame = read_dataset(csv_job(job_dir, "\ufeffid,name\n1,Zoë\n".encode()))
    assert frame.columns[:2] == ["id", "name"]
    assert frame["name"][0] == "Zoë"


def test_delimiter_and_latin1_encoding(job_dir: Path) -> None:
    content = "id;name\n1;Muñoz; Sr.\n".replace("; Sr.", " Sr.").encode("latin-1")
    frame = read_dataset(csv_job(job_dir, content, ", delimiter: ';', encoding: latin-1"))
    assert frame["name"].to_list() == ["Muñoz Sr."]


def test_wrong_encoding_names_the_line(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"d.csv:3: not valid utf-8"):
        read_dataset(csv_job(job_dir, "id,n\n1,a\n2,Muñoz\n".encode("latin-1")))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"id,name,email\n1,a,x\n2,b\n3,c,z\n", "d.csv:3: expected 3 fields, found 2"),
        (b"id,name,email\n1,a,x\n2,b,y\n3,c,z,extra\n", "d.csv:4: expected 3 fields, found 4"),
        (b'id,name\n1,"a\nb"\n2\n', "d.csv:4: expected 2 fields, found 1"),
        (b'a,b,c\n1,"x,y",z\n2,"x,y"\n3,p,q\n', "d.csv:3: expected 3 fields, found 2"),
        (b'a,b\r\n1,"x,y"\r\n2,"x,y",z\r\n', "d.csv:3: expected 2 fields, found 3"),
    ],
)
def test_malformed_lines_are_errors_naming_the_line(
    job_dir: Path, content: bytes, expected: str
) -> None:
    with pytest.raises(DatasetError, match=r"expected \d+ fields, found \d+") as info:
        read_dataset(csv_job(job_dir, content))
    assert expected in str(info.value)


def test_excel_named_sheet_as_text_with_sheet_rows(job_dir: Path) -> None:
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    book.add_worksheet("Other").write_row(0, 0, ["nothing"])
    sheet = book.add_worksheet("Clients")
    sheet.write_row(0, 0, ["id", "name", "amount"])
    sheet.write_row(1, 0, ["007", "Ann", 12])
    sheet.write_row(3, 0, ["9", "Bob"])  # row 3 is left blank on purpose
    book.close()
    frame = read_dataset(make_job(job_dir, "{path: d.xlsx, sheet: Clients, key: id}"))
    assert frame["id"].to_list() == ["007", "9"]
    assert frame["amount"].to_list() == ["12", ""]
    assert frame["__row__"].to_list() == [2, 4]


def test_excel_missing_sheet(job_dir: Path) -> None:
    book = xlsxwriter.Workbook(str(job_dir / "d.xlsx"))
    book.add_worksheet("Clients").write_row(0, 0, ["id"])
    book.close()
    with pytest.raises(DatasetError, match="no sheet named 'Nope'"):
        read_dataset(make_job(job_dir, "{path: d.xlsx, sheet: Nope, key: id}"))


def test_parquet_keeps_types_and_numbers_by_position(job_dir: Path) -> None:
    pl.DataFrame({"id": [10, 11], "email": ["a@example.com", "b@example.com"]}).write_parquet(
        job_dir / "d.parquet"
    )
    frame = read_dataset(make_job(job_dir, "{path: d.parquet, key: id}"))
    assert frame["__row__"].to_list() == [1, 2]
    assert frame["__key__"].to_list() == ["10", "11"]


def test_where_filters_rows_and_keeps_file_rows(job_dir: Path) -> None:
    content = b"id,status,amount\n1,active,5\n2,inactive,7\n3,active,9\n"
    frame = read_dataset(csv_job(job_dir, content, ", where: \"status = 'active'\""))
    assert frame["id"].to_list() == ["1", "3"]
    assert frame["__row__"].to_list() == [2, 4]


def test_where_says_how_many_rows_it_kept(job_dir: Path) -> None:
    content = b"id,status\n1,active\n2,inactive\n3,active\n"
    loaded = load_dataset(csv_job(job_dir, content, ", where: \"status = 'active'\""))
    assert loaded.notes == [f"where: kept 2 of 3 row(s) of {job_dir / 'd.csv'}"]


def test_a_where_that_keeps_no_row_says_so(job_dir: Path) -> None:
    """A typo in `where` (`'activ'`) must not pass for a month with nobody to notify."""
    content = b"id,status\n1,active\n2,inactive\n"
    loaded = load_dataset(csv_job(job_dir, content, ", where: \"status = 'activ'\""))
    assert loaded.frame.height == 0
    assert loaded.notes == [
        f"where: no row of the 2 in {job_dir / 'd.csv'} matches status = 'activ'; nothing to send"
    ]


def test_bad_where_is_a_job_file_error(job_dir: Path) -> None:
    with pytest.raises(JobFileError, match=r"dataset.where: no column .nope. in the dataset"):
        read_dataset(csv_job(job_dir, b"id\n1\n", ", where: 'nope = 1'"))


def test_duplicate_keys_name_the_rows(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"'1' on rows 2, 4"):
        read_dataset(csv_job(job_dir, b"id,name\n1,a\n2,b\n1,c\n"))


def test_empty_keys_name_the_rows(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"empty key 'id' on rows 3"):
        read_dataset(csv_job(job_dir, b"id,name\n1,a\n,b\n"))


def test_missing_key_column(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"key column 'id' not found \(columns: name\)"):
        read_dataset(csv_job(job_dir, b"name\na\n"))


def test_missing_file(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope.csv: dataset not found"):
        read_dataset(make_job(job_dir, "{path: nope.csv}"))


def test_default_key_is_the_address_and_must_be_unique(job_dir: Path) -> None:
    (job_dir / "d.csv").write_bytes(b"email\nAnn@Example.com\n b@example.com\nann@example.COM\n")
    with pytest.raises(DatasetError, match=r"'ann@example.com' on rows 2, 4"):
        read_dataset(make_job(job_dir, "{path: d.csv}"))


def test_default_key_follows_a_composed_recipient_template(job_dir: Path) -> None:
    (job_dir / "d.csv").write_bytes(b"user,domain\nann,example.com\nbob,example.com\n")
    job = make_job(job_dir, "{path: d.csv}", "recipient: {email: '{{ user }}@{{ domain }}'}\n")
    assert read_dataset(job)["__key__"].to_list() == ["ann@example.com", "bob@example.com"]


def test_a_million_rows_keep_their_line_numbers(job_dir: Path) -> None:
    # How fast this is read is measured by `make bench`, never asserted here.
    lines = "".join(f'C-{i},Name {i},u{i}@example.com,"Madrid, ES"\n' for i in range(1_000_000))
    (job_dir / "d.csv").write_text("id,name,email,city\n" + lines)
    frame = read_dataset(make_job(job_dir, "{path: d.csv, key: id}"))
    assert frame.height == 1_000_000
    assert frame["__row__"][-1] == 1_000_001
    assert frame["city"][-1] == "Madrid, ES"


@pytest.mark.parametrize(
    ("text", "decimal", "number"),
    [
        ("1.234,56", ",", Decimal("1234.56")),
        ("1.234.567,8", ",", Decimal("1234567.8")),
        ("-99,90", ",", Decimal("-99.90")),
        ("250", ",", Decimal("250")),
        ("1.234", ",", Decimal("1234")),
        ("1,234.56", ".", Decimal("1234.56")),
        ("1.234", ".", Decimal("1.234")),
        ("1.234,56", ".", None),  # the other convention: not a number, never 1.23456
        ("12.34.5", ",", None),  # groups of three only
        ("abc", ".", None),
    ],
)
def test_parse_number_follows_the_dataset_convention(
    text: str, decimal: str, number: Decimal | None
) -> None:
    if number is None:
        with pytest.raises(ValueError, match="not a number"):
            parse_number(text, decimal)
    else:
        assert parse_number(text, decimal) == number


def test_parse_date_reads_iso_and_the_dataset_format() -> None:
    assert parse_date("2026-11-02") == dt.date(2026, 11, 2)
    assert parse_date("02/11/2026", "%d/%m/%Y") == dt.date(2026, 11, 2)
    with pytest.raises(ValueError, match=r"set dataset\.date_format"):
        parse_date("02/11/2026")
    with pytest.raises(ValueError, match="not a date written as"):
        parse_date("31/02/2026", "%d/%m/%Y")


def test_where_view_is_the_frame_itself_under_the_defaults(job_dir: Path) -> None:
    # decimal "." without date_format: `where` sees the cells exactly as before.
    content = b'id,amount\n1,"1,500.00"\n2,99\n'
    frame = read_dataset(csv_job(job_dir, content, ", where: \"amount = '1,500.00'\""))
    assert frame["id"].to_list() == ["1"]


def test_decimal_comma_where_keeps_the_cell_text(job_dir: Path) -> None:
    content = b"id;importe\n1;1.234,56\n2;99,9\n3;n/a\n"
    extra = ", delimiter: ';', decimal: ',', where: 'TRY_CAST(importe AS DOUBLE) > 100'"
    frame = read_dataset(csv_job(job_dir, content, extra))
    assert frame["importe"].to_list() == ["1.234,56"]
