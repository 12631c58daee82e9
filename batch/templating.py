"""The Jinja environments every template is rendered with, and their filters.

One home for the environment: the job file's checks, the campaign name and every row's
fields compile against the same loader, filters and `finalize`, so what validates renders.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jinja2


class FilterValueError(ValueError):
    """A filter got a value it cannot format; reported as a row error."""


def money(value: Any, currency: str = "EUR", decimals: int = 2) -> str:
    """Format an amount locale-free: `1234.5|money` → "1,234.50 EUR"."""
    if isinstance(value, bool) or value is None or value == "":
        raise FilterValueError(f"money: not an amount: {value!r}")
    try:
        amount = Decimal(str(value).strip().replace("_", ""))
    except InvalidOperation as err:
        raise FilterValueError(f"money: not an amount: {value!r}") from err
    if not amount.is_finite():
        raise FilterValueError(f"money: not an amount: {value!r}")
    text = f"{amount:,.{int(decimals)}f}"
    return f"{text} {currency}" if currency else text


def format_date(value: Any, fmt: str = "%Y-%m-%d") -> str:
    """Format an ISO date or datetime (string or object) with strftime: `due|date("%d/%m/%Y")`."""
    if isinstance(value, datetime | date):
        return value.strftime(fmt)
    text = str(value).strip() if value is not None else ""
    try:
        parsed: date = (
            datetime.fromisoformat(text)
            if "T" in text or " " in text
            else (date.fromisoformat(text))
        )
    except ValueError as err:
        raise FilterValueError(f"date: not an ISO date: {value!r}") from err
    return parsed.strftime(fmt)


def finalize(value: Any) -> Any:
    """Empty cells (None in Parquet) print as nothing rather than "None"."""
    return "" if value is None else value


def template_dirs(base_dir: Path) -> list[Path]:
    """Where template files are looked up: next to the job file, then the templates/ folders."""
    base = base_dir.resolve()  # a job named as `job.yaml` has parent `.`, whose parent is `.`
    return [base, base / "templates", base.parent / "templates"]


def make_environments(base_dir: Path) -> tuple[jinja2.Environment, jinja2.Environment]:
    """The (plain text, autoescaped HTML) Jinja environments for a job folder."""
    loader = jinja2.FileSystemLoader([str(p) for p in template_dirs(base_dir)])
    envs = []
    for escape in (False, True):
        env = jinja2.Environment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=escape,
            finalize=finalize,
            keep_trailing_newline=True,
        )
        env.filters["money"] = money
        env.filters["date"] = format_date
        envs.append(env)
    return envs[0], envs[1]
