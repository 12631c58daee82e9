"""The command line's contract: help and docs for every command, the exit-code table, logs for
unattended runs, the fix-and-retry loop, scheduling snippets, and a token that never shows.

Commands run in-process through click's CliRunner, except where a signal or a closed stdin
matters: there `python -m batch` runs in a subprocess against the same loopback sandbox.
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
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import polars as pl
import pytest
from click.testing import CliRunner, Result
from helpers import recipients_accepted, wait_for
from rich.console import Console

from batch import cli
from batch.cli import main
from batch.ledger import read_ledger
from batch.lock import CampaignLock
from batch.sandbox import RunningSandbox, SandboxConfig, running_sandbox

ROOT = Path(__file__).parent.parent
TOKEN = "tok-9c41e7-do-not-print"  # distinctive, so a leak anywhere is found by grep
WINDOW = 1.0  # 10 requests per second: the real limit, scaled 60×


def write_job(folder: Path, emails: list[str], *, extra: str = "") -> Path:
    """A job with one personal message (one request) per address, ledger in folder/out/cli."""
    lines = ["id,name,email,amount"] + [
        f"C-{i:03d},Name {i},{email},{100 + i}" for i, email in enumerate(emails)
    ]
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Dear {{ name }}, you owe {{ amount }}.</p>")
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: cli
dataset: {{path: people.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "Notice {{{{ id }}}}", html: notice.html}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
retry: {{attempts: 3, max_backoff_seconds: 0.2}}
output: out
{extra}""",
        encoding="utf-8",
    )
    return job


def addresses(n: int) -> list[str]:
    return [f"person{i}@example.com" for i in range(n)]


@pytest.fixture
def api(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox], tmp_path: Path
) -> Iterator[RunningSandbox]:
    """A sandbox at the scaled rate with a recognisable token; the environment points at it."""
    with running_sandbox(SandboxConfig(token=TOKEN, rate_limit=10, rate_window=WINDOW)) as sb:
        use_sandbox(sb)
        yield sb


@pytest.fixture(autouse=True)
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """80 columns, as rich assumes under cron or in a pipe: no line may wrap there."""
    monkeypatch.setenv("COLUMNS", "80")


def lmbatch(*args: str | Path) -> Result:
    """Run a command in-process with stdin closed; nothing it prints may hold the token."""
    result = CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)
    assert TOKEN not in result.output, f"the token leaked: {result.output}"
    assert "Aborted" not in result.output  # a prompt reading the closed stdin would abort
    return result


# ---------------------------------------------------------------- every command is documented

COMMANDS = sorted(main.commands)
README = (ROOT / "README.md").read_text(encoding="utf-8")


# Commands whose README text is still to be written (issue 8 report); strict, so the mark
# fails as soon as the README names them and must then be removed.
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = lmbatch(command, "--help")
    assert result.exit_code == 0
    assert f"Usage: main {command}" in result.output
    doc = main.commands[command].help
    assert doc and doc.strip(), f"{command} has no docstring"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command: str) -> None:
    assert re.search(rf"\blmbatch {command}\b", README), (
        f"README.md never shows `lmbatch {command}`"
    )


def test_the_readme_job_file_validates(tmp_path: Path) -> None:
    block = README[README.index("### The job file") :]
    start = block.index("```yaml") + len("```yaml")
    (tmp_path / "jobs").mkdir()
    shutil.copytree(ROOT / "jobs" / "data", tmp_path / "jobs" / "data")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    job = tmp_path / "jobs" / "notice.yaml"
    job.write_text(block[start : block.index("```", start)], encoding="utf-8")
    result = lmbatch("validate", str(job))
    assert result.exit_code == 0, result.output
    assert "row(s) valid" in result.stdout


def test_the_readme_documents_the_exit_codes_of_the_cli_docstring() -> None:
    doc = cli.__doc__ or ""
    for code in range(6):
        assert re.search(rf"^\s+{code}\s+\S", doc, re.MULTILINE)
        assert re.search(rf"^\| {code} \| \S", README, re.MULTILINE), f"exit {code} not in README"


# ---------------------------------------------------------------- exit codes


def test_run_exits_0_when_done(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, addresses(3))
    result = lmbatch("run", job)
    assert result.exit_code == 0, result.output
    assert "campaign cli: 3 sent" in result.stdout
    assert "resume" not in result.output
    assert recipients_accepted(api) == addresses(3)


