"""Scheduled runs end to end: send windows on a fake wall clock, periods, and the campaign lock.

The window logic reads a fake wall clock and sleeps on it (`run(wall_clock=, sleep=)`), so a
weekend passes in no time and every requested wait is asserted; pacing keeps its real clock,
scaled to 10 requests per second against a sandbox on loopback. Period resolution itself
(month ends, DST, missed firings) is specified in test_schedule.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from helpers import recipients_accepted, wait_for

from batch import errors
from batch.cli import main
from batch.firings import firings
from batch.jobfile import Job, load_job
from batch.ledger import read_ledger
from batch.lock import CampaignLock
from batch.runner import NullReporter, RunOptions, RunStats, RunSummary, run
from batch.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from batch.schedule import resolve_period
from batch.window import SendWindow

MADRID = ZoneInfo("Europe/Madrid")
WINDOW = 1.0  # pacing: 10 requests per second, the real limit scaled 60×


def madrid(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A Madrid wall time as a UTC instant (UTC arithmetic never trips over DST)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=MADRID).astimezone(UTC)


# Calendar used below (November 2026, CET = UTC+1): Sun 1st is the monthly fire at 09:00,
# Fri 6th and Mon 9th bracket a weekend when the mon-fri 09:00-18:00 window is closed.
FRIDAY_CLOSE = madrid(2026, 11, 6, 18, 0)
MONDAY_OPEN = madrid(2026, 11, 9, 9, 0)


def write_job(folder: Path, n: int, *, window: str = 'days: mon-fri, hours: "09:00-18:00"') -> Path:
    """A monthly job like jobs/rent.yaml: one personal message (one request) per recipient."""
    rows = ["id,name,email,amount"] + [
        f"R-{i:03d},Tenant {i},tenant{i}@example.com,{500 + i}" for i in range(n)
    ]
    (folder / "tenants.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "rent.html").write_text("<p>Dear {{ name }}, rent is {{ amount }}.</p>")
    job = folder / "rent.yaml"
    job.write_text(
        f"""campaign: "rent-{{{{ period.label }}}}"
schedule:
  cron: "0 9 1 * *"
  timezone: Europe/Madrid
  window: {{{window}}}
dataset: {{path: tenants.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "Rent for {{{{ period.label }}}}: {{{{ id }}}}", html: rent.html}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
retry: {{attempts: 3, max_backoff_seconds: 0.2}}
output: out
""",
        encoding="utf-8",
    )
    return job


class WallClock:
    """The fake wall clock the send window reads; `sleep` records the wait and moves it on."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.on_sleep()
        self.sleeps.append(seconds)
        self.advance(seconds)


class Clerk(NullReporter):
    """Notes the wall time of every completed request, then lets `step` seconds pass."""

    def __init__(self, clock: WallClock, step: float = 0.0) -> None:
        self.clock, self.step = clock, step
        self.done = 0
        self.sent_at: list[datetime] = []
        self.notes: list[str] = []

    def update(self, stats: RunStats) -> None:
        while self.done < stats.requests_done:
            self.done += 1
            self.sent_at.append(self.clock.now)
            self.clock.advance(self.step)

    def note(self, message: str) -> None:
        self.notes.append(message)


@pytest.fixture
def api(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox], tmp_path: Path
) -> Iterator[RunningSandbox]:
    """A sandbox at the scaled rate, with the environment pointing at it."""
    config = SandboxConfig(rate_limit=10, rate_window=WINDOW)
    with running_sandbox(config) as sandbox:
        use_sandbox(sandbox)
        yield sandbox


def tenants(*indexes: int) -> list[str]:
    return [f"tenant{i}@example.com" for i in indexes]


def send(job: Job, clock: WallClock, reporter: Clerk, **options: bool) -> RunSummary:
    """Run `job` with the window on `clock`."""
    return run(job, RunOptions(**options), reporter=reporter, wall_clock=clock, sleep=clock.sleep)


def send_at(job: Job, now: datetime) -> RunSummary:
    """Run `job` with the wall clock standing at `now`."""
    clock = WallClock(now)
    return send(job, clock, Clerk(clock))


