"""One run per campaign at a time: a file lock that names its holder and outlives crashes."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from batch.errors import LockHeld
from batch.timeutil import utcnow


@dataclass(frozen=True)
class LockOwner:
    """Who wrote a lock file: enough for a person to find the process."""

    pid: int | None
    host: str
    started: str

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid else "an unknown process"
        host = self.host or "an unknown host"
        return f"{who} on {host}, started {self.started or 'at an unknown time'}"


def _read_owner(fd: int) -> LockOwner | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
        pid = data.get("pid")
        return LockOwner(
            pid if isinstance(pid, int) else None,
            str(data.get("host", "")),
            str(data.get("started", "")),
        )
    except (ValueError, AttributeError):  # not ours, or cut short by a crash mid-write
        return LockOwner(None, "", "")


class CampaignLock:
    """One run per campaign: an exclusive flock on `path`, which records its owner.

    The kernel drops a flock when its process dies, so a lock file whose flock is free is
    stale whatever it says: it is taken over, and its previous owner is kept in
    `stale_previous` for the CLI to report. Released, the file stays, empty: deleting it
    would let a waiter lock the unlinked file while a newcomer locks a new one.
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.path = path
        self.clock = clock
        self.stale_previous: LockOwner | None = None
        self._fd: int | None = None

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise LockHeld naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: until the flock is ours the content is the holder's.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(fd)
            os.close(fd)
            pid = holder.pid if holder else None
            raise LockHeld(
                f"this campaign is already running: {self.path} is held by "
                + (str(holder) if holder else "a process that is just starting"),
                hint=(
                    "wait for that run to finish (a later run resumes from the ledger)"
                    + (f", or stop it with `kill {pid}`" if pid else "")
                    + "; a stopped run releases the lock by itself"
                ),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.stale_previous = _read_owner(fd)
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.clock().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file tells the next run that we ended cleanly
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def live_holder(path: Path) -> LockOwner | None:
    """The live run holding the campaign lock at `path`, or None when no run holds it.

    For readers (`lmbatch status`): a shared flock that cannot be had means a run holds the
    exclusive one, and the file names it. Taking the shared lock for an instant never blocks
    that run (it would only delay a run starting at that very moment, by microseconds).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd) or LockOwner(None, "", "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