def test_a_refused_token_exits_1_without_echoing_it(
    api: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", "wrong-token-5d2b")
    result = lmbatch("run", write_job(tmp_path, addresses(2)))
    assert result.exit_code == 1
    assert "error:" in result.stderr and "hint:" in result.stderr
    assert "wrong-token-5d2b" not in result.output
    assert recipients_accepted(api) == []


def test_validate_a_broken_job_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    job = write_job(tmp_path, addresses(2), extra="limits_typo: 3\n")
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    line = job.read_text().splitlines().index("limits_typo: 3") + 1
    assert f"{job}:{line} limits_typo: unknown key" in result.stderr


def test_validate_bad_rows_exits_2_naming_every_row_and_key(tmp_path: Path) -> None:
    job = write_job(tmp_path, ["ok@example.com", "not-an-address", "also@bad@example.com"])
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    assert "2 row error(s)" in result.stderr
    assert re.search(r"row \d+ \(key C-001\) \S+: ", result.stderr)
    assert re.search(r"row \d+ \(key C-002\) \S+: ", result.stderr)
    assert "C-000" not in result.stderr


def test_validate_a_good_job_exits_0_and_sends_nothing(api: RunningSandbox, tmp_path: Path) -> None:
    result = lmbatch("validate", write_job(tmp_path, addresses(4)))
    assert result.exit_code == 0
    assert "ok: 4 row(s) valid; 4 to send in 4 request(s)" in result.stdout
    assert recipients_accepted(api) == []


def test_credits_short_exits_3_with_a_hint(api: RunningSandbox, tmp_path: Path) -> None:
    api.state.set_credits(2)
    result = lmbatch("run", write_job(tmp_path, addresses(5)))
    assert result.exit_code == 3
    assert "2 e-mail credits" in result.stderr and "--allow-partial" in result.stderr
    assert recipients_accepted(api) == []


def test_a_held_lock_exits_4_naming_the_holder(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, addresses(2))
    with CampaignLock(tmp_path / "out" / "cli" / "run.lock"):
        result = lmbatch("run", job)
    assert result.exit_code == 4
    assert "this campaign is already running" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert recipients_accepted(api) == []
    assert lmbatch("run", job).exit_code == 0  # released: the next run goes ahead


@pytest.mark.slow  # a child process interrupted mid-run
def test_sigint_finishes_the_request_in_flight_exits_3_and_resumes(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = write_job(tmp_path, addresses(40))
    command = [sys.executable, "-m", "batch", "run", str(job)]
    # stdin closed and no terminal: a run must never wait for an answer.
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        wait_for(lambda: len(recipients_accepted(api)) >= 5, "the first sends")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert TOKEN not in out + err
    assert proc.returncode == 3, out + err
    assert "stopping after the request in flight" in err
    assert f"resume with: lmbatch run {job}" in out

    ledger = read_ledger(tmp_path / "out" / "cli")
    sent = ledger.filter(pl.col("status") == "sent")["address"].to_list()
    assert set(ledger["status"]) == {"sent", "pending"}  # nothing in flight was left in doubt
    assert sorted(sent) == sorted(recipients_accepted(api))
    assert 5 <= len(sent) < 40

    again = subprocess.run(
        command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert TOKEN not in again.stdout + again.stderr
    assert sorted(recipients_accepted(api)) == sorted(addresses(40))  # everyone, nobody twice
    assert read_ledger(tmp_path / "out" / "cli")["status"].to_list() == ["sent"] * 40


# ---------------------------------------------------------------- unattended runs


def test_json_log_lines_go_to_the_log_file(api: RunningSandbox, tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    result = lmbatch("run", write_job(tmp_path, addresses(3)), "--log-file", log, "--json-log")
    assert result.exit_code == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert (events[0]["event"], events[0]["recipients"]) == ("start", 3)
    last = events[-1]
    assert (last["event"], last["outcome"], last["exit_code"]) == ("stop", "done", 0)
    assert last["counts"] == {"sent": 3}
    assert all(set(e) >= {"time", "event"} for e in events)
    assert TOKEN not in log.read_text()


def test_plain_log_lines_without_json(api: RunningSandbox, tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    assert lmbatch("run", write_job(tmp_path, addresses(2)), "--log-file", log).exit_code == 0
    lines = log.read_text().splitlines()
    assert re.fullmatch(r"\S+ start recipients=2 requests=0/2 .*", lines[0])
    assert re.fullmatch(r"\S+ stop outcome=done exit_code=0 sent=2", lines[-1])


def test_export_failed_then_retry_failed_resends_only_the_fixed_rows(
    api: RunningSandbox, tmp_path: Path
) -> None:
    emails = ["a@example.com", "fail-b@example.com", "c@example.com", "fail-d@example.com"]
    job = write_job(tmp_path, emails)
    assert lmbatch("run", job).exit_code == 5  # done with problems: not a success
    failed_csv = tmp_path / "failed.csv"

    result = lmbatch("status", job, "--export-failed", failed_csv)

    assert result.exit_code == 0
    assert f"then: lmbatch run {job} --retry-failed" in result.stderr
    dataset = pl.read_csv(tmp_path / "people.csv")
    failed = pl.read_csv(failed_csv)
    # The dataset's own format, to edit and re-run, plus why each row is there.
    assert failed.columns == [*dataset.columns, "lmbatch_status", "lmbatch_reason"]
    assert failed["id"].to_list() == ["C-001", "C-003"]
    assert failed["lmbatch_status"].to_list() == ["failed", "failed"]
    assert failed["lmbatch_reason"].null_count() == 0

    fixed = [e.replace("fail-", "fixed-") for e in emails]
    write_job(tmp_path, fixed)
    assert lmbatch("run", job).stdout.startswith("campaign cli: 2 failed, 2 sent")  # no flag
    before = len(recipients_accepted(api))

    result = lmbatch("run", job, "--retry-failed")

    assert result.exit_code == 0
    assert recipients_accepted(api)[before:] == ["fixed-b@example.com", "fixed-d@example.com"]
    assert read_ledger(tmp_path / "out" / "cli")["status"].to_list() == ["sent"] * 4


def test_dry_run_sends_nothing_and_writes_no_ledger(api: RunningSandbox, tmp_path: Path) -> None:
    result = lmbatch("run", write_job(tmp_path, addresses(3)), "--dry-run")
    assert result.exit_code == 0
    assert "would send cli: 3 pending" in result.stdout
    assert recipients_accepted(api) == []
    # One call checks the token, the server and the credits; nothing else reaches the API.
    assert [(r["method"], r["path"]) for r in api.state.requests()] == [("GET", "/api/info")]
    assert "credits left cover the 3 to send" in result.stdout
    assert not (tmp_path / "out" / "cli" / "ledger.parquet").exists()


def test_an_offline_dry_run_makes_no_call(api: RunningSandbox, tmp_path: Path) -> None:
    result = lmbatch("run", write_job(tmp_path, addresses(3)), "--dry-run", "--offline")
    assert result.exit_code == 0
    assert api.state.request_count() == 0


def test_a_dry_run_with_a_refused_token_fails_like_the_run(
    api: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", "not-the-token")
    result = lmbatch("run", write_job(tmp_path, addresses(3)), "--dry-run")
    assert result.exit_code == 1
    assert recipients_accepted(api) == []


def test_preview_writes_an_index_page(tmp_path: Path) -> None:
    result = lmbatch("preview", write_job(tmp_path, addresses(2)))
    index = tmp_path / "out" / "cli" / "preview" / "index.html"
    assert result.exit_code == 0
    assert index.is_file()
    assert f"preview: {index}" in result.stdout


def test_schedule_prints_fire_times_crontab_and_systemd_units() -> None:
    result = lmbatch("schedule", ROOT / "jobs" / "rent.yaml")
    out = result.stdout
    assert result.exit_code == 0
    fires = re.findall(
        r"^  \w{3} (\d{4}-\d{2}-\d{2}) 09:00 CES?T(?:  \(outside the window\))?$", out, re.MULTILINE
    )
    assert len(fires) == 5 and all(day.endswith("-01") for day in fires)
    # Fired at every window opening, not only on the 1st (issue 12, item 8).
    assert "CRON_TZ=Europe/Madrid\n0 9 * * 1-5 " in out
    assert re.search(r"^0 9 \* \* 1-5 set -a && \. \S+token\.env && set \+a && .+ -m batch run "
                     r"\S+jobs/rent\.yaml --exit-outside-window --yes "
                     r"--log-file \S+rent\.log >>\S+$",
                     out, re.MULTILINE)  # fmt: skip
    for line in ["[Service]", "Type=oneshot", "[Timer]", "Persistent=true", "[Install]"]:
        assert f"\n{line}\n" in out
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 09:00:00 Europe/Madrid" in out


def test_schedule_of_a_job_without_one_exits_2(tmp_path: Path) -> None:
    result = lmbatch("schedule", write_job(tmp_path, addresses(1)))
    assert result.exit_code == 2
    assert "schedule" in result.stderr


def test_usage_errors_exit_2_like_invalid_input(tmp_path: Path) -> None:
    result = lmbatch("resolve", write_job(tmp_path, addresses(1)), "C-000")
    assert result.exit_code == click.UsageError.exit_code == 2
    assert "say exactly one of --sent or --not-sent" in result.output


# ---------------------------------------------------------------- the token stays secret


def test_the_token_never_appears_in_output_or_files(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, ["a@example.com", "fail-b@example.com"])
    runs = [
        ("validate", job),
        ("preview", job),
        ("run", job, "--dry-run"),
        ("run", job, "--log-file", tmp_path / "log", "--json-log"),
        ("status", job),
        ("status", job, "--export-failed", tmp_path / "failed.xlsx"),
        ("track", job),
        ("report", job, "--export", "csv"),
        ("certificates", job),
    ]
    for args in runs:
        result = lmbatch(*args)  # asserts the token is absent from stdout and stderr
        assert result.exit_code in (0, 3, 5), (args, result.output)  # 5: the failed row
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".yaml" and "state" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes(), f"the token is in {path}"


# ---------------------------------------------------------------- the truth at the end


def test_a_run_with_failed_and_skipped_rows_exits_5_saying_why_and_what_next(
    api: RunningSandbox, tmp_path: Path
) -> None:
    emails = ["a@example.com", "fail-b@example.com", "not-an-address", "d@example.com"]
    job = write_job(tmp_path, emails)
    result = lmbatch("run", job, "--skip-invalid")
    assert result.exit_code == 5, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "campaign cli: 1 failed, 1 skipped, 2 sent"  # attention first
    assert re.search(r"^  C-001 fail-b@example\.com: \S", result.stdout, re.MULTILINE)
    assert re.search(r"^  C-002 : \S+", result.stdout, re.MULTILINE)  # the reason it was invalid
    assert f"then: lmbatch run {job} --retry-failed" in result.stdout
    assert f"then: lmbatch run {job} --skip-invalid\n" in result.stdout  # its flags repeated
    assert "done with problems (exit 5)" in result.stdout
    assert all(line.endswith("\n") for line in result.stdout.splitlines(keepends=True))

    status = lmbatch("status", job)
    assert status.exit_code == 0
    assert "1 skipped" in status.stdout and "C-002" in status.stdout
    assert "nothing left to send; not everyone was reached" in status.stdout
    assert "JOB" not in status.stdout and f"lmbatch run {job}" in status.stdout
    rows = [line.split("│")[1].strip() for line in status.stdout.splitlines() if "│" in line]
    assert rows == ["failed", "skipped", "sent"]  # the table, attention first


@pytest.mark.parametrize(
    ("case", "code"),
    [("bad job file", 2), ("bad rows", 2), ("lock held", 4), ("token refused", 1),
     ("credits short", 3)],
)  # fmt: skip
def test_the_last_log_line_carries_outcome_and_exit_code_on_every_exit(
    api: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    code: int,
) -> None:
    emails = addresses(3) if case != "bad rows" else ["a@example.com", "not-an-address"]
    job = write_job(tmp_path, emails, extra="limits_typo: 3\n" if case == "bad job file" else "")
    if case == "token refused":
        monkeypatch.setenv("LEGALLYMAIL_TOKEN", "wrong-token-5d2b")
    if case == "credits short":
        api.state.set_credits(1)
    log = tmp_path / "run.jsonl"
    args = ("run", job, "--log-file", log, "--json-log")
    if case == "lock held":
        with CampaignLock(tmp_path / "out" / "cli" / "run.lock"):
            result = lmbatch(*args)
    else:
        result = lmbatch(*args)
    assert result.exit_code == code, result.output
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["event"] == "stop" and last["exit_code"] == code
    assert last["outcome"] == ("work left" if code == 3 else "error")
    assert isinstance(last["counts"], dict) and last["message"]


@pytest.mark.parametrize("command", ["status", "report", "track", "certificates"])
def test_before_anything_was_sent_the_four_commands_agree(
    api: RunningSandbox, tmp_path: Path, command: str
) -> None:
    job = write_job(tmp_path, addresses(2))
    result = lmbatch(command, job)
    assert result.exit_code == 3, result.output
    assert f"error: nothing sent yet: no ledger in {tmp_path / 'out' / 'cli'}" in result.stderr
    assert f"hint: validate and send with `lmbatch run {job}` first" in result.stderr
    assert api.state.request_count() == 0


def test_sms_in_doubt_are_counted_apart_from_what_is_left(tmp_path: Path) -> None:
    from batch.report import StatusSummary, print_status

    job = tmp_path / "jobs" / "reminder.yaml"
    summary = StatusSummary(
        "reminder",
        tmp_path / "ledger.parquet",
        {"in_doubt": 2, "sent": 5},
        0,
        in_doubt=[("K-1", "+34600000001", "answer lost"), ("K-2", "+34600000002", "lost")],
        channel="sms",
        job_path=job,
    )
    assert summary.remaining == 0
    console = Console(file=io.StringIO(), width=80, record=True, soft_wrap=True)
    print_status(summary, console)
    text = console.export_text()
    assert not re.search(r"\d+ left to send", text)
    assert "nothing left to send; 2 in doubt to settle by hand" in text
    assert f"lmbatch resolve {job} K-1 K-2 --sent" in text
    assert "JOB" not in text and "KEY" not in text
