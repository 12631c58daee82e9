"""The parallel scan: one summarising function over a large frame, in worker processes.

Rows travel to the workers as plain column lists (cheap to pickle) and come back as compact
columns; at most two chunks per worker are in flight, so a 1M-row dataset never sits in
memory as Python objects all at once. What a row becomes is the caller's business
(batch.render builds one Renderer per worker through `make_worker`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import polars as pl

from batch.errors import RowError

CHUNK_ROWS = 5_000
Columns = dict[str, list[Any]]
# A chunk's columns in, (summary columns, the chunk's row errors) out.
ChunkFn = Callable[[Columns], tuple[Columns, list[RowError]]]

_worker_fn: ChunkFn | None = None  # one per worker process, built by _init_worker


def _init_worker(make_worker: Callable[[Any], ChunkFn], argument: Any) -> None:
    global _worker_fn
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
    pending: dict[Any, int] = {}

    def collect(future: Any, index: int) -> None:
        # As Python lists 1M summaries take ~450 MB; as a frame, a third of that.
        columns, problems = future.result()
        results[index] = (pl.DataFrame(columns, schema=schema), problems)

    with ProcessPoolExecutor(
        workers,
        mp_context=pool_context(),
        initializer=_init_worker,
        initargs=(make_worker, argument),
    ) as pool:
        for index, chunk in enumerate(slices):
            while len(pending) >= 2 * workers:
                done = next(iter(_first_completed(pending)))
                collect(done, pending.pop(done))
            pending[pool.submit(_run_chunk, chunk.to_dict(as_series=False))] = index
        for future, i in pending.items():
            collect(future, i)
    parts = [results[i][0] for i in sorted(results)]
    errors = [e for i in sorted(results) for e in results[i][1]]
    return parts, errors


def _first_completed(pending: dict[Any, int]) -> set[Any]:
    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return done
