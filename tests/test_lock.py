"""The campaign lock: one run per campaign, a holder named in the refusal, crashes survived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch.errors import EXIT_LOCKED, LockHeld
from batch.lock import CampaignLock

HOLDER = """
import sys
from pathlib import Path
from batch.lock import CampaignLock
lock = CampaignLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
if sys.argv[2] == "crash":
    import os
    os._exit(9)  # dies holding the lock: no release, file left with our pid
sys.stdin.read()  # hold until the test closes our stdin
lock.release()
"""


@contextmanager
def holder(path: Path, mode: str = "hold") -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock; leaving the block closes its stdin and reaps it."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"  # blocks until the child holds the lock
        yield child


def test_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rent-2026-11" / ".lock"
    with holder(path) as child:
        with pytest.raises(LockHeld) as info, CampaignLock(path):
            pass
        assert f"pid {child.pid}" in str(info.value)
        assert "started 20" in str(info.value)
        assert f"kill {child.pid}" in (info.value.hint or "")
        assert info.value.exit_code == EXIT_LOCKED == 4
    with CampaignLock(path) as lock:  # released by the holder: free again
        assert lock.stale_previous is None


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with holder(path, "crash") as child:
        assert child.wait(timeout=10) == 9
    with CampaignLock(path) as lock:
        assert lock.stale_previous is not None
        assert lock.stale_previous.pid == child.pid
        assert f"pid {child.pid}" in str(lock.stale_previous)


def test_lock_file_written_by_hand_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    path.write_text("garbage from an older version")
    with CampaignLock(path) as lock:
        assert lock.stale_previous is not None
        assert lock.stale_previous.pid is None


def test_lock_records_its_owner_and_is_released_on_exit(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    started = datetime(2026, 11, 1, 8, 0, 3, tzinfo=UTC)
    with CampaignLock(path, clock=lambda: started):
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid()
        assert owner["started"] == "2026-11-01T08:00:03+00:00"
        with pytest.raises(LockHeld):  # flock is per open file: a second open conflicts too
            CampaignLock(path).acquire()
    assert path.read_text() == ""  # released cleanly: nothing stale for the next run
    with pytest.raises(RuntimeError), CampaignLock(path):
        raise RuntimeError("the run failed")
    with CampaignLock(path) as lock:  # an exception still releases it
        assert lock.stale_previous is None
