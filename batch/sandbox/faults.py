"""Fault injection: seeded, per-kind rates, plus a queue of forced faults for exact tests.

Kinds (see the package docstring for what a client sees):
    error_500      answer 500 before the request reaches any handler: nothing is recorded
    lost_response  run the handler (the send IS recorded), then cut the connection
    slow           run the handler (recorded first), then hold the answer `slow_seconds`
    burst_429      answer 429 to this request and the client's next `burst_length` /api requests
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque

import httpx

from batch.sandbox.config import FAULT_KINDS, validate_faults


class Faults:
    """The fault table of one sandbox; tests change it at run time through `set` and `force`."""

    def __init__(
        self,
        rates: dict[str, float],
        *,
        seed: int,
        endpoints: tuple[str, ...],
        burst_length: int,
    ) -> None:
        validate_faults(rates)
        self._rates = dict(rates)
        self._rng = random.Random(seed)
        self._endpoints = endpoints
        self.burst_length = burst_length
        self._forced: deque[str] = deque()
        self._bursts: dict[str, int] = {}
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def rates(self) -> dict[str, float]:
        """A copy of the current rates by kind."""
        with self._lock:
            return dict(self._rates)

    @property
    def counts(self) -> dict[str, int]:
        """How many times each kind has fired so far."""
        with self._lock:
            return dict(self._counts)

    def set(
        self, rates: dict[str, float] | None = None, /, *, seed: int | None = None, **more: float
    ) -> None:
        """Replace the whole rate table, e.g. `set(lost_response=0.5)`; `set()` turns faults off.

        `seed` restarts the random draw, so a test gets the same faults whatever ran before.
        """
        table = {**(rates or {}), **more}
        validate_faults(table)
        with self._lock:
            self._rates = table
            if seed is not None:
                self._rng.seed(seed)

    def clear(self) -> None:
        """Turn every fault off and drop forced faults and running bursts."""
        with self._lock:
            self._rates = {}
            self._forced.clear()
            self._bursts.clear()

    def force(self, kind: str, times: int = 1) -> None:
        """Make the next `times` eligible requests suffer `kind`, before any random draw."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known faults: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._forced.extend([kind] * times)

    def applies_to(self, path: str) -> bool:
        """Whether faults may hit a request for `path`."""
        return "*" in self._endpoints or path in self._endpoints

    def draw(self) -> str | None:
        """Pick the fault for one eligible request (forced ones first), or None."""
        with self._lock:
            if self._forced:
                kind: str | None = self._forced.popleft()
            elif any(self._rates.values()):
                kind = self._pick(self._rng.random())
            else:
                kind = None
            if kind is not None:
                self._counts[kind] += 1
            return kind

    def start_burst(self, client: str) -> None:
        """Refuse the client's next `burst_length` /api requests with 429."""
        with self._lock:
            self._bursts[client] = self.burst_length

    def take_burst(self, client: str) -> bool:
        """Use up one refusal of a running burst; False when no burst runs for this client."""
        with self._lock:
            left = self._bursts.get(client, 0)
            if left <= 0:
                return False
            if left == 1:
                del self._bursts[client]
            else:
                self._bursts[client] = left - 1
            return True

    def _pick(self, draw: float) -> str | None:
        # Fixed kind order plus cumulative thresholds: the same seed gives the same faults.
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self._rates.get(kind, 0.0)
            if draw < edge:
                return kind
        return None


class LostResponse(httpx.RemoteProtocolError):
    """Raised by the app after a `lost_response` send was recorded.

    Over a real socket uvicorn answers it by closing the connection, and httpx raises its own
    RemoteProtocolError. In-process (httpx.ASGITransport, Starlette's TestClient) this exception
    itself reaches the client, so the client catches the same class either way.
    """
