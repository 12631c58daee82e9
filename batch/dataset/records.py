"""CSV records found exactly, in Python: the reference every faster path is held to.

The grammar is Python's `csv` module in strict mode with `"` as the quote and no escape
character: a quote opens a quoted field only as a field's first character (`24" monitor` is
plain text), `""` inside quotes is one quote, a quoted field may span lines, and LF, CRLF and
a lone CR all end a record. Where `csv` strict refuses, this module reports a located problem
and goes on with the next line, so one read names every broken line:

- a quote that is never closed (the line where it opened);
- text after a closing quote (`"a" ,b`, `"say \\"hi\\""`: backslash escapes are not CSV, so
  they are refused rather than guessed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from batch.dataset.problems import Problem

_BREAK = re.compile(r"\r\n|\r|\n")
_SEP_LINE = re.compile(r"sep=(.)\s*$")
CANDIDATES = (",", ";", "\t", "|")
_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}


def name(delimiter: str) -> str:
    """A delimiter as a person reads it in a message ("';'", "tab")."""
    return _NAMES.get(delimiter, repr(delimiter))


@dataclass
class Scan:
    """Records as (start line, fields), and the problems met on the way."""

    records: list[tuple[int, list[str]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    end: int = 0  # where the scan stopped in the text


def breaks(text: str) -> int:
    """How many line ends `text` holds (CRLF counts once)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def is_blank(fields: list[str]) -> bool:
    """A record whose fields are all empty (a blank line, or Excel's `;;;;` rows)."""
    return all(f == "" for f in fields)


def scan(text: str, delimiter: str, first_line: int = 1, limit: int | None = None) -> Scan:
    """Split `text` into records; `limit` stops after that many records (for a header)."""
    d = re.escape(delimiter)
    quoted = re.compile(r'"([^"]*+(?:""[^"]*+)*+)"')
    plain = re.compile(rf"(?:[^\"{d}\r\n][^{d}\r\n]*)?")
    out = Scan()
    pos, line, n = 0, first_line, len(text)
    while pos < n and (limit is None or len(out.records) < limit):
        start, fields, broken = line, [], False
        while True:
            if text.startswith('"', pos):
                match = quoted.match(text, pos)
                if match is None:
                    out.problems.append(
                        Problem(line, "a quote opened on this line is never closed")
                    )
                    pos, line = _next_line(text, pos, line)  # read on after that line
                    broken = True
                    break
                body = match.group(1)
                line += breaks(body)
                pos = match.end()
                if pos < n and text[pos] not in (delimiter, "\r", "\n"):
                    out.problems.append(Problem(line, _after_quote(body, text, pos)))
                    pos, line = _next_line(text, pos, line)
                    broken = True
                    break
                fields.append(body.replace('""', '"'))
            else:
                match = plain.match(text, pos)
                assert match is not None  # the pattern matches the empty string
                fields.append(match.group())
                pos = match.end()
            if pos >= n:
                break
            if text[pos] == delimiter:
                pos += 1
                if pos >= n:
                    fields.append("")
                    break
                continue
            pos += 2 if text.startswith("\r\n", pos) else 1
            line += 1
            break
        if not broken:
            out.records.append((start, fields))
    out.end = pos
    return out


def _next_line(text: str, pos: int, line: int) -> tuple[int, int]:
    found = _BREAK.search(text, pos)
    return (len(text), line) if found is None else (found.end(), line + 1)


def _after_quote(body: str, text: str, pos: int) -> str:
    if body.endswith("\\"):
        return (
            'a backslash-escaped quote (\\"): inside a quoted field write a quote as two '
            'quotes ("")'
        )
    rest = re.split(r"[\r\n]", text[pos : pos + 20], maxsplit=1)[0]
    return (
        f"text after a closing quote ({rest!r}): a quoted field must end at the delimiter "
        "or the line end"
    )


@dataclass(frozen=True)
class Preamble:
    """Where the header starts, and the delimiter a `sep=` line sets."""

    offset: int  # index in the text of the header line's first character
    line: int  # the header's file line
    sep: str | None


def preamble(text: str, header_row: int) -> Preamble:
    """Skip a `sep=;` first line, the lines above `header_row`, and blank lines."""
    pos, line, sep = 0, 1, None
    while pos < len(text):
        end = _BREAK.search(text, pos)
        stop = end.start() if end else len(text)
        content = text[pos:stop]
        after = end.end() if end else len(text)
        if line == 1 and _SEP_LINE.fullmatch(content):
            sep = content[4]
        elif line >= header_row and content.strip(" ;,\t|") != "":
            return Preamble(pos, line, sep)
        pos, line = after, line + 1
    return Preamble(len(text), line, sep)


def pick_delimiter(text: str) -> str:
    """The candidate that splits the first lines into the same number of fields, most often.

    Quoted parts are removed before counting, so `"Madrid, ES"` does not vote for `,`.
    """
    lines = [re.sub(r'"[^"]*"', "", ln) for ln in _BREAK.split(text[:65536])[:20] if ln.strip()]
    lines = lines[:-1] if len(lines) > 2 else lines  # the last may be cut short
    best, score = ",", (False, 0)
    for candidate in CANDIDATES:
        counts = [ln.count(candidate) for ln in lines]
        if not counts or counts[0] == 0:
            continue
        current = (all(c == counts[0] for c in counts), counts[0])
        if current > score:
            best, score = candidate, current
    return best


def header_problems(fields: list[str], line: int, delimiter: str) -> list[Problem]:
    """Duplicate names, reserved `__` names, and a one-column header that hides a delimiter."""
    problems: list[Problem] = []
    seen: dict[str, list[int]] = {}
    for position, header in enumerate(fields, start=1):
        if header:
            seen.setdefault(header, []).append(position)
        if header.startswith("__"):
            problems.append(
                Problem(
                    line,
                    f"column {position} {header!r}: names starting with '__' are "
                    "reserved for lmbatch",
                    header,
                )
            )
    for header, positions in seen.items():
        if len(positions) > 1:
            where = ", ".join(str(p) for p in positions)
            problems.append(
                Problem(
                    line,
                    f"column {header!r} appears {len(positions)} times (columns {where})",
                    header,
                )
            )
    if len(fields) == 1:
        hidden = [c for c in CANDIDATES if c != delimiter and c in fields[0]]
        if hidden:
            problems.append(
                Problem(
                    line,
                    f"the header is one column {fields[0][:60]!r} that "
                    f"contains {name(hidden[0])}: the file looks "
                    f"{name(hidden[0])}-separated, not {name(delimiter)}",
                )
            )
    return problems
