"""Progress for people (a rich bar with counts and ETA) and for cron (plain or JSON lines).

One display for the three long commands: `run` (batch.stats.RunStats), `track` and
`certificates` (batch.stats.StepStats). The display only reads the counters; the ETA is
computed each time it is drawn or logged, so it counts down through rate-limit and send-window
waits instead of freezing between requests. On a terminal every line fits 80 columns; under a
pipe or in a log file a line comes at least every `LOG_EVERY` seconds, even while waiting, and
every line ends with a newline. The last log line (`stop`) carries the counts, the outcome and
the exit code, on every way out (`finish`; `open_reporter` writes it for errors).

A log file is checked when it is opened, before anything is sent (`open_reporter`: a missing
folder, a device such as /dev/full, a FIFO nobody reads are clear errors, exit 2), and a write
failing later (a disk filling up, a pipe whose reader went away) never stops the run: the
failure is said once on stderr and the lines go on there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from batch import errors
from batch.errors import InputError
from batch.stats import Eta, RunStats, StepStats, human_duration

__all__ = [
    "LOG_EVERY",
    "LineReporter",
    "NullReporter",
    "Progressing",
    "Reporter",
    "RichReporter",
    "RunStats",
    "StepStats",
    "human_duration",
    "open_reporter",
    "outcome_of",
    "terminal_reporter",
]

LOG_EVERY = 10.0  # seconds between progress lines in a log: well inside "talks within 15 s"


class Progressing(Protocol):
    """What a display reads: RunStats or StepStats."""

    @property
    def label(self) -> str:
        """What is going on ("sending")."""

    @property
    def unit(self) -> str:
        """What the bar counts ("requests")."""

    @property
    def done(self) -> int:
        """Steps done."""

    @property
    def total(self) -> int:
        """Steps planned."""

    def eta(self) -> Eta:
        """The time left, computed now."""

    def plan_lines(self) -> list[str]:
        """What is about to happen."""

    def count_lines(self) -> list[str]:
        """The counts so far."""

    def log_fields(self) -> dict[str, object]:
        """The counts of a log line."""


class Reporter(Protocol):
    """Receives progress from a long command (the CLI shows it; tests ignore it)."""

    def start(self, stats: Progressing) -> None:
        """The plan is known."""

    def update(self, stats: Progressing) -> None:
        """Something changed."""

    def note(self, message: str) -> None:
        """A line worth showing (in-doubt found, credits, retries)."""

    def stop(self) -> None:
        """The work is over (the display stays; the outcome comes with `finish`)."""

    def finish(self, outcome: str, exit_code: int, counts: dict[str, int], **extra: object) -> None:
        """The command's outcome: the last log line."""


class NullReporter:
    """A reporter that shows nothing."""

    def start(self, stats: Progressing) -> None:
        """Ignore."""

    def update(self, stats: Progressing) -> None:
        """Ignore."""

    def note(self, message: str) -> None:
        """Ignore."""

    def stop(self) -> None:
        """Ignore."""

    def finish(self, outcome: str, exit_code: int, counts: dict[str, int], **extra: object) -> None:
        """Ignore."""


def outcome_of(exit_code: int) -> str:
    """The word a log gives an exit code: done, done with problems, work left, or error."""
    return {
        errors.EXIT_OK: "done",
        errors.EXIT_PROBLEMS: "done with problems",
        errors.EXIT_PENDING: "work left",
    }.get(exit_code, "error")


def _eta_lines(eta: Eta) -> list[str]:
    lines = [eta.text()]
    if eta.waiting and eta.left:
        lines.append(eta.waiting)
    return lines


class RichReporter:
    """A live display: a bar with elapsed time, the ETA and what is waited for, the counts.

    Every line is kept under 80 columns (the bar has a fixed width); the ETA is recomputed at
    each refresh.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task("", total=0, unit="")
        self.stats: Progressing | None = None
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=2)

    def _render(self) -> RenderableType:
        if self.stats is None:
            return Text("")
        lines = _eta_lines(self.stats.eta()) + self.stats.count_lines()
        return Group(self.progress, *(Text(line, no_wrap=True) for line in lines))

    def start(self, stats: Progressing) -> None:
        """Show the plan and start the display."""
        self.stats = stats
        for line in stats.plan_lines():
            self.console.print(line, markup=False, highlight=False)
        self.progress.update(self.task, description=stats.label, unit=stats.unit)
        self.live.start()
        self.update(stats)

    def update(self, stats: Progressing) -> None:
        """Refresh the bar and the counts."""
        self.stats = stats
        self.progress.update(self.task, total=stats.total, completed=stats.done)
        self.live.refresh()

    def note(self, message: str) -> None:
        """Print a line above the display."""
        tz = getattr(self.stats, "tz", None)  # the job's zone, named
        # Notes quote keys, addresses and server messages: never markup.
        self.live.console.print(
            f"[dim]{datetime.now(tz).astimezone(tz):%H:%M:%S %Z}[/] {escape(message)}",
            highlight=False,
        )

    def stop(self) -> None:
        """Leave the final display on screen."""
        self.live.stop()

    def finish(self, outcome: str, exit_code: int, counts: dict[str, int], **extra: object) -> None:
        """The summary that follows says it on a terminal."""


class LineReporter:
    """One line per event, plain or JSON, for unattended runs (cron, systemd, --log-file).

    A progress line comes at most every `every` seconds on updates, and at least every
    `every` seconds while nothing happens (a rate-limit or send-window wait).
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        as_json: bool = False,
        every: float = LOG_EVERY,
        fallback: IO[str] | None = None,
    ) -> None:
        self.stream: IO[str] | None = stream or sys.stderr
        self.as_json = as_json
        self.every = every
        self.finished = False
        # Where lines go once `stream` fails: stderr (None: nowhere; the run goes on).
        self.fallback = fallback if fallback is not None else sys.stderr
        self._last = 0.0
        self._stats: Progressing | None = None
        self._lock = threading.Lock()
        self._quiet = threading.Event()
        self._ticker: threading.Thread | None = None

    def _emit(self, event: str, **fields: object) -> None:
        tz = getattr(self._stats, "tz", None)  # the job's zone once known; the offset says it
        stamp = datetime.now(tz).astimezone(tz).isoformat(timespec="seconds")
        if self.as_json:
            line = json.dumps({"time": stamp, "event": event, **fields}, default=str)
        else:
            line = f"{stamp} {event} " + " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        with self._lock:
            self._write(line.rstrip() + "\n")
            self._last = time.monotonic()

    def _write(self, text: str) -> None:
        """Write and flush; a failing stream is replaced by the fallback, said once there."""
        while self.stream is not None:
            try:
                self.stream.write(text)
                self.stream.flush()
                return
            except (OSError, ValueError) as err:  # ValueError: the stream was closed
                failed, self.stream = self.stream, None
                if failed is self.fallback:
                    return  # stderr itself is gone: nothing left to tell, the run goes on
                reason = getattr(err, "strerror", None) or str(err)
                self.stream = self.fallback
                with contextlib.suppress(OSError, ValueError):
                    self.fallback.write(
                        f"lmbatch: cannot write the log ({reason}); the run goes on, "
                        "its log lines follow here\n"
                    )

    def _fields(self, stats: Progressing) -> dict[str, object]:
        eta = stats.eta()
        fields = {**stats.log_fields(), "eta_seconds": round(eta.seconds)}
        if eta.left:
            fields["eta"] = eta.text()
        if eta.waiting and eta.left:
            fields["waiting"] = eta.waiting
        return fields

    def start(self, stats: Progressing) -> None:
        """Log the plan; from now on a line comes at least every `every` seconds."""
        self._stats = stats
        self._emit("start", **self._fields(stats))
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="progress-log", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._quiet.wait(self.every / 4):
            stats = self._stats
            if stats is not None and time.monotonic() - self._last >= self.every:
                self._emit("progress", **self._fields(stats))

    def update(self, stats: Progressing) -> None:
        """Log progress at most every `every` seconds."""
        self._stats = stats
        if time.monotonic() - self._last >= self.every:
            self._emit("progress", **self._fields(stats))

    def note(self, message: str) -> None:
        """Log a notable event."""
        self._emit("note", message=message)

    def stop(self) -> None:
        """The work is over: no more progress lines."""
        self._quiet.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def finish(self, outcome: str, exit_code: int, counts: dict[str, int], **extra: object) -> None:
        """The last line: the counts, the outcome and the exit code."""
        self.stop()
        if self.finished:
            return
        self.finished = True
        fields: dict[str, object] = {"outcome": outcome, "exit_code": exit_code}
        if self.as_json:
            fields["counts"] = counts
        else:
            fields.update(counts)
        self._emit("stop", **fields, **{k: v for k, v in extra.items() if v is not None})


