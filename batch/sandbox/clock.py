"""Settable clocks: the one fake clock of the project, and the sandbox's shifted wall clock.

The sandbox reads time only through `SandboxConfig.clock`, a callable; lmbatch's limiters take
a `Clock` (`now()` and `sleep()`); the ledger and tracking take a callable returning an aware
datetime. `FakeClock` is all three, so a test drives the sandbox, the limiter and the ledger
from one clock, and nothing waits for real.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

__all__ = ["FakeClock", "ShiftedClock"]


class FakeClock:
    """A clock that moves only when told to (or by `tick` per reading); thread-safe.

    Time is seconds since the epoch. `sleep()` records each requested wait in `sleeps` and
    jumps forward by it; `advance()` lets time pass without anyone sleeping (the duration of a
    request, say). `tick` > 0 moves the clock on by that much after every reading, for code
    that needs every stamp it takes to be distinct.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, tick: float = 0.0) -> None:
        if tick < 0:
            raise ValueError("a clock only moves forward")
        self._now = start
        self._tick = tick
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"

    def __call__(self) -> float:
        """The current fake time in seconds since the epoch (the sandbox's clock)."""
        return self.now()

    def now(self) -> float:
        """The current fake time (the limiters' monotonic clock)."""
        with self._lock:
            now = self._now
            self._now += self._tick
            return now

    def utc(self) -> datetime:
        """The current fake time as an aware UTC datetime (the ledger's clock)."""
        return datetime.fromtimestamp(self.now(), UTC)

    def sleep(self, seconds: float) -> None:
        """Record the wait and jump forward by it."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now


class ShiftedClock:
    """Wall time plus jumps: statuses move when a test jumps, rate windows keep real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        """Seconds since the epoch, shifted by every jump so far."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump forward."""
        self.offset += seconds

    def utc(self) -> datetime:
        """The shifted time as an aware UTC datetime."""
        return datetime.fromtimestamp(self(), UTC)
