"""Request pacing: never more than `limit` requests in any sliding `window`, and no idle gaps.

The rule both limiters enforce: a request may START only while fewer than `limit` earlier
requests are "active", where a request is active from its start until its COMPLETION +
window. A request reached the server somewhere between its start and its completion, so
spacing starts by completion + window means the server, whether it counts in fixed or sliding
windows, never sees more than `limit` arrivals in one window, whatever the network latency.
In-flight requests stay active until they complete. `penalize()` after a 429 (another client
on our IP) treats the window as full for one window. `reserve()` takes the next slot ahead of
its request, so that the sender writes its intent only once the request may go (a kill while
waiting then leaves nothing in doubt); that thread's next `slot()` uses it without waiting.

`SlidingWindowLimiter` paces one process; `HostLimiter` shares the same budget between all
lmbatch processes of one host through a flock-guarded JSON file, with FIFO order between the
waiting processes so that each makes progress.

Why not pyrate-limiter (4.5.1, SQLiteBucket): its item is one timestamp taken at admission,
expiring at timestamp + interval; a slot cannot be held while its request is in flight nor
expire at completion + window, which is what makes zero margin safe against latency. It also
knows no dead owner (pid) nor reboot, needs the `filelock` extra across processes, and stamps
items with wall-clock time, which NTP can step. Our file costs ~100 lines and fits exactly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from batch import errors

__all__ = [
    "Clock",
    "HostLimiter",
    "RateLimiter",
    "SlidingWindowLimiter",
    "StopClock",
    "SystemClock",
]


class Clock(Protocol):
    """Monotonic time and a way to wait, injected so tests never wait for real."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for `seconds`."""
        ...


class SystemClock:
    """The real clock: time.monotonic is CLOCK_MONOTONIC, shared by all processes on Linux."""

    def now(self) -> float:
        """Monotonic seconds since boot."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class RateLimiter(Protocol):
    """What the API client needs from a limiter."""

    requests: int  # requests admitted by this limiter object

    def slot(self) -> contextlib.AbstractContextManager[None]:
        """Wait for a free slot, then hold it for the duration of one request."""
        ...

    def penalize(self) -> None:
        """A 429 came back: treat the window as full until now + window."""
        ...

    def next_free_in(self) -> float:
        """Seconds until a request could start (0.0: now)."""
        ...

    def reserve(self) -> contextlib.AbstractContextManager[None]:
        """Take a slot now for this thread's next `slot()`, which then starts at once."""
        ...

    def used(self) -> int:
        """Requests that still count against the current window."""
        ...


def _room_wait(
    expiries: list[float], now: float, limit: int, penalty_until: float, ahead: int, poll: float
) -> float:
    """Seconds before one more request may start; 0.0 means now.

    `expiries` are the times the active requests stop counting (all > now); `ahead` is how
    many waiters have priority and will each take a slot before us.
    """
    wait = max(0.0, penalty_until - now)
    need = len(expiries) + ahead + 1 - limit  # how many active requests must expire first
    if need > 0:
        if need <= len(expiries):
            wait = max(wait, sorted(expiries)[need - 1] - now)
        else:
            # Free slots exist but are reserved for waiters ahead of us that have not yet
            # woken to take them; look again shortly.
            wait = max(wait, poll)
    return wait


def _check_limits(limit: int, window: float) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not window > 0 or math.isinf(window):
        raise ValueError(f"window must be a positive number of seconds, got {window}")


_Held = TypeVar("_Held")