# ---------------------------------------------------------------- the send window


def test_a_run_outside_the_window_waits_until_it_opens(api: RunningSandbox, tmp_path: Path) -> None:
    saturday = madrid(2026, 11, 7, 10, 0)
    job = load_job(write_job(tmp_path, 3), now=saturday)
    clock = WallClock(saturday)
    sent_while_waiting: list[list[str]] = []
    clock.on_sleep = lambda: sent_while_waiting.append(recipients_accepted(api))
    clerk = Clerk(clock)

    summary = send(job, clock, clerk)

    assert clock.sleeps == [(MONDAY_OPEN - saturday).total_seconds()]  # one wait, to the minute
    assert clock.sleeps == [47 * 3600.0]
    assert sent_while_waiting == [[]]
    assert clerk.sent_at == [MONDAY_OPEN] * 3
    assert any("waiting until Mon 2026-11-09 09:00 CET" in n for n in clerk.notes)
    assert summary.exit_code == 0
    assert recipients_accepted(api) == tenants(0, 1, 2)


def test_a_campaign_crossing_the_window_end_pauses_and_resumes_in_place(
    api: RunningSandbox, tmp_path: Path
) -> None:
    start = madrid(2026, 11, 6, 17, 55, 30)  # five requests a minute apart fit before 18:00
    job = load_job(write_job(tmp_path, 12), now=start)
    clock = WallClock(start)
    sent_while_waiting: list[list[str]] = []
    clock.on_sleep = lambda: sent_while_waiting.append(recipients_accepted(api))
    clerk = Clerk(clock, step=60)

    summary = send(job, clock, clerk)

    paused_at = FRIDAY_CLOSE + timedelta(seconds=30)
    assert clock.sleeps == [(MONDAY_OPEN - paused_at).total_seconds()]
    assert sent_while_waiting == [tenants(*range(5))]
    assert all(at < FRIDAY_CLOSE for at in clerk.sent_at[:5])
    assert all(at >= MONDAY_OPEN for at in clerk.sent_at[5:])
    assert recipients_accepted(api) == tenants(*range(12))  # everyone once, in order: no place lost
    assert summary.exit_code == 0
    assert read_ledger(job.output_dir)["status"].to_list() == ["sent"] * 12


def test_exit_outside_window_leaves_at_once_when_closed_at_start(
    api: RunningSandbox, tmp_path: Path
) -> None:
    saturday = madrid(2026, 11, 7, 10, 0)
    job = load_job(write_job(tmp_path, 3), now=saturday)
    clock = WallClock(saturday)

    summary = send(job, clock, Clerk(clock), exit_outside_window=True)

    # Fired outside the window: nothing tried, and the period is not done (issue 12, item 8).
    assert summary.exit_code == errors.EXIT_PENDING
    assert summary.closed_at_start
    assert summary.stopped and "opens next at Mon 2026-11-09 09:00 CET" in summary.stopped
    assert clock.sleeps == []
    assert recipients_accepted(api) == []
    assert summary.counts == {"pending": 3}


def test_exit_outside_window_mid_run_exits_3_and_the_next_window_finishes(
    api: RunningSandbox, tmp_path: Path
) -> None:
    start = madrid(2026, 11, 6, 17, 58, 30)
    path = write_job(tmp_path, 6)
    clock = WallClock(start)

    first = send(load_job(path, now=start), clock, Clerk(clock, step=60), exit_outside_window=True)

    assert first.exit_code == errors.EXIT_PENDING
    assert not first.closed_at_start
    assert first.stopped and "outside the send window" in first.stopped
    assert first.counts == {"sent": 2, "pending": 4}
    assert clock.sleeps == []
    assert recipients_accepted(api) == tenants(0, 1)

    monday = WallClock(MONDAY_OPEN)
    second = send(load_job(path, now=MONDAY_OPEN), monday, Clerk(monday), exit_outside_window=True)

    assert second.exit_code == errors.EXIT_OK
    assert second.counts == {"sent": 6}
    assert recipients_accepted(api) == tenants(*range(6))


