"""A sliding-window rate limiter keyed by client address, reading time from an injected clock."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """Admit at most `limit` requests per key in any window of `window` seconds.

    The window slides: a request is admitted when fewer than `limit` admitted requests carry a
    time in (now - window, now]. Only admitted requests are remembered, so a refused request
    never pushes the client's next chance further out.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float | None:
        """Admit one request for `key` and return its time stamp, or None when over the limit."""
        now = self._clock()
        with self._lock:
            times = self._admitted.setdefault(key, deque())
            self._expire(times, now)
            if len(times) >= self.limit:
                return None
            times.append(now)
            return now

    def release(self, key: str, stamp: float) -> None:
        """Forget an admitted request, for one that ended up refused after all (a 429 burst)."""
        with self._lock:
            times = self._admitted.get(key)
            if times is not None and stamp in times:
                times.remove(stamp)

    def wait_time(self, key: str) -> float:
        """Seconds until `key` may send again (0 when it may send now)."""
        now = self._clock()
        with self._lock:
            times = self._admitted.get(key, deque())
            self._expire(times, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
