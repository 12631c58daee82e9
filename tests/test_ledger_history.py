"""A ledger that knows its own history (issue 12, item 4).

Each case is what an operator or a disk can do to a campaign folder after a crash: before
this, every one of them made the next run plan the lost rows as never sent (and send them
again, exit 0). Now opening or reading the ledger refuses, says what was lost and how to
recover; a corrupt or lost checkpoint is rebuilt from what the previous checkpoint kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from batch.errors import LedgerError
from batch.ledger import (
    JOURNAL_NAME,
    PARQUET_NAME,
    PREV_JOURNAL,
    PREV_PARQUET,
    Entry,
    Ledger,
    Outcome,
    has_history,
    read_ledger,
)
from batch.ledger.history import marker_path
from batch.ledger.recover import recover

KEYS = [f"k{i}" for i in range(12)]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=3)
        return self.now


def send(ledger: Ledger, key: str) -> None:
    ledger.intent(f"r-{key}", [Entry(key, f"{key}@example.com", key.upper(), "h")])
    outcome = Outcome(key, "sent", tracking_id=f"t-{key}")
    ledger.sent(f"r-{key}", parent_tracking_id=f"p-{key}", outcomes=[outcome], sent_at=None)


def crash(ledger: Ledger) -> None:
    """Drop the ledger the way a killed process does: no checkpoint, fds just go away."""
    os.close(ledger._journal_fd)
    os.close(ledger._lock_fd)
    ledger._marker.close()
    ledger._closed = True


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A campaign that sent 4 rows, checkpointed, sent 4 more (journal only) and crashed."""
    folder = tmp_path / "output" / "campaign"
    ledger = Ledger.open(folder, clock=Clock(), channel="email")
    ledger.queue(pl.DataFrame({"key": KEYS, "address": [f"{k}@example.com" for k in KEYS]}))
    for key in KEYS[:4]:
        send(ledger, key)
    ledger.checkpoint()
    for key in KEYS[4:8]:
        send(ledger, key)
    crash(ledger)
    yield folder


def sent_keys(folder: Path) -> list[str]:
    frame = read_ledger(folder)
    return frame.filter(pl.col("status") == "sent")["key"].to_list()


def test_the_campaign_as_it_stands(folder: Path) -> None:
    assert sent_keys(folder) == KEYS[:8]
    assert marker_path(folder) == folder.parent / ".lmbatch" / "campaign.json"


def test_a_lost_checkpoint_is_refused_and_rebuilt(folder: Path) -> None:
    (folder / PARQUET_NAME).unlink()

    with pytest.raises(LedgerError, match=r"ledger\.parquet is missing") as err:
        Ledger.open(folder)
    assert err.value.hint and "python -m batch.ledger.recover" in err.value.hint
    with pytest.raises(LedgerError, match=r"ledger\.parquet is missing"):
        read_ledger(folder)  # status, report and a dry run refuse too

    assert recover(folder) > 0
    assert sent_keys(folder) == KEYS[:8]


def test_a_lost_checkpoint_with_an_empty_journal_is_refused(folder: Path) -> None:
    Ledger.open(folder).close()  # a clean checkpoint: the journal is empty
    assert (folder / JOURNAL_NAME).stat().st_size == 0
    (folder / PARQUET_NAME).unlink()

    with pytest.raises(LedgerError, match=r"ledger\.parquet is missing: it held events 1\.\.16"):
        Ledger.open(folder)
    recover(folder)
    assert sent_keys(folder) == KEYS[:8]


def test_a_corrupt_checkpoint_names_its_recovery(folder: Path) -> None:
    (folder / PARQUET_NAME).write_bytes(b"PAR1 this is not a parquet file PAR1")

    with pytest.raises(LedgerError, match="cannot read the ledger") as err:
        Ledger.open(folder)
    assert err.value.hint and "python -m batch.ledger.recover" in err.value.hint
    assert "never delete it" in err.value.hint

    done = subprocess.run(
        [sys.executable, "-m", "batch.ledger.recover", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sent_keys(folder) == KEYS[:8]


def test_a_lost_journal_is_refused(folder: Path) -> None:
    (folder / JOURNAL_NAME).unlink()

    with pytest.raises(LedgerError, match=r"journal\.jsonl is missing: events 9\.\.16") as err:
        Ledger.open(folder)
    assert err.value.hint and "restore journal.jsonl" in err.value.hint
    with pytest.raises(LedgerError, match="missing"):
        read_ledger(folder)


def test_a_journal_cut_in_the_middle_is_refused(folder: Path) -> None:
    journal = folder / JOURNAL_NAME
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 2])  # the cut falls inside a line: looks torn

    with pytest.raises(LedgerError, match="its end was lost"):
        Ledger.open(folder)


def test_a_torn_last_line_is_still_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "output" / "campaign"
    ledger = Ledger.open(folder, clock=Clock())
    send(ledger, "a")
    crash(ledger)
    journal = folder / JOURNAL_NAME
    # The line being written when the process died: never acknowledged, never in the marker.
    journal.write_bytes(journal.read_bytes() + b'{"v":2,"seq":3,"type":"intent","ro')

    with Ledger.open(folder) as again:
        assert again.get("a")["status"] == "sent"  # type: ignore[index]
        send(again, "b")
    assert sent_keys(folder) == ["a", "b"]


def test_a_journal_missing_its_middle_is_refused(folder: Path) -> None:
    journal = folder / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2] + lines[4:]))

    with pytest.raises(LedgerError, match=r"journal\.jsonl:3: events 11\.\.12 are missing"):
        Ledger.open(folder)


def test_a_deleted_campaign_folder_does_not_restart_from_nothing(folder: Path) -> None:
    shutil.rmtree(folder)
    assert has_history(folder)  # what status/track/report must ask before "no ledger here"
    with pytest.raises(LedgerError, match="this campaign has a history"):
        read_ledger(folder)

    with pytest.raises(LedgerError, match="this campaign has a history"):
        Ledger.open(folder)


def test_accepting_a_loss_is_a_deliberate_step(folder: Path) -> None:
    (folder / JOURNAL_NAME).unlink()
    with pytest.raises(LedgerError) as err:
        Ledger.open(folder)
    assert str(marker_path(folder)) in (err.value.hint or "")

    marker_path(folder).unlink()  # what the hint says, after checking the panel
    with Ledger.open(folder) as ledger:
        assert ledger.counts() == {"sent": 4, "pending": 8}


def test_each_checkpoint_keeps_the_previous_one(folder: Path) -> None:
    with Ledger.open(folder, clock=Clock()) as ledger:
        send(ledger, KEYS[8])
    assert pl.read_parquet(folder / PREV_PARQUET).filter(pl.col("status") == "sent").height == 4
    assert (folder / PREV_JOURNAL).read_bytes().count(b"\n") == 8 + 2  # both sends folded
