"""batch.schedule: periods, send windows, the campaign lock and the cron/systemd snippets.

Every test passes `now` explicitly; nothing here reads the wall clock or sleeps.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.cronsnippets import Unattended, crontab_text, on_calendar, systemd_units
from batch.errors import InputError, JobFileError
from batch.jobfile import ScheduleSpec, SendWindowSpec
from batch.schedule import granularity, next_fire_times, resolve_period
from batch.window import SendWindow

MADRID = ZoneInfo("Europe/Madrid")
MONTHLY = ScheduleSpec(cron="0 9 1 * *", timezone="Europe/Madrid")


def madrid(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=MADRID)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


# ---------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("cron", "now", "label", "start"),
    [
        # the example: any run in November after the 1st 09:00 Madrid → 2026-11
        ("0 9 1 * *", madrid(2026, 11, 1, 9, 0), "2026-11", madrid(2026, 11, 1, 9, 0)),
        ("0 9 1 * *", madrid(2026, 11, 30, 23, 59), "2026-11", madrid(2026, 11, 1, 9, 0)),
        ("0 9 1 * *", madrid(2026, 11, 1, 8, 59), "2026-10", madrid(2026, 10, 1, 9, 0)),
        # now given in UTC: 07:59Z is 08:59 CET
        ("0 9 1 * *", utc(2026, 11, 1, 7, 59), "2026-10", madrid(2026, 10, 1, 9, 0)),
        ("0 9 1 * *", utc(2026, 11, 1, 8, 0), "2026-11", madrid(2026, 11, 1, 9, 0)),
        # missed firing: machine down on the 1st, first run on the 3rd
        ("0 9 1 * *", madrid(2026, 11, 3, 14, 0), "2026-11", madrid(2026, 11, 1, 9, 0)),
        # month ends: Jan 31 → Feb, leap years
        ("0 9 31 * *", madrid(2026, 2, 15), "2026-01", madrid(2026, 1, 31, 9, 0)),
        ("0 9 31 * *", madrid(2026, 4, 15), "2026-03", madrid(2026, 3, 31, 9, 0)),
        ("0 0 L * *", madrid(2028, 3, 1), "2028-02", madrid(2028, 2, 29, 0, 0)),
        ("0 0 L * *", madrid(2027, 3, 1), "2027-02", madrid(2027, 2, 28, 0, 0)),
        ("0 9 29 2 *", madrid(2027, 6, 1), "2024", madrid(2024, 2, 29, 9, 0)),
        ("0 9 1 1 *", madrid(2027, 1, 1, 8, 0), "2026", madrid(2026, 1, 1, 9, 0)),
        # granularities
        ("0 9 * * mon", madrid(2026, 11, 22, 12), "2026-W47", madrid(2026, 11, 16, 9, 0)),
        ("0 9 * * sun", madrid(2027, 1, 3, 12), "2026-W53", madrid(2027, 1, 3, 9, 0)),
        ("0 9 * * 5#3", madrid(2026, 11, 25), "2026-11", madrid(2026, 11, 20, 9, 0)),
        ("0 9 * * *", madrid(2026, 11, 21, 10), "2026-11-21", madrid(2026, 11, 21, 9, 0)),
        ("0 9 1,15 * *", madrid(2026, 11, 20), "2026-11-15", madrid(2026, 11, 15, 9, 0)),
        ("0 9,17 * * *", madrid(2026, 11, 21, 18), "2026-11-21T17:00", madrid(2026, 11, 21, 17)),
        ("@monthly", madrid(2026, 11, 21), "2026-11", madrid(2026, 11, 1, 0, 0)),
        # DST: last Sunday of March (02:00 → 03:00) and of October (03:00 → 02:00)
        ("0 9 * * *", madrid(2026, 3, 29, 9, 0), "2026-03-29", madrid(2026, 3, 29, 9, 0)),
        ("0 9 * * *", utc(2026, 3, 29, 6, 59), "2026-03-28", madrid(2026, 3, 28, 9, 0)),
        ("0 9 * * *", utc(2026, 10, 25, 8, 0), "2026-10-25", madrid(2026, 10, 25, 9, 0)),
        # 02:30 does not exist on 2026-03-29: the fire happens at the jump, 03:00 CEST
        ("30 2 * * *", utc(2026, 3, 29, 0, 59), "2026-03-28", madrid(2026, 3, 28, 2, 30)),
        ("30 2 * * *", utc(2026, 3, 29, 1, 0), "2026-03-29", madrid(2026, 3, 29, 3, 0)),
        # 02:30 happens twice on 2026-10-25: the first one counts, the second is no new period
        ("30 2 * * *", utc(2026, 10, 25, 0, 29), "2026-10-24", madrid(2026, 10, 24, 2, 30)),
        ("30 2 * * *", utc(2026, 10, 25, 0, 30), "2026-10-25", utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", utc(2026, 10, 25, 1, 45), "2026-10-25", utc(2026, 10, 25, 0, 30)),
    ],
)
def test_period_is_latest_fire_at_or_before_now(
    cron: str, now: datetime, label: str, start: datetime
) -> None:
    period = resolve_period(ScheduleSpec(cron=cron, timezone="Europe/Madrid"), now)
    assert period.label == label
    assert period.start.timestamp() == start.timestamp()
    assert period.start.tzinfo == MADRID


def test_two_runs_in_one_period_share_the_label() -> None:
    runs = [madrid(2026, 11, 1, 9, 0), madrid(2026, 11, 1, 9, 5), madrid(2026, 11, 29, 23, 0)]
    assert {resolve_period(MONTHLY, now).label for now in runs} == {"2026-11"}


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        resolve_period(MONTHLY, datetime(2026, 11, 3))


@pytest.mark.parametrize(
    ("cron", "unit"),
    [
        ("0 9 1 1 *", "year"),
        ("0 9 1 * *", "month"),
        ("0 9 1 1,7 *", "month"),
        ("0 9 * * 5#3", "month"),
        ("0 9 * * fri", "week"),
        ("0 9 * * *", "day"),
        ("0 9 * * mon-fri", "day"),
        ("0 9 1 * mon", "day"),  # cron ORs the two day fields
        ("0 9,17 * * *", "minute"),
        ("*/15 * * * *", "minute"),
        ("@yearly", "year"),
        ("@hourly", "minute"),
    ],
)
def test_label_granularity_follows_the_cron_expression(cron: str, unit: str) -> None:
    assert granularity(cron) == unit


@pytest.mark.parametrize(
    ("cron", "explicit", "label", "start"),
    [
        ("0 9 1 * *", "2026-10", "2026-10", madrid(2026, 10, 1, 9, 0)),
        ("0 9 1 * *", " 2025-02 ", "2025-02", madrid(2025, 2, 1, 9, 0)),
        ("0 9 1 * *", "2026-10-01", "2026-10", madrid(2026, 10, 1, 9, 0)),  # finer is fine
        ("0 9 1 1 *", "2025", "2025", madrid(2025, 1, 1, 9, 0)),
        ("0 9 * * mon", "2026-W01", "2026-W01", madrid(2025, 12, 29, 9, 0)),
        ("0 9 * * *", "2026-02-28", "2026-02-28", madrid(2026, 2, 28, 9, 0)),
        ("0 9,17 * * *", "2026-11-02T17:00", "2026-11-02T17:00", madrid(2026, 11, 2, 17, 0)),
    ],
)
def test_explicit_period(cron: str, explicit: str, label: str, start: datetime) -> None:
    spec = ScheduleSpec(cron=cron, timezone="Europe/Madrid")
    period = resolve_period(spec, madrid(2026, 11, 3, 12), explicit)
    assert (period.label, period.start) == (label, start)


@pytest.mark.parametrize(
    ("cron", "explicit", "message"),
    [
        ("0 9 1 * *", "2026-13", "is not a period label"),
        ("0 9 1 * *", "Oct 2026", "is not a period label"),
        ("0 9 1 * *", "2026-W54", "is not a period label"),
        ("0 9 1 * *", "2026-10-02", "does not fire within it"),
        ("0 9 * * *", "2026-10", "fires more than once within it"),
        ("0 9 1 * *", "2026-12", "still to come"),
        ("0 9 1 * *", "2026-11-03T12:00", "does not fire within it"),
    ],
)
def test_explicit_period_errors_name_the_label(cron: str, explicit: str, message: str) -> None:
    spec = ScheduleSpec(cron=cron, timezone="Europe/Madrid")
    with pytest.raises(InputError, match=message) as info:
        resolve_period(spec, madrid(2026, 11, 3, 12), explicit)
    assert explicit.strip() in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("cron", "timezone", "key", "message"),
    [
        ("0 9 1 * * *", "UTC", "schedule.cron", "five fields"),
        ("0 25 1 * *", "UTC", "schedule.cron", "not a valid cron"),
        ("every day", "UTC", "schedule.cron", "five fields"),
        ("0 9 30 2 *", "UTC", "schedule.cron", "never fires"),
        ("0 9 1 * *", "Europe/Madird", "schedule.timezone", "unknown time zone"),
        ("0 9 1 * *", "", "schedule.timezone", "unknown time zone"),
    ],
)
def test_invalid_schedule_names_its_key(cron: str, timezone: str, key: str, message: str) -> None:
    with pytest.raises(JobFileError, match=message) as info:
        resolve_period(ScheduleSpec(cron=cron, timezone=timezone), utc(2026, 11, 3))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("cron", "now", "expected"),
    [
        (
            "0 9 1 * *",
            madrid(2026, 11, 1, 9, 0),
            [madrid(2026, 12, 1, 9), madrid(2027, 1, 1, 9), madrid(2027, 2, 1, 9)],
        ),
        (
            "30 2 * * *",
            madrid(2026, 3, 28, 12),
            [madrid(2026, 3, 29, 3, 0), madrid(2026, 3, 30, 2, 30), madrid(2026, 3, 31, 2, 30)],
        ),
        (  # half-hourly across the fall-back: 02:00 and 02:30 once each, then on
            "*/30 * * * *",
            utc(2026, 10, 24, 23, 45),
            [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0)],
        ),
        (  # half-hourly across the spring-forward: 02:00 and 02:30 collapse onto 03:00
            "*/30 * * * *",
            utc(2026, 3, 29, 0, 15),
            [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)],
        ),
    ],
)
def test_next_fire_times(cron: str, now: datetime, expected: list[datetime]) -> None:
    times = next_fire_times(ScheduleSpec(cron=cron, timezone="Europe/Madrid"), now, n=3)
    assert [t.timestamp() for t in times] == [e.timestamp() for e in expected]


CRONS = ["0 9 1 * *", "30 2 * * *", "*/30 * * * *", "0 9 * * mon", "0 0 L * *", "15 1-3 * * *"]
ZONES = ["Europe/Madrid", "America/New_York", "Australia/Lord_Howe", "UTC", "Asia/Kolkata"]
MOMENTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=150, deadline=None)
@given(cron=st.sampled_from(CRONS), zone=st.sampled_from(ZONES), now=MOMENTS)
def test_period_starts_at_or_before_now_and_the_next_fire_is_after(
    cron: str, zone: str, now: datetime
) -> None:
    spec = ScheduleSpec(cron=cron, timezone=zone)
    period = resolve_period(spec, now)
    following = next_fire_times(spec, now, n=1)[0]
    assert period.start.timestamp() <= now.timestamp() < following.timestamp()
    # Idempotence: the period's own start, and the label written back, resolve to the same period.
    assert resolve_period(spec, period.start) == period
    assert resolve_period(spec, now, period.label) == period


# ---------------------------------------------------------------- send window
# 2026-11-20 is a Friday; 2026-03-29 and 2026-10-25 are Madrid's DST Sundays.

OFFICE = ("mon-fri", "09:00-18:00")
NIGHT = ("mon-fri", "22:00-06:00")


def window(days: str, hours: str, zone: str = "Europe/Madrid") -> SendWindow:
    return SendWindow(SendWindowSpec(days=days, hours=hours), zone)


@pytest.mark.parametrize(
    ("spec", "now", "is_open", "next_open", "closes_at"),
    [
        (OFFICE, madrid(2026, 11, 20, 9, 0), True, None, madrid(2026, 11, 20, 18, 0)),
        (OFFICE, madrid(2026, 11, 20, 17, 59), True, None, madrid(2026, 11, 20, 18, 0)),
        # Friday evening and the weekend wait for Monday morning
        (OFFICE, madrid(2026, 11, 20, 18, 0), False, madrid(2026, 11, 23, 9, 0), None),
        (OFFICE, madrid(2026, 11, 22, 12, 0), False, madrid(2026, 11, 23, 9, 0), None),
        (OFFICE, madrid(2026, 11, 23, 8, 59), False, madrid(2026, 11, 23, 9, 0), None),
        (OFFICE, utc(2026, 11, 23, 8, 0), True, None, madrid(2026, 11, 23, 18, 0)),
        (
            ("mon,wed,fri", "09:00-18:00"),
            madrid(2026, 11, 17, 10),
            False,
            madrid(2026, 11, 18, 9),
            None,
        ),
        (
            ("fri-mon", "10:00-12:00"),
            madrid(2026, 11, 24, 11),
            False,
            madrid(2026, 11, 27, 10),
            None,
        ),
        (
            ("fri-mon", "10:00-12:00"),
            madrid(2026, 11, 23, 11),
            True,
            None,
            madrid(2026, 11, 23, 12),
        ),
        # touching days merge: the weekend is one stretch
        (("sat-sun", "00:00-24:00"), madrid(2026, 11, 21, 10), True, None, madrid(2026, 11, 23)),
        (("sat-sun", "00:00-24:00"), madrid(2026, 11, 20, 23), False, madrid(2026, 11, 21), None),
        # overnight spans belong to the day they open
        (NIGHT, madrid(2026, 11, 20, 23, 0), True, None, madrid(2026, 11, 21, 6, 0)),
        (NIGHT, madrid(2026, 11, 21, 5, 59), True, None, madrid(2026, 11, 21, 6, 0)),
        (NIGHT, madrid(2026, 11, 21, 22, 0), False, madrid(2026, 11, 23, 22, 0), None),
        (NIGHT, madrid(2026, 11, 23, 5, 0), False, madrid(2026, 11, 23, 22, 0), None),
        (NIGHT, madrid(2026, 11, 24, 5, 0), True, None, madrid(2026, 11, 24, 6, 0)),
        # DST: Saturday night across the fall-back lasts 9 hours, across the spring-forward 7
        (("sat", "22:00-06:00"), utc(2026, 10, 24, 20, 0), True, None, utc(2026, 10, 25, 5, 0)),
        (("sat", "22:00-06:00"), utc(2026, 3, 28, 21, 0), True, None, utc(2026, 3, 29, 4, 0)),
        # opening inside the skipped hour opens at the jump (03:00 CEST)
        (("sun", "02:30-05:00"), madrid(2026, 3, 29, 1, 0), False, utc(2026, 3, 29, 1, 0), None),
        # a span wholly inside the skipped hour does not happen that day
        (("sun", "02:00-02:45"), madrid(2026, 3, 28, 12), False, madrid(2026, 4, 5, 2, 0), None),
        # a span ending in the repeated hour stays open until its second pass ends
        (("sun", "00:00-02:30"), utc(2026, 10, 25, 1, 15), True, None, utc(2026, 10, 25, 1, 30)),
        # office hours on the Monday after each change follow the new offset
        (OFFICE, utc(2026, 3, 30, 7, 0), True, None, utc(2026, 3, 30, 16, 0)),
        (OFFICE, utc(2026, 10, 26, 7, 59), False, utc(2026, 10, 26, 8, 0), None),
    ],
)
def test_send_window(
    spec: tuple[str, str],
    now: datetime,
    is_open: bool,
    next_open: datetime | None,
    closes_at: datetime | None,
) -> None:
    win = window(*spec)
    assert win.is_open(now) is is_open
    assert win.next_open(now).timestamp() == (next_open or now).timestamp()
    assert win.closes_at(now).timestamp() == (closes_at or now).timestamp()  # type: ignore[union-attr]


def test_an_always_open_window_never_closes() -> None:
    win = window("mon-sun", "00:00-24:00")
    now = madrid(2026, 11, 21, 3)
    assert win.is_open(now)
    assert win.next_open(now) == now
    assert win.closes_at(now) is None


@pytest.mark.parametrize(
    ("days", "hours", "key"),
    [
        ("mon-fry", "09:00-18:00", "schedule.window.days"),
        ("", "09:00-18:00", "schedule.window.days"),
        ("mon,,fri", "09:00-18:00", "schedule.window.days"),
        ("mon-fri", "9-18", "schedule.window.hours"),
        ("mon-fri", "09:00-09:00", "schedule.window.hours"),
        ("mon-fri", "24:00-06:00", "schedule.window.hours"),
        ("mon-fri", "09:00-24:30", "schedule.window.hours"),
        ("mon-fri", "09:60-18:00", "schedule.window.hours"),
    ],
)
def test_invalid_window_names_its_key(days: str, hours: str, key: str) -> None:
    with pytest.raises(JobFileError) as info:
        window(days, hours)
    assert info.value.key == key


def test_window_days_accept_full_names_and_any_case() -> None:
    assert window("Monday-WED, sat", "09:00-18:00").days == {0, 1, 2, 5}


def wall_clock_says_open(days: frozenset[int], start: int, end: int, local: datetime) -> bool:
    minute, weekday = local.hour * 60 + local.minute, local.weekday()
    if start < end:
        return weekday in days and start <= minute < end
    return (weekday in days and minute >= start) or ((weekday - 1) % 7 in days and minute < end)


DAY_SPECS = ["mon-fri", "sat-sun", "fri-mon", "mon,wed,fri", "sun", "mon-sun"]
HOURS = ["09:00-18:00", "22:00-06:00", "00:00-24:00", "01:30-02:30", "02:15-03:00", "23:00-01:00"]


@settings(max_examples=200, deadline=None)
@given(
    days=st.sampled_from(DAY_SPECS),
    hours=st.sampled_from(HOURS),
    zone=st.sampled_from(["Europe/Madrid", "America/New_York", "Australia/Lord_Howe"]),
    now=MOMENTS,
)
def test_window_reads_the_wall_clock_and_its_edges_agree(
    days: str, hours: str, zone: str, now: datetime
) -> None:
    win = window(days, hours, zone)
    local = now.astimezone(ZoneInfo(zone))
    assert win.is_open(now) == wall_clock_says_open(win.days, win.start, win.end, local)
    # Arithmetic in UTC: on an aware datetime, `- timedelta` moves the wall clock, which can
    # land in a skipped hour.
    opens = win.next_open(now).astimezone(UTC)
    assert opens.timestamp() >= now.timestamp()
    assert win.is_open(opens)
    assert opens == now or not win.is_open(opens - timedelta(seconds=1))
    closes = win.closes_at(opens)
    if closes is not None:
        closes = closes.astimezone(UTC)
        assert closes.timestamp() > opens.timestamp()
        assert not win.is_open(closes)
        assert win.is_open(closes - timedelta(seconds=1))


# ---------------------------------------------------------------- cron and systemd snippets


def unattended(tmp_path: Path, lmbatch: str = "/opt/lmbatch/bin/lmbatch") -> Unattended:
    return Unattended(lmbatch, tmp_path / "token.env", tmp_path / "rent.log")


def test_crontab_line_sets_the_zone_and_the_window_flag(tmp_path: Path) -> None:
    job = tmp_path / "rent 100%.yaml"
    text = crontab_text(MONTHLY, job, unattended(tmp_path))
    lines = text.splitlines()
    assert "CRON_TZ=Europe/Madrid" in lines
    entry = lines[-1]
    assert entry.startswith("0 9 * * * set -a && . ")  # no window: every day at 09:00
    command = entry.split(" && ")[-1]
    assert command.startswith("/opt/lmbatch/bin/lmbatch run ")
    assert " --exit-outside-window " in command
    assert r"100\%" in entry  # cron turns a bare % into a newline
    assert shlex.split(command.replace(r"\%", "%"))[2] == str(job)


@pytest.mark.parametrize(
    ("cron", "events"),
    [
        ("0 9 1 * *", ["*-*-01 09:00:00 Europe/Madrid"]),
        ("*/30 9-10 * * 1-5", ["Mon,Tue,Wed,Thu,Fri *-*-* 09,10:00,30:00 Europe/Madrid"]),
        ("0 9 L * *", ["*-*~01 09:00:00 Europe/Madrid"]),
        ("0 9 * * 5#3", ["Fri *-*-15..21 09:00:00 Europe/Madrid"]),
        ("0 9 1 jan,jul *", ["*-01,07-01 09:00:00 Europe/Madrid"]),
        ("@weekly", ["Sun *-*-* 00:00:00 Europe/Madrid"]),
        # cron ORs the day fields, systemd ANDs them: one event for each
        ("0 9 1 * mon", ["*-*-01 09:00:00 Europe/Madrid", "Mon *-*-* 09:00:00 Europe/Madrid"]),
    ],
)
def test_cron_translates_to_on_calendar(cron: str, events: list[str]) -> None:
    assert on_calendar(cron, "Europe/Madrid") == (events, "")


def test_systemd_units_run_the_job_with_a_persistent_timer(tmp_path: Path) -> None:
    service, timer = systemd_units(
        MONTHLY, tmp_path / "rent.yaml", unattended(tmp_path, "/usr/bin/lmbatch")
    )
    assert "Type=oneshot" in service
    assert (
        f"ExecStart=/usr/bin/lmbatch run {tmp_path / 'rent.yaml'} --exit-outside-window" in service
    )
    assert "OnCalendar=*-*-* 09:00:00 Europe/Madrid" in timer.splitlines()
    assert "Persistent=true" in timer.splitlines()


def test_untranslatable_cron_says_so_instead_of_guessing(tmp_path: Path) -> None:
    # Twice a day: each firing is its own period, so the timer fires on the cron itself.
    spec = ScheduleSpec(cron="0 9,18 L * mon", timezone="Europe/Madrid")
    _, timer = systemd_units(spec, tmp_path / "rent.yaml", unattended(tmp_path, "lmbatch"))
    assert "OnCalendar=" not in "".join(line for line in timer.splitlines() if line[:1] != "#")
    assert "left out rather than guessed" in timer
    assert "Persistent=true" in timer


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("cron", ["0 9 1 * *", "*/30 9-10 * * 1-5", "0 9 L * *", "0 9 * * 5#3"])
def test_systemd_agrees_with_croniter_on_the_next_fire_times(cron: str) -> None:
    (event,), _ = on_calendar(cron, "Europe/Madrid")
    # systemd-analyze only counts from the real clock, so compare against ours from a moment
    # before it runs; a fire falling between the two would shift systemd's list by one.
    now = datetime.now(UTC)
    out = subprocess.run(
        [str(SYSTEMD_ANALYZE), "calendar", "--iterations=3", event],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout
    theirs = [
        datetime.strptime(line.split(": ", 1)[1][4:], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        for line in out.splitlines()
        if line.strip().startswith(("Next elapse:", "Iter. #"))
    ]
    ours = [
        t.astimezone(UTC)
        for t in next_fire_times(ScheduleSpec(cron=cron, timezone="Europe/Madrid"), now, 4)
    ]
    assert theirs in (ours[:3], ours[1:])


def test_a_window_lost_to_spring_forward_opens_the_week_after() -> None:
    # On 2024-03-31 Madrid skips 02:00-03:00, the whole of this Sunday window.
    window = SendWindow(SendWindowSpec(days="sun", hours="02:15-03:00"), "Europe/Madrid")
    opens = window.next_open(utc(2024, 3, 25))
    assert opens == madrid(2024, 4, 7, 2, 15)
    assert window.is_open(opens)
