"""Every long command talks: an honest ETA, 80 columns, a newline at every line's end, the
last log line's outcome, and Ctrl-C in `track` and `certificates` (exit 3, how to continue).

The displays are driven with fake limiters and clocks; the commands run in a subprocess with a
pipe where a terminal's absence and a signal matter.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_track import DELIVERED, READ, World, people, sent_job, tracked
from test_track import world as world  # the fixture, shared with the tracking tests

from batch.cli import WORKFLOW, main
from batch.jobmodel import SendWindowSpec
from batch.progress import LineReporter, RichReporter
from batch.stats import RunStats, StepStats, human_duration
from batch.window import SendWindow

ROOT = Path(__file__).parent.parent
MADRID = ZoneInfo("Europe/Madrid")


# ---------------------------------------------------------------- durations and the ETA


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (42.4, "42 s"), (59.6, "1 min"), (600, "10 min"), (3600, "1 h 00 min"),
     (5 * 3600 + 7 * 60, "5 h 07 min"), (3 * 86400 + 4 * 3600, "3 d 4 h")],
)  # fmt: skip
def test_durations_in_seconds_minutes_hours(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_the_eta_counts_the_wait_for_the_next_slot_and_counts_down() -> None:
    """10 per minute, 10 sent, 5 left: the first waits for the window (no "now")."""
    waits = [42.0]
    stats = RunStats(per_window=10, window=60.0, next_free=lambda: waits[0], tz=MADRID)
    stats.requests_planned, stats.requests_done = 15, 10
    eta = stats.eta()
    assert eta.waiting == "next request in 42 s"
    assert 41 <= eta.seconds <= 42
    assert eta.finish is not None and eta.finish.tzinfo == MADRID
    assert re.fullmatch(r"ETA 4[12] s \(about \w{3} \d\d:\d\d CE[S]?T\)", eta.text())


def test_the_eta_includes_the_send_window() -> None:
    """Closed on Saturday night: the window opens Monday 09:00 Madrid time and says so."""
    window = SendWindow(SendWindowSpec(days="mon-fri", hours="09:00-18:00"), "Europe/Madrid")
    saturday = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
    stats = RunStats(per_window=10, window=60.0, send_window=window, tz=MADRID)
    stats.clock = lambda: saturday
    stats.requests_planned = 30  # two more windows: 2 min of sending after the opening
    eta = stats.eta()
    assert eta.waiting == "send window opens Mon 09:00 CET"
    assert eta.finish == datetime(2026, 11, 30, 9, 2, tzinfo=MADRID)
    assert eta.text() == "ETA 34 h 02 min (about Mon 09:02 CET)"


def test_work_longer_than_a_day_of_window_continues_the_next_day() -> None:
    window = SendWindow(SendWindowSpec(days="mon-fri", hours="09:00-10:00"), "Europe/Madrid")
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=MADRID)
    stats = RunStats(per_window=10, window=60.0, send_window=window, tz=MADRID)
    stats.clock = lambda: monday
    stats.requests_planned = 10 * 91  # 90 min of sending: an hour today, 30 min tomorrow
    assert stats.eta().finish == datetime(2026, 12, 1, 9, 30, tzinfo=MADRID)


# ---------------------------------------------------------------- 80 columns, newlines


def big_stats() -> RunStats:
    stats = RunStats(per_window=10, window=60.0, next_free=lambda: 42.0, tz=MADRID)
    stats.recipients, stats.requests_planned, stats.requests_done = 123_456, 123_456, 98_765
    stats.sent, stats.failed, stats.in_doubt, stats.retrying = 98_000, 700, 65, 1_234
    stats.api_calls, stats.rate_limited, stats.window_used = 99_999, 12, 10
    return stats


def test_the_bar_fits_80_columns_and_nothing_is_cut() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, record=True, color_system=None)
    reporter = RichReporter(console)
    stats = big_stats()
    reporter.start(stats)  # the plan, then the live display
    reporter.stop()
    screen = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    screen.print(reporter._render())  # the display as last drawn
    lines = screen.export_text().splitlines() + stats.plan_lines()
    assert all(len(line) <= 80 for line in lines), lines
    text = "\n".join(lines)
    wholes = ["98765/123456 requests", "window 10/10 per 1 min", "next request in 42 s"]
    wholes += ["98000 sent", "700 failed", "65 in doubt", "99999 API calls (12×429)"]
    for whole in wholes:
        assert whole in text, (whole, text)


def test_log_lines_end_with_a_newline_and_the_last_carries_the_outcome() -> None:
    out = io.StringIO()
    reporter = LineReporter(out, every=3600)
    stats = big_stats()
    reporter.start(stats)
    reporter.note("outside the send window")
    reporter.stop()
    reporter.finish("done with problems", 5, {"sent": 3, "failed": 1})
    text = out.getvalue()
    assert text.endswith("\n") and "\n\n" not in text
    last = text.splitlines()[-1]
    outcome = r"\S+ stop outcome=\"done with problems\" exit_code=5 sent=3 failed=1"
    assert re.fullmatch(outcome, last)
    assert 'waiting="next request in 42 s"' in text.splitlines()[0]


def test_log_lines_keep_coming_while_nothing_happens() -> None:
    """A rate-limit wait is not silence: the ticker writes a line every `every` seconds."""
    out = io.StringIO()
    reporter = LineReporter(out, every=0.2)
    stats = StepStats(label="tracking", unit="look-ups", total=5)
    reporter.start(stats)
    deadline = time.monotonic() + 10
    while out.getvalue().count(" progress ") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the output, not standing in for an event
    reporter.stop()
    assert out.getvalue().count(" progress ") >= 2


# ---------------------------------------------------------------- help in workflow order


def test_help_lists_commands_in_workflow_order_unclipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    section = result.output[result.output.index("Commands:") :].splitlines()[1:]
    names = [line.split()[0] for line in section if line.startswith("  ") and line.split()]
    known = [name for name, _ in WORKFLOW if name in main.commands]
    assert names[: len(known)] == known
    assert set(names) == set(main.commands)
    assert "..." not in "\n".join(section)
    assert all(len(line) <= 80 for line in result.output.splitlines())
    for name, summary in WORKFLOW:
        if name in main.commands:
            assert summary in result.output  # whole, on one line


# ---------------------------------------------------------------- track and certificates talk


def _slow_down(job_file: Path) -> None:
    """The same job at 10 requests per 4 s, so a command is still working when interrupted."""
    text = job_file.read_text(encoding="utf-8")
    job_file.write_text(text.replace("window_seconds: 1.0", "window_seconds: 4.0"))


def _talks_then_stops(command: str, job_file: Path) -> tuple[float, str, str, int]:
    """Start `command` under pipes; the first line's delay; SIGINT after it; its output."""
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "batch", command, str(job_file)],
        cwd=job_file.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "80"},
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()
        delay = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    return delay, out, first + err, proc.returncode


