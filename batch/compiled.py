"""The Jinja fast path and one row's rendering context.

`Template.render` copies the row and merges it with the template's globals through a
ChainMap on every call, which costs more than rendering a 2 KB body: the row is merged once
per row instead (`RowContext.variables`) and shared by every field's template. A plain text
`{{ column }}` (the usual recipient e-mail and name) skips Jinja altogether.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jinja2
from jinja2.runtime import new_context

from batch.errors import RowError
from batch.templating import explain, finalize
from batch.text import check_plain_text

_T = TypeVar("_T")
_PLAIN_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_RESERVED = frozenset({"self", "loop", "super", "caller", "varargs", "kwargs"})
_MISSING = object()


class Compiled:
    """A template rendered straight from a row's variables (the row merged over the globals).

    A plain `{{ column }}` prints the value exactly as Jinja would, and raises the same
    UndefinedError, without entering Jinja.
    """

    def __init__(self, template: jinja2.Template, source: str | None = None) -> None:
        self._env = template.environment
        self._name = template.name
        self._blocks = template.blocks
        self._root = template.root_render_func
        plain = _PLAIN_VARIABLE.fullmatch(source) if source is not None else None
        self._plain = plain.group(1) if plain and plain.group(1) not in _RESERVED else None

    def __call__(self, variables: dict[str, Any]) -> str:
        if self._plain is not None:
            value = variables.get(self._plain, _MISSING)
            if value is _MISSING:
                raise jinja2.UndefinedError(f"{self._plain!r} is undefined")
            return str(finalize(value))
        context = new_context(self._env, self._name, self._blocks, variables, shared=True)
        return str(self._env.concat(self._root(context)))


class Templates:
    """Compiles a job's templates once: inline fields as text, files as autoescaped HTML."""

    def __init__(self, text_env: jinja2.Environment, html_env: jinja2.Environment) -> None:
        self._text, self._html = text_env, html_env

    def inline(self, source: str | None) -> Compiled | None:
        """An inline template (subject, address, text…), or None when the job gives none."""
        if source is None:
            return None
        return Compiled(self._text.from_string(source), source)

    def file(self, name: str | None) -> Compiled | None:
        """A template file found in the job's template folders, or None."""
        return Compiled(self._html.get_template(name)) if name else None


class RowContext:
    """Collects one row's errors while its fields are rendered and checked."""

    def __init__(self, row: Mapping[str, Any], globals_: Mapping[str, Any]) -> None:
        self.data = row
        self.variables = {**globals_, **row}  # what every field's template sees
        self.number = int(row.get("__row__") or 0)
        self.key = str(row.get("__key__") or "")
        self.errors: list[RowError] = []

    def fail(self, field: str, message: str) -> None:
        """Record one problem with one field of this row."""
        self.errors.append(RowError(self.number, self.key, field, message))

    def render(self, field: str, template: Compiled | None) -> str | None:
        """The rendered field, or None (and an error) when the row's data cannot fill it."""
        if template is None:
            return None
        try:
            return template(self.variables)
        except Exception as err:  # a template's own logic failing on this row's data, a
            # sandbox refusal (SecurityError) or a bound (TemplateLimitError): all row errors
            self.fail(field, explain(err))
        return None

    def text(self, field: str, template: Compiled | None, *, multiline: bool = False) -> str | None:
        """A plain-text field rendered and held to batch.text's rule (whitespace folded,
        control characters refused), or None (and an error)."""
        rendered = self.render(field, template)
        if rendered is None:
            return None
        if rendered.isprintable():  # check_plain_text's own fast path, inline: it is on every row
            return rendered.strip()
        label = field.rsplit(".", 1)[-1].replace(
            "_", " "
        )  # "message.reply_to_name": "reply to name"
        return self.check(field, lambda: check_plain_text(label, rendered, multiline=multiline))

    def check(self, field: str, fn: Callable[[], _T]) -> _T | None:
        """fn's result, or None (and an error) when it raises ValueError or OSError."""
        try:
            return fn()
        except (ValueError, OSError) as err:
            self.fail(field, str(err))
            return None
