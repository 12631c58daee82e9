"""The Jinja environment: one home for how templates are found, sandboxed, bounded and formatted.

Every template lmbatch renders (template files, inline job-file fields, the campaign name, the
default key) runs in a `jinja2.sandbox.ImmutableSandboxedEnvironment`: a template may read its
variables and call the filters, but never reach Python internals. On top of Jinja's sandbox:

- any `_`-prefixed attribute, and any attribute the sandbox deems unsafe, raises
  `SecurityError` at once (Jinja's default hands back an undefined value that fails later);
- the globals are only `range` (at most 100,000 items), `dict` and `namespace`;
  `lipsum`, `cycler` and `joiner` are gone (their `__globals__` were the usual way out);
- template files are looked up in `template_dirs` only, after resolving symlinks, and never
  hidden files (`.env` holds the token);
- a render's cost is bounded (`TemplateLimitError`, batch.template_bounds): every string an
  operator or an amplifying method builds is measured *before* it is built, output and block
  buffers stop at `MAX_OUTPUT_CHARS` per field, and, inside `render_limits()`, a row has
  `MAX_SECONDS` of CPU time and a budget of characters built.

Filters: `money`, `number` and `date` (batch.formats, re-exported here) speak the job's
`locale` through Babel and read cells written with the dataset's `decimal` separator and
`date_format`. `money` never drops a significant digit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import Markup

from batch.formats import (
    DECIMALS,
    DEFAULT_LOCALE,
    FilterValueError,
    check_locale,
    check_timezone,
    format_date,
    money,
    number,
)
from batch.jobmodel import Job, JobSpec, job_zone
from batch.template_bounds import (
    BOUNDED_FILTERS,
    MAX_OUTPUT_CHARS,
    MAX_SECONDS,
    PRINTED_WHOLE,
    BoundedEscapeFormatter,
    BoundedFormatter,
    Buffer,
    TemplateLimitError,
    bounded_concat,
    bounded_filter,
    bounded_range,
    charge,
    check_operation,
    check_str_call,
    render_limits,
    rows_timed,
    weight,
)

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_SECONDS",
    "ConfinedLoader",
    "FilterValueError",
    "Sandbox",
    "TemplateLimitError",
    "TemplateOutsideError",
    "explain",
    "finalize",
    "format_date",
    "job_environments",
    "make_environments",
    "money",
    "number",
    "render_bounded",
    "render_limits",
    "rows_timed",
    "spec_environments",
    "template_dirs",
]


def template_dirs(base_dir: Path) -> list[Path]:
    """Where template files are looked up: next to the job file, then the templates/ folders."""
    base = base_dir.resolve()  # a job named as `job.yaml` has parent `.`, whose parent is `.`
    return [base, base / "templates", base.parent / "templates"]


class TemplateOutsideError(jinja2.TemplateNotFound, SecurityError):
    """A template file whose real path (symlinks resolved) is outside the template folders."""


class ConfinedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses files whose real path leaves the template folders."""

    def __init__(self, dirs: list[Path]) -> None:
        super().__init__([str(d) for d in dirs])
        self._roots = [d.resolve() for d in dirs]

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        inside = [real.relative_to(root) for root in self._roots if real.is_relative_to(root)]
        if not inside:
            shown = ", ".join(str(r) for r in self._roots)
            raise TemplateOutsideError(
                template,
                f"template {template!r} resolves to {real}, outside the template folders "
                f"({shown}): a symlink may not lead out of them",
            )
        if any(part.startswith(".") for part in inside[0].parts):
            # .env files and the like hold secrets (the API token), never templates.
            raise TemplateOutsideError(template, f"template {template!r} is a hidden file")
        return source, filename, uptodate


