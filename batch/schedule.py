"""When a scheduled job's periods start: cron expressions, zones, and period labels.

A period runs from one fire time of `schedule.cron` to the next; a run resolves the period
holding `now`. The send window lives in `batch.window`, the times the generated crontab and
systemd entries fire in `batch.firings`, and their text in `batch.cronsnippets`.

Pure logic with the clock injected: every function takes `now` (aware, any zone) and nothing
here reads the wall clock or sleeps.

Wall times and DST, one rule for periods and windows alike (cron's own behaviour):
- a wall time skipped when clocks spring forward happens at the jump: a daily 02:30 fire in
  Europe/Madrid on the last Sunday of March happens at 03:00 CEST;
- a wall time repeated when clocks fall back happens once, at its first occurrence; a send
  window's *end* uses the last occurrence, so a window is open whenever the wall clock reads
  inside its hours.

Aware datetimes sharing one tzinfo compare and subtract by wall time, ignoring `fold`, so
every comparison here is made in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from batch import timeutil
from batch.errors import InputError, JobFileError
from batch.jobmodel import Period, ScheduleSpec

_MINUTE = timedelta(minutes=1)

Granularity = Literal["year", "month", "week", "day", "minute"]

# Vixie cron's aliases, expanded so every other step sees five fields.
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_LABEL_FORMATS: dict[Granularity, tuple[str, str]] = {
    "year": (r"(\d{4})", "2026"),
    "month": (r"(\d{4})-(\d{2})", "2026-11"),
    "week": (r"(\d{4})-W(\d{2})", "2026-W47"),
    "day": (r"(\d{4})-(\d{2})-(\d{2})", "2026-11-21"),
    "minute": (r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})", "2026-11-21T09:00"),
}


# ---------------------------------------------------------------- zones and cron expressions


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or a JobFileError at `schedule.timezone`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise JobFileError(
            f"unknown time zone {name!r}",
            key="schedule.timezone",
            hint="use an IANA name such as Europe/Madrid, America/New_York or UTC",
        ) from err


def parse_cron(expr: str) -> str:
    """`expr` normalised to five cron fields (aliases expanded), or a JobFileError."""
    text = " ".join(expr.split())
    text = _ALIASES.get(text.lower(), text)
    # croniter also takes seconds and years columns, which crontab and systemd cannot.
    if len(text.split()) != 5:
        raise JobFileError(
            f"{expr!r} is not a cron expression: it needs five fields "
            "(minute hour day-of-month month day-of-week) or an alias like @monthly",
            key="schedule.cron",
        )
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError as err:
        raise JobFileError(f"{expr!r} never fires (no such date)", key="schedule.cron") from err
    except (CroniterError, ValueError) as err:  # croniter raises bare ValueErrors too
        raise JobFileError(
            f"{expr!r} is not a valid cron expression: {err}", key="schedule.cron"
        ) from err
    return text


def granularity(cron: str) -> Granularity:
    """The coarsest calendar unit holding at most one fire time of `cron` (names its periods)."""
    it = croniter(parse_cron(cron))
    minute, hour, dom, month, dow = it.expanded
    nth: dict[int, set[int]] = it.nth_weekday_of_month
    if "*" in minute or "*" in hour or len(minute) > 1 or len(hour) > 1:
        return "minute"
    one_month = month != ["*"] and len(month) == 1
    if dom == ["*"] and dow != ["*"] and len(dow) == 1:
        # "5#3" (third Friday) fires once a month; plain "fri" once a week.
        if nth and all(len(ns) == 1 for ns in nth.values()):
            return "year" if one_month else "month"
        return "week"
    if dow == ["*"] and dom != ["*"] and len(dom) == 1:
        return "year" if one_month else "month"
    # Several days, or both day fields set (cron ORs them): at most daily.
    return "day"


def period_label(wall: datetime, unit: Granularity) -> str:
    """The label of the period starting at wall time `wall`, e.g. "2026-11" or "2026-W47"."""
    if unit == "week":
        iso = wall.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    formats = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d", "minute": "%Y-%m-%dT%H:%M"}
    return wall.strftime(formats[unit])


def as_utc(moment: datetime, name: str = "now") -> datetime:
    """`moment` in UTC; a naive datetime names no instant and is a ValueError."""
    return timeutil.as_utc(moment, naive="refuse", name=name)


def instant(wall: datetime, tz: ZoneInfo, *, last: bool = False) -> datetime:
    """The instant wall time `wall` names in `tz`, by the module's DST rule."""
    aware = wall.replace(tzinfo=tz, fold=1 if last else 0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return aware
    # Skipped by a forward jump: bisect for the jump itself, the first second of the new offset.
    lo = int(wall.replace(tzinfo=tz, fold=1).timestamp())  # read with the later offset: before
    hi = int(wall.replace(tzinfo=tz, fold=0).timestamp())  # read with the earlier offset: after
    after = datetime.fromtimestamp(hi, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, tz)


def cron_walls(cron: str, start: datetime, *, backwards: bool = False) -> Iterator[datetime]:
    """Fire wall times strictly after (or before) naive `start`; croniter on naive times is
    pure calendar arithmetic, which is why DST is handled apart, in `instant`."""
    it = croniter(cron, start)
    while True:
        wall: datetime = it.get_prev(datetime) if backwards else it.get_next(datetime)
        yield wall


def _latest_wall(cron: str, tz: ZoneInfo, now: datetime) -> datetime:
    local = now.astimezone(tz)
    # In a repeated (fall-back) hour the wall clock lags the instant, so fire times up to
    # the repeat's length ahead on the wall clock may already have happened.
    lag = (local.replace(fold=0).utcoffset() or timedelta()) - (
        local.replace(fold=1).utcoffset() or timedelta()
    )
    start = local.replace(tzinfo=None, second=0, microsecond=0) + _MINUTE + max(lag, timedelta())
    for wall in cron_walls(cron, start, backwards=True):
        if instant(wall, tz) <= now:
            return wall
    raise AssertionError("unreachable: _walls is endless")


# ---------------------------------------------------------------- periods


def resolve_period(spec: ScheduleSpec, now: datetime, explicit: str | None = None) -> Period:
    """The period: the latest fire time at or before `now`, or the one `explicit` names."""
    cron, tz = parse_cron(spec.cron), load_zone(spec.timezone)
    now_utc = as_utc(now)
    unit = granularity(cron)
    if explicit is None:
        wall = _latest_wall(cron, tz, now_utc)
        return Period(start=instant(wall, tz), label=period_label(wall, unit))
    explicit = explicit.strip()
    wall = _explicit_wall(cron, unit, explicit, spec)
    start = instant(wall, tz)
    if start > now_utc:
        current = period_label(_latest_wall(cron, tz, now_utc), unit)
        raise InputError(
            f"period {explicit}: it starts {start:%Y-%m-%d %H:%M %Z}, which is still to come",
            hint=f"a period can only be sent once it has started; the current one is {current}",
        )
    return Period(start=start, label=period_label(wall, unit))


def _label_span(label: str) -> tuple[datetime, datetime] | None:
    """The wall-time interval [a, b) a label covers, or None if it is no label."""
    for unit, (pattern, _) in _LABEL_FORMATS.items():
        match = re.fullmatch(pattern, label)
        if not match:
            continue
        parts = [int(p) for p in match.groups()]
        try:
            if unit == "year":
                return datetime(parts[0], 1, 1), datetime(parts[0] + 1, 1, 1)
            if unit == "month":
                a = datetime(parts[0], parts[1], 1)
                return a, (a + timedelta(days=32)).replace(day=1)
            if unit == "week":
                a = datetime.combine(
                    date.fromisocalendar(parts[0], parts[1], 1), datetime.min.time()
                )
                return a, a + timedelta(days=7)
            if unit == "day":
                a = datetime(parts[0], parts[1], parts[2])
                return a, a + timedelta(days=1)
            a = datetime(parts[0], parts[1], parts[2], parts[3], parts[4])
            return a, a + _MINUTE
        except ValueError:
            return None
    return None


def _explicit_wall(cron: str, unit: Granularity, label: str, spec: ScheduleSpec) -> datetime:
    example = _LABEL_FORMATS[unit][1]
    schedule = f"schedule {spec.cron!r} ({spec.timezone})"
    span = _label_span(label)
    if span is None:
        raise InputError(
            f"period {label!r} is not a period label",
            hint=f"{schedule} has one period per {unit}: write it like {example}",
        )
    a, b = span
    walls: list[datetime] = []
    for wall in cron_walls(cron, a - _MINUTE):
        if wall >= b or len(walls) == 2:
            break
        walls.append(wall)
    if not walls:
        raise InputError(
            f"period {label}: {schedule} does not fire within it",
            hint=f"its periods are one per {unit}, like {example}; see `lmbatch schedule JOB`",
        )
    if len(walls) > 1:
        raise InputError(
            f"period {label}: {schedule} fires more than once within it",
            hint=f"name one period per {unit}, like {example}",
        )
    return walls[0]


def next_fire_times(spec: ScheduleSpec, now: datetime, n: int = 5) -> list[datetime]:
    """The next `n` distinct fire instants strictly after `now`, aware in the schedule's zone."""
    cron, tz = parse_cron(spec.cron), load_zone(spec.timezone)
    now_utc = as_utc(now)
    start = now_utc.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    times: list[datetime] = []
    for wall in cron_walls(cron, start):
        if len(times) == n:
            break
        at = instant(wall, tz)
        # Wall times skipped by a forward jump can collapse onto one instant: list it once.
        if at > now_utc and (not times or at.timestamp() != times[-1].timestamp()):
            times.append(at)
    return times
