"""`dataset.where` is one condition over the columns: never a query, never a file read."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from batch.where import apply_where, compile_where

FRAME = pl.DataFrame(
    {
        "id": ["1", "2", "3", "4"],
        "status": ["active", "active", "closed", "Active"],
        "amount": ["10.5", "0", "7", "3"],
        "importe": ["1.234,56", "99,5", "100,01", "5"],
        "due": ["2026-11-29", "2026-12-01", "2026-11-01", "2027-01-15"],
        "__row__": [2, 3, 4, 5],
    }
)
COLUMNS = ["id", "status", "amount", "importe", "due"]


def ids(frame: pl.DataFrame) -> list[str]:
    return list(frame["id"])


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("status = 'active' AND CAST(amount AS DOUBLE) > 0", ["1"]),
        ("status = 'active'", ["1", "2"]),
        ("\"status\" = 'closed'", ["3"]),
        ("lower(status) = 'active'", ["1", "2", "4"]),
        ("status IN ('closed', 'Active')", ["3", "4"]),
        ("status LIKE 'act%' OR id = '3'", ["1", "2", "3"]),
        ("NOT (status = 'active')", ["3", "4"]),
        ("CAST(id AS INT) BETWEEN 2 AND 3", ["2", "3"]),
        ("id::int % 2 = 0", ["2", "4"]),
        ("due >= '2026-12-01'", ["2", "4"]),
        ("CASE WHEN status = 'closed' THEN TRUE ELSE FALSE END", ["3"]),
        ("COALESCE(status, '') <> ''", ["1", "2", "3", "4"]),
        # Decimal-comma data compared as numbers (the README's recipe).
        ("CAST(REPLACE(REPLACE(importe, '.', ''), ',', '.') AS DOUBLE) > 100", ["1", "3"]),
        ("status = 'it''s'", []),
        ("status = 'SELECT * FROM read_csv(''/etc/passwd'')'", []),  # text, not a query
    ],
)
def test_conditions_filter_as_before(condition: str, expected: list[str]) -> None:
    assert ids(apply_where(FRAME, condition)) == expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("id IN (SELECT id FROM read_csv('{secret}'))", "'SELECT' at character 8: .*not a query"),
        ("read_csv('{secret}') IS NOT NULL", "function 'read_csv' .* not allowed"),
        ("id IN (SELECT * FROM read_parquet('{secret}'))", "not a query"),
        ("EXISTS (SELECT 1)", "'EXISTS'.*not a query"),
        ("(SELECT 1) = 1", "not a query"),
        ("status = 'a' UNION SELECT id FROM self", "not a query"),
        ("status = 'a'; DROP TABLE self", "unexpected character ';'"),
        ("status = 'a' -- comment", "comments are not allowed"),
        ("status = 'a' /* x */", "comments are not allowed"),
        ("self.status = 'a'", "without a table prefix"),
        ("pg_read_file('/etc/passwd') = ''", "function 'pg_read_file'"),
        ("id = ANY(SELECT 1)", "not a query"),
        ("staus = 'active'", "no column 'staus' in the dataset .*did you mean 'status'"),
        ('"__row__" = 2', "no column '__row__'"),
        ("", "empty"),
        ("status = 'a' AND " * 200 + "TRUE", "limit is 2,000"),
        ("status = ", "invalid condition"),
        ("status = $1", "unexpected character '\\$'"),
    ],
)
def test_anything_but_a_condition_is_refused(tmp_path: Path, condition: str, message: str) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("id\n1\n")
    with pytest.raises(ValueError, match=message):
        compile_where(condition.format(secret=secret), COLUMNS)


def test_a_subquery_never_reads_the_file(tmp_path: Path) -> None:
    # polars runs a subquery's table function while it parses: the token scan must come first.
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)  # reading it would block the test forever
    with pytest.raises(ValueError, match="not a query"):
        compile_where(f"id IN (SELECT id FROM read_csv('{fifo}'))", COLUMNS)


def test_extract_may_use_from_inside_its_parentheses() -> None:
    expr = compile_where("EXTRACT(YEAR FROM DATE(due)) = 2027", COLUMNS)
    assert ids(FRAME.filter(expr)) == ["4"]


def test_decimal_comma_text_cast_as_a_number_is_an_error_not_a_silent_drop() -> None:
    with pytest.raises(ValueError, match="conversion from `str` to `f64` failed"):
        apply_where(FRAME, "CAST(importe AS DOUBLE) > 100")


def test_a_type_mismatch_is_reported_when_applied() -> None:
    with pytest.raises(ValueError, match="invalid condition"):
        apply_where(FRAME, "status")


def test_the_expression_is_a_polars_expression_over_the_named_columns() -> None:
    expr = compile_where("status = 'active' AND CAST(amount AS DOUBLE) > 0", COLUMNS)
    assert isinstance(expr, pl.Expr)
    assert sorted(set(expr.meta.root_names())) == ["amount", "status"]
