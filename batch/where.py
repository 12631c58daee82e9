"""`dataset.where`: one condition over the row's columns, compiled to a polars expression.

The condition used to be pasted into `SELECT * FROM self WHERE …`, so a job file could run any
query, including `id IN (SELECT id FROM read_csv('/other/file.csv'))`, which reads any file.
Now it is parsed as one expression (`polars.sql_expr`), and only after a scan of its tokens
has refused everything that is not a condition: a query keyword (SELECT, FROM, WITH, UNION…),
a function outside the list of scalar functions below (so no table functions, no file
access), `;`, comments, table-qualified names. The scan comes first because polars runs a
subquery's table function while it parses. Columns must exist in the dataset.

Numbers in text columns are compared after a CAST. batch.dataset applies the condition to the
dataset's canonical view (`dataset.values.canonical`): with `dataset.decimal: ","`, a cell
`1.234,50` is seen as `1234.50`, so `CAST(importe AS DOUBLE) > 100` reads the dataset's own
convention; with `date_format`, dates are seen as ISO.
"""

from __future__ import annotations

import difflib
import re

import polars as pl

MAX_CHARS = 2_000  # a condition, not a program

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<comment>--|/\*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|::|\|\||!~~\*|!~~|~~\*|~~|!~\*|!~|~\*|[=<>+\-*/%(),.~])
    """,
    re.VERBOSE,
)

# Anything that makes the text a query rather than a condition.
_QUERY_WORDS = frozenset(
    {
        *("SELECT", "FROM", "WITH", "UNION", "INTERSECT", "EXCEPT", "JOIN", "VALUES"),
        *("TABLE", "EXISTS", "INTO", "LATERAL", "OVER", "WINDOW", "QUALIFY", "LIMIT"),
        *("OFFSET", "ORDER", "GROUP", "HAVING", "ANY", "ALL", "SOME"),
    }
)
# Words that may stand before "(" without being a function call.
_KEYWORDS = frozenset(
    {
        *("AND", "OR", "NOT", "IN", "IS", "LIKE", "ILIKE", "BETWEEN", "CASE", "WHEN"),
        *("THEN", "ELSE", "END", "AS", "NULL", "TRUE", "FALSE", "ESCAPE", "SIMILAR", "TO"),
        *("DISTINCT", "RLIKE", "REGEXP", "GLOB"),
    }
)
# Scalar functions a condition may call.
_FUNCTIONS = frozenset(
    {
        *("CAST", "TRY_CAST", "COALESCE", "NULLIF", "IFNULL", "GREATEST", "LEAST"),
        *("LOWER", "UPPER", "INITCAP", "TRIM", "LTRIM", "RTRIM", "LENGTH", "CHAR_LENGTH"),
        *("CHARACTER_LENGTH", "OCTET_LENGTH", "SUBSTR", "SUBSTRING", "LEFT", "RIGHT"),
        *("STARTS_WITH", "ENDS_WITH", "STRPOS", "POSITION", "REPLACE", "REVERSE", "CONCAT"),
        *("CONCAT_WS", "REGEXP_LIKE", "ABS", "ROUND", "FLOOR", "CEIL", "CEILING", "MOD"),
        *("SIGN", "SQRT", "POWER", "POW", "DATE", "TIMESTAMP", "STRPTIME", "STRFTIME"),
        *("EXTRACT", "DATE_PART"),
    }
)
# Functions whose own syntax uses FROM: EXTRACT(YEAR FROM d), TRIM(BOTH 'x' FROM s)…
_FROM_INSIDE = frozenset({"EXTRACT", "TRIM", "SUBSTRING", "SUBSTR"})


def compile_where(text: str, columns: list[str]) -> pl.Expr:
    """The condition as a polars expression over `columns`; ValueError saying what is wrong."""
    if not text.strip():
        raise ValueError("the condition is empty")
    if len(text) > MAX_CHARS:
        raise ValueError(f"the condition is {len(text):,} characters; the limit is {MAX_CHARS:,}")
    _check_tokens(text)
    try:
        expr = pl.sql_expr(text)
        used = expr.meta.root_names()
    except Exception as err:  # polars raises several error types for SQL problems
        raise ValueError(f"invalid condition: {_first_line(err)}") from err
    unknown = [name for name in dict.fromkeys(used) if name not in columns]
    if unknown:
        raise ValueError(_unknown(unknown[0], columns))
    return expr


def apply_where(frame: pl.DataFrame, text: str) -> pl.DataFrame:
    """The rows of `frame` matching the condition; ValueError if it is invalid for this data."""
    expr = compile_where(text, [c for c in frame.columns if not c.startswith("__")])
    try:
        return frame.filter(expr)
    except Exception as err:  # a type mismatch (text compared to a number…) shows only here
        raise ValueError(f"invalid condition: {_first_line(err)}") from err


def _check_tokens(text: str) -> None:
    tokens = _tokens(text)
    calls: list[str] = []  # the function (or "") each open parenthesis belongs to
    for i, (kind, value, at) in enumerate(tokens):
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "name":
            word = value.upper()
            if word == "FROM" and calls and calls[-1] in _FROM_INSIDE:
                continue
            if word in _QUERY_WORDS:
                raise ValueError(
                    f"{value!r} at character {at + 1}: a condition is one expression over "
                    "the columns, not a query"
                )
            if after == "(" and word not in _KEYWORDS and word not in _FUNCTIONS:
                raise ValueError(
                    f"function {value!r} at character {at + 1} is not allowed in a condition "
                    f"(allowed: {', '.join(sorted(_FUNCTIONS)).lower()})"
                )
            if after == ".":
                raise ValueError(
                    f"{value!r} at character {at + 1}: name columns without a table prefix"
                )
        elif value == "(":
            before = tokens[i - 1] if i else ("", "", 0)
            calls.append(before[1].upper() if before[0] == "name" else "")
        elif value == ")" and calls:
            calls.pop()


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    at = 0
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None or found.lastgroup is None:
            raise ValueError(f"unexpected character {text[at]!r} at character {at + 1}")
        kind = found.lastgroup
        if kind == "comment":
            raise ValueError(f"comments are not allowed in a condition (character {at + 1})")
        if kind != "space":
            out.append((kind, found.group(), at))
        at = found.end()
    return out


def _unknown(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no column {name!r} in the dataset (columns: {', '.join(columns)}){hint}"


def _first_line(err: Exception) -> str:
    return str(err).strip().split("\n", 1)[0]
