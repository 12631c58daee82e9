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
- a render's cost is bounded (`TemplateLimitError`): every string an operator or an amplifying
  method builds (`*`, `+`, `~`, `%`, `center`, `replace`, `format`, `join`…) is checked *before*
  it is built, output and block buffers stop at `MAX_OUTPUT_CHARS` per field, and, inside
  `render_limits()`, a row has `MAX_SECONDS` of CPU time and a budget of characters built.

Filters: `money`, `number` and `date` (batch.formats, re-exported here) speak the job's
`locale` through Babel and read cells written with the dataset's `decimal` separator and
`date_format`. `money` never drops a significant digit.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, MappingView
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import (
    MAX_RANGE,
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace
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
    "make_environments",
    "money",
    "number",
    "render_bounded",
    "render_limits",
    "template_dirs",
]

MAX_OUTPUT_CHARS = 2_000_000  # per rendered field: far above any certified message
MAX_SECONDS = 5.0  # CPU per row inside render_limits(): a body renders in well under 1 ms
MAX_BUILT_CHARS = 8 * MAX_OUTPUT_CHARS  # per row: characters built by checked operations
MAX_POWER_BITS = 4_096  # `**` results: enough for any arithmetic a notice needs
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SEQUENCES = (str, list, tuple)
_COLLECTIONS = (*_CONTAINERS, MappingView)
_PRINTED_WHOLE = (*_COLLECTIONS, Namespace)  # str() of these prints every item


class TemplateLimitError(FilterValueError):
    """A render went over a bound (output size, characters built, time); a row error."""


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


# --- cost bounds ----------------------------------------------------------------------------


class _Budget(threading.local):
    """Characters built during the current render_limits() block, per thread."""

    left: int | None = None


_budget = _Budget()


def _charge(chars: int) -> None:
    if chars > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"template output over {MAX_OUTPUT_CHARS // 1_000_000} MB")
    left = _budget.left
    if left is not None:
        left -= chars
        if left < 0:
            raise TemplateLimitError(
                f"template built over {MAX_BUILT_CHARS // 1_000_000} M characters for one row"
            )
        _budget.left = left


def _weight(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """Roughly how many characters `str(value)` makes; stops counting past `limit`."""
    if isinstance(value, str):
        return len(value)
    inner: Any = value._Namespace__attrs if isinstance(value, Namespace) else value  # its repr
    if not isinstance(inner, _COLLECTIONS):
        return 1
    total = 2
    items: Any = inner.items() if isinstance(inner, dict) else inner  # views are iterable
    for item in items:
        total += _weight(item, limit - total) + 2
        if total > limit:
            break
    return total


def bounded_range(*args: int) -> range:
    """`range` for templates: at most MAX_RANGE items, so a loop cannot run for hours."""
    items = range(*args)
    try:
        size = len(items)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise TemplateLimitError(f"range() of more than {MAX_RANGE:,} items")
    return items


def finalize(value: Any) -> Any:
    """What `{{ value }}` prints: empty cells (None) as nothing; huge containers refused."""
    if value.__class__ is str:  # the usual cell: checked first, it is on every row's path
        return value
    if value is None:
        return ""
    if isinstance(value, _PRINTED_WHOLE):
        _charge(_weight(value))
    return value


_SLICE = 4_096


def bounded_concat(chunks: Iterable[str]) -> str:
    """`"".join` that stops once the output passes MAX_OUTPUT_CHARS (the environment's concat).

    Chunks are taken a slice at a time and measured in C (`sum(map(len, …))`): a body of a
    few dozen chunks costs one slice, and a runaway loop stops after one slice over the limit.
    """
    iterator = iter(chunks)
    parts = list(islice(iterator, _SLICE))
    total = sum(map(len, parts))
    more = len(parts) == _SLICE
    while more and total <= MAX_OUTPUT_CHARS:
        part = list(islice(iterator, _SLICE))
        total += sum(map(len, part))
        parts += part
        more = len(part) == _SLICE
    _charge(total)
    return "".join(parts)


class _Buffer(list[str]):
    """A macro's or block's output buffer, bounded like the output itself."""

    size = 0

    def append(self, chunk: str) -> None:
        self.size += len(chunk)
        if self.size > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"template output over {MAX_OUTPUT_CHARS // 1_000_000} MB")
        super().append(chunk)

    def extend(self, chunks: Iterable[str]) -> None:
        for chunk in chunks:
            self.append(chunk)


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


