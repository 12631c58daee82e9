"""Numbers and dates as a person reads them: cells parsed with the dataset's conventions,
printed in the job's locale (Babel, CLDR data).

Reading: `parse_number` takes numbers as they are and text written with the dataset's
`decimal` separator ("." or ","), with or without grouping (`1,234.50` / `1.234,50`);
text that only makes sense under the other convention is refused with that hint, and
`1,234` under the default "." is refused as ambiguous. Floats keep the 15 significant
digits a spreadsheet shows. `parse_date` takes date/datetime objects (Excel cells), ISO
text, and text in the dataset's `date_format` (strptime, e.g. `%d/%m/%Y`).

Printing: `money`, `number` and `date` (the template filters) follow the locale. The default
locale `en` keeps lmbatch's own locale-free money ("1,234.50 EUR"), so messages rendered
before locales existed render the same; any other locale, `en_US` included, prints CLDR's
form ("€1,234.50", "1.234,50 €"). No formatter drops a significant digit: decimals beyond
what the format shows are an error naming their likely cause.
"""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

DEFAULT_LOCALE = "en"  # keeps lmbatch's own locale-free money format ("1,234.50 EUR")
DECIMALS = (".", ",")


class FilterValueError(ValueError):
    """A filter got a value it cannot format; reported as a row error."""


def check_locale(name: str) -> Locale:
    """The Babel locale for a CLDR name; ValueError naming it if there is none."""
    try:
        return Locale.parse(name)
    except (UnknownLocaleError, ValueError) as err:
        raise ValueError(f"unknown locale {name!r} (use a CLDR name such as en, es_ES)") from err


def check_timezone(name: str) -> tzinfo:
    """The zone for an IANA name; ValueError naming it if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r}") from err


_GROUPED = {
    ".": re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"),
    ",": re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?"),
}
_AMBIGUOUS = re.compile(r"[+-]?\d{1,3},\d{3}")  # 1,234 under the default decimal point
_THOUSANDS = re.compile(r"[+-]?\d{1,3}\.\d{3}")  # 1.234: Spanish thousands, likely
_SPACES = str.maketrans("", "", " _\u00a0\u202f")


def parse_number(value: Any, decimal: str = ".", what: str = "number") -> Decimal:
    """A cell as a Decimal: numbers as they are, text written with `decimal` (and grouping)."""
    if isinstance(value, bool) or value is None or value == "":
        raise FilterValueError(f"{what}: not {_NOUN.get(what, 'a number')}: {value!r}")
    if isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(f"{value:.15g}")  # the 15 digits a spreadsheet shows
    else:
        text = str(value).strip().translate(_SPACES)
        if not _GROUPED[decimal].fullmatch(text):
            other = "," if decimal == "." else "."
            hint = ""
            if _GROUPED[other].fullmatch(text):
                hint = f" (written with a decimal {_NAMES[other]}? set dataset.decimal: {other!r})"
            raise FilterValueError(f"{what}: not {_NOUN.get(what, 'a number')}: {value!r}{hint}")
        group = "," if decimal == "." else "."
        if decimal == "." and _AMBIGUOUS.fullmatch(text):
            raise FilterValueError(
                f"{what}: {value!r} is ambiguous: a thousands separator or a decimal comma? "
                "set dataset.decimal: ',' (or '.') to say which"
            )
        amount = Decimal(text.replace(group, "").replace(decimal, "."))
    if not amount.is_finite():
        raise FilterValueError(f"{what}: not {_NOUN.get(what, 'a number')}: {value!r}")
    return amount


_NAMES = {".": "point", ",": "comma"}
_NOUN = {"money": "an amount"}


def _fixed(
    amount: Decimal, digits: int, value: Any, what: str, decimal: str, shows: str
) -> Decimal:
    """`amount` with exactly `digits` decimals; FilterValueError if that would drop a digit."""
    try:
        fixed = amount.quantize(Decimal(1).scaleb(-digits))
    except InvalidOperation as err:
        raise FilterValueError(f"{what}: {value!r} is too large") from err
    if fixed != amount:
        hint = ""
        if isinstance(value, str) and decimal == "." and _THOUSANDS.fullmatch(value.strip()):
            hint = ": is '.' a thousands separator? then set dataset.decimal: ','"
        raise FilterValueError(
            f"{what}: {value!r} has more decimals than {shows} shows ({digits}); "
            f"it would be rounded{hint}"
        )
    return fixed


def money(
    value: Any,
    currency: str = "EUR",
    decimals: int | None = None,
    *,
    locale: str = DEFAULT_LOCALE,
    decimal: str = ".",
) -> str:
    """An amount in the job's locale: `1234.5|money('EUR')` → "1.234,50 €" in es_ES.

    The default locale `en` keeps lmbatch's locale-free form "1,234.50 EUR". `decimals`
    defaults to the currency's own (2 for EUR, 0 for JPY); digits beyond it are an error.
    """
    amount = parse_number(value, decimal, "money")
    digits = (
        int(decimals)
        if decimals is not None
        else babel_numbers.get_currency_precision(currency)
        if currency
        else 2
    )
    shows = currency or "the amount"
    fixed = _fixed(amount, digits, value, "money", decimal, shows)
    if locale == DEFAULT_LOCALE:
        text = f"{fixed:,.{digits}f}"
        return f"{text} {currency}" if currency else text
    loc = check_locale(locale)
    if not currency:
        return str(_decimal_pattern(loc, digits).apply(fixed, loc))
    pattern = babel_numbers.parse_pattern(loc.currency_formats["standard"].pattern)
    pattern.frac_prec = (digits, digits)
    return str(pattern.apply(fixed, loc, currency=currency, currency_digits=False))


def _decimal_pattern(loc: Locale, digits: int) -> babel_numbers.NumberPattern:
    pattern = babel_numbers.parse_pattern(loc.decimal_formats[None].pattern)
    pattern.frac_prec = (digits, digits)
    return pattern


def number(
    value: Any, decimals: int | None = None, *, locale: str = DEFAULT_LOCALE, decimal: str = "."
) -> str:
    """A number in the job's locale with its digits as written: `1234.5|number` → "1.234,5" (es)."""
    amount = parse_number(value, decimal, "number")
    exponent = int(amount.as_tuple().exponent)
    digits = int(decimals) if decimals is not None else max(-exponent, 0)
    fixed = _fixed(amount, digits, value, "number", decimal, "the format")
    loc = check_locale(locale)
    return str(_decimal_pattern(loc, digits).apply(fixed, loc))


