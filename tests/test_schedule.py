"""batch.schedule: periods, send windows, the campaign lock and the cron/systemd snippets.

Every test passes `now` explicitly; nothing here reads the wall clock or sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.errors import InputError, JobFileError
from batch.jobfile import ScheduleSpec
from batch.schedule import granularity, next_fire_times, resolve_period

MADRID = ZoneInfo("Europe/Madrid")
MONTHLY = ScheduleSpec(cron="0 9 1 * *", timezone="Europe/Madrid")


def madrid(*args: int) -> datetime:
    return datetime(*args, tzinfo=MADRID)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


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
