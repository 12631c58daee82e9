"""batch.firings: when the generated entries fire, and what `lmbatch schedule` warns about.

Issue 12, item 8: firing only at a period's start (`0 9 1 * *`) with a mon-fri window lost every
month whose 1st is a Saturday or Sunday. Here a model of a run (the window, the period holding
now, a send rate) replays every firing of three years; test_scheduled_runs.py replays them
with real runs against the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.firings import firing_crons, firings, schedule_warnings
from batch.jobfile import ScheduleSpec, SendWindowSpec
from batch.schedule import next_fire_times, resolve_period
from batch.window import SendWindow

MADRID = ZoneInfo("Europe/Madrid")
WEEKDAYS = SendWindowSpec(days="mon-fri", hours="09:00-18:00")
RENT = ScheduleSpec(cron="0 9 1 * *", timezone="Europe/Madrid", window=WEEKDAYS)
MONTHS = [f"{y}-{m:02d}" for y in (2027, 2028, 2029) for m in range(1, 13)]
WEEKEND_FIRSTS = [m for m in MONTHS if datetime.strptime(m, "%Y-%m").weekday() >= 5]


def madrid(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=MADRID)


@pytest.mark.parametrize(
    ("cron", "window", "expected"),
    [
        ("0 9 1 * *", WEEKDAYS, ["0 9 * * 1-5"]),  # the opening is the period's own time
        ("30 10 1 * *", WEEKDAYS, ["0 9 * * 1-5", "30 10 1 * *"]),  # starts inside: both
        ("0 0 1 * *", WEEKDAYS, ["0 9 * * 1-5"]),  # starts outside the hours: openings only
        ("0 9 1 * *", None, ["0 9 * * *"]),  # no window: every day at the same time
        (
            "0 9 1 * *",
            SendWindowSpec(days="fri-mon", hours="08:15-12:00"),
            ["15 8 * * 0,1,5,6", "0 9 1 * *"],
        ),
        (
            "0 23 * * 5",
            SendWindowSpec(days="fri", hours="22:00-06:00"),
            ["0 22 * * 5", "0 23 * * 5"],
        ),
        ("0 9 1 * *", SendWindowSpec(days="mon-sun", hours="00:00-24:00"), ["0 9 * * *"]),
        ("*/30 9-10 * * 1-5", WEEKDAYS, ["*/30 9-10 * * 1-5"]),  # each firing its own period
    ],
)
def test_firing_crons(cron: str, window: SendWindowSpec | None, expected: list[str]) -> None:
    spec = ScheduleSpec(cron=cron, timezone="Europe/Madrid", window=window)
    assert firing_crons(spec) == expected


def test_firings_are_instants_in_the_zone_across_dst() -> None:
    # Madrid springs forward on Sunday 2027-03-28: Friday is CET, Monday CEST.
    moments = firings(RENT, madrid(2027, 3, 26), madrid(2027, 3, 30))
    assert moments == [
        datetime(2027, 3, 26, 8, 0, tzinfo=UTC),
        datetime(2027, 3, 29, 7, 0, tzinfo=UTC),
    ]


@dataclass
class ModelRun:
    """A run as the runner behaves, on a fake clock: `rate` sends an hour, window enforced."""

    spec: ScheduleSpec
    notices: int
    rate: float
    sent: dict[str, list[datetime]] = field(default_factory=dict)
    exits: list[int] = field(default_factory=list)

    def fire(self, at: datetime) -> None:
        window = SendWindow(self.spec.window or WEEKDAYS, self.spec.timezone)
        label = resolve_period(self.spec, at).label
        done = self.sent.setdefault(label, [])
        now = at
        while len(done) < self.notices and window.is_open(now):
            done.append(now)
            now += timedelta(hours=1 / self.rate)
        self.exits.append(3 if len(done) < self.notices else 0)


def test_three_years_of_firings_send_every_period_exactly_once_inside_it() -> None:
    # 100 notices at 10 an hour outlast a 9-hour window: every month takes two window days.
    model = ModelRun(RENT, notices=100, rate=10)
    start, end = madrid(2027, 1, 1), madrid(2030, 1, 1)

    for at in firings(RENT, start, end):
        model.fire(at)

    starts = [resolve_period(RENT, madrid(2027, 1, 1, 12)).start]
    starts += next_fire_times(RENT, starts[0], 36)
    labels = MONTHS
    assert list(model.sent) == labels
    window = SendWindow(WEEKDAYS, RENT.timezone)
    for label, (begins, ends) in zip(labels, pairwise(starts), strict=True):
        sends = model.sent[label]
        assert len(sends) == 100  # every notice once: the model never sends a done one again
        assert all(begins <= at < ends and window.is_open(at) for at in sends), label
    assert model.exits.count(3) == 36  # each month: cut by the window's end once, then done


def test_firing_only_at_the_period_start_loses_the_weekend_months() -> None:
    model = ModelRun(RENT, notices=2, rate=10)
    for at in next_fire_times(RENT, madrid(2027, 1, 1) - timedelta(minutes=1), 36):
        model.fire(at)  # the old crontab: once, on the 1st
    lost = [label for label, sends in model.sent.items() if not sends]
    assert lost == WEEKEND_FIRSTS
    # The months issue 12 names are among them.
    assert {"2027-05", "2027-08", "2028-01", "2028-04", "2028-07", "2028-10"} <= set(lost)


DAY_CRONS = ["0 9 1 * *", "30 10 1 * *", "0 0 * * 1", "0 9 * * 5#3", "15 7 * * *", "0 9 L * *"]
HOURS = ["09:00-18:00", "00:00-24:00", "22:00-06:00", "13:30-14:00", "08:00-09:00"]


@settings(max_examples=60)
@given(
    cron=st.sampled_from(DAY_CRONS),
    days=st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
    hours=st.sampled_from(HOURS),
    month=st.integers(min_value=1, max_value=12),
)
def test_every_period_with_window_time_gets_a_firing_inside_the_window(
    cron: str, days: set[str], hours: str, month: int
) -> None:
    spec = ScheduleSpec(
        cron=cron,
        timezone="Europe/Madrid",
        window=SendWindowSpec(days=",".join(sorted(days)), hours=hours),
    )
    window = SendWindow(spec.window or WEEKDAYS, spec.timezone)
    starts = next_fire_times(spec, madrid(2027, month, 1), 6)
    for begins, ends in pairwise(starts):
        if window.next_open(begins) >= ends:
            continue  # no window time at all in this period: schedule warns about these
        inside = [f for f in firings(spec, begins - timedelta(seconds=1), ends) if f < ends]
        assert any(window.is_open(f) for f in inside), (begins, ends)


def test_schedule_warns_of_a_fire_time_outside_the_window() -> None:
    warnings = schedule_warnings(RENT, madrid(2027, 4, 15), count=3)
    assert warnings == [
        "Sat 2027-05-01 09:00 CEST (period 2027-05) is outside the send window "
        "(mon-fri 09:00-18:00): that period is sent from Mon 2027-05-03 09:00 CEST"
    ]


def test_no_warning_when_every_fire_time_is_inside_the_window() -> None:
    assert schedule_warnings(RENT, madrid(2027, 1, 15), count=3) == []  # Feb, Mar, Apr
    no_window = ScheduleSpec(cron="0 9 1 * *", timezone="Europe/Madrid")
    assert schedule_warnings(no_window, madrid(2027, 4, 15)) == []


def test_schedule_warns_of_periods_no_firing_can_send() -> None:
    daily = ScheduleSpec(cron="0 9 * * *", timezone="Europe/Madrid", window=WEEKDAYS)
    warnings = schedule_warnings(daily, madrid(2027, 1, 4, 12), count=3)  # a Monday
    stranded = warnings[-1]
    assert "have no time inside the send window (mon-fri 09:00-18:00)" in stranded
    assert "2027-01-09, 2027-01-10" in stranded  # Saturday's and Sunday's periods
    assert "lmbatch run JOB --period LABEL" in stranded
