"""A run's counters, and the progress of tracking and downloads: what the displays read.

`RunStats` is owned by the runner, advanced by the send loop, read by the display and
returned in the summary. `StepStats` is the same for `track` and `certificates` (look-ups and
downloads instead of sends). Both answer `eta()`: the time left at the rate limit, computed
when asked (so it never freezes between requests), including the wait for the next free
request slot and, for runs, the send window's closed hours. The displays (batch.progress)
only read them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from batch.limits import REQUESTS_PER_WINDOW, WINDOW_SECONDS
from batch.plan import eta_seconds
from batch.timeutil import utcnow
from batch.window import SendWindow

__all__ = ["Eta", "RunStats", "StepStats", "finish_within", "human_duration"]

_REFRESH = 2.0  # seconds a limiter's "next free in" answer is reused before asking again


def human_duration(seconds: float) -> str:
    """`42 s`, `12 min`, `3 h 05 min`, `2 d 4 h`: seconds under a minute, minutes under an hour."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 2 * 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m:02d} min"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h"


def finish_within(window: SendWindow, start: datetime, work: float) -> datetime:
    """When `work` seconds of sending end if they may only happen while `window` is open."""
    at = window.next_open(start)
    for _ in range(1000):  # a window open one hour a week still ends within any real campaign
        closes = window.closes_at(at)
        if closes is None:
            break
        room = (closes - at).total_seconds()
        if room >= work:
            break
        work -= max(room, 0.0)
        at = window.next_open(closes)
    return at + timedelta(seconds=work)


@dataclass(frozen=True)
class Eta:
    """What is left, in time: seconds, the local finish time, and what is waited for now."""

    seconds: float
    finish: datetime | None = None  # in the job's time zone
    waiting: str | None = None  # "next request in 42 s", "send window opens Mon 09:00 CET"
    left: int = 0  # steps left

    def text(self) -> str:
        """`ETA 12 min (about Mon 10:42 CET)`, or `nothing left`."""
        if self.left <= 0:
            return "nothing left" if self.waiting is None else self.waiting
        when = f" (about {self.finish:%a %H:%M %Z})" if self.finish is not None else ""
        return f"ETA {human_duration(self.seconds)}{when}"


@dataclass
class _Pace:
    """The rate limit and the send window a count of requests goes through."""

    per_window: int = REQUESTS_PER_WINDOW
    window: float = WINDOW_SECONDS
    next_free: Callable[[], float] | None = None  # the limiter's wait for the next slot
    send_window: SendWindow | None = None
    tz: tzinfo | None = None  # times a person reads
    clock: Callable[[], datetime] = utcnow
    _free: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    def _free_in(self) -> float:
        if self.next_free is None:
            return 0.0
        now = time.monotonic()
        if self._free is None or now - self._free[0] > _REFRESH:
            try:
                self._free = (now, max(0.0, self.next_free()))
            except OSError:  # the limiter's state file is busy or gone: no wait known
                self._free = (now, 0.0)
        return max(0.0, self._free[1] - (now - self._free[0]))

    def eta_for(self, requests: int) -> Eta:
        """The time `requests` more requests take from now, and what is waited for first."""
        if requests <= 0:
            return Eta(0.0)
        free = self._free_in()
        work = free + eta_seconds(requests, per_window=self.per_window, window=self.window)
        now = self.clock()
        waiting = f"next request in {human_duration(free)}" if free >= 1 else None
        finish = now + timedelta(seconds=work)
        if self.send_window is not None and not self.send_window.always:
            if not self.send_window.is_open(now):
                opens = self.send_window.next_open(now).astimezone(self.tz or now.tzinfo)
                waiting = f"send window opens {opens:%a %H:%M %Z}"
            finish = finish_within(self.send_window, now, work)
        seconds = (finish - now).total_seconds()
        local = finish.astimezone(self.tz) if self.tz is not None else finish.astimezone()
        return Eta(seconds, local, waiting, requests)


@dataclass
class RunStats(_Pace):
    """Live counters of one run."""

    recipients: int = 0
    requests_planned: int = 0
    requests_done: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    in_doubt: int = 0
    api_calls: int = 0
    rate_limited: int = 0
    window_used: int = 0  # requests (of every process on the host) counting in the window now
    started: float = field(default_factory=time.monotonic)

    @property
    def eta_seconds(self) -> float:
        """Time the remaining requests need, waits for the limit and the window included."""
        return self.eta().seconds

    def eta(self) -> Eta:
        """The remaining requests' time, computed now."""
        return self.eta_for(self.requests_planned - self.requests_done)

    def count_request(self, status: int | None) -> None:
        """One HTTP attempt went out (`status` None: no answer came back)."""
        self.api_calls += 1
        if status == 429:
            self.rate_limited += 1

    # -- what the displays show (batch.progress) --------------------------------------------

    label = "sending"
    unit = "requests"

    @property
    def done(self) -> int:
        """Requests done (the bar's position)."""
        return self.requests_done

    @property
    def total(self) -> int:
        """Requests planned (the bar's end)."""
        return self.requests_planned

    def plan_lines(self) -> list[str]:
        """What the run is about to do, each line short enough for 80 columns."""
        return [
            f"{self.recipients} recipient(s) in {self.requests_planned} request(s); "
            f"limit {self.per_window} per {human_duration(self.window)}",
            self.eta().text(),
        ]

    def count_lines(self) -> list[str]:
        """The counts beneath the bar, each short enough for 80 columns."""
        return [
            f"{self.sent} sent · {self.failed} failed · {self.in_doubt} in doubt · "
            f"{self.retrying} retries",
            f"{self.api_calls} API calls ({self.rate_limited}×429) · "
            f"window {self.window_used}/{self.per_window} per {human_duration(self.window)}",
        ]

    def log_fields(self) -> dict[str, object]:
        """The counts of a log line."""
        return {
            "recipients": self.recipients,
            "requests": f"{self.requests_done}/{self.requests_planned}",
            "sent": self.sent,
            "failed": self.failed,
            "in_doubt": self.in_doubt,
            "api_calls": self.api_calls,
            "rate_limited": self.rate_limited,
            "window_used": f"{self.window_used}/{self.per_window}",
        }


@dataclass
class StepStats(_Pace):
    """Progress of `track` (look-ups) or `certificates` (downloads), one API call a step."""

    label: str = "tracking"
    unit: str = "look-ups"
    total: int = 0
    done: int = 0
    calls: int = 0
    detail: str = ""  # counts so far, short ("12 delivered, 3 read")
    between: str | None = None  # `track --watch` between passes: "next pass at 10:40 CET"

    def eta(self) -> Eta:
        """The remaining steps' time at the rate limit, computed now."""
        if self.between is not None:
            return Eta(0.0, None, self.between)
        return self.eta_for(self.total - self.done)

    def plan_lines(self) -> list[str]:
        """What the command is about to do."""
        return [f"{self.label}: {self.total} {self.unit}; {self.eta().text()}"]

    def count_lines(self) -> list[str]:
        """The counts beneath the bar."""
        return [f"{self.calls} API calls" + (f" · {self.detail}" if self.detail else "")]

    def log_fields(self) -> dict[str, object]:
        """The counts of a log line."""
        fields: dict[str, object] = {
            self.unit: f"{self.done}/{self.total}",
            "api_calls": self.calls,
        }
        if self.detail:
            fields["counts"] = self.detail
        return fields
