"""Rebuild a lost or corrupt `ledger.parquet` from what each checkpoint keeps beside it.

    python -m batch.ledger.recover CAMPAIGN_FOLDER

A checkpoint keeps its predecessor (`ledger.prev.parquet`) and the journal it folded
(`journal.prev.jsonl`); with the current journal, joined by event number, they are the lost
checkpoint. That is the recovery path a LedgerError about the checkpoint names: deleting the
file instead would make every row it held look unsent.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from batch.errors import LedgerError
from batch.ledger import files
from batch.ledger.fold import State
from batch.ledger.schema import JOURNAL_NAME, PARQUET_NAME, PREV_JOURNAL, PREV_PARQUET


def recover(folder: Path) -> int:
    """Rebuild `ledger.parquet` from `ledger.prev.parquet` and the journals; the events replayed.

    The previous checkpoint plus the journal its successor folded (`journal.prev.jsonl`) plus
    the current journal, joined by event number (no gap allowed), are the checkpoint that was
    lost. The current journal is left as it is (replaying it again is idempotent).
    """
    prev = folder / PREV_PARQUET
    # Before the second checkpoint there is no previous one: the journals then start at 1.
    state = State.load(prev)
    base_seq = files.parquet_seq(prev) or 0
    by_seq: dict[int, dict[str, Any]] = {}
    for path in (folder / PREV_JOURNAL, folder / JOURNAL_NAME):
        for event in files.read_events(path):
            if isinstance(event.get("seq"), int):
                by_seq.setdefault(event["seq"], event)
    wanted = sorted(s for s in by_seq if s > base_seq)
    if not wanted or wanted != list(range(base_seq + 1, wanted[-1] + 1)):
        raise LedgerError(
            f"{folder}: the journals do not continue {prev.name} (event {base_seq}) without a "
            "gap: the lost checkpoint cannot be rebuilt from them",
            hint="restore ledger.parquet from a backup",
        )
    state.replay(by_seq[s] for s in wanted)
    files.sink(state.current(), folder / PARQUET_NAME, seq=wanted[-1])
    return len(wanted)


def main(argv: list[str]) -> int:
    """`python -m batch.ledger.recover FOLDER`: rebuild a lost or corrupt checkpoint."""
    if len(argv) != 1:
        print("usage: python -m batch.ledger.recover CAMPAIGN_FOLDER", file=sys.stderr)
        return 2
    try:
        replayed = recover(Path(argv[0]))
    except LedgerError as err:
        print(f"error: {err}" + (f"\nhint: {err.hint}" if err.hint else ""), file=sys.stderr)
        return 1
    print(f"{argv[0]}: ledger.parquet rebuilt ({replayed} events replayed)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