def _checked_size(op: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before it is computed."""
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                _charge(_weight(seq) * max(times, 0))
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _charge(_weight(left) + _weight(right))
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        if right * abs(left).bit_length() > MAX_POWER_BITS:
            raise TemplateLimitError(f"{left} ** {right} is too large a number")
    elif op == "%" and isinstance(left, str):
        _check_percent_format(left)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?")
_WIDTH = re.compile(r"(\d+)")


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n == "*" or (n and int(n) > MAX_OUTPUT_CHARS):
                raise TemplateLimitError("format width too large")


def _check_format_spec(spec: str) -> None:
    if any(int(n) > MAX_OUTPUT_CHARS for n in _WIDTH.findall(spec)):
        raise TemplateLimitError("format width too large")


class _BoundedFormatter(SandboxedFormatter):
    """str.format for templates: attributes through the sandbox, widths bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(SandboxedEscapeFormatter):
    """Markup.format for templates: arguments escaped, widths bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


# Amplifying str methods and the argument that sets the result's size.
_STR_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _check_str_call(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The call's arguments (an iterable to join made a list), its result's size checked."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = getattr(obj, "__name__", "")
    if name in _STR_WIDTH_METHODS and args and isinstance(args[0], int):
        _charge(max(args[0], len(owner)))
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        _charge(len(owner) + owner.count("\t") * max(size, 0))
    elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        _charge(len(owner) + (owner.count(args[0]) + 1) * len(args[1]))
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], _CONTAINERS) else list(args[0])
        _charge(_weight(items) + len(items) * len(owner))
        return (items, *args[1:])
    return args


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandboxed environment: internals refused loudly, every costly operation bounded."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(bounded_concat)

    def new_buffer(self) -> _Buffer:
        """An output buffer for a macro or block (called from compiled templates)."""
        return _Buffer()

    def checked_concat(self, join: Callable[[Iterable[Any]], str], args: tuple[Any, ...]) -> str:
        """`a ~ b ~ c` (called from compiled templates), measured before it is joined."""
        _charge(sum(_weight(arg) for arg in args))
        return join(args)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(
            f"templates may not use {attribute!r} (on a {type(obj).__name__} value)"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        if attribute.startswith("_"):
            return self.getitem(obj, attribute)  # a mapping's key is data; nothing else is
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
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
        _checked_size(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        return super().call(context, obj, *_check_str_call(obj, args), **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        name = getattr(value, "__name__", None)
        owner = getattr(value, "__self__", None)
        if name not in ("format", "format_map") or not isinstance(owner, str):
            return None
        formatter: SandboxedFormatter = (
            _BoundedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _BoundedFormatter(self)
        )

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if name == "format_map":
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                out = formatter.vformat(owner, (), args[0])
            else:
                out = formatter.vformat(owner, args, kwargs)
            _charge(len(out))
            return type(owner)(out)

        return bounded_format


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's builtin filter `name` with the sizes of its result checked first."""

    def center(value: Any, width: int = 80) -> Any:
        _charge(max(int(width), len(str(value))))
        return fn(value, width)

    def indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> Any:
        text = str(value)
        pad = len(width) if isinstance(width, str) else int(width)
        _charge(len(text) + (text.count("\n") + 1) * pad)
        return fn(value, width, *args, **kwargs)

    @jinja2.pass_eval_context
    def replace(ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
        text = str(value)
        _charge(len(text) + (text.count(str(old)) + 1) * len(str(new)))
        return fn(ctx, value, old, new, count)

    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_percent_format(str(value))
        out = fn(value, *args, **kwargs)
        _charge(len(out))
        return out

    @jinja2.pass_eval_context
    def join(ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = value if isinstance(value, _CONTAINERS) else list(value)
        _charge(_weight(items) + len(items) * len(d))
        return fn(ctx, items, d, attribute)

    def stringify(value: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(_weight(value))
        return fn(value, *args, **kwargs)

    def stringify_passed(passed: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        _charge(_weight(value))
        return fn(passed, value, *args, **kwargs)

    pass_arg = getattr(fn, "jinja_pass_arg", None)
    if pass_arg is not None and name not in ("replace", "join"):
        # The filter takes the context/eval context/environment first: so must its wrapper.
        stringify_passed.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
        return stringify_passed
    wrappers: dict[str, Callable[..., Any]] = {
        "center": center,
        "indent": indent,
        "replace": replace,
        "format": format_,
        "join": join,
    }
    return wrappers.get(name, stringify)


# Builtin filters whose result can be much larger than their input (or that stringify a whole
# container): checked. The others copy at most their input.
_BOUNDED_FILTERS = frozenset(
    {
        *("center", "indent", "replace", "format", "join", "string", "pprint", "tojson"),
        *("e", "escape", "forceescape", "upper", "lower", "title", "capitalize", "trim"),
        *("striptags", "urlize", "wordwrap", "urlencode", "xmlattr", "safe"),
    }
)


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
        for name in _BOUNDED_FILTERS:
            env.filters[name] = _bounded_filter(name, env.filters[name])
        env.filters["money"] = partial(money, locale=locale, decimal=decimal)
        env.filters["number"] = partial(number, locale=locale, decimal=decimal)
        env.filters["date"] = partial(
            format_date, locale=locale, date_format=date_format, timezone=timezone
        )
        envs.append(env)
    return envs[0], envs[1]


# --- bounded rendering -----------------------------------------------------------------------


def _on_alarm(signum: int, frame: Any) -> None:
    if _timer.depth:  # a signal handled just after the row ended is not this row's
        raise TemplateLimitError(f"template took over {_timer.seconds:g} s of CPU time")


class _Timer:
    """The per-row time bound: CPU time (ITIMER_PROF, SIGPROF), in the main thread only.

    A runaway template burns CPU, so CPU time is what is bounded; SIGPROF rather than
    SIGALRM leaves the wall-clock alarm to others (pytest-timeout, say). The handler is
    installed once, unless something else already handles SIGPROF (a sampling profiler),
    and left in place; arming and disarming a row cost two system calls.
    """

    seconds = MAX_SECONDS
    depth = 0  # nested render_limits blocks: only the outermost arms the timer
    usable: bool | None = None  # None until the first timed block looks at SIGPROF

    def install(self) -> bool:
        if self.usable is None:
            owner = signal.getsignal(signal.SIGPROF)
            self.usable = owner in (signal.SIG_DFL, None, _on_alarm)
            if self.usable:
                signal.signal(signal.SIGPROF, _on_alarm)
        return self.usable


_timer = _Timer()


class render_limits:
    """Bound the renders inside: a time limit (main thread) and a budget of characters built.

    Wrap one row's fields at a time (`with render_limits(): …`); the renders in it share
    MAX_SECONDS of CPU time and MAX_BUILT_CHARS. Cheap: about 3 µs per row.
    """

    __slots__ = ("_outer", "_timed", "max_seconds")

    def __init__(self, max_seconds: float = MAX_SECONDS) -> None:
        self.max_seconds = max_seconds
        self._outer: int | None = None
        self._timed = False

    def __enter__(self) -> None:
        self._outer = _budget.left
        _budget.left = MAX_BUILT_CHARS
        if (
            self.max_seconds > 0
            and threading.get_ident() == threading.main_thread().ident
            and (_timer.usable or _timer.install())
        ):
            self._timed = True
            if not _timer.depth:
                _timer.seconds = self.max_seconds
                signal.setitimer(signal.ITIMER_PROF, self.max_seconds)
            _timer.depth += 1

    def __exit__(self, *exc: object) -> None:
        if self._timed:
            _timer.depth -= 1
            if not _timer.depth:
                signal.setitimer(signal.ITIMER_PROF, 0)
        _budget.left = self._outer


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