def finalize(value: Any) -> Any:
    """What `{{ value }}` prints: empty cells (None) as nothing; huge containers refused."""
    if value.__class__ is str:  # the usual cell: checked first, it is on every row's path
        return value
    if value is None:
        return ""
    if isinstance(value, PRINTED_WHOLE):
        charge(weight(value))
    return value


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator with bounded buffers and a checked `~` operator."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.new_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's own, but the operands are measured before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandboxed environment: internals refused loudly, every costly operation bounded."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(bounded_concat)

    def new_buffer(self) -> Buffer:
        """An output buffer for a macro or block (called from compiled templates)."""
        return Buffer()

    def checked_concat(self, join: Callable[[Iterable[Any]], str], args: tuple[Any, ...]) -> str:
        """`a ~ b ~ c` (called from compiled templates), measured before it is joined."""
        charge(sum(weight(arg) for arg in args))
        return join(args)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Raise at once, where Jinja hands back an undefined that fails only when used."""
        raise SecurityError(
            f"templates may not use {attribute!r} (on a {type(obj).__name__} value)"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj.attribute`; an `_` name is only ever a mapping's key, never a Python attribute."""
        if attribute.startswith("_"):
            return self.getitem(obj, attribute)  # a mapping's key is data; nothing else is
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`obj[argument]`; an `_` name that is not a key raises SecurityError."""
        if isinstance(argument, str) and argument.startswith("_"):
            if isinstance(obj, jinja2.Undefined):
                self.unsafe_undefined(obj, argument)
            try:
                return obj[argument]
            except (TypeError, LookupError):
                self.unsafe_undefined(obj, argument)
        return super().getitem(obj, argument)

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        check_operation(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().call(context, obj, *check_str_call(obj, args), **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        name = getattr(value, "__name__", None)
        owner = getattr(value, "__self__", None)
        if name not in ("format", "format_map") or not isinstance(owner, str):
            return None
        formatter: SandboxedFormatter = (
            BoundedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else BoundedFormatter(self)
        )

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if name == "format_map":
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                out = formatter.vformat(owner, (), args[0])
            else:
                out = formatter.vformat(owner, args, kwargs)
            charge(len(out))
            return type(owner)(out)

        return bounded_format


# --- the environments ------------------------------------------------------------------------


def make_environments(
    base_dir: Path,
    *,
    locale: str = DEFAULT_LOCALE,
    decimal: str = ".",
    date_format: str | None = None,
    timezone: str | None = None,
) -> tuple[jinja2.Environment, jinja2.Environment]:
    """The (plain text, autoescaped HTML) sandboxed environments for a job folder.

    ValueError for an unknown locale or time zone, or a decimal separator other than . or ,.
    """
    if decimal not in DECIMALS:
        raise ValueError(f"decimal must be '.' or ',', not {decimal!r}")
    if locale != DEFAULT_LOCALE:
        check_locale(locale)
    if timezone:
        check_timezone(timezone)
    loader = ConfinedLoader(template_dirs(base_dir))
    envs = []
    for escape in (False, True):
        env = Sandbox(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=escape,
            finalize=finalize,
            keep_trailing_newline=True,
        )
        for unsafe in ("lipsum", "cycler", "joiner"):
            env.globals.pop(unsafe, None)
        env.globals["range"] = bounded_range
        for name in BOUNDED_FILTERS:
            env.filters[name] = bounded_filter(name, env.filters[name])
        env.filters["money"] = partial(money, locale=locale, decimal=decimal)
        env.filters["number"] = partial(number, locale=locale, decimal=decimal)
        env.filters["date"] = partial(
            format_date, locale=locale, date_format=date_format, timezone=timezone
        )
        envs.append(env)
    return envs[0], envs[1]


def spec_environments(
    spec: JobSpec, base_dir: Path
) -> tuple[jinja2.Environment, jinja2.Environment]:
    """`make_environments` with the job's locale, number and date conventions and time zone."""
    return make_environments(
        base_dir,
        locale=spec.locale,
        decimal=spec.dataset.decimal,
        date_format=spec.dataset.date_format,
        timezone=job_zone(spec).key,
    )


def job_environments(job: Job) -> tuple[jinja2.Environment, jinja2.Environment]:
    """The environments every row of a loaded job renders in (the renderer's and the default
    key's alike), with the globals `campaign` and `period` (a row's columns override them)."""
    text_env, html_env = spec_environments(job.spec, job.base_dir)
    for env in (text_env, html_env):
        env.globals.update(campaign=job.campaign, period=job.period)
    return text_env, html_env


_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")


def explain(err: Exception) -> str:
    """The row-error message for an exception raised while rendering a template."""
    if isinstance(err, SecurityError):
        return f"not allowed in a template: {err}"
    if isinstance(err, jinja2.UndefinedError):
        found = _UNDEFINED.match(err.message or "")
        if found:
            return f"variable {found.group(1)!r} is missing from the row (no such column)"
        return f"missing value: {err.message}"
    if isinstance(err, FilterValueError):
        return str(err)
    return f"cannot render: {err}"


def render_bounded(
    render: Callable[[Mapping[str, Any]], str] | jinja2.Template,
    variables: Mapping[str, Any],
    *,
    max_seconds: float = MAX_SECONDS,
) -> str:
    """Render one template (or a compiled render callable) under render_limits()."""
    with render_limits(max_seconds):
        if isinstance(render, jinja2.Template):
            return render.render(variables)
        return render(variables)
