"""Pacing: never more than `limit` requests per window counted to completion, and no idle gaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch import errors, pacing
from batch.pacing import (
    HostLimiter,
    RateLimiter,
    SlidingWindowLimiter,
    StopClock,
    SystemClock,
)
from batch.sandbox import FakeClock, RunningSandbox

Limiter = SlidingWindowLimiter | HostLimiter
_keys = count()


def max_overlap(spans: list[tuple[float, float]], window: float) -> int:
    """The most requests active at one instant, each active over [start, end + window)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e + window, -1) for _, e in spans])
    # At equal times the -1 sorts first: an expiry at t frees the slot for a start at t.
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def run(limiter: Limiter, clock: FakeClock, durations: list[float]) -> list[tuple[float, float]]:
    """Sequential requests of the given durations; their (start, end) as seen inside the slot."""
    spans = []
    for duration in durations:
        with limiter.slot():
            start = clock.now()
            clock.advance(duration)
            spans.append((start, clock.now()))
    return spans


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def host(tmp_path: Path, clock: FakeClock) -> Callable[..., HostLimiter]:
    """HostLimiters (several may share one file) on a fake clock in a private state dir."""

    def make(limit: int = 2, window: float = 10.0, **kw: float) -> HostLimiter:
        return HostLimiter(limit, window, key="api.test", state_dir=tmp_path, clock=clock, **kw)

    return make


def read_state(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def write_state(limiter: HostLimiter, slots: list[dict[str, object]], **extra: object) -> None:
    state = {
        "version": 1,
        "boot_id": pacing._boot_id(),
        "penalty_until": 0.0,
        "slots": slots,
        "waiters": [],
    }
    limiter.path.write_text(json.dumps(state | extra))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- clocks -----------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_told_and_records_sleeps() -> None:
    clock = FakeClock(5.0)
    clock.advance(1.5)
    clock.sleep(2.0)
    assert clock.now() == 8.5
    assert clock.sleeps == [2.0]


def test_the_one_fake_clock_reads_as_seconds_and_as_utc_and_can_tick() -> None:
    clock = FakeClock(1_700_000_000.0)
    assert clock() == clock.now() == 1_700_000_000.0  # the sandbox's and the limiters' view
    assert clock.utc() == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # the ledger's
    with pytest.raises(ValueError):
        clock.advance(-1.0)
    ticking = FakeClock(0.0, tick=0.25)
    assert [ticking.now() for _ in range(3)] == [0.0, 0.25, 0.5]  # every stamp distinct
    assert ticking.sleeps == []


def test_system_clock_reads_the_monotonic_clock_every_process_shares() -> None:
    # HostLimiter compares times written by other processes: they must come from one clock.
    clock = SystemClock()
    before = time.monotonic()
    now = clock.now()
    assert before <= now <= time.monotonic()
    clock.sleep(-1.0)  # a wait already over: no error (time.sleep would raise), no wait
    clock.sleep(0.02)
    assert clock.now() - now >= 0.02


def test_stop_clock_ends_a_wait_once_a_stop_is_asked_and_says_what_it_waited_for() -> None:
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    with pytest.raises(errors.WorkPending, match="waiting for the next pass"):
        StopClock(stop, "interrupted while waiting for the next pass").sleep(60.0)
    assert time.monotonic() - started < 30.0  # it did not sit out the minute
    StopClock(threading.Event()).sleep(0.0)  # no stop: a zero wait just returns


def test_both_limiters_keep_the_rate_limiter_protocol(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiters: list[RateLimiter] = [SlidingWindowLimiter(2, 10.0, clock), host(2, 10.0)]
    for limiter in limiters:
        slot: AbstractContextManager[None] = limiter.slot()
        with slot:
            assert limiter.used() == 1  # in flight: it counts
        assert limiter.requests == 1
        assert limiter.next_free_in() == 0.0  # one of two slots left
        limiter.penalize()
        assert limiter.next_free_in() == pytest.approx(10.0)


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (1, 0.0), (1, -1.0), (1, float("inf"))])
def test_nonsense_limits_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit, window)


# --- one process ------------------------------------------------------------------------------


def test_first_limit_requests_go_at_once_then_each_waits_for_a_completion_plus_window(
    clock: FakeClock,
) -> None:
    limiter = SlidingWindowLimiter(3, 10.0, clock)
    spans = run(limiter, clock, [1.0] * 7)
    assert [s for s, _ in spans] == [0, 1, 2, 11, 12, 13, 22]
    # the 4th waits from 3 until the 1st's completion (1) + window (10): 8 s, not 10 - 3
    assert clock.sleeps == [8.0, 8.0]
    assert limiter.requests == 7


