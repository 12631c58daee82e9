"""What one template render may cost: output size, characters built, CPU time.

Jinja's sandbox stops a template from reaching Python, not from asking for a gigabyte or an
hour. The bounds here are what batch.templating's `Sandbox` adds, each raising
`TemplateLimitError` (a FilterValueError, so the renderer reports it as a row error):

- Output: the environment's `concat` (`bounded_concat`) and every macro or block buffer
  (`Buffer`) stop at MAX_OUTPUT_CHARS per field, measured while the chunks arrive.
- Building: every operation that can make a string or list much larger than its operands is
  measured *before* it runs: `*`, `+`, `%` and `**` (`check_operation`), `~`, str methods
  (`center`, `ljust`, `replace`, `join`…: `check_str_call`), `str.format` widths
  (`BoundedFormatter`), and the amplifying builtin filters (`bounded_filter`). Containers
  are weighed by what `str()` would print (`weight`).
- Loops: `range` holds at most MAX_RANGE (100,000) items (`bounded_range`).
- Per row, inside `render_limits()`: MAX_SECONDS of CPU time (SIGPROF through setitimer, main
  thread only) and a budget of MAX_BUILT_CHARS characters built across the row's fields, so
  a loop of individually small allocations cannot pile up either.

Outside `render_limits()` only the per-field bounds apply. Values are constants for now.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterable, MappingView
from itertools import islice
from typing import Any

import jinja2
from jinja2.sandbox import MAX_RANGE, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace

from batch.formats import FilterValueError

MAX_OUTPUT_CHARS = 2_000_000  # per rendered field: far above any certified message
MAX_SECONDS = 5.0  # CPU per row inside render_limits(): a body renders in well under 1 ms
MAX_BUILT_CHARS = 8 * MAX_OUTPUT_CHARS  # per row: characters built by checked operations
TICKS = 5  # inside rows_timed() a row's CPU time is counted in MAX_SECONDS / TICKS ticks
MAX_POWER_BITS = 4_096  # `**` results: enough for any arithmetic a notice needs
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SEQUENCES = (str, list, tuple)
_COLLECTIONS = (*_CONTAINERS, MappingView)
PRINTED_WHOLE = (*_COLLECTIONS, Namespace)  # str() of these prints every item


class TemplateLimitError(FilterValueError):
    """A render went over a bound (output size, characters built, time); a row error."""


class _Budget(threading.local):
    """Characters built during the current render_limits() block, per thread."""

    left: int | None = None


_budget = _Budget()


def charge(chars: int) -> None:
    """Account for `chars` about to be built: over one field's limit, or the row's budget, fails."""
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


def weight(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """Roughly how many characters `str(value)` makes; stops counting past `limit`."""
    if isinstance(value, str):
        return len(value)
    inner: Any = value._Namespace__attrs if isinstance(value, Namespace) else value  # its repr
    if not isinstance(inner, _COLLECTIONS):
        return 1
    total = 2
    items: Any = inner.items() if isinstance(inner, dict) else inner  # views are iterable
    for item in items:
        total += weight(item, limit - total) + 2
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


_SLICE = 4_096


def bounded_concat(chunks: Iterable[str]) -> str:
    """`"".join` that stops once the output passes MAX_OUTPUT_CHARS (the environment's concat).

    Chunks are taken a slice at a time: a body of a few dozen chunks is one slice, joined and
    measured once; a runaway loop stops after one slice over the limit (measured in C,
    `sum(map(len, …))`).
    """
    iterator = iter(chunks)
    parts = list(islice(iterator, _SLICE))
    if len(parts) < _SLICE:  # the usual field: everything came in the first slice
        text = "".join(parts)
        charge(len(text))
        return text
    total = sum(map(len, parts))
    more = True
    while more and total <= MAX_OUTPUT_CHARS:
        part = list(islice(iterator, _SLICE))
        total += sum(map(len, part))
        parts += part
        more = len(part) == _SLICE
    charge(total)
    return "".join(parts)


class Buffer(list[str]):
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


def check_operation(op: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before it is computed."""
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                charge(weight(seq) * max(times, 0))
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        charge(weight(left) + weight(right))
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        if right * abs(left).bit_length() > MAX_POWER_BITS:
            raise TemplateLimitError(f"{left} ** {right} is too large a number")
    elif op == "%" and isinstance(left, str):
        check_percent_format(left)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?")
_WIDTH = re.compile(r"(\d+)")


def check_percent_format(fmt: str) -> None:
    """Refuse a `%` format whose widths or precisions would make a huge string."""
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n == "*" or (n and int(n) > MAX_OUTPUT_CHARS):
                raise TemplateLimitError("format width too large")


def check_format_spec(spec: str) -> None:
    """Refuse a `str.format` field spec with a huge width or precision."""
    if any(int(n) > MAX_OUTPUT_CHARS for n in _WIDTH.findall(spec)):
        raise TemplateLimitError("format width too large")


class BoundedFormatter(SandboxedFormatter):
    """str.format for templates: attributes through the sandbox, widths bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class BoundedEscapeFormatter(SandboxedEscapeFormatter):
    """Markup.format for templates: arguments escaped, widths bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return super().format_field(value, format_spec)


# Amplifying str methods and the argument that sets the result's size.
_STR_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_str_call(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The call's arguments (an iterable to join made a list), its result's size checked."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = getattr(obj, "__name__", "")
    if name in _STR_WIDTH_METHODS and args and isinstance(args[0], int):
        charge(max(args[0], len(owner)))
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        charge(len(owner) + owner.count("\t") * max(size, 0))
    elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        charge(len(owner) + (owner.count(args[0]) + 1) * len(args[1]))
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], _CONTAINERS) else list(args[0])
        charge(weight(items) + len(items) * len(owner))
        return (items, *args[1:])
    return args


def bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's builtin filter `name` with the sizes of its result checked first."""

    def center(value: Any, width: int = 80) -> Any:
        charge(max(int(width), len(str(value))))
        return fn(value, width)

    def indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> Any:
        text = str(value)
        pad = len(width) if isinstance(width, str) else int(width)
        charge(len(text) + (text.count("\n") + 1) * pad)
        return fn(value, width, *args, **kwargs)

    @jinja2.pass_eval_context
    def replace(ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
        text = str(value)
        charge(len(text) + (text.count(str(old)) + 1) * len(str(new)))
        return fn(ctx, value, old, new, count)

    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_percent_format(str(value))
        out = fn(value, *args, **kwargs)
        charge(len(out))
        return out

    @jinja2.pass_eval_context
    def join(ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = value if isinstance(value, _CONTAINERS) else list(value)
        charge(weight(items) + len(items) * len(d))
        return fn(ctx, items, d, attribute)

    def stringify(value: Any, *args: Any, **kwargs: Any) -> Any:
        charge(weight(value))
        return fn(value, *args, **kwargs)

    def stringify_passed(passed: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        charge(weight(value))
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
BOUNDED_FILTERS = frozenset(
    {
        *("center", "indent", "replace", "format", "join", "string", "pprint", "tojson"),
        *("e", "escape", "forceescape", "upper", "lower", "title", "capitalize", "trim"),
        *("striptags", "urlize", "wordwrap", "urlencode", "xmlattr", "safe"),
    }
)


def _on_alarm(signum: int, frame: Any) -> None:
    if not _timer.depth:  # a signal handled just after the row ended is not this row's
        return
    if _timer.ticking:  # inside rows_timed(): one tick of the shared interval timer
        _timer.ticks += 1
        if _timer.ticks < _timer.limit:
            return
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
    ticking = False  # inside rows_timed(): an interval timer runs, rows count its ticks
    ticks = 0  # ticks since the current row began
    limit = TICKS  # ticks a row may take
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
                if _timer.ticking:  # no system call: the row counts the running timer's ticks
                    _timer.ticks = 0
                    _timer.limit = max(1, round(self.max_seconds * TICKS / MAX_SECONDS))
                else:
                    signal.setitimer(signal.ITIMER_PROF, self.max_seconds)
            _timer.depth += 1

    def __exit__(self, *exc: object) -> None:
        if self._timed:
            _timer.depth -= 1
            if not _timer.depth and not _timer.ticking:
                signal.setitimer(signal.ITIMER_PROF, 0)
        _budget.left = self._outer


class rows_timed:
    """Many rows in a row (a chunk of a scan): one interval timer for all of them.

    Arming and disarming a one-shot timer per row costs two system calls, a few per cent of a
    scan; inside this block the timer ticks every MAX_SECONDS / TICKS of CPU time and each
    `render_limits()` row only resets its tick count, so a row is stopped after
    (TICKS - 1) / TICKS to 1 times its time limit. Outside a block each row arms its own.
    """

    __slots__ = ("_armed",)

    def __init__(self) -> None:
        self._armed = False

    def __enter__(self) -> None:
        if (
            not _timer.ticking
            and not _timer.depth
            and threading.get_ident() == threading.main_thread().ident
            and (_timer.usable or _timer.install())
        ):
            tick = MAX_SECONDS / TICKS
            _timer.ticking, self._armed = True, True
            signal.setitimer(signal.ITIMER_PROF, tick, tick)

    def __exit__(self, *exc: object) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _timer.ticking = False
