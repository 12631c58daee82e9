"""CSV datasets: read faithfully with polars where the file is regular, exactly in Python where not.

The common file (LF or CRLF line ends, quotes only around whole fields) is checked with a few
vectorized polars passes and parsed by `pl.read_csv`: a line's record is found by counting the
quotes before it, and every record with a quote must match the strict CSV grammar before
polars may parse it. Anything else (a lone CR, `24" monitor`, a quote never closed, text after
a closing quote, a ragged `;;;` row) goes to `records.scan`, which follows Python's `csv`
module and names every broken line at once. Either way no polars message reaches the user.

Before the header: a `sep=;` first line (Excel's) sets the delimiter, the lines above
`header_row` and blank lines are skipped. Header names are trimmed (`id, email` names a column
`email`); duplicate names, names starting with `__` and a one-column header that hides another
delimiter are refused. Records whose fields are all empty are blank lines. Cells keep their
text exactly, including surrounding spaces.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batch.dataset import records
from batch.dataset.decode import Decoded, decode
from batch.dataset.problems import DatasetProblems, Problem
from batch.errors import DatasetError
from batch.jobmodel import DatasetSpec

_QUOTED = r'"(?:[^"]|"")*"'
_WINDOW = 1 << 16  # where the header and the delimiter are looked for


def read_csv(path: Path, shown: str, spec: DatasetSpec) -> tuple[pl.DataFrame, list[str]]:
    """The CSV as text cells plus `__row__` (the file line a record starts on), and notes."""
    decoded = decode(path.read_bytes(), spec.encoding, shown)
    return parse_csv(decoded, shown, spec, path.suffix.lower())


def parse_csv(
    decoded: Decoded, shown: str, spec: DatasetSpec, suffix: str = ".csv"
) -> tuple[pl.DataFrame, list[str]]:
    """`read_csv` on text already decoded."""
    # A CR-only file (old Mac) has no LF anywhere: read it as LF and put the CRs back in the
    # cells, which keeps the fast path and every value and line number exact.
    cr_only = "\r" in decoded.text and "\n" not in decoded.text
    if cr_only:
        decoded = Decoded(decoded.text.replace("\r", "\n"), decoded.codec, decoded.bom, None)
    text = decoded.text
    if not text or text.isspace():  # isspace() stops at the first character that is not
        raise DatasetError(f"{shown}: the file is empty")
    pre = records.preamble(text, spec.header_row)
    if pre.offset >= len(text):
        raise DatasetError(
            f"{shown}: no header line at or after line {spec.header_row}",
            hint="check dataset.header_row in the job file",
        )
    window = text[pre.offset : pre.offset + _WINDOW]  # never copy the whole text
    delimiter, notes = _delimiter(window, spec, pre.sep, suffix, decoded)
    if decoded.bom and decoded.bom != "UTF-8":
        notes.insert(0, f"encoding {decoded.bom} (from the file's byte-order mark)")
    head = records.scan(window, delimiter, pre.line, limit=1)
    if head.end >= len(window) and len(window) == _WINDOW:
        head = records.scan(text[pre.offset :], delimiter, pre.line, limit=1)
    if head.problems:
        raise DatasetProblems(
            shown,
            [Problem(p.row, "the header line is broken: " + p.message) for p in head.problems],
            hint="fix the quotes in the header line",
        )
    header_end = pre.offset + head.end
    last = pre.line + records.breaks(text[pre.offset : header_end].rstrip("\r\n"))
    if last != pre.line:
        raise DatasetProblems(
            shown,
            [
                Problem(
                    pre.line,
                    f"the header line runs on to line {last}: a quote in it is "
                    "not closed where it should be",
                )
            ],
            hint="fix the quotes in the header line",
        )
    names = [n.strip() for n in head.records[0][1]]
    problems = records.header_problems(names, pre.line, delimiter)
    first = pre.line + records.breaks(text[pre.offset : header_end])
    fast = _fast(decoded, delimiter, first, len(names)) if header_end < len(text) else None
    frame, more = fast or _exact(text[header_end:], delimiter, first, len(names))
    problems += more
    readable: pl.DataFrame | None = None
    if not problems:
        frame, unnamed = _named(frame, names)
        problems += unnamed
    elif len(problems) == len(more) and frame.height and len(names) > 1:
        # Broken records only: the others are read, so that their rows are checked too.
        readable, unnamed = _named(frame, names)
        readable = None if unnamed else readable
    if problems:
        hint = "check the delimiter (dataset.delimiter) and quoting on those lines"
        one_column = next((p for p in problems if "the header is one column" in p.message), None)
        wider = [p.row for p in problems if p.message.startswith("expected 1 fields")]
        if one_column:
            guess = next(c for c in records.CANDIDATES if c != delimiter and c in names[0])
            shown_guess = '"\\t"' if guess == "\t" else repr(guess)
            hint = f"set dataset.delimiter: {shown_guess} (or auto)"
        elif len(names) == 1 and wider:
            hint = (
                f"line {pre.line} looks like a title above the header: set dataset.header_row "
                f"to the line holding the column names (line {wider[0]}?)"
            )
        if readable is not None and cr_only:
            readable = _cr_back(readable)
        raise DatasetProblems(shown, problems, hint=hint, frame=readable)
    if cr_only:
        frame = _cr_back(frame)
    return frame, notes


def _cr_back(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.String).str.replace_all("\n", "\r", literal=True))


def _delimiter(
    text: str, spec: DatasetSpec, sep: str | None, suffix: str, decoded: Decoded
) -> tuple[str, list[str]]:
    configured = spec.delimiter
    if sep is not None:
        return sep, [f"delimiter {records.name(sep)} (from the file's 'sep=' first line)"]
    if configured == "auto":
        picked = records.pick_delimiter(text)
        return picked, [f"delimiter: auto picked {records.name(picked)}"]
    if configured == "\\t":
        configured = "\t"
    if len(configured) != 1 or configured in '"\r\n':
        raise DatasetError(
            f"dataset.delimiter must be one character (not a quote or a line end) or 'auto', "
            f"not {configured!r}"
        )
    if configured == "," and suffix == ".tsv":
        return "\t", []
    first_line = text.split("\n", 1)[0]
    utf16 = decoded.bom is not None and "UTF-16" in decoded.bom
    if configured == "," and utf16 and "\t" in first_line and "," not in first_line:
        return "\t", ["delimiter tab (a UTF-16 'Unicode Text' file from Excel)"]
    return configured, []


def _fast(
    decoded: Decoded, delimiter: str, first: int, width: int
) -> tuple[pl.DataFrame, list[Problem]] | None:
    """Records found vectorized and parsed by polars, or None where only `scan` is exact.

    Works on the whole text and skips the lines above `first`, so that 100 MB is never copied.
    """
    text = decoded.text
    crlf = "\r" in text
    if crlf and text.count("\r") != text.count("\r\n"):
        return None  # a lone CR ends a line: polars does not know that
    pieces = text.split("\n")  # str.split is 3x faster than polars' split + explode
    if text.endswith("\n"):
        pieces.pop()
    del pieces[: first - 1]
    if not pieces:
        empty = {f"column_{i + 1}": pl.String for i in range(width)}
        return pl.DataFrame(schema={**empty, "__row__": pl.Int64}), []
    parts = pl.Series("l", pieces, dtype=pl.String)
    del pieces
    if crlf:
        parts = parts.str.strip_suffix("\r")
    lines = pl.DataFrame({"l": parts}).with_row_index("n", offset=first)
    quotes = pl.col("l").str.count_matches('"', literal=True)
    lines = lines.with_columns(continues=((quotes.cum_sum() - quotes) % 2) == 1)
    if lines["continues"].any():
        found = (
            lines.with_columns(record=(~pl.col("continues")).cum_sum())
            .group_by("record", maintain_order=True)
            .agg(pl.col("n").first(), pl.col("l").str.join("\n"))
        )
    else:
        found = lines.select("n", "l")
    d = _escape(delimiter)
    found = found.with_columns(
        fields=pl.col("l").str.count_matches(delimiter, literal=True) + 1,
        blank=pl.col("l").str.contains(f'^(?:"")?(?:{d}(?:"")?)*$'),
    )
    quoted = found["l"].str.contains('"', literal=True).arg_true()
    if len(quoted):
        # Each quoted field becomes a NUL; the record is regular if no quote is left and every
        # NUL is a whole field (a file with real NULs just takes the exact path).
        marked = found["l"].gather(quoted).str.replace_all(_QUOTED, "\x00")
        if marked.str.contains(f'"|[^{d}]\x00|\x00[^{d}]').any():
            return None
        recount = marked.str.count_matches(delimiter, literal=True)
        found = found.with_columns(found["fields"].scatter(quoted, recount + 1))
    odd = found.filter(pl.col("fields") != width)
    if odd["blank"].any():
        return None  # a `;;;` row of another width: polars would refuse it
    if odd.height:
        return None  # the exact path names them and keeps the other records to check
    data = decoded.text.encode("utf-8") if decoded.utf8_bytes is None else decoded.utf8_bytes
    try:
        frame = pl.read_csv(
            data,
            has_header=False,
            skip_lines=first - 1,
            separator=delimiter,
            infer_schema=False,
            empty_string_is_null=False,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError:
        return None
    if frame.height != found.height or frame.width != width:
        return None  # polars and the scan disagree about records: trust only the exact path
    return (
        frame.with_columns(found["n"].cast(pl.Int64).alias("__row__")).filter(~found["blank"]),
        [],
    )


def _escape(delimiter: str) -> str:
    """The delimiter as a literal inside a polars (Rust) regex."""
    if delimiter == "\t":
        return "\\t"
    return "\\" + delimiter if delimiter in "|.^$*+?()[]{}\\#&-~" else delimiter


def _exact(body: str, delimiter: str, first: int, width: int) -> tuple[pl.DataFrame, list[Problem]]:
    scan = records.scan(body, delimiter, first)
    rows, lines = [], []
    problems = list(scan.problems)
    for line, fields in scan.records:
        if records.is_blank(fields):
            continue
        if len(fields) != width:
            problems.append(Problem(line, f"expected {width} fields, found {len(fields)}"))
            continue
        rows.append(fields)
        lines.append(line)
    columns = {f"column_{i + 1}": [r[i] for r in rows] for i in range(width)}
    frame = pl.DataFrame(columns, schema={c: pl.String for c in columns})
    return frame.with_columns(pl.Series("__row__", lines, dtype=pl.Int64)), problems


def _named(frame: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, list[Problem]]:
    """Name the columns; a column without a header is dropped if empty, refused if not."""
    data = [c for c in frame.columns if c != "__row__"]
    frame = frame.rename(
        {old: new or f"__unnamed_{i}" for i, (old, new) in enumerate(zip(data, names, strict=True))}
    )
    problems = []
    for i, header in enumerate(names):
        if header:
            continue
        column = f"__unnamed_{i}"
        used = frame.filter(pl.col(column) != "")
        if used.height:
            problems.append(
                Problem(int(used["__row__"][0]), f"column {i + 1} has no header but holds data")
            )
        frame = frame.drop(column)
    return frame, problems