def _check_pipe_output(out: str, err: str) -> None:
    for text in (out, err):
        assert text.endswith("\n"), text
    assert "Aborted" not in out + err


@pytest.mark.slow  # a child process, interrupted mid-pass
def test_track_talks_under_a_pipe_and_ctrl_c_exits_3(world: World) -> None:
    job = sent_job(world, people(*(f"p{i}@example.com" for i in range(40))))
    world.clock.advance(DELIVERED + 1)  # every row changed: 40 look-ups at 10 per 4 s
    _slow_down(job.path)
    delay, out, err, code = _talks_then_stops("track", job.path)
    assert delay < 15, err
    assert re.match(r"\S+ start look-ups=0/\d+ ", err), err
    assert code == 3, out + err
    assert "stopping after the request in flight" in err
    assert f"continue with: lmbatch track {job.path}" in out
    assert re.search(r"\S+ stop outcome=\"work left\" exit_code=3 ", err), err
    _check_pipe_output(out, err)


@pytest.mark.slow  # a child process, interrupted mid-download
def test_certificates_talk_under_a_pipe_and_ctrl_c_exits_3(world: World) -> None:
    job = sent_job(world, people(*(f"p{i}@example.com" for i in range(30))))
    world.clock.advance(READ + 1)
    tracked(world, job)  # 60 certificates known: at 10 per 4 s, 24 s of downloads
    _slow_down(job.path)
    delay, out, err, code = _talks_then_stops("certificates", job.path)
    assert delay < 15, err
    assert re.match(r"\S+ start files=0/60 ", err), err
    assert code == 3, out + err
    assert f"continue with: lmbatch certificates {job.path}" in out
    _check_pipe_output(out, err)
    folder = job.output_dir / "certificates"
    assert len(list(folder.glob("*.pdf"))) < 60  # stopped early, nothing half-written
    assert not list(folder.glob("*.part"))


def test_track_and_certificates_print_progress_lines_when_piped(world: World) -> None:
    """In-process under CliRunner (no terminal): a start line, a stop line with the outcome."""
    job = sent_job(world, people("a@example.com", "b@example.com"))
    result = CliRunner().invoke(main, ["track", str(job.path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert re.match(r"\S+ start look-ups=0/\d+ ", lines[0])
    assert re.fullmatch(r"\S+ stop outcome=done exit_code=0 sent=2", lines[-1])
    assert result.stdout.endswith("\n")


def test_json_progress_fields_are_json(world: World) -> None:
    out = io.StringIO()
    reporter = LineReporter(out, as_json=True, every=3600)
    reporter.start(big_stats())
    reporter.finish("work left", 3, {"pending": 2})
    first, last = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["waiting"] == "next request in 42 s" and first["recipients"] == 123_456
    assert (last["outcome"], last["exit_code"], last["counts"]) == ("work left", 3, {"pending": 2})


def test_the_demo_under_a_pipe_ends_every_line_with_a_newline(tmp_path: Path) -> None:
    """The stats line and the summary used to run together: `window 10/10campaign …`."""
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    done = subprocess.run(
        [sys.executable, "-m", "batch", "demo", "--job", str(tmp_path / "jobs" / "notice.yaml")],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert done.stdout.endswith("\n")
    assert re.search(r"^rehearsal of notice-\S+: 27 read$", done.stdout, re.MULTILINE), done.stdout
    # The dataset's notes (the demo's `where` kept 27 of 30 rows) come before the start.
    assert re.search(r"^\S+ note message=\"where: kept 27 of 30 row", done.stdout, re.MULTILINE)
    assert re.search(r"^\S+ start recipients=27 ", done.stdout, re.MULTILINE)