class _Reserving(Generic[_Held]):
    """`slot()` and `reserve()` over a limiter's own `_acquire` (wait, then take a slot) and
    `_release` (the request completed): one implementation for both limiters."""

    _reserved: threading.local  # `reserve()`'s slot, per thread, until `slot()` takes it

    def _acquire(self) -> _Held:
        raise NotImplementedError

    def _release(self, held: _Held) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a free slot (or use this thread's reserved one), then hold it for the
        duration of one request."""
        held = self._reserved.__dict__.pop("slot", None) or self._acquire()
        try:
            yield
        finally:
            self._release(held)

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        """Wait for a free slot now and keep it for this thread's next `slot()`.

        What must be on disk before a request leaves (the sender's intent) is written once
        the request may go: a process killed while it waits has recorded nothing. A reserved
        slot counts from now, a little before its request starts (the safe side); one that no
        request used by the end of the block is completed then.
        """
        held = self._acquire()
        self._reserved.slot = held
        try:
            yield
        finally:
            if self._reserved.__dict__.pop("slot", None) is held:
                self._release(held)


@dataclass
class _Slot:
    start: float
    end: float | None = None  # None while the request is in flight


class SlidingWindowLimiter(_Reserving[_Slot]):
    """At most `limit` request starts per sliding `window`, counted to each completion."""

    def __init__(self, limit: int, window: float, clock: Clock | None = None) -> None:
        _check_limits(limit, window)
        self.limit = limit
        self.window = window
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.requests = 0
        self._slots: list[_Slot] = []
        self._penalty_until = -math.inf
        self._lock = threading.Lock()  # threads may share one limiter; the clock sleeps unlocked
        self._reserved = threading.local()  # `reserve()`'s slot, until `slot()` takes it

    def __repr__(self) -> str:
        return f"SlidingWindowLimiter(limit={self.limit}, window={self.window})"

    def _release(self, held: _Slot) -> None:
        with self._lock:
            held.end = self.clock.now()

    def _acquire(self) -> _Slot:
        while True:
            with self._lock:
                now = self.clock.now()
                wait = self._wait(now)
                if wait <= 0:
                    slot = _Slot(start=now)
                    self._slots.append(slot)
                    self.requests += 1
                    return slot
            self.clock.sleep(wait)

    def _expiries(self, now: float) -> list[float]:
        # An in-flight request expires no sooner than now + window: sleeping until then and
        # looking again is never too long.
        self._slots = [s for s in self._slots if s.end is None or s.end + self.window > now]
        return [now + self.window if s.end is None else s.end + self.window for s in self._slots]

    def _wait(self, now: float) -> float:
        return _room_wait(self._expiries(now), now, self.limit, self._penalty_until, 0, 0.0)

    def penalize(self) -> None:
        """A 429 came back: treat the window as full until now + window."""
        with self._lock:
            self._penalty_until = max(self._penalty_until, self.clock.now() + self.window)

    def next_free_in(self) -> float:
        """Seconds until a request could start (0.0: now)."""
        with self._lock:
            return self._wait(self.clock.now())

    def used(self) -> int:
        """Requests that still count against the current window (in flight included)."""
        with self._lock:
            return len(self._expiries(self.clock.now()))


# --- one budget for the whole host ------------------------------------------------------------

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_GRACE = 1.0  # a waiter this late past its planned wake-up loses its place until it returns


def _boot_id() -> str:
    # Monotonic time restarts at boot: state written before a reboot means nothing now.
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        # The command name may hold spaces and parentheses: fields restart after the last ')'.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return started is None or _process_start(pid) in (None, started)


@dataclass
class _Entry:
    id: str
    pid: int
    pst: int | None  # process start ticks, see _process_start
    start: float  # for a waiter: when it started waiting (its place in the queue)
    end: float | None = None  # for a waiter: when it plans to look again


@dataclass
class _HostState:
    boot_id: str
    penalty_until: float
    slots: list[_Entry]
    waiters: list[_Entry]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "boot_id": self.boot_id,
            "penalty_until": self.penalty_until,
            "slots": [vars(e) for e in self.slots],
            "waiters": [vars(e) for e in self.waiters],
        }

    @classmethod
    def from_json(cls, data: Any) -> _HostState:
        def entries(items: Any) -> list[_Entry]:
            out = []
            for item in items:
                entry = _Entry(**item)
                if not isinstance(entry.pid, int) or not isinstance(entry.start, int | float):
                    raise TypeError("bad entry")
                out.append(entry)
            return out

        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("unknown state format")
        return cls(
            boot_id=str(data["boot_id"]),
            penalty_until=float(data["penalty_until"]),
            slots=entries(data["slots"]),
            waiters=entries(data["waiters"]),
        )


class HostLimiter(_Reserving[str]):
    """The SlidingWindowLimiter rule shared by every lmbatch process on this host."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        key: str,
        state_dir: Path,
        clock: Clock | None = None,
        request_timeout: float = 120.0,
    ) -> None:
        _check_limits(limit, window)
        safe_key = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")
        if not safe_key:
            raise ValueError(f"rate-limit key {key!r} has no usable characters")
        self.limit = limit
        self.window = window
        self.clock: Clock = clock if clock is not None else SystemClock()
        # An in-flight entry of a live process stops counting at start + this + window: a
        # process that hangs (or a pid we cannot check) must not block the others forever.
        self.request_timeout = request_timeout
        self.requests = 0
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / f"ratelimit-{safe_key}.json"
        self._boot = _boot_id()
        self._poll = min(self.window / 10, 0.1)
        self._reserved = threading.local()  # `reserve()`'s slot id, until `slot()` takes it

    def __repr__(self) -> str:
        return f"HostLimiter(limit={self.limit}, window={self.window}, path={str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[_HostState, float]]:
        """The cleaned-up shared state under an exclusive lock, written back on success."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            now = self.clock.now()
            state = self._load(file.read(), now)
            yield state, now
            # One small write() of a regular file: a kill cannot leave half of it behind.
            file.seek(0)
            file.truncate()
            file.write(json.dumps(state.to_json()))
            file.flush()

    def _load(self, text: str, now: float) -> _HostState:
        fresh = _HostState(self._boot, 0.0, [], [])
        if not text.strip():
            return fresh
        try:
            state = _HostState.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError):
            # We cannot tell what the other processes did: assume the window is full.
            fresh.penalty_until = now + self.window
            return fresh
        if state.boot_id != self._boot:
            return fresh
        self._clean(state, now)
        return state

    def _clean(self, state: _HostState, now: float) -> None:
        window, cap = self.window, self.request_timeout + self.window
        state.penalty_until = min(state.penalty_until, now + window)
        live: dict[tuple[int, int | None], bool] = {}

        def alive(e: _Entry) -> bool:
            if (e.pid, e.pst) not in live:
                live[e.pid, e.pst] = _alive(e.pid, e.pst)
            return live[e.pid, e.pst]

        slots = []
        for slot in state.slots:
            slot.start = min(slot.start, now)
            if slot.end is None and not alive(slot):
                # Its request reached the server, if at all, before the process died, and
                # that was before now: counting it as completed now is safe.
                slot.end = now
            if slot.end is not None:
                slot.end = min(slot.end, now)
                if slot.end + window > now:
                    slots.append(slot)
            elif slot.start + cap > now:
                slots.append(slot)
        state.slots = slots
        state.waiters = [w for w in state.waiters if alive(w)]

    def _expiries(self, state: _HostState, now: float) -> list[float]:
        cap = self.request_timeout + self.window
        return [
            s.end + self.window if s.end is not None else min(now + self.window, s.start + cap)
            for s in state.slots
        ]

    def _acquire(self) -> str:
        pid = os.getpid()  # at call time: the limiter may have crossed a fork
        me = _Entry(id=f"{pid}-{uuid.uuid4().hex}", pid=pid, pst=_process_start(pid), start=0.0)
        since: float | None = None
        try:
            while True:
                with self._locked() as (state, now):
                    if since is None:
                        since = now
                    wait = self._admit(state, me, since, now)
                if wait <= 0:
                    return me.id
                self.clock.sleep(wait)
        except BaseException:
            # Interrupted while waiting: give up our place so nobody waits for us.
            with contextlib.suppress(OSError), self._locked() as (state, _):
                state.waiters = [w for w in state.waiters if w.id != me.id]
            raise

    def _admit(self, state: _HostState, me: _Entry, since: float, now: float) -> float:
        """Take a slot for `me` (0.0) or queue it and say how long to wait."""
        state.waiters = [w for w in state.waiters if w.id != me.id]
        present = [w for w in state.waiters if w.end is None or w.end + _GRACE >= now]
        ahead = sum((w.start, w.id) < (since, me.id) for w in present)
        wait = _room_wait(
            self._expiries(state, now), now, self.limit, state.penalty_until, ahead, self._poll
        )
        if wait <= 0:
            state.slots.append(_Entry(id=me.id, pid=me.pid, pst=me.pst, start=now))
            self.requests += 1
        else:
            state.waiters.append(
                _Entry(id=me.id, pid=me.pid, pst=me.pst, start=since, end=now + wait)
            )
        return wait

    def _release(self, held: str) -> None:
        with self._locked() as (state, now):
            for slot in state.slots:
                if slot.id == held:
                    slot.end = now
                    return
            # Dropped after overrunning request_timeout: it still counts for one window.
            pid = os.getpid()
            state.slots.append(_Entry(held, pid, _process_start(pid), now, now))

    def penalize(self) -> None:
        """A 429 came back: every process treats the window as full until now + window."""
        with self._locked() as (state, now):
            state.penalty_until = max(state.penalty_until, now + self.window)

    def next_free_in(self) -> float:
        """Seconds until a request could start, ignoring processes queued before us."""
        with self._locked() as (state, now):
            return _room_wait(
                self._expiries(state, now), now, self.limit, state.penalty_until, 0, self._poll
            )

    def used(self) -> int:
        """Requests of all processes that still count against the current window."""
        with self._locked() as (state, _):
            return len(state.slots)


class StopClock:
    """The real clock, whose waits end early (with WorkPending) once a stop is asked.

    The one stop-aware sleep: pacing, the send window and tracking's passes all wait through
    it, so Ctrl-C ends any wait at once and says what was being waited for.
    """

    def __init__(self, stop: threading.Event, reason: str = "interrupted while waiting") -> None:
        self._stop = stop
        self._reason = reason

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Wait, unless a stop comes first."""
        if self._stop.wait(max(0.0, seconds)):
            raise errors.WorkPending(self._reason)
