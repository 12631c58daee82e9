"""Tracking ids per output root: which campaign on this machine a send belongs to.

A look-up that finds a send like ours must not take another campaign's message for it: two
campaigns on one account may send the same subject to the same address. Every campaign
under one output root appends the ids the API gave its sends to
`<output root>/.lmbatch/tracking-ids` (beside the ledgers' history markers,
batch.ledger.history), one `campaign<TAB>id` line each; a look-up reads it and sets aside
any send another campaign recorded.

Each line is one `write` in O_APPEND mode, so lines from several processes never interleave.
No fsync: after a power cut the file may lack the last ids, and a look-up then relies on
its other checks (the send's time, its recipients), as it does for a campaign on another
machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from batch.ledger.history import MARKER_DIR

FILE_NAME = "tracking-ids"


class TrackingRegistry:
    """The registry of the output root a campaign folder lies in, seen by that campaign."""

    def __init__(self, folder: Path) -> None:
        self.campaign = folder.name
        self.path = folder.parent / MARKER_DIR / FILE_NAME
        self._owners: dict[str, str] = {}
        self._read_to = 0

    def record(self, tracking_ids: Iterable[str | None]) -> None:
        """Append this campaign's new ids (a failure to write is not fatal: see the module)."""
        ids = sorted({i for i in tracking_ids if i})
        if not ids:
            return
        lines = "".join(f"{self.campaign}\t{i}\n" for i in ids).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        except OSError:
            return

    def other_owner(self, tracking_id: str) -> str | None:
        """The other campaign that recorded `tracking_id`, if any."""
        self._catch_up()
        owner = self._owners.get(tracking_id)
        return owner if owner is not None and owner != self.campaign else None

    def _catch_up(self) -> None:
        """Read the lines appended since the last look (a torn last line waits for its end)."""
        try:
            with self.path.open("rb") as file:
                file.seek(self._read_to)
                data = file.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", "replace").splitlines():
            campaign, _, tracking_id = line.partition("\t")
            # A different campaign that recorded the id wins over ours: it is not ours.
            if tracking_id and self._owners.get(tracking_id) in (None, self.campaign):
                self._owners[tracking_id] = campaign
        self._read_to += end
