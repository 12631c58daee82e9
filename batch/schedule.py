"""When a scheduled job runs: its period, its send window, its lock, and cron/systemd snippets.

Pure logic with the clock injected: every function takes `now` (aware, any zone) and nothing
here reads the wall clock or sleeps, except `CampaignLock`, which stamps its file.

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
import shlex
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from batch.errors import InputError, JobFileError
from batch.jobmodel import Period, ScheduleSpec, SendWindowSpec

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


def _utc(moment: datetime, name: str = "now") -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _instant(wall: datetime, tz: ZoneInfo, *, last: bool = False) -> datetime:
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


def _walls(cron: str, start: datetime, *, backwards: bool = False) -> Iterator[datetime]:
    """Fire wall times strictly after (or before) naive `start`; croniter on naive times is
    pure calendar arithmetic, which is why DST is handled apart, in `_instant`."""
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
    for wall in _walls(cron, start, backwards=True):
        if _instant(wall, tz) <= now:
            return wall
    raise AssertionError("unreachable: _walls is endless")


# ---------------------------------------------------------------- periods


def resolve_period(spec: ScheduleSpec, now: datetime, explicit: str | None = None) -> Period:
    """The period: the latest fire time at or before `now`, or the one `explicit` names."""
    cron, tz = parse_cron(spec.cron), load_zone(spec.timezone)
    now_utc = _utc(now)
    unit = granularity(cron)
    if explicit is None:
        wall = _latest_wall(cron, tz, now_utc)
        return Period(start=_instant(wall, tz), label=period_label(wall, unit))
    explicit = explicit.strip()
    wall = _explicit_wall(cron, unit, explicit, spec)
    start = _instant(wall, tz)
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
    for wall in _walls(cron, a - _MINUTE):
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
    now_utc = _utc(now)
    start = now_utc.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    times: list[datetime] = []
    for wall in _walls(cron, start):
        if len(times) == n:
            break
        at = _instant(wall, tz)
        # Wall times skipped by a forward jump can collapse onto one instant: list it once.
        if at > now_utc and (not times or at.timestamp() != times[-1].timestamp()):
            times.append(at)
    return times


# ---------------------------------------------------------------- send window

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
            opens = _instant(day + timedelta(minutes=self.start), self.tz).astimezone(UTC)
            closes = _instant(end_day + timedelta(minutes=self.end), self.tz, last=True)
            closes = closes.astimezone(UTC)
            if opens >= closes:  # the whole span fell into a skipped (spring-forward) hour
                continue
            if merged and opens <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(closes, merged[-1][1]))
            else:
                merged.append((opens, closes))
        return merged

    def _current(self, now: datetime) -> tuple[datetime, datetime] | None:
        now_utc = _utc(now)
        return next((s for s in self._stretches(now_utc) if s[0] <= now_utc < s[1]), None)

    def is_open(self, now: datetime) -> bool:
        """Whether sending is allowed at `now`."""
        return self.always or self._current(now) is not None

    def next_open(self, now: datetime) -> datetime:
        """`now` if the window is open, else when it next opens (in the schedule's zone)."""
        if self.is_open(now):
            return now
        now_utc = _utc(now)
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


# ---------------------------------------------------------------- cron and systemd snippets

_SYSTEMD_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_IDEMPOTENT = "# every run in a period resolves to that period and sends only what is pending.\n"


def _command(job_path: Path, lmbatch_cmd: str) -> str:
    job = shlex.quote(str(job_path.absolute()))
    return f"{lmbatch_cmd} run {job} --exit-outside-window"


def crontab_line(spec: ScheduleSpec, job_path: Path, lmbatch_cmd: str) -> str:
    """A crontab entry, with CRON_TZ and why a late or doubled firing is harmless."""
    cron = parse_cron(spec.cron)
    load_zone(spec.timezone)
    command = _command(job_path, lmbatch_cmd).replace("%", r"\%")  # crontab reads % as newline
    return (
        f"# lmbatch {job_path.name}: {spec.cron} in {spec.timezone}.\n"
        f"# A late or repeated firing is harmless:\n{_IDEMPOTENT}"
        "# CRON_TZ (cronie: Fedora, RHEL, Arch) applies to every entry below it. Debian and\n"
        "# Ubuntu cron ignore it and fire on the system's clock: there, use the systemd timer or\n"
        "# fire hourly (0 * * * *); runs before a period starts find the last one sent.\n"
        f"CRON_TZ={spec.timezone}\n"
        f"{cron} {command}\n"
    )


def on_calendar(cron: str, timezone: str) -> tuple[list[str], str]:
    """systemd OnCalendar= values firing exactly when `cron` does, or ([], why not)."""
    it = croniter(parse_cron(cron))
    minute, hour, dom, month, dow = it.expanded
    nth: dict[int, set[int]] = it.nth_weekday_of_month

    def values(field: list[int | str]) -> str:
        return "*" if field == ["*"] else ",".join(f"{v:02d}" for v in field)

    def line(days: str, weekdays: list[int | str]) -> str:
        names = "" if weekdays == ["*"] else ",".join(_SYSTEMD_WEEKDAYS[int(d)] for d in weekdays)
        date_part = f"*-{values(month)}{days}"
        return f"{names} {date_part}".strip() + f" {values(hour)}:{values(minute)}:00 {timezone}"

    if "l" in dom:
        if dom != ["l"] or dow != ["*"]:
            return [], "a last day of the month (L) together with other days"
        return [line("~01", ["*"])], ""  # systemd counts days from the month's end after "~"
    if nth:
        if dom != ["*"] or len(dow) != 1:
            return [], "an nth weekday (#) together with other days"
        # The nth weekday of a month falls on days 7n-6 to 7n.
        return [
            line(f"-{7 * n - 6:02d}..{min(7 * n, 31):02d}", dow) for n in sorted(nth[dow[0]])
        ], ""
    if dom != ["*"] and dow != ["*"]:
        # cron fires when either day field matches, systemd when both do: one line for each.
        return [line("-" + values(dom), ["*"]), line("-*", dow)], ""
    return [line("-" + values(dom), dow)], ""


def systemd_units(spec: ScheduleSpec, job_path: Path, lmbatch_cmd: str) -> tuple[str, str]:
    """A oneshot service and a persistent timer (service text, timer text) running the job."""
    load_zone(spec.timezone)
    events, why_not = on_calendar(spec.cron, spec.timezone)
    job = job_path.absolute()
    unit = f"lmbatch-{job.stem}"
    service = (
        f"# {unit}.service, next to {unit}.timer in ~/.config/systemd/user/\n"
        f"# (or /etc/systemd/system/); enable with: systemctl --user enable --now {unit}.timer\n"
        "[Unit]\n"
        f"Description=lmbatch campaign {job.name}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={job.parent}\n"
        "# The API token comes from the environment, e.g. EnvironmentFile= naming a file that\n"
        "# holds LEGALLYMAIL_TOKEN=... and is readable by this user only.\n"
        + (
            ""
            if lmbatch_cmd.startswith("/")
            else "# systemd before 239 needs an absolute path here.\n"
        )
        + f"ExecStart={_command(job_path, lmbatch_cmd).replace('%', '%%')}\n"
    )
    if events:
        quoted = " ".join(shlex.quote(e) for e in events)
        calendar = (
            f"# cron {spec.cron!r} in {spec.timezone} (zones in OnCalendar= need systemd 235+);\n"
            f"# check with: systemd-analyze calendar --iterations=5 {quoted}\n"
            + "".join(f"OnCalendar={e}\n" for e in events)
        )
    else:
        calendar = (
            f"# OnCalendar= is left out rather than guessed: cron {spec.cron!r} uses\n"
            f"# {why_not}, which systemd calendar events cannot express exactly.\n"
            f"# Write it by hand (man systemd.time) in {spec.timezone} and check it with:\n"
            "#   systemd-analyze calendar --iterations=5 '...'\n"
        )
    timer = (
        "[Unit]\n"
        f"Description=Schedule of lmbatch campaign {job.name}\n"
        "\n"
        "[Timer]\n"
        f"{calendar}"
        f"# A firing missed while the machine was off runs at boot; harmless, as\n{_IDEMPOTENT}"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer
