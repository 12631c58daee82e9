"""A run's counters: owned by the runner, advanced by the send loop, read by the display.

They are the run's own record of what it did (requests, sends, 429s), returned in the
summary; the progress display (batch.progress) only reads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from batch.limits import REQUESTS_PER_WINDOW, WINDOW_SECONDS
from batch.plan import eta_seconds

__all__ = ["RunStats"]


@dataclass
class RunStats:
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
    per_window: int = REQUESTS_PER_WINDOW
    window: float = WINDOW_SECONDS
    started: float = field(default_factory=time.monotonic)

    @property
    def eta_seconds(self) -> float:
        """Time the remaining requests need at the full rate."""
        left = self.requests_planned - self.requests_done
        return eta_seconds(left, per_window=self.per_window, window=self.window)

    def count_request(self, status: int | None) -> None:
        """One HTTP attempt went out (`status` None: no answer came back)."""
        self.api_calls += 1
        if status == 429:
            self.rate_limited += 1
