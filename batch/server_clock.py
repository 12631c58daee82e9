"""The API server's clock, learned from this campaign's own answers.

The API's times carry no zone (`YYYY-MM-DD HH:MM:SS`) and the server's zone is not
documented, yet a look-up that must show a listed send is ours compares its time with the
moment we sent. Each accepted send's answer carries the server's time of that send
(`sent_at`, `created_at`), and our clock saw the request leave and the answer come back:
the offset (server wall time minus our UTC) lies within [server − answered, server + 1 s −
sent], the second because the server's times are whole seconds. Each answer's interval is
intersected with the one learned so far; one that does not overlap (the server's zone
changed, a summer-time switch) replaces it, so the latest answers always win.

Kept per campaign in `<campaign folder>/server-clock.json`, rewritten (temporary file,
rename) only when the interval changes. No fsync: a lost file only means "offset unknown",
which makes a look-up more cautious, never less (batch.reconcile).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

FILE_NAME = "server-clock.json"
API_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_server_time(text: object) -> datetime | None:
    """A zone-less API time as a naive datetime (the server's wall time), None if not one."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text.strip()[:19], API_TIME_FORMAT)
    except ValueError:
        return None


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class ServerClock:
    """The learned offset of one campaign's API server, as an interval of seconds."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE_NAME
        self.bounds: tuple[float, float] | None = self._load()

    @property
    def known(self) -> bool:
        """Whether any answer of this campaign taught the offset."""
        return self.bounds is not None

    def learn(self, server: object, sent: datetime, answered: datetime) -> None:
        """Take in one answer: the server's time of a send made between `sent` and `answered`."""
        stamp = parse_server_time(server)
        if stamp is None or answered < sent:
            return
        low = (stamp - _naive_utc(answered)).total_seconds()
        high = (stamp - _naive_utc(sent)).total_seconds() + 1.0
        new = (low, high)
        if self.bounds is not None:
            merged = (max(self.bounds[0], low), min(self.bounds[1], high))
            new = merged if merged[0] <= merged[1] else new
        if new != self.bounds:
            self.bounds = new
            self._save()

    def to_ours(self, server: object) -> tuple[datetime, datetime] | None:
        """The interval of our (aware UTC) time a server time stands for; None if unknown."""
        stamp = parse_server_time(server)
        if stamp is None or self.bounds is None:
            return None
        low, high = self.bounds
        earliest = stamp - timedelta(seconds=high)
        latest = stamp + timedelta(seconds=1.0 - low)
        return earliest.replace(tzinfo=UTC), latest.replace(tzinfo=UTC)

    def _load(self) -> tuple[float, float] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            low, high = float(data["offset_low"]), float(data["offset_high"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none yet, or unreadable: unknown, the cautious side
        return (low, high) if low <= high else None

    def _save(self) -> None:
        assert self.bounds is not None
        record = {
            "offset_low": self.bounds[0],
            "offset_high": self.bounds[1],
            "meaning": "seconds the API's zone-less times run ahead of UTC on our clock",
        }
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            return  # not kept: the next look-up knows less, which only makes it cautious
