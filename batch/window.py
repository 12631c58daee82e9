"""The send window: the weekdays and hours, on the schedule's wall clock, when sending is allowed.

A run outside the window waits for it to open, or with `--exit-outside-window` leaves with
exit 3 (work left) for the next firing; the firings themselves are in `batch.firings`.
Wall times follow `batch.schedule`'s DST rule; every comparison is made in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from batch.errors import JobFileError
from batch.jobmodel import SendWindowSpec
from batch.schedule import as_utc, instant, load_zone

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _parse_day(name: str) -> int:
    for number, full in enumerate(_DAY_NAMES):
        if name in (full, full[:3]):
            return number
    raise JobFileError(
        f"{name!r} is not a day of the week",
        key="schedule.window.days",
        hint='write days like "mon-fri", "mon,wed,fri" or "fri-mon"',
    )


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        a = _parse_day(first)
        b = _parse_day(last) if dash else a
        # Ranges run forward and wrap past Sunday: "fri-mon" is Fri, Sat, Sun, Mon.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _parse_hours(text: str) -> tuple[int, int]:
    """Hours like "09:00-18:00" as minutes after midnight; the end may be 24:00."""
    match = re.fullmatch(r"\s*(\d{1,2}):([0-5]\d)\s*-\s*(\d{1,2}):([0-5]\d)\s*", text)
    if match:
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start < 24 * 60 and end <= 24 * 60 and start != end:
            return start, end
    raise JobFileError(
        f"{text!r} is not a span of hours",
        key="schedule.window.hours",
        hint='write "09:00-18:00", "00:00-24:00" for all day, or "22:00-06:00" overnight',
    )


class SendWindow:
    """When sending is allowed: listed weekdays and an hour span, on the schedule's wall clock.

    An overnight span (end before start, e.g. "22:00-06:00") belongs to the day it opens:
    `days: fri` with `hours: 22:00-06:00` is open from Friday 22:00 to Saturday 06:00, and not
    on Friday 00:00-06:00. Spans of consecutive days that touch ("00:00-24:00") merge.
    Times returned are aware in the schedule's zone: subtract them in UTC (see module doc).
    """

    def __init__(self, spec: SendWindowSpec, timezone: str) -> None:
        self.tz = load_zone(timezone)
        self.text = f"{spec.days} {spec.hours}"  # as the job file says it, for messages
        self.days = _parse_days(spec.days)
        self.start, self.end = _parse_hours(spec.hours)
        self.always = len(self.days) == 7 and (self.start, self.end) == (0, 24 * 60)

    def _stretches(self, now: datetime, days: int = 10) -> list[tuple[datetime, datetime]]:
        """Open stretches (UTC, merged) from the day before `now` to `days` days after."""
        today = now.astimezone(self.tz).date()
        merged: list[tuple[datetime, datetime]] = []
        for offset in range(-1, days + 1):
            day = datetime.combine(today + timedelta(days=offset), datetime.min.time())
            if day.weekday() not in self.days:
                continue
            end_day = day if self.end > self.start else day + timedelta(days=1)
            opens = instant(day + timedelta(minutes=self.start), self.tz).astimezone(UTC)
            closes = instant(end_day + timedelta(minutes=self.end), self.tz, last=True)
            closes = closes.astimezone(UTC)
            if opens >= closes:  # the whole span fell into a skipped (spring-forward) hour
                continue
            if merged and opens <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(closes, merged[-1][1]))
            else:
                merged.append((opens, closes))
        return merged

    def _current(self, now: datetime) -> tuple[datetime, datetime] | None:
        now_utc = as_utc(now)
        return next((s for s in self._stretches(now_utc) if s[0] <= now_utc < s[1]), None)

    def is_open(self, now: datetime) -> bool:
        """Whether sending is allowed at `now`."""
        return self.always or self._current(now) is not None

    def next_open(self, now: datetime) -> datetime:
        """`now` if the window is open, else when it next opens (in the schedule's zone)."""
        if self.is_open(now):
            return now
        now_utc = as_utc(now)
        # A stretch opens within a week, unless that week's only stretch lies wholly in a
        # skipped spring-forward hour ("sun 02:15-03:00" in Madrid): then the week after.
        opens = min(s[0] for s in self._stretches(now_utc, days=17) if s[0] > now_utc)
        return opens.astimezone(self.tz)

    def closes_at(self, now: datetime) -> datetime | None:
        """When the open stretch holding `now` ends; `now` if closed, None if never closing."""
        if self.always:
            return None
        current = self._current(now)
        return now if current is None else current[1].astimezone(self.tz)
