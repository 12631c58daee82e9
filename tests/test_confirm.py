"""`run --limit N` and the question a run asks on a terminal before spending (never without
one: cron has nobody to answer)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import recipients_accepted

from batch.cli import main
from batch.confirm import Outlook
from batch.sandbox import RunningSandbox

REPO = Path(__file__).resolve().parent.parent
INTERRUPT = "<ctrl-c>"


def write_job(folder: Path, n: int, *, shared: int = 0) -> Path:
    """n recipients; the first `shared` of them get one identical message (one envelope)."""
    rows = ["id,name,email,subject"] + [
        f"C-{i:03d},Name {i},p{i}@example.com,{'Same' if i < shared else f'Own {i}'}"
        for i in range(n)
    ]
    (folder / "people.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Notice</p>", encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        """campaign: cf
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message: {subject: "{{ subject }}", html: notice.html}
limits: {requests_per_window: 10, window_seconds: 0.5, max_recipients_per_request: 10}
output: out
""",
        encoding="utf-8",
    )
    return job


def lmbatch(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)


@pytest.fixture
def api(sandbox: RunningSandbox, use_sandbox: object) -> RunningSandbox:
    use_sandbox(sandbox)  # type: ignore[operator]
    return sandbox


def test_limit_sends_at_most_n_and_stops_with_work_left(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = write_job(tmp_path, 5)
    first = lmbatch("run", job, "--limit", "2")
    assert first.exit_code == 3, first.output
    assert len(recipients_accepted(api)) == 2
    assert "--limit 2 reached; 3 recipient(s) left" in first.stdout
    assert f"resume with: lmbatch run {job}" in first.stdout
    assert "2 sent" in first.stdout and "3 pending" in first.stdout
    rest = lmbatch("run", job)
    assert rest.exit_code == 0, rest.output
    assert sorted(recipients_accepted(api)) == sorted(f"p{i}@example.com" for i in range(5))


def test_a_dry_run_with_limit_plans_n(tmp_path: Path) -> None:
    result = lmbatch("run", write_job(tmp_path, 5), "--dry-run", "--offline", "--limit", "3")
    assert result.exit_code == 0
    assert "would send cf: 3 pending" in result.stdout


def test_without_a_terminal_run_never_asks(api: RunningSandbox, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "batch", "run", str(write_job(tmp_path, 3))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Send now?" not in done.stderr + done.stdout
    assert len(recipients_accepted(api)) == 3


def on_a_terminal(args: list[str], answer: str | None, cwd: Path) -> tuple[int, str]:
    """Run lmbatch with a pseudo-terminal as stdin and stderr; type `answer` at the prompt
    (`INTERRUPT`: press Ctrl-C there instead)."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80", "TERM": "dumb"}
    child = subprocess.Popen(
        [sys.executable, "-m", "batch", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    try:
        while child.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if not answered and answer is not None and b"Send now?" in seen:
                if answer == INTERRUPT:
                    child.send_signal(signal.SIGINT)
                else:
                    os.write(master, answer.encode() + b"\n")
                answered = True
        out, _ = child.communicate(timeout=60)
        code = child.returncode
    finally:
        os.close(master)
        if child.stdout is not None:
            child.stdout.close()
    return code, seen.decode(errors="replace").replace("\r", "") + out.decode()


def test_on_a_terminal_run_shows_what_it_will_spend_and_asks(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = write_job(tmp_path, 5, shared=3)
    code, text = on_a_terminal(["run", str(job)], "n", tmp_path)
    assert code == 0, text
    assert "campaign cf:\n  5 recipient(s) to send" in text
    assert "3 request(s); 2 recipient(s) share an envelope" in text
    assert "credits: 5 e-mail needed, 1000000 left" in text
    assert "time at the rate limit:" in text
    assert "Send now? [y/N]" in text
    assert "nothing sent" in text
    assert recipients_accepted(api) == []

    code, text = on_a_terminal(["run", str(job)], "y", tmp_path)
    assert code == 0, text
    assert len(recipients_accepted(api)) == 5


def test_yes_answers_in_advance_on_a_terminal(api: RunningSandbox, tmp_path: Path) -> None:
    code, text = on_a_terminal(["run", str(write_job(tmp_path, 2)), "--yes"], None, tmp_path)
    assert code == 0, text
    assert "Send now?" not in text
    assert len(recipients_accepted(api)) == 2


def test_the_outlook_fits_80_columns_and_says_what_it_does_not_know() -> None:
    ahead = Outlook("notice-" + "x" * 40, 1234, 130, 780.0, "e-mail", 1234, None)
    lines = ahead.lines()
    assert lines == [
        f"campaign notice-{'x' * 40}:",
        "  1234 recipient(s) to send",
        "  130 request(s); 1104 recipient(s) share an envelope",
        "  credits: 1234 e-mail needed, unknown left",
        "  time at the rate limit: about 13 min",
    ]
    assert all(len(line) <= 80 for line in lines)
    signatures = Outlook("c", 3, 3, 20.0, "signature", None, None).lines()
    assert signatures[2:] == ["  3 request(s)", "  time at the rate limit: about 20 s"]


def test_ctrl_c_at_the_question_sends_nothing(api: RunningSandbox, tmp_path: Path) -> None:
    code, text = on_a_terminal(["run", str(write_job(tmp_path, 2))], INTERRUPT, tmp_path)
    assert code == 0, text
    assert "nothing sent" in text and "Aborted" not in text
    assert recipients_accepted(api) == []
