"""Deterministic benchmark data under bench/data/ (git-ignored): never commit what this writes.

    python bench/gen_data.py 100000 1000000    # write bench/data/rows-<N>.csv (reused if present)

Every row is a distinct recipient (`C-<n>`, `first.last<n>@<one of 40 domains>`) with a
personalized statement; `note` holds markup-sensitive text (`&`, `<`, quotes) so the HTML
autoescape has real work to do. The same N always yields the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parent
DATA = BENCH / "data"
TEMPLATE = BENCH / "templates" / "statement.html"
SUBJECT = "Statement {{ contract }} for {{ name }}: {{ amount }} EUR due {{ due }}"

_FIRST = ["ana", "bruno", "carla", "diego", "elena", "fermin", "gloria", "hugo", "ines", "jorge"]
_LAST = ["garcia", "lopez", "martin", "sanchez", "perez", "gomez", "ruiz", "diaz", "moreno"]
_CITY = ["Madrid", "Barcelona", "Valencia", "Sevilla", "Zaragoza", "Malaga", "Bilbao"]
_PLAN = ["basic", "standard", "premium"]
_NOTE = [
    "Thanks for 5 years with us & our team!",
    'Ask about the "family" bundle <new>.',
    "Your direct debit starts next month.",
    "O'Neil & Sons referred you: welcome.",
    "",
]
_DOMAINS = [f"mail{i}.example.{tld}" for i in range(20) for tld in ("com", "es")]


def dataset(rows: int) -> Path:
    """bench/data/rows-<rows>.csv, written once (same bytes for the same `rows`)."""
    path = DATA / f"rows-{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    n = pl.int_range(0, rows, eager=True).alias("n")

    def pick(values: list[str], stride: int) -> pl.Expr:
        return pl.lit(pl.Series(values)).gather((pl.col("n") * stride) % len(values))

    frame = (
        pl.DataFrame(n)
        .with_columns(
            first=pick(_FIRST, 1),
            last=pick(_LAST, 7),
            domain=pick(_DOMAINS, 13),
            n_str=pl.col("n").cast(pl.String),
        )
        .select(
            id=pl.lit("C-") + pl.col("n_str"),
            name=pl.col("first").str.to_titlecase()
            + pl.lit(" ")
            + pl.col("last").str.to_titlecase(),
            email=pl.col("first")
            + pl.lit(".")
            + pl.col("last")
            + pl.col("n_str")
            + pl.lit("@")
            + pl.col("domain"),
            amount=((pl.col("n") * 7919) % 250_000 / 100 + 10).round(2).cast(pl.String),
            due=pl.lit("2026-")
            + ((pl.col("n") % 12) + 1).cast(pl.String).str.zfill(2)
            + pl.lit("-")
            + ((pl.col("n") % 28) + 1).cast(pl.String).str.zfill(2),
            city=pick(_CITY, 3),
            plan=pick(_PLAN, 5),
            contract=pl.lit("K") + (pl.col("n") * 31 % 900_000 + 100_000).cast(pl.String),
            note=pick(_NOTE, 11),
        )
    )
    tmp = path.with_suffix(".tmp")
    frame.write_csv(tmp)
    tmp.replace(path)
    return path


def validate_job(
    csv: Path,
    *,
    window_seconds: float = 60.0,
    campaign: str = "",
    html: str = TEMPLATE.name,
    subject: str = SUBJECT,
) -> Path:
    """A job file next to the data that renders SUBJECT and the ~2 KB statement per row."""
    name = campaign or f"bench-{csv.stem}"
    job = DATA / f"{name}.yaml"
    job.write_text(
        f"campaign: {name}\n"
        f"dataset: {{path: {csv.name}, key: id}}\n"
        "recipient: {email: '{{ email }}', name: '{{ name }}'}\n"
        f"message:\n  subject: '{subject}'\n  html: {html}\n"
        f"limits: {{requests_per_window: 10, window_seconds: {window_seconds}}}\n"
        "output: output\n"
    )
    return job


def mailmerge_files() -> tuple[Path, Path]:
    """(template, server config) for `mailmerge --dry-run` equivalent to validate_job's."""
    template = DATA / "mailmerge_template.txt"
    body = TEMPLATE.read_text()
    template.write_text(
        "TO: {{ email }}\n"
        "SUBJECT: " + SUBJECT + "\n"
        "FROM: Customer Accounts <accounts@example.com>\n"
        "Content-Type: text/html\n\n" + body
    )
    config = DATA / "mailmerge_server.conf"
    config.write_text(
        "[smtp_server]\nhost = 127.0.0.1\nport = 25\nsecurity = Never\nusername = bench\n"
    )
    return template, config


def main(argv: list[str]) -> None:
    """Write the datasets named on the command line."""
    for arg in argv or ["100000"]:
        print(dataset(int(arg)))


if __name__ == "__main__":
    main(sys.argv[1:])
