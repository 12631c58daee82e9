"""A settable clock for tests: the sandbox reads time only through `SandboxConfig.clock`."""

from __future__ import annotations

import threading


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