_STYLES = frozenset({"short", "medium", "long", "full"})
_NAMED = re.compile(r"%[%AaBb]")


def parse_date(value: Any, date_format: str | None = None) -> date:
    """A cell as a date or datetime: objects as they are, ISO text, or the dataset's format."""
    if isinstance(value, datetime | date):
        return value
    text = str(value).strip() if value is not None else ""
    try:
        if "T" in text or " " in text:
            return datetime.fromisoformat(text)
        return date.fromisoformat(text)
    except ValueError:
        pass
    if date_format:
        try:
            parsed = datetime.strptime(text, date_format)
        except ValueError:
            pass
        else:
            return parsed if re.search(r"%[HIMSfp]", date_format) else parsed.date()
        raise FilterValueError(f"date: {value!r} is not a date written as {date_format!r}")
    hint = " (set dataset.date_format, e.g. '%d/%m/%Y')" if re.search(r"\d[/.-]\d", text) else ""
    raise FilterValueError(f"date: not an ISO date: {value!r}{hint}")


def format_date(
    value: Any,
    fmt: str | None = None,
    *,
    locale: str = DEFAULT_LOCALE,
    date_format: str | None = None,
    timezone: str | None = None,
) -> str:
    """Format a date: a strftime pattern (`%d/%m/%Y`), a CLDR style (`long`) or CLDR pattern.

    Without `fmt` the date prints as ISO `2026-11-29`. Month and day names follow the locale,
    also in strftime patterns (`%B` → "noviembre" in es_ES). Aware datetimes are shown in
    the job's time zone.
    """
    parsed = parse_date(value, date_format)
    if timezone and isinstance(parsed, datetime) and parsed.tzinfo is not None:
        parsed = parsed.astimezone(check_timezone(timezone))
    fmt = "%Y-%m-%d" if fmt is None else str(fmt)
    try:
        if "%" in fmt:
            return parsed.strftime(_localized_names(fmt, parsed, check_locale(locale)))
        if fmt in _STYLES or not isinstance(parsed, datetime):
            day = parsed.date() if isinstance(parsed, datetime) else parsed
            return str(babel_dates.format_date(day, fmt, locale=check_locale(locale)))
        return str(babel_dates.format_datetime(parsed, fmt, locale=check_locale(locale)))
    except (ValueError, KeyError, AttributeError) as err:
        raise FilterValueError(f"date: cannot format with {fmt!r}: {err}") from err


def _localized_names(fmt: str, day: date, loc: Locale) -> str:
    def name(found: re.Match[str]) -> str:
        code = found.group(0)[1]
        if code == "%":
            return "%%"
        width = "wide" if code in "AB" else "abbreviated"
        if code in "Bb":
            text = loc.months["format"][width][day.month]
        else:
            text = loc.days["format"][width][day.weekday()]
        return str(text).replace("%", "%%")

    return _NAMED.sub(name, fmt)