def test_a_stop_while_waiting_for_the_window_exits_3_with_nothing_lost(
    api: RunningSandbox, tmp_path: Path
) -> None:
    saturday = madrid(2026, 11, 7, 10, 0)
    job = load_job(write_job(tmp_path, 3), now=saturday)
    stop = threading.Event()

    class StopWhenWaiting(Clerk):
        def note(self, message: str) -> None:
            super().note(message)
            if "waiting until" in message:
                stop.set()  # Ctrl-C during the weekend wait

    clock = WallClock(saturday)
    # No fake sleep: the run's own sleeper, which a stop ends at once.
    summary = run(job, reporter=StopWhenWaiting(clock), stop=stop, wall_clock=clock)

    assert summary.exit_code == errors.EXIT_PENDING
    assert summary.stopped == "interrupted while waiting"
    assert summary.counts == {"pending": 3}
    assert recipients_accepted(api) == []


# ---------------------------------------------------------------- periods


def test_two_runs_in_one_period_send_once(api: RunningSandbox, tmp_path: Path) -> None:
    path = write_job(tmp_path, 4)
    tuesday, friday = madrid(2026, 11, 3, 10, 0), madrid(2026, 11, 20, 10, 0)
    early, late = load_job(path, now=tuesday), load_job(path, now=friday)
    assert early.campaign == late.campaign == "rent-2026-11"
    assert early.output_dir == late.output_dir  # one ledger for the period

    first = send_at(early, tuesday)
    second = send_at(late, friday)

    assert first.counts == second.counts == {"sent": 4}
    assert second.stats.requests_planned == 0
    assert second.stats.api_calls == 0  # nothing to send: not even the credits check
    assert recipients_accepted(api) == tenants(0, 1, 2, 3)


def test_the_next_period_gets_a_new_ledger(api: RunningSandbox, tmp_path: Path) -> None:
    path = write_job(tmp_path, 2)
    november, december = madrid(2026, 11, 3, 10, 0), madrid(2026, 12, 1, 9, 30)
    send_at(load_job(path, now=november), november)
    job = load_job(path, now=december)

    summary = send_at(job, december)

    assert job.campaign == "rent-2026-12"
    assert summary.ledger_path == tmp_path / "out" / "rent-2026-12" / "ledger.parquet"
    assert read_ledger(tmp_path / "out" / "rent-2026-11").height == 2
    assert summary.counts == {"sent": 2}
    assert [e["subject"] for e in api.state.log()] == [
        "Rent for 2026-11: R-000",
        "Rent for 2026-11: R-001",
        "Rent for 2026-12: R-000",
        "Rent for 2026-12: R-001",
    ]


def test_a_missed_period_is_back_filled_with_period(api: RunningSandbox, tmp_path: Path) -> None:
    path = write_job(tmp_path, 2)
    now = madrid(2026, 11, 20, 10, 0)
    job = load_job(path, period="2026-10", now=now)

    summary = send_at(job, now)

    assert job.campaign == "rent-2026-10"
    assert summary.counts == {"sent": 2}
    assert [e["subject"] for e in api.state.log()] == [
        "Rent for 2026-10: R-000",
        "Rent for 2026-10: R-001",
    ]
    assert not (tmp_path / "out" / "rent-2026-11").exists()
    with pytest.raises(errors.InputError, match="still to come"):
        load_job(path, period="2026-12", now=now)


# ---------------------------------------------------------------- the campaign lock

HOLD_LOCK = """
import sys
from pathlib import Path
from batch.lock import CampaignLock

lock = CampaignLock(Path(sys.argv[1]))
lock.acquire()
if sys.argv[2] == "die":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)  # no release: the file keeps naming this pid
sys.stdin.read()  # hold until the test closes our stdin
"""


