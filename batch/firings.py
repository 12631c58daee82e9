"""When the generated crontab and systemd entries fire, and what `lmbatch schedule` warns about.

A period's start and the moments a run can send are two different things. Firing only at the
period's start (the job's own cron) loses the period whenever that moment falls outside the send
window: `0 9 1 * *` with a mon-fri window found the window closed on every 1st that is a
Saturday or Sunday, and the next firing already belonged to the next month. A campaign cut
by the window's end on the 1st had no firing left in its month either.

So the entries fire again and again inside the window, and every firing resolves the period
holding *now* and sends only what is pending; a firing whose period is done sends nothing,
makes no API call and exits 0. The firings are:

- with a send window: every window opening (its days, at its opening time), plus the job's
  own time of day when that lies inside the window's hours (a period starting at 10:30 is
  not left until the next day's opening). Equal times are one entry, so cron never starts
  two runs in the same minute;
- without one: every day at the job's own time of day (a run that failed is tried again the
  next day; the period never closes a window on it);
- sub-daily schedules (several fire times a day) fire at their own times only: each firing
  starts its own period, and a period that begins outside the window is only warned about.

Leftovers a period could not finish before the next one started stay in that period's ledger
and are sent by `lmbatch run JOB --period LABEL`, the command every run prints.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

from croniter import croniter

from batch.jobmodel import ScheduleSpec
from batch.schedule import (
    as_utc,
    cron_walls,
    granularity,
    instant,
    load_zone,
    next_fire_times,
    parse_cron,
    resolve_period,
)
from batch.window import SendWindow

_DAY = 24 * 60
# How far `schedule` looks for periods no firing can send (a year of monthly periods).
_LOOKAHEAD_PERIODS = 24


def send_window(spec: ScheduleSpec) -> SendWindow | None:
    """The schedule's send window, or None when sending is allowed at any time."""
    if spec.window is None:
        return None
    window = SendWindow(spec.window, spec.timezone)
    return None if window.always else window


def _cron_days(days: frozenset[int]) -> str:
    """Python weekdays (Monday 0) as a cron day-of-week field (Sunday 0), ranges merged."""
    numbers = sorted((d + 1) % 7 for d in days)
    if len(numbers) == 7:
        return "*"
    parts: list[str] = []
    run = [numbers[0]]
    for n in numbers[1:]:
        if n == run[-1] + 1:
            run.append(n)
            continue
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [n]
    parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
    return ",".join(parts)


def _in_hours(window: SendWindow, minute_of_day: int) -> bool:
    if window.start < window.end:
        return window.start <= minute_of_day < window.end
    return minute_of_day >= window.start or minute_of_day < window.end  # overnight


def firing_crons(spec: ScheduleSpec) -> list[str]:
    """The cron expressions (in the schedule's zone) the generated entries fire on."""
    cron = parse_cron(spec.cron)
    if granularity(cron) == "minute":
        return [cron]
    minute, hour, *_ = croniter(cron).expanded
    own = int(hour[0]) * 60 + int(minute[0])
    window = send_window(spec)
    if window is None:
        return [f"{own % 60} {own // 60} * * *"]
    opening = f"{window.start % 60} {window.start // 60} * * {_cron_days(window.days)}"
    if own != window.start and _in_hours(window, own):
        return [opening, cron]
    return [opening]


def firings(spec: ScheduleSpec, after: datetime, until: datetime) -> list[datetime]:
    """Every instant in (`after`, `until`] the generated entries fire, oldest first, in UTC."""
    tz = load_zone(spec.timezone)
    after, until = as_utc(after, "after"), as_utc(until, "until")
    start = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=3)
    moments: set[datetime] = set()
    for cron in firing_crons(spec):
        for wall in cron_walls(cron, start):
            at = as_utc(instant(wall, tz))
            if at > until:
                break
            if at > after:
                moments.add(at)
    return sorted(moments)


def _when(moment: datetime) -> str:
    return f"{moment:%a %Y-%m-%d %H:%M %Z}"


def schedule_warnings(spec: ScheduleSpec, now: datetime, count: int = 5) -> list[str]:
    """Why some of the next `count` periods start outside the window, and what happens then.

    A start outside the window is sent at the next firing inside it; a period with no such
    firing before the next period starts is only sent by hand, with `--period`.
    """
    window = send_window(spec)
    if window is None:
        return []
    warnings: list[str] = []
    starts = next_fire_times(spec, now, max(count, _LOOKAHEAD_PERIODS) + 1)
    stranded: list[str] = []
    for index, (start, end) in enumerate(pairwise(starts)):
        label = resolve_period(spec, start).label
        sending = [f for f in firings(spec, start - timedelta(seconds=1), end) if f < end]
        inside = next((f for f in sending if window.is_open(f)), None)
        if inside is None:
            stranded.append(label)
        elif index < count and not window.is_open(start):
            warnings.append(
                f"{_when(start)} (period {label}) is outside the send window "
                f"({window.text}): that period is sent from {_when(inside.astimezone(window.tz))}"
            )
    if stranded:
        warnings.append(
            f"{len(stranded)} of the next {len(starts) - 1} periods ({', '.join(stranded[:3])}"
            f"{', …' if len(stranded) > 3 else ''}) have no time inside the send window "
            f"({window.text}) before the next period starts: no firing sends them; send each "
            "by hand with `lmbatch run JOB --period LABEL`, or widen the window"
        )
    return warnings
