"""Progress for people (a rich bar with counts and ETA) and for cron (plain or JSON lines).

The display reads the run's counters (batch.stats.RunStats); it never changes them.

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from batch.errors import InputError
from batch.stats import RunStats
from batch.timeutil import utcnow

__all__ = [
    "LineReporter",
    "NullReporter",
    "Reporter",
    "RichReporter",
    "RunStats",
    "open_reporter",
]


class Reporter(Protocol):
    """Receives progress from the run (the CLI shows it; tests ignore it)."""

    def start(self, stats: RunStats) -> None:
        """The plan is known."""

    def update(self, stats: RunStats) -> None:
        """Something changed."""

    def note(self, message: str) -> None:
        """A line worth showing (in-doubt found, credits, retries)."""

    def stop(self) -> None:
        """The run is over."""


class NullReporter:
    """A reporter that shows nothing."""

    def start(self, stats: RunStats) -> None:
        """Ignore."""

    def update(self, stats: RunStats) -> None:
        """Ignore."""

    def note(self, message: str) -> None:
        """Ignore."""

    def stop(self) -> None:
        """Ignore."""


def _eta(stats: RunStats) -> str:
    seconds = stats.eta_seconds
    if seconds <= 0:
        return "now"
    finish = datetime.now().astimezone() + timedelta(seconds=seconds)
    return f"{timedelta(seconds=round(seconds))} (about {finish:%a %H:%M})"


class RichReporter:
    """A live display: a bar of requests with elapsed time and ETA, and the counts beneath."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} requests"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
        )
        self.task = self.progress.add_task("sending", total=0, eta="")
        self.counts = Text()
        self.live = Live(Group(self.progress, self.counts), console=self.console)

    def start(self, stats: RunStats) -> None:
        """Show the plan and start the display."""
        self.console.print(
            f"{stats.recipients} recipient(s) in {stats.requests_planned} request(s); "
            f"limit {stats.per_window} per {stats.window:g} s; ETA {_eta(stats)}"
        )
        self.live.start()
        self.update(stats)

    def update(self, stats: RunStats) -> None:
        """Refresh the bar and the counts."""
        self.progress.update(
            self.task,
            total=stats.requests_planned,
            completed=stats.requests_done,
            eta=_eta(stats),
        )
        self.counts.truncate(0)
        self.counts.append_text(
            Text.from_markup(
                f"[green]{stats.sent} sent[/] · [red]{stats.failed} failed[/] · "
                f"{stats.retrying} retries · [yellow]{stats.in_doubt} in doubt[/] · "
                f"{stats.api_calls} API calls ({stats.rate_limited}×429) · "
                f"window {stats.window_used}/{stats.per_window}"
            )
        )
        self.live.refresh()

    def note(self, message: str) -> None:
        """Print a line above the display."""
        # Notes quote keys, addresses and server messages: never markup.
        self.live.console.print(
            f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", highlight=False
        )

    def stop(self) -> None:
        """Leave the final display on screen."""
        self.live.stop()


class LineReporter:
    """One line per event, plain or JSON, for unattended runs (cron, systemd, --log-file)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        as_json: bool = False,
        fallback: IO[str] | None = None,
    ) -> None:
        self.stream: IO[str] | None = stream or sys.stderr
        self.as_json = as_json
        # Where lines go once `stream` fails: stderr (None: nowhere; the run goes on).
        self.fallback = fallback if fallback is not None else sys.stderr
        self._last = 0.0

    def _emit(self, event: str, **fields: object) -> None:
        stamp = utcnow().isoformat(timespec="seconds")
        if self.as_json:
            line = json.dumps({"time": stamp, "event": event, **fields}, default=str)
        else:
            line = f"{stamp} {event} " + " ".join(f"{k}={v}" for k, v in fields.items())
        self._write(line + "\n")

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

    def _fields(self, stats: RunStats) -> dict[str, object]:
        return {
            "requests": f"{stats.requests_done}/{stats.requests_planned}",
            "sent": stats.sent,
            "failed": stats.failed,
            "in_doubt": stats.in_doubt,
            "api_calls": stats.api_calls,
            "rate_limited": stats.rate_limited,
            "window_used": f"{stats.window_used}/{stats.per_window}",
            "eta_seconds": round(stats.eta_seconds),
        }

    def start(self, stats: RunStats) -> None:
        """Log the plan."""
        self._emit("start", recipients=stats.recipients, **self._fields(stats))

    def update(self, stats: RunStats) -> None:
        """Log progress at most every 10 seconds."""
        now = time.monotonic()
        if now - self._last >= 10:
            self._last = now
            self._emit("progress", **self._fields(stats))

    def note(self, message: str) -> None:
        """Log a notable event."""
        self._emit("note", message=message)

    def stop(self) -> None:
        """Log the end."""
        self._emit("stop")


@contextmanager
def open_reporter(log_file: Path | None, as_json: bool, console: Console) -> Iterator[Reporter]:
    """The display for `lmbatch run`: a bar on a terminal, log lines otherwise (or to a file).

    An unusable `log_file` is an InputError here, before the run reads or sends anything.
    """
    if log_file is not None:
        stream = open_log(log_file)
        try:
            yield LineReporter(stream, as_json=as_json)
        finally:
            with contextlib.suppress(OSError, ValueError):  # its failure was already said
                stream.close()
    elif as_json or not sys.stderr.isatty():
        yield LineReporter(as_json=as_json)
    else:
        yield RichReporter(console)


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