def test_expiry_counts_from_completion_not_start(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, 10.0, clock)
    run(limiter, clock, [4.0, 0.0])
    assert clock.sleeps == [10.0]  # start 0, done at 4: the next may start at 14, not 10


def test_an_in_flight_request_keeps_its_slot(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, 10.0, clock)
    with limiter.slot():
        clock.advance(3.0)
        assert limiter.used() == 1
        assert limiter.next_free_in() == 10.0  # at least a window after it ends
    clock.advance(4.0)
    assert limiter.next_free_in() == 6.0
    clock.advance(6.0)
    assert (limiter.used(), limiter.next_free_in()) == (0, 0.0)


@pytest.mark.parametrize("kind", ["local", "host"])
def test_a_reserved_slot_is_the_next_requests_and_it_starts_at_once(
    kind: str, clock: FakeClock, host: Callable[..., HostLimiter]
) -> None:
    """What the sender holds while it writes an intent: the slot its request then uses."""
    limiter: Limiter = SlidingWindowLimiter(1, 10.0, clock) if kind == "local" else host(limit=1)
    run(limiter, clock, [2.0])  # one request, 2 s on the wire: the next may start at 12
    with limiter.reserve():
        assert clock.sleeps == [10.0] and clock.now() == 12.0
        assert limiter.used() == 1  # held from now: nobody else takes it
        with limiter.slot():  # the request: no second wait, no second slot
            clock.advance(1.0)
        assert limiter.used() == 1 and limiter.requests == 2
    assert clock.sleeps == [10.0]
    assert limiter.next_free_in() == 10.0  # counted to the request's completion, at 13


@pytest.mark.parametrize("kind", ["local", "host"])
def test_a_reserved_slot_no_request_used_is_completed_when_the_block_ends(
    kind: str, clock: FakeClock, host: Callable[..., HostLimiter]
) -> None:
    limiter: Limiter = SlidingWindowLimiter(1, 10.0, clock) if kind == "local" else host(limit=1)
    with pytest.raises(RuntimeError), limiter.reserve():
        clock.advance(1.0)
        raise RuntimeError("the intent could not be written")
    assert limiter.next_free_in() == 10.0  # it counts, to the end of the block, at 1
    with limiter.slot():  # and it is not left behind for a later request to skip its wait
        pass
    assert clock.sleeps == [10.0]