def _plain(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


def _last_counts(reporter: Reporter) -> dict[str, int]:
    stats = getattr(reporter, "_stats", None)
    if stats is None:
        return {}
    fields = stats.log_fields()
    return {k: v for k, v in fields.items() if isinstance(v, int)}


def terminal_reporter(console: Console | None = None) -> Reporter:
    """A bar when `console` (default: stderr) is a terminal, log lines when it is not."""
    console = console or Console(stderr=True)
    return RichReporter(console) if console.is_terminal else LineReporter(console.file)


@contextmanager
def open_reporter(log_file: Path | None, as_json: bool, console: Console) -> Iterator[Reporter]:
    """The display for a long command: a bar on a terminal, log lines otherwise (or to a file).

    An error leaving the block is logged as the last line (outcome, exit code, counts so far)
    and marked `logged`, so the CLI's error handler does not log it again.
    """
    with _stream(log_file) as stream:
        reporter: Reporter
        if stream is not None:
            reporter = LineReporter(stream, as_json=as_json)
        elif as_json or not console.is_terminal:
            reporter = LineReporter(as_json=as_json)
        else:
            reporter = RichReporter(console)
        try:
            yield reporter
        except errors.BatchError as err:
            reporter.finish(
                outcome_of(err.exit_code), err.exit_code, _last_counts(reporter), message=str(err)
            )
            err.logged = True  # type: ignore[attr-defined]
            raise
        except BaseException as err:
            code = errors.EXIT_ERROR if not isinstance(err, SystemExit) else err.code
            reporter.finish(
                outcome_of(code if isinstance(code, int) else 1),
                code if isinstance(code, int) else 1,
                _last_counts(reporter),
                message=type(err).__name__,
            )
            raise
        finally:
            reporter.stop()


@contextmanager
def _stream(log_file: Path | None) -> Iterator[IO[str] | None]:
    if log_file is None:
        yield None
        return
    stream = open_log(log_file)
    try:
        yield stream
    finally:
        with contextlib.suppress(OSError, ValueError):  # its failure was already said
            stream.close()


def open_log(path: Path) -> IO[str]:
    """`path` opened for appending lines, or an InputError saying why it cannot be.

    Opened non-blocking (a FIFO with no reader is an error, not a hang), then checked: a
    regular file, a pipe, a terminal or /dev/null; a device such as /dev/full would take
    nothing and fail every write.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise _log_error(path, err.strerror or str(err)) from None
    info = os.fstat(fd)
    usable = (
        stat.S_ISREG(info.st_mode)
        or stat.S_ISFIFO(info.st_mode)
        or os.isatty(fd)
        or (stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat(os.devnull).st_rdev)
    )
    if not usable:
        os.close(fd)
        raise _log_error(path, "not a file, a pipe or a terminal")
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "a", encoding="utf-8")
    except OSError as err:
        os.close(fd)
        raise _log_error(path, err.strerror or str(err)) from None


def _log_error(path: Path, reason: str) -> InputError:
    return InputError(
        f"--log-file {path}: cannot write the log there ({reason}); nothing was sent",
        hint="give --log-file a file in a folder that exists and that you can write",
    )