def _holder(lock_file: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file), mode],
        stdin=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def test_a_concurrent_run_is_refused_while_the_lock_is_held(
    api: RunningSandbox, tmp_path: Path
) -> None:
    now = madrid(2026, 11, 3, 10, 0)
    job = load_job(write_job(tmp_path, 2), now=now)
    lock_file = job.output_dir / "run.lock"
    holder = _holder(lock_file, "hold")
    try:
        wait_for(
            lambda: lock_file.exists() and str(holder.pid) in lock_file.read_text(),
            "lock",
            timeout=20.0,
        )
        with pytest.raises(errors.LockHeld) as refused:
            send_at(job, now)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)

    assert refused.value.exit_code == errors.EXIT_LOCKED == 4
    assert f"held by pid {holder.pid}" in str(refused.value)
    assert refused.value.hint and f"kill {holder.pid}" in refused.value.hint
    assert recipients_accepted(api) == []
    after = send_at(job, now)  # the holder ended: free again
    assert after.counts == {"sent": 2}


def test_a_concurrent_run_in_the_same_process_is_refused(
    api: RunningSandbox, tmp_path: Path
) -> None:
    now = madrid(2026, 11, 3, 10, 0)
    job = load_job(write_job(tmp_path, 2), now=now)
    with CampaignLock(job.output_dir / "run.lock"), pytest.raises(errors.LockHeld) as refused:
        send_at(job, now)
    assert f"held by pid {os.getpid()}" in str(refused.value)
    assert recipients_accepted(api) == []


def test_a_stale_lock_from_a_dead_run_is_taken_over(api: RunningSandbox, tmp_path: Path) -> None:
    now = madrid(2026, 11, 3, 10, 0)
    job = load_job(write_job(tmp_path, 3), now=now)
    lock_file = job.output_dir / "run.lock"
    with _holder(lock_file, "die") as dead:
        assert dead.wait(timeout=20) == -9
    assert f'"pid": {dead.pid}' in lock_file.read_text()  # it still names the dead run

    clock = WallClock(now)
    clerk = Clerk(clock)
    summary = send(job, clock, clerk)

    assert summary.counts == {"sent": 3}
    assert recipients_accepted(api) == tenants(0, 1, 2)
    assert lock_file.read_text() == ""  # released cleanly this time
    # An unattended run says so: the run before it died (its sends were reconciled first).
    assert any(f"pid {dead.pid}" in n and "without releasing" in n for n in clerk.notes)


# ---------------------------------------------------------------- firings: no period lost
# The generated entries fire at every window opening (batch.firings); each firing resolves
# the period holding now. Issue 12, item 8: firing only on the 1st lost every month whose 1st
# is a Saturday or Sunday (May 2027, Aug 2027, Jan/Apr/Jul/Oct 2028 …).


def fire(path: Path, at: datetime, step: float = 0.0) -> tuple[RunSummary, Job]:
    """One scheduled firing at `at`: the job resolved then, run as the snippets run it."""
    job = load_job(path, now=at)
    clock = WallClock(at)
    return send(job, clock, Clerk(clock, step), exit_outside_window=True), job


@pytest.fixture
def fast_api(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
) -> Iterator[RunningSandbox]:
    """A sandbox whose rate limit never makes a run wait: 72 runs are about calendars."""
    with running_sandbox(SandboxConfig(rate_limit=1000, rate_window=WINDOW)) as sandbox:
        use_sandbox(sandbox)
        yield sandbox


