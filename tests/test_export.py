"""Exports: CSV cells that a spreadsheet would run are neutralised, plain values kept as
themselves; .xlsx text is string cells without an added apostrophe; the address header is
named for the channel."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import polars as pl
import pytest

import batch.export
from batch.export import PLAIN, RISKY, address_header, export, export_failed, is_risky, neutralise
from batch.jobfile import Job, load_job
from batch.ledger import Entry, Ledger, Outcome

# (cell, what a spreadsheet does with it)
FORMULAS = [
    "=SUM(A1)",
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "-",
    "+",
    "@SUM(A1)",
    "\tTabbed",
    "\rCarriage",
    "\n=1+1",
    " =1+1",
    "   +1+1",
    "\xa0=1+1",  # NBSP
    "\u3000=1+1",  # ideographic space
    "\u200b=1+1",  # zero-width space
    "\ufeff=1+1",  # a BOM inside a cell
    "\r\n@x",
    "\x0b-1-1",
    "\uff1d1+1",  # full-width ＝
    "\uff0b1+1",  # ＋
    "\uff0d1+1",  # －
    "\uff20SUM(A1)",  # ＠
    " \uff1dcmd",
    "\ufe66cmd",  # small ﹦
    "+34 612 345 678 =1",
    "-12.50€",
    "-1e5",
    "+34-612-345-678",  # `-` between groups is arithmetic
    "+34 612\n=1",
]
PLAIN_VALUES = [
    "+34 612 345 678",
    "+34612345678",
    "+1 555 0100",
    "-12.50",
    "-12,50",
    "-1.234,50",
    "-1 234,50",
    "-1\xa0234,50",
    "+3",
    "-0",
    "Ana",
    "ana@example.com",
    "O'Neill",
    "'already quoted",
    "x=1",
    "a -b",
    "",
    "1+1",  # no leading sign: text in a CSV
    "\n",
    " ",
    "\xa0Plain",
    "Ａｎａ",  # full-width letters are not signs
]


@pytest.mark.parametrize("cell", FORMULAS)
def test_cells_a_spreadsheet_would_run_are_quoted(cell: str) -> None:
    assert is_risky(cell)
    assert neutralise(pl.DataFrame({"c": [cell]}))["c"].to_list() == ["'" + cell]


@pytest.mark.parametrize("cell", PLAIN_VALUES)
def test_plain_values_are_kept_as_themselves(cell: str) -> None:
    assert not is_risky(cell)
    assert neutralise(pl.DataFrame({"c": [cell]}))["c"].to_list() == [cell]


def test_polars_and_python_read_the_patterns_alike() -> None:
    cells = FORMULAS + PLAIN_VALUES
    frame = pl.DataFrame({"c": cells})
    polars_risky = frame.select(pl.col("c").str.contains(RISKY) & ~pl.col("c").str.contains(PLAIN))
    assert polars_risky["c"].to_list() == [is_risky(c) for c in cells]


def test_headers_numbers_and_nulls() -> None:
    frame = pl.DataFrame({"\uff1dcmd": [None], " -x": ["ok"], "+34 1": ["a"], "n": [-5]})
    out = neutralise(frame)
    assert out.columns == ["'\uff1dcmd", "' -x", "+34 1", "n"]
    assert out.row(0) == (None, "ok", "a", -5)


@pytest.mark.parametrize(
    "channel, header",
    [("email", "lmbatch_email"), ("signature", "lmbatch_email"), ("sms", "lmbatch_phone")],
)
def test_the_address_header_names_what_the_channel_sends_to(channel: str, header: str) -> None:
    assert address_header(channel) == header


# -- whole exports -------------------------------------------------------------------------------

CELLS = FORMULAS + PLAIN_VALUES
SENT_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def write_job(folder: Path, channel: str) -> Job:
    """A job over one column of awkward cells, each row already sent (and one failed)."""
    address = "phone" if channel == "sms" else "email"
    with open(folder / "people.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "note", "=head", address])
        for i, cell in enumerate(CELLS):
            to = f"+3461234{i:04d}" if channel == "sms" else f"p{i}@example.com"
            writer.writerow([f"K-{i:02d}", cell, "x", to])
    recipient = (
        '{phone: "{{ phone }}", default_region: ES}'
        if channel == "sms"
        else '{email: "{{ email }}"}'
    )
    message = '{text: "Hi"}' if channel == "sms" else '{subject: "Notice", html: notice.html}'
    (folder / "notice.html").write_text("<p>Hi</p>", encoding="utf-8")
    (folder / "job.yaml").write_text(
        f"campaign: c\nchannel: {channel}\ndataset: {{path: people.csv, key: id}}\n"
        f"recipient: {recipient}\nmessage: {message}\noutput: out\n",
        encoding="utf-8",
    )
    job = load_job(folder / "job.yaml")
    with Ledger.open(job.output_dir) as ledger:
        for i in range(len(CELLS)):
            key = f"K-{i:02d}"
            to = f"+3461234{i:04d}" if channel == "sms" else f"p{i}@example.com"
            ledger.intent(f"r{i}", [Entry(key, to, "", "h")])
            status = "failed" if i < 3 else "sent"
            outcome = Outcome(key, status, f"t-{i}", None)
            ledger.sent(f"r{i}", parent_tracking_id=f"p{i}", outcomes=[outcome], sent_at=SENT_AT)
    return job


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_xlsx(path: Path) -> list[list[tuple[object, str]]]:
    """(value, openpyxl data type) of every cell, control characters decoded as Excel does.

    OOXML stores a control character in text as `_xHHHH_`; openpyxl hands those back still
    escaped (it only unescapes `_x005F_`), Excel and calamine decode them.
    """
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    return [[(_unescape(c.value), c.data_type) for c in row] for row in sheet.iter_rows()]


def _unescape(value: object) -> object:
    if not isinstance(value, str):
        return value
    return re.sub(r"_x([0-9A-F]{4})_", lambda m: chr(int(m[1], 16)), value)


def test_csv_export_quotes_formulas_and_keeps_phones_and_amounts(tmp_path: Path) -> None:
    rows = read_csv(export(write_job(tmp_path, "email"), "csv"))
    notes = [r["note"] for r in rows]
    expected = ["'" + c if c in FORMULAS else c for c in CELLS]
    # csv.writer wrote the cells; a bare "\r" inside quotes reads back as written
    assert notes == expected
    assert "'=head" in rows[0]
    assert rows[0]["lmbatch_email"] == "p0@example.com"
    assert rows[5]["lmbatch_status"] == "sent"


def test_sms_export_names_the_phone_column_and_keeps_e164_as_is(tmp_path: Path) -> None:
    job = write_job(tmp_path, "sms")
    rows = read_csv(export(job, "csv"))
    assert rows[7]["lmbatch_phone"] == "+34612340007"  # no apostrophe: a phone, not a formula
    assert rows[7]["phone"] == "+34612340007"
    xlsx = read_xlsx(export(job, "xlsx"))
    header = [value for value, _ in xlsx[0]]
    column = header.index("lmbatch_phone")
    assert xlsx[8][column] == ("+34612340007", "s")


def test_xlsx_export_writes_text_as_strings_without_apostrophes(tmp_path: Path) -> None:
    path = export(write_job(tmp_path, "email"), "xlsx")
    book = read_xlsx(path)
    header = [value for value, _ in book[0]]
    assert header[:4] == ["id", "note", "=head", "email"]
    assert {kind for _, kind in book[0]} == {"s"}
    note = header.index("note")
    for cell, row in zip(CELLS, book[1:], strict=True):
        value, kind = row[note]
        if cell == "":
            assert value is None  # an empty string is an empty cell
            continue
        assert kind == "s", (cell, value, kind)  # never "f" (formula) or "n"
        assert value == cell
    # calamine (polars' reader) agrees, with no apostrophe added anywhere
    assert pl.read_excel(path)["note"].fill_null("").to_list() == CELLS


def test_failed_rows_export_follows_the_same_rules(tmp_path: Path) -> None:
    job = write_job(tmp_path, "email")
    path, count = export_failed(job, tmp_path / "failed.csv")
    assert count == 3
    assert [r["note"] for r in read_csv(path)] == ["'" + c for c in CELLS[:3]]
    path, _ = export_failed(job, tmp_path / "failed.xlsx")
    note = [value for value, _ in read_xlsx(path)[0]].index("note")
    assert [row[note] for row in read_xlsx(path)[1:]] == [(c, "s") for c in CELLS[:3]]


def test_a_ledger_calling_the_column_email_exports_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, "sms")
    before = read_csv(export(job, "csv", tmp_path / "before.csv"))
    renamed = batch.export.ledger_frame(job).rename({"address": "email"})
    monkeypatch.setattr(batch.export, "ledger_frame", lambda _job: renamed)
    after = read_csv(export(job, "csv", tmp_path / "after.csv"))
    assert after == before
    assert after[0]["lmbatch_phone"] == "+34612340000"