def test_penalize_treats_the_window_as_full(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(10, 60.0, clock)
    with limiter.slot():
        clock.advance(1.0)
        limiter.penalize()  # a 429 from someone else's traffic on our IP
    assert limiter.next_free_in() == 60.0
    run(limiter, clock, [0.0])
    assert clock.sleeps == [60.0]


def test_a_slot_is_freed_when_the_request_raises(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, 5.0, clock)
    with pytest.raises(RuntimeError), limiter.slot():
        clock.advance(1.0)
        raise RuntimeError("network")
    run(limiter, clock, [0.0])
    assert clock.sleeps == [5.0]


# Durations in 1/64 s keep float sums exact, so the checks below can use ==.
durations = st.lists(st.integers(0, 300).map(lambda n: n / 64), min_size=1, max_size=40)
gaps = st.lists(st.integers(0, 600).map(lambda n: n / 64), min_size=40, max_size=40)


@settings(max_examples=150, deadline=None)
@given(limit=st.integers(1, 6), window=st.sampled_from([0.5, 4.0, 60.0]), ds=durations, idle=gaps)
def test_property_never_exceeds_and_never_waits_too_long(
    limit: int, window: float, ds: list[float], idle: list[float]
) -> None:
    clock = FakeClock(1000.0)
    limiter = SlidingWindowLimiter(limit, window, clock)
    asked, spans = [], []
    for duration, pause in zip(ds, idle, strict=False):
        clock.advance(pause)
        asked.append(clock.now())
        spans.extend(run(limiter, clock, [duration]))
    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    for i in range(len(spans) - limit):
        assert starts[i + limit] >= ends[i] + window
    for j, (start, want) in enumerate(zip(starts, asked, strict=True)):
        # Either it started when asked, or exactly when the request `limit` back expired.
        assert start == want or (j >= limit and start == ends[j - limit] + window)
    assert max_overlap(spans, window) <= limit


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_a_continuous_stream_uses_the_whole_limit(clock: FakeClock, limit: int) -> None:
    limiter = SlidingWindowLimiter(limit, 60.0, clock)
    spans = run(limiter, clock, [0.0] * (4 * limit))
    assert [s for s, _ in spans] == [60.0 * (i // limit) for i in range(4 * limit)]
    assert clock.sleeps == [60.0] * 3


def test_threads_sharing_one_limiter_stay_within_the_limit() -> None:
    limiter = SlidingWindowLimiter(3, 0.2)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(3):
            with limiter.slot():
                start = time.monotonic()
                time.sleep(0.01)  # the request itself, overlapping other threads' requests
                end = time.monotonic()
            with lock:
                spans.append((start, end))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(spans) == 12
    assert max_overlap(spans, 0.2) <= 3


# --- one host ---------------------------------------------------------------------------------


def test_keys_are_made_safe_as_file_names(tmp_path: Path) -> None:
    limiter = HostLimiter(1, 1.0, key="../x y", state_dir=tmp_path)
    assert limiter.path.parent == tmp_path
    with pytest.raises(ValueError):
        HostLimiter(1, 1.0, key="..", state_dir=tmp_path)


def test_limiters_sharing_a_file_share_the_budget(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    first, second = host(limit=3), host(limit=3)
    for i in range(7):
        run(first if i % 2 else second, clock, [1.0])
    assert clock.sleeps == [8.0, 8.0]  # the same schedule as one SlidingWindowLimiter
    assert (first.requests, second.requests) == (3, 4)
    assert first.used() == 2 and first.next_free_in() == 0.0  # started at 13 and 22


def test_a_penalty_reaches_every_process(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    first, second = host(limit=5), host(limit=5)
    first.penalize()
    assert second.next_free_in() == 10.0
    run(second, clock, [0.0])
    assert clock.sleeps == [10.0]


@given(limit=st.integers(1, 4), ds=durations)
@settings(max_examples=40, deadline=None)
def test_property_host_limiter_paces_like_the_local_one(
    tmp_path_factory: pytest.TempPathFactory, limit: int, ds: list[float]
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    local = SlidingWindowLimiter(limit, 4.0, clock_a)
    shared = HostLimiter(limit, 4.0, key="k", state_dir=tmp_path_factory.mktemp("s"), clock=clock_b)
    assert run(local, clock_a, ds) == run(shared, clock_b, ds)
    assert clock_a.sleeps == clock_b.sleeps


def test_an_in_flight_entry_of_a_dead_process_counts_as_completed_when_seen_dead(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1)
    clock.advance(100.0)
    entry = {"id": "x", "pid": dead_pid(), "pst": None, "start": 50.0, "end": None}
    write_state(limiter, [entry])
    run(limiter, clock, [0.0])
    assert clock.sleeps == [10.0]  # it may have reached the server until just now


def test_a_hung_in_flight_entry_expires_after_request_timeout_plus_window(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1, request_timeout=5.0)
    entry = {"id": "x", "pid": os.getpid(), "pst": None, "start": 0.0, "end": None}
    write_state(limiter, [entry])
    run(limiter, clock, [0.0])
    assert clock.sleeps == [10.0, 5.0]  # re-checked after one window, freed at 0 + 5 + 10


def test_a_reused_pid_is_not_mistaken_for_the_owner(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1, request_timeout=1000.0)
    me = os.getpid()
    entry = {"id": "x", "pid": me, "pst": (pacing._process_start(me) or 0) + 1, "start": 0.0}
    write_state(limiter, [entry | {"end": None}])
    run(limiter, clock, [0.0])
    assert clock.sleeps == [10.0]


def test_state_from_before_a_reboot_is_discarded(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1)
    entry = {"id": "x", "pid": os.getpid(), "pst": None, "start": 0.0, "end": 0.0}
    write_state(limiter, [entry], boot_id="another-boot")
    run(limiter, clock, [0.0])
    assert clock.sleeps == []


def test_an_unreadable_state_file_counts_as_a_full_window(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=5)
    limiter.path.write_text("{not json")
    run(limiter, clock, [0.0, 0.0])
    assert clock.sleeps == [10.0]
    assert read_state(limiter.path)["version"] == 1


def test_an_interrupted_waiter_leaves_the_queue(
    host: Callable[..., HostLimiter], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = host(limit=1)
    run(limiter, clock, [0.0])

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(clock, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt), limiter.slot():
        pass
    assert read_state(limiter.path)["waiters"] == []


def waiter(pid: int, since: float, until: float) -> dict[str, object]:
    return {"id": f"{pid}-w", "pid": pid, "pst": None, "start": since, "end": until}


def test_a_process_that_waited_longer_goes_first(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1)
    clock.advance(20.0)
    # Another live process has queued since t=15 and will look again at t=21.
    write_state(limiter, [], waiters=[waiter(os.getpid(), 15.0, 21.0)])
    run(limiter, clock, [0.0])
    # The free slot is its: we look again shortly, until it is more than _GRACE late.
    assert sum(clock.sleeps) >= 1.0 + 1.0
    assert all(s <= 0.1 for s in clock.sleeps)


def test_a_queued_process_reserves_only_one_slot(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=2)
    write_state(limiter, [], waiters=[waiter(os.getpid(), 0.0, 1.0)])
    run(limiter, clock, [0.0])
    assert clock.sleeps == []


def test_waiters_of_dead_processes_are_dropped(
    host: Callable[..., HostLimiter], clock: FakeClock
) -> None:
    limiter = host(limit=1)
    write_state(limiter, [], waiters=[waiter(dead_pid(), 0.0, 100.0)])
    run(limiter, clock, [0.0])
    assert clock.sleeps == []


# --- two real processes -----------------------------------------------------------------------

CHILD = """
import contextlib, json, random, sys, time
from pathlib import Path
from batch.client import LegallyMailClient
from batch.pacing import HostLimiter

state_dir, limit, window, n, seed, base_url, token = sys.argv[1:]
limiter = HostLimiter(int(limit), float(window), key="two-procs", state_dir=Path(state_dir))
rng = random.Random(int(seed))
spans = []

class Recorded:
    # The limiter as the client sees it, noting when each admitted request starts and ends.
    def __init__(self, inner):
        self.inner, self.requests = inner, 0
        self.penalize, self.used, self.next_free_in = inner.penalize, inner.used, inner.next_free_in
        self.reserve = inner.reserve

    @contextlib.contextmanager
    def slot(self):
        with self.inner.slot():
            start = time.monotonic()
            try:
                yield
            finally:
                spans.append((start, time.monotonic()))

if base_url:  # real requests to the sandbox; a 429 would raise (one attempt) and fail the test
    client = LegallyMailClient(base_url, token, limiter=Recorded(limiter), attempts=1)
    request = client.info
else:  # a stand-in request of random duration
    recorded = Recorded(limiter)
    def request():
        with recorded.slot():
            time.sleep(rng.uniform(0, 0.004))

print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(n)):
    request()
print(json.dumps(spans), flush=True)
"""

Spans = list[tuple[float, float]]
TwoProcesses = Callable[[int, float, int, str, str], tuple[Spans, Spans]]


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[TwoProcesses]:
    procs: list[subprocess.Popen[str]] = []

    def start(limit: int, window: float, n: int, url: str, token: str) -> tuple[Spans, Spans]:
        for seed in (1, 2):
            args = [tmp_path, limit, window, n, seed, url, token]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, *map(str, args)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:  # both limiters built before either starts: a fair race
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0]
        first, second = ([(s, e) for s, e in json.loads(out)] for out in outputs)
        return first, second

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # two child processes, real time
@pytest.mark.parametrize("against", ["stand-in requests", "the sandbox"])
def test_two_processes_share_the_limit_fully_and_fairly(
    two_processes: TwoProcesses, sandbox_factory: Callable[..., RunningSandbox], against: str
) -> None:
    # A 1 s window keeps scheduler wake-up jitter (ms) small against it even on a busy CI.
    limit, window, n = 5, 1.0, 15
    url = token = ""
    if against == "the sandbox":
        sandbox = sandbox_factory(rate_limit=limit, rate_window=window)
        url, token = sandbox.base_url, sandbox.token
    first, second = two_processes(limit, window, n, url, token)
    spans = sorted(first + second)
    assert len(first) == len(second) == n
    if against == "the sandbox":
        assert sandbox.state.request_count(429) == 0

    assert max_overlap(spans, window) <= limit

    # After the first burst of `limit`, each further request should start a window after a
    # predecessor: the ideal time for the rest is (2n - limit) / limit windows.
    elapsed = spans[-1][0] - spans[0][0]
    utilization = (2 * n - limit) / limit * window / elapsed
    owner = "".join("a" if span in first else "b" for span in spans)
    print(f"two-process utilization {utilization:.3f} ({against}), turns {owner}")
    assert utilization >= 0.95, f"{utilization:.3f}"

    # Fair turns: neither process waits for the other to finish its whole run.
    assert abs(first[-1][0] - second[-1][0]) <= 2 * window
