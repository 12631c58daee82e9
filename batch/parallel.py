"""The parallel scan: one summarising function over a large frame, in worker processes.

Rows travel to the workers as plain column lists (cheap to pickle) and come back as compact
columns; at most two chunks per worker are in flight, so a 1M-row dataset never sits in
memory as Python objects all at once. What a row becomes is the caller's business
(batch.render builds one Renderer per worker through `make_worker`).

Stopping: the workers ignore SIGINT (a Ctrl-C reaches the whole process group; only the
parent decides), and while the scan runs the parent answers SIGINT and SIGTERM by cancelling
the pending chunks, killing the workers and raising `ScanInterrupted` (exit 3: nothing was
sent, the ledger is untouched), after letting the handler it replaced see the signal (the
CLI's, which sets the run's stop event). One signal is enough; no worker prints a traceback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import FrameType
from typing import Any

import polars as pl

from batch.errors import RowError, WorkPending

CHUNK_ROWS = 5_000
Columns = dict[str, list[Any]]
# A chunk's columns in, (summary columns, the chunk's row errors) out.
ChunkFn = Callable[[Columns], tuple[Columns, list[RowError]]]

_worker_fn: ChunkFn | None = None  # one per worker process, built by _init_worker
_POLL_SECONDS = 0.05  # how often the parent looks at the cancel flag while chunks run


class ScanInterrupted(WorkPending):
    """SIGINT or SIGTERM during the parallel scan: cancelled before anything was sent."""


def _init_worker(make_worker: Callable[[Any], ChunkFn], argument: Any) -> None:
    global _worker_fn
    # The terminal sends Ctrl-C to every process of the group: the parent alone answers it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_fn = make_worker(argument)


def _run_chunk(columns: Columns) -> tuple[Columns, list[RowError]]:
    assert _worker_fn is not None
    return _worker_fn(columns)


def pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe and fast, spawn elsewhere.

    fork starts workers in milliseconds and they never touch polars (rows arrive as plain
    lists); elsewhere spawn is the only safe choice.
    """
    if sys.platform == "linux" and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def scan_parallel(
    frame: pl.DataFrame,
    workers: int,
    schema: dict[str, pl.DataType],
    make_worker: Callable[[Any], ChunkFn],
    argument: Any,
) -> tuple[list[pl.DataFrame], list[RowError]]:
    """Summarise `frame` in `workers` processes, each running `make_worker(argument)`."""
    size = min(CHUNK_ROWS, -(-frame.height // (workers * 4)))
    slices = frame.iter_slices(size)
    results: dict[int, tuple[pl.DataFrame, list[RowError]]] = {}
    pending: dict[Future[Any], int] = {}
    cancelled = threading.Event()

    def collect(future: Future[Any], index: int) -> None:
        # As Python lists 1M summaries take ~450 MB; as a frame, a third of that.
        columns, problems = future.result()
        results[index] = (pl.DataFrame(columns, schema=schema), problems)

    def next_done() -> Future[Any]:
        while not cancelled.is_set():
            done, _ = wait(list(pending), timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            if done:
                return next(iter(done))
        raise ScanInterrupted(
            "interrupted while checking the rows; nothing was sent by this run",
            hint="run the same command again to resume; the ledger is as it was",
        )

    pool = ProcessPoolExecutor(
        workers,
        mp_context=pool_context(),
        initializer=_init_worker,
        initargs=(make_worker, argument),
    )
    try:
        with _cancel_on_signals(cancelled):
            for index, chunk in enumerate(slices):
                while len(pending) >= 2 * workers:
                    done = next_done()
                    collect(done, pending.pop(done))
                if cancelled.is_set():
                    next_done()  # raises
                pending[pool.submit(_run_chunk, chunk.to_dict(as_series=False))] = index
            while pending:
                done = next_done()
                collect(done, pending.pop(done))
    except BaseException:
        _kill(pool)
        raise
    pool.shutdown(wait=True)
    parts = [results[i][0] for i in sorted(results)]
    errors = [e for i in sorted(results) for e in results[i][1]]
    return parts, errors


def _kill(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now, mid-chunk: their work is lost
    on purpose (a scan writes nothing), so SIGKILL is safe and cannot be caught or ignored."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=5)


@contextlib.contextmanager
def _cancel_on_signals(cancelled: threading.Event) -> Iterator[None]:
    """While the scan runs, SIGINT and SIGTERM set `cancelled`, then reach the handler they
    replaced (unless that one is Python's default, which would raise or end the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only ever handled by the main thread
        return
    saved: dict[int, Any] = {}
    owner = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a worker forked with this handler, before its initializer
            os._exit(128 + signum)
        first = not cancelled.is_set()
        cancelled.set()
        previous = saved.get(signum)
        if first and callable(previous) and previous is not signal.default_int_handler:
            with contextlib.suppress(KeyboardInterrupt):
                previous(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        saved[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)
