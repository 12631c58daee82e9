"""The baseline: one core, a plain Jinja2 loop over the same rows and the same templates.

    python bench/bare_loop.py bench/data/rows-100000.csv

Renders the subject (plain text) and the statement (autoescaped HTML) for every row with
`Template.render(row)` and nothing else: no address check, no hash, no summary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jinja2
import polars as pl
from gen_data import SUBJECT, TEMPLATE


def main(csv: Path) -> None:
    """Render every row of `csv`; print rows and seconds."""
    started = time.perf_counter()
    loader = jinja2.FileSystemLoader(str(TEMPLATE.parent))
    html = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    text = jinja2.Environment(undefined=jinja2.StrictUndefined)
    body, subject = html.get_template(TEMPLATE.name), text.from_string(SUBJECT)
    frame = pl.read_csv(csv, infer_schema=False)
    size = 0
    for row in frame.iter_rows(named=True):
        size += len(subject.render(row)) + len(body.render(row))
    print(f"{frame.height} rows, {size} characters, {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
