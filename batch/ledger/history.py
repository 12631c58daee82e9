"""A ledger that knows its own history: lost files are detected, never mistaken for a fresh start.

Losing `ledger.parquet`, `journal.jsonl` or part of the journal would otherwise look like a
campaign that never sent those rows, and the next run would send them again. Three records
make any loss visible:

- every journal line carries `seq`, the campaign's event number (1, 2, 3, … never reset);
- the checkpoint carries, in its metadata, the last `seq` it folds in;
- a marker outside the campaign folder, `<output root>/.lmbatch/<campaign>.json`, holds the
  last `seq` appended. It is rewritten in place after each append (no fsync: after a power
  cut it may lag, which can only hide a loss, never invent one), and survives a deleted or
  emptied campaign folder.

`verify` checks, when a ledger is opened or read: the journal's numbers run without a gap; they
continue the checkpoint's; the marker is not ahead of both. A crash tears at most the line
being written, which was never acknowledged (and so never reached the marker): a journal that
ends earlier than the marker lost more than that, and is refused as corruption.

Each checkpoint keeps the previous checkpoint (`ledger.prev.parquet`, a hard link) and the
journal it folded (`journal.prev.jsonl`), so a lost or corrupt `ledger.parquet` is rebuilt by
`batch.ledger.recover` (`python -m batch.ledger.recover FOLDER`) — never by deleting it.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batch.errors import LedgerError
from batch.files import fsync_dir
from batch.ledger.schema import LEDGER_FILES

MARKER_DIR = ".lmbatch"
_MARKER_SIZE = 64  # the record is rewritten in place, padded: one pwrite, never half a record


def marker_path(folder: Path) -> Path:
    """Where the campaign in `folder` keeps its marker: beside the folder, not inside it."""
    return folder.parent / MARKER_DIR / f"{folder.name}.json"


def read_marker(folder: Path) -> int | None:
    """The last event number the marker saw appended (None: no marker, or not readable)."""
    try:
        data = json.loads(marker_path(folder).read_bytes() or b"{}")
    except (OSError, ValueError):
        return None
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) else None


def has_history(folder: Path) -> bool:
    """Whether `folder` holds a campaign's ledger, or held one: its files, or its marker.

    What "is there a ledger here?" checks must ask (status, track, certificates, report): a
    campaign whose files were lost still has a history, and reading it says what was lost.
    """
    return any((folder / name).exists() for name in LEDGER_FILES) or marker_path(folder).exists()


class Marker:
    """The marker of one open ledger: an fd rewritten in place after each append."""

    def __init__(self, folder: Path) -> None:
        path = marker_path(folder)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if not existed:
                fsync_dir(path.parent)
        except OSError as err:
            raise LedgerError(f"{path}: cannot keep the campaign's marker: {err}") from err
        self.path, self._folder = path, folder

    def write(self, seq: int) -> None:
        """Record that events up to `seq` were appended."""
        record = json.dumps({"seq": seq}).encode().ljust(_MARKER_SIZE - 1) + b"\n"
        try:
            os.pwrite(self._fd, record, 0)
        except OSError as err:
            raise LedgerError(f"{self.path}: cannot update the campaign's marker: {err}") from err

    def catch_up(self, seq: int) -> None:
        """Record `seq` unless the marker already holds as much (it is new, or lagged)."""
        seen = read_marker(self._folder)
        if seen is None or seen < seq:
            self.write(seq)

    def close(self) -> None:
        """Release the fd."""
        os.close(self._fd)


def last_seq(base_seq: int | None, events: Sequence[dict[str, Any]]) -> int:
    """The last event number the ledger's files hold (0: none, or a ledger from before seq)."""
    numbers: list[int] = [e["seq"] for e in events if isinstance(e.get("seq"), int)]
    return max([base_seq or 0, *numbers])


def verify(
    folder: Path,
    *,
    parquet: Path,
    journal: Path,
    base_seq: int | None,
    events: Sequence[dict[str, Any]],
    journal_existed: bool,
) -> None:
    """Refuse a ledger whose files lost events; LedgerError says what and how to recover."""
    numbers = [(i, e["seq"]) for i, e in enumerate(events, 1) if isinstance(e.get("seq"), int)]
    for (_, before), (line, seq) in itertools.pairwise(numbers):
        if seq != before + 1:
            raise LedgerError(
                f"{journal}:{line}: events {before + 1}..{seq - 1} are missing: the middle of "
                "the journal was lost",
                hint=_journal_hint(folder),
            )
    has_parquet = parquet.exists()
    first = numbers[0][1] if numbers else None
    if (
        first is not None
        and first > (base_seq or 0) + 1
        and (base_seq is not None or not has_parquet)
    ):
        if not has_parquet:
            raise LedgerError(
                f"{parquet} is missing: the journal continues from event {first}, and the "
                f"checkpoint held events 1..{first - 1}",
                hint=_parquet_hint(folder),
            )
        raise LedgerError(
            f"{journal}: events {(base_seq or 0) + 1}..{first - 1} are missing: the journal "
            f"starts at event {first}, the checkpoint ends at {base_seq}",
            hint=_journal_hint(folder),
        )
    held = last_seq(base_seq, events)
    seen = read_marker(folder)
    if seen is None or seen <= held:
        return
    marker = marker_path(folder)
    if not has_parquet and not journal_existed:
        raise LedgerError(
            f"{folder}: the ledger's files are missing ({parquet.name}, {journal.name}), yet "
            f"{marker} records {seen} events: this campaign has a history",
            hint=_parquet_hint(folder) + "; " + _journal_hint(folder),
        )
    if not has_parquet and held == 0:
        raise LedgerError(
            f"{parquet} is missing: it held events 1..{seen} ({marker})",
            hint=_parquet_hint(folder),
        )
    if not journal_existed:
        raise LedgerError(
            f"{journal} is missing: events {held + 1}..{seen} were recorded in it ({marker})",
            hint=_journal_hint(folder),
        )
    raise LedgerError(
        f"{journal} ends at event {held}, but events up to {seen} were recorded ({marker}): "
        "its end was lost (a crash tears at most the line being written)",
        hint=_journal_hint(folder),
    )


def _parquet_hint(folder: Path) -> str:
    return (
        "restore it from a backup, or rebuild it from the previous checkpoint and the journals "
        f"kept beside it: `python -m batch.ledger.recover {folder}`; do not delete ledger files "
        "to start over (rows already sent would be sent again)"
    )


def _journal_hint(folder: Path) -> str:
    return (
        "restore journal.jsonl from a backup. If it is gone for good, the rows it recorded may "
        "have been sent: compare the LegallyMail panel with `lmbatch status`, then accept the "
        f"ledger as it stands by deleting {marker_path(folder)} (rows it does not show as sent "
        "will be sent)"
    )
