"""Numbers and dates read as the dataset writes them and printed in the job's locale."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from batch.formats import FilterValueError, format_date, money, number

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("value", "args", "kwargs", "expected"),
    [
        # The default locale keeps today's output (tests/test_render.py).
        ("1234.5", (), {}, "1,234.50 EUR"),
        (1234.5, ("USD",), {}, "1,234.50 USD"),
        ("-3", ("", 0), {}, "-3"),
        ("1000000", ("EUR", 1), {}, "1,000,000.0 EUR"),
        ("1,234.50", (), {}, "1,234.50 EUR"),
        ("1234", ("JPY",), {}, "1,234 JPY"),
        # CLDR locales.
        (1234.5, ("EUR",), {"locale": "es_ES"}, f"1.234,50{NBSP}€"),
        ("1234.5", ("EUR",), {"locale": "en_US"}, "€1,234.50"),
        ("1234,56", ("EUR",), {"locale": "es_ES", "decimal": ","}, f"1.234,56{NBSP}€"),
        ("1.234,56", ("EUR",), {"locale": "es_ES", "decimal": ","}, f"1.234,56{NBSP}€"),
        ("1.234,56", ("EUR",), {"decimal": ","}, "1,234.56 EUR"),
        ("1 234,56", ("EUR",), {"locale": "fr_FR", "decimal": ","}, "1\u202f234,56\u00a0€"),
        ("7", ("EUR", 0), {"locale": "es_ES"}, f"7{NBSP}€"),
        ("1234.5", ("",), {"locale": "es_ES"}, "1.234,50"),
        (0.1 + 0.2, ("EUR",), {}, "0.30 EUR"),  # the 15 digits a spreadsheet shows
    ],
)
def test_money(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str) -> None:
    assert money(value, *args, **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("1.234", {}, "thousands separator.*dataset.decimal: ','"),
        ("12.345", {}, "more decimals than EUR shows"),
        ("1,5", {}, "decimal comma.*dataset.decimal: ','"),
        ("1,234", {}, "ambiguous"),
        ("1.5", {"decimal": ","}, "decimal point.*dataset.decimal: '.'"),
        ("12.5", {"decimals": 0}, "more decimals"),
        ("lots", {}, "money: not an amount: 'lots'"),
        ("", {}, "not an amount"),
        (None, {}, "not an amount"),
        (True, {}, "not an amount"),
        ("nan", {}, "not an amount"),
        (float("inf"), {}, "not an amount"),
    ],
)
def test_money_refuses_to_drop_or_guess_digits(
    value: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(FilterValueError, match=message):
        money(value, **kwargs)


@pytest.mark.parametrize(
    ("value", "args", "kwargs", "expected"),
    [
        ("1234.5", (), {}, "1,234.5"),
        ("1234.50", (), {"locale": "es_ES"}, "1.234,50"),
        (1234.5, (), {"locale": "es_ES"}, "1.234,5"),
        ("1.234,5", (2,), {"locale": "es_ES", "decimal": ","}, "1.234,50"),
        (3, (), {"locale": "de_DE"}, "3"),
    ],
)
def test_number(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], expected: str) -> None:
    assert number(value, *args, **kwargs) == expected


def test_number_says_number() -> None:
    with pytest.raises(FilterValueError, match="number: not a number: 'x'"):
        number("x")


def test_number_refuses_to_round() -> None:
    with pytest.raises(FilterValueError, match="more decimals"):
        number("1.25", 1)


@pytest.mark.parametrize(
    ("value", "fmt", "kwargs", "expected"),
    [
        # Today's behaviour (tests/test_render.py).
        ("2026-01-31", "%d/%m/%Y", {}, "31/01/2026"),
        ("2026-01-31T09:30:00", "%H:%M", {}, "09:30"),
        ("2026-01-31 09:30", "%Y", {}, "2026"),
        ("2026-11-29", None, {}, "2026-11-29"),
        # Locales, styles and patterns.
        ("2026-11-29", "long", {"locale": "es_ES"}, "29 de noviembre de 2026"),
        ("2026-11-29", "long", {}, "November 29, 2026"),
        ("2026-11-29", "%d de %B de %Y", {"locale": "es_ES"}, "29 de noviembre de 2026"),
        ("2026-11-29", "%A %d %b", {"locale": "es_ES"}, "domingo 29 nov"),
        ("2026-11-29", "%d%% %B", {}, "29% November"),
        ("2026-11-29", "dd/MM/yyyy", {"locale": "es_ES"}, "29/11/2026"),
        # Cells as they come: date objects (Excel), datetimes, the dataset's own format.
        (date(2026, 12, 15), "long", {"locale": "es_ES"}, "15 de diciembre de 2026"),
        (datetime(2026, 12, 15, 0, 0), None, {}, "2026-12-15"),
        ("15/12/2026", "%Y-%m-%d", {"date_format": "%d/%m/%Y"}, "2026-12-15"),
        ("2026-12-15", "%d.%m.%Y", {"date_format": "%d/%m/%Y"}, "15.12.2026"),
        (
            datetime(2026, 12, 15, 23, 30, tzinfo=UTC),
            "%d %H:%M",
            {"timezone": "Europe/Madrid"},
            "16 00:30",
        ),
    ],
)
def test_date(value: Any, fmt: str | None, kwargs: dict[str, Any], expected: str) -> None:
    assert format_date(value, fmt, **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("15/12/2026", {}, "not an ISO date.*date_format"),
        ("31/02/2026", {"date_format": "%d/%m/%Y"}, "not a date written as '%d/%m/%Y'"),
        ("soon", {}, "not an ISO date"),
        (None, {}, "not an ISO date"),
    ],
)
def test_date_errors(value: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterValueError, match=message):
        format_date(value, "%Y", **kwargs)
