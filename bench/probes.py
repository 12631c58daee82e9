"""Measurements that must run in a process of their own (peak RSS is per process).

    python bench/probes.py plan JOB SCAN.parquet LEDGER_DIR   # resume planning
    python bench/probes.py journal LEDGER_DIR SENDS           # durable journal cost per send

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from batch.jobfile import load_job
from batch.ledger import Entry, Ledger, Outcome
from batch.plan import Batch
from batch.progress import NullReporter
from batch.render import Scan
from batch.sender import RunOptions, Sender
from batch.stats import RunStats


class _Api:
    """Stands in for the client: planning asks it only for the credits left."""

    def info(self) -> dict[str, Any]:
        return {"user": {"remaining_emails": 10**9}}


class _FirstDecision(Sender):
    """The real send loop, stopped where it would make its first request."""

    decided_at = 0.0
    decided_rss = 0.0
    first: Batch | None = None

    def send_all(self, batches: Iterable[Batch], exit_outside_window: bool = False) -> None:
        self.first = next(iter(batches), None)
        self.decided_at = time.perf_counter()
        self.decided_rss = _rss_mb()


def plan(job_path: str, scan_path: str, folder: str) -> dict[str, Any]:
    """Open a big ledger and plan a bigger dataset against it, up to the first send."""
    job = load_job(Path(job_path))
    result = Scan(ok=pl.read_parquet(scan_path), errors=[])
    loaded_rss = _rss_mb()
    started = time.perf_counter()
    with Ledger.open(Path(folder)) as ledger:
        stats = RunStats(per_window=10, window=1.0)
        sender = _FirstDecision(
            job, _Api(), ledger, pl.DataFrame(), stats, NullReporter(), threading.Event()
        )
        sender.go(result, RunOptions())  # type: ignore[arg-type]
        seconds = sender.decided_at - started
        first = sender.first.keys if sender.first else []
        todo = stats.recipients
        decided_rss = sender.decided_rss
    return {
        "seconds": seconds,
        "first": first,
        "todo": todo,
        "rss_after_load_mb": loaded_rss,
        "decision_rss_mb": decided_rss,  # peak up to the first send decision
        "peak_rss_mb": _rss_mb(),  # including the checkpoint when the ledger closes
    }


def journal(folder: str, sends: int) -> dict[str, Any]:
    """Time intent + sent (two fsync'd journal lines) per one-recipient send."""
    keys = [f"K{i:06d}" for i in range(max(sends, 10_000))]
    costs: list[float] = []
    with Ledger.open(Path(folder)) as ledger:
        ledger.queue(pl.DataFrame({"key": keys, "address": [f"{k}@example.com" for k in keys]}))
        started = time.perf_counter()
        for i, key in enumerate(keys[:sends]):
            before = time.perf_counter()
            entry = Entry(key, f"{key}@example.com", "", "h")
            ledger.intent(f"r{i}", [entry])
            outcome = Outcome(key, "sent", tracking_id=f"t{i}")
            ledger.sent(f"r{i}", parent_tracking_id=f"p{i}", outcomes=[outcome], sent_at=None)
            costs.append(time.perf_counter() - before)
        total = time.perf_counter() - started
    return {
        "median_ms": statistics.median(costs) * 1000,
        "mean_ms": total / sends * 1000,
        "max_ms": max(costs) * 1000,
        "ledger_rows": len(keys),
    }


def _rss_mb() -> float:
    """This process's peak RSS so far: the kernel's high-water mark of its own memory.

    Not `ru_maxrss`: Linux carries that across exec from the process that spawned us, so a
    probe started by a bench that had just generated its data reported the bench's 848 MB.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> None:
    """Run the probe named first and print its JSON."""
    kind, *args = argv
    if kind == "plan":
        out = plan(*args)
    elif kind == "journal":
        out = journal(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown probe {kind!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