def test_three_years_of_firings_send_every_month_once_inside_its_window(
    fast_api: RunningSandbox, tmp_path: Path
) -> None:
    api = fast_api
    path = write_job(tmp_path, 2)
    path.write_text(
        path.read_text().replace("requests_per_window: 10,", "requests_per_window: 1000,")
    )
    spec = load_job(path, now=madrid(2027, 1, 1, 9, 0)).spec.schedule
    assert spec is not None and spec.window is not None
    window = SendWindow(spec.window, spec.timezone)
    done: dict[str, datetime] = {}  # period label -> the firing that finished it
    noop_checked: set[str] = set()
    runs = 0
    for at in firings(spec, madrid(2027, 1, 1, 0, 0), madrid(2030, 1, 1, 0, 0)):
        label = resolve_period(spec, at).label
        if label in noop_checked:
            continue  # every later firing of a done period is the no-op just shown
        before = len(recipients_accepted(api))
        summary, job = fire(path, at)
        runs += 1
        assert job.campaign == f"rent-{label}"
        if label in done:
            # A firing after the period is done: nothing sent, no API call, exit 0.
            assert (summary.exit_code, summary.stats.api_calls) == (errors.EXIT_OK, 0)
            assert len(recipients_accepted(api)) == before
            noop_checked.add(label)
            continue
        assert window.is_open(at)  # firings land in the window (at its opening)
        assert summary.exit_code == errors.EXIT_OK
        assert summary.counts == {"sent": 2}
        done[label] = at

    labels = [f"{y}-{m:02d}" for y in (2027, 2028, 2029) for m in range(1, 13)]
    assert sorted(done) == labels  # 36 months, none lost
    subjects = [str(e["subject"]) for e in api.state.log()]
    assert subjects == [f"Rent for {p}: R-00{i}" for p in labels for i in (0, 1)]  # each once
    for lost in ("2027-05", "2027-08", "2028-01", "2028-04", "2028-07", "2028-10"):
        first_day = datetime.strptime(lost, "%Y-%m").date()
        assert first_day.weekday() >= 5  # the 1st is a weekend day ...
        assert done[lost].astimezone(MADRID).date() > first_day  # ... sent the next weekday
    assert runs == 72  # one sending firing and one no-op per month


def test_a_firing_on_a_weekend_first_exits_3_and_monday_sends(
    api: RunningSandbox, tmp_path: Path
) -> None:
    path = write_job(tmp_path, 3)
    saturday = madrid(2027, 5, 1, 9, 0)  # a timer catching up at boot fires here

    closed, job = fire(path, saturday)

    assert job.campaign == "rent-2027-05"
    assert closed.exit_code == errors.EXIT_PENDING  # not 0: the period is not done
    assert closed.counts == {"pending": 3}
    assert recipients_accepted(api) == []
    monday, _ = fire(path, madrid(2027, 5, 3, 9, 0))
    assert (monday.exit_code, monday.counts) == (errors.EXIT_OK, {"sent": 3})
    tuesday, _ = fire(path, madrid(2027, 5, 4, 9, 0))
    assert (tuesday.exit_code, tuesday.stats.api_calls) == (errors.EXIT_OK, 0)
    assert recipients_accepted(api) == tenants(0, 1, 2)


def test_a_campaign_cut_by_the_window_end_is_finished_by_the_next_firing(
    api: RunningSandbox, tmp_path: Path
) -> None:
    path = write_job(tmp_path, 12)
    friday = madrid(2027, 1, 1, 9, 0)  # New Year's Day 2027 is a Friday: the 1st, in the window

    cut, _ = fire(path, friday, step=3600.0)  # an hour per notice: 9 fit before 18:00

    assert cut.exit_code == errors.EXIT_PENDING
    assert cut.counts == {"sent": 9, "pending": 3}
    assert cut.stopped and "outside the send window" in cut.stopped
    spec = load_job(path, now=friday).spec.schedule
    assert spec is not None
    later = firings(spec, friday, friday + timedelta(days=7))
    assert later[0] == madrid(2027, 1, 4, 9, 0)  # the next firing: Monday's opening
    finished, job = fire(path, later[0])
    assert job.campaign == "rent-2027-01"  # still January's period
    assert (finished.exit_code, finished.counts) == (errors.EXIT_OK, {"sent": 12})
    assert recipients_accepted(api) == tenants(*range(12))


def test_the_resume_hint_names_the_period(api: RunningSandbox, tmp_path: Path) -> None:
    # Through the CLI, on the real clock: a window open only three days from now is closed.
    day = (datetime.now(MADRID) + timedelta(days=3)).strftime("%a").lower()
    path = write_job(tmp_path, 2, window=f'days: {day}, hours: "00:00-24:00"')
    period = load_job(path).period
    assert period is not None
    label = period.label

    result = CliRunner().invoke(main, ["run", str(path), "--exit-outside-window"])

    assert result.exit_code == errors.EXIT_PENDING  # the period's work is left
    assert f"resume with: lmbatch run {path} --period {label}" in result.stdout
    assert recipients_accepted(api) == []
