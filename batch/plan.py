"""Planning: which recipients go in which request, and how long the campaign will take."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from batch.ledger import Entry


@dataclass(frozen=True)
class Batch:
    """The recipients of one API request; all share one rendered message."""

    entries: tuple[Entry, ...]

    @property
    def keys(self) -> list[str]:
        """The dataset keys in this request."""
        return [e.key for e in self.entries]

    @property
    def content_hash(self) -> str:
        """The message every recipient of this request gets."""
        return self.entries[0].content_hash or ""


def group(pending: pl.DataFrame, *, max_recipients: int, grouping: bool) -> list[Batch]:
    """Split pending recipients into requests: identical messages share one, up to the limit.

    `pending` has columns row, key, address, name, content_hash. Requests come out in
    dataset order (by the first row of each). An address appears at most once per request,
    so that each per-recipient answer maps back to exactly one key.
    """
    rows = pending.sort("row").select("key", "address", "name", "content_hash").iter_rows()
    entries = [Entry(key=k, email=a, name=n or "", content_hash=h) for k, a, n, h in rows]
    if not grouping or max_recipients == 1:
        return [Batch((e,)) for e in entries]
    open_batches: dict[str, list[list[Entry]]] = {}
    ordered: list[list[Entry]] = []
    for entry in entries:
        chunks = open_batches.setdefault(entry.content_hash or "", [])
        target = next(
            (
                c
                for c in chunks
                if len(c) < max_recipients
                and all((x.email or "").lower() != (entry.email or "").lower() for x in c)
            ),
            None,
        )
        if target is None:
            target = []
            chunks.append(target)
            ordered.append(target)
        target.append(entry)
        if len(target) == max_recipients:
            chunks.remove(target)
    return [Batch(tuple(chunk)) for chunk in ordered]


def eta_seconds(requests: int, *, per_window: int, window: float) -> float:
    """Seconds the remaining requests need at the full rate limit."""
    if requests <= 0:
        return 0.0
    windows = math.ceil(requests / per_window) - 1
    return windows * window


def count_requests(batches: Iterable[Batch]) -> int:
    """How many send requests a plan makes."""
    return sum(1 for _ in batches)
