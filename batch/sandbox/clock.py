"""Settable clocks for tests: the sandbox reads time only through `SandboxConfig.clock`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class FakeClock:
    """A callable clock that stands still until a test moves it; safe to share across threads."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current fake time in seconds since the epoch."""
        with self._lock:
            return self._now

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
