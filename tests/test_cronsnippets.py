"""batch.cronsnippets: the crontab entry and systemd units work as pasted.

Issue 12, item 14: the printed entries carried no token (under cron the run exited 1, "no API
token"), no log file, and exit 3 showed as a failed systemd unit. Here the crontab command is
run by /bin/sh with cron's bare environment against a real sandbox, and every flag the
snippets pass is parsed by the `run` command itself.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batch.cli import main
from batch.cli import run as run_command
from batch.cronsnippets import (
    UNATTENDED_FLAGS,
    Unattended,
    crontab_text,
    log_file,
    systemd_units,
    token_file,
    token_file_warning,
)
from batch.jobfile import ScheduleSpec, SendWindowSpec, load_job
from batch.sandbox import RunningSandbox

ROOT = Path(__file__).parent.parent
RENT = ScheduleSpec(
    cron="0 9 1 * *",
    timezone="Europe/Madrid",
    window=SendWindowSpec(days="mon-fri", hours="09:00-18:00"),
)


def settings(tmp_path: Path, lmbatch: str = "/usr/bin/lmbatch") -> Unattended:
    return Unattended(lmbatch, token_file(tmp_path / "home"), tmp_path / "jobs" / "rent.log")


def cron_entries(text: str) -> list[tuple[str, str]]:
    """(the five time fields, the command as cron hands it to /bin/sh) for each entry."""
    entries = []
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" not in line.split()[0]:
            fields = line.split(" ", 5)
            entries.append((" ".join(fields[:5]), fields[5].replace(r"\%", "%")))
    return entries


def test_the_crontab_reads_the_token_file_and_logs(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "rent.yaml"
    text = crontab_text(RENT, job, settings(tmp_path))
    ((when, command),) = cron_entries(text)
    assert when == "0 9 * * 1-5"  # every opening of the window, not just the 1st
    token = tmp_path / "home" / ".config" / "lmbatch" / "token.env"
    assert command.startswith(f"set -a && . {token} && set +a && /usr/bin/lmbatch run {job} ")
    assert f"--log-file {tmp_path / 'jobs' / 'rent.log'}" in command
    assert command.endswith(f">>{tmp_path / 'jobs' / 'rent.log'}")
    assert f"install -D -m 600 /dev/null {token}" in text
    assert "CRON_TZ=Europe/Madrid" in text.splitlines()
    assert "Debian and\n# Ubuntu cron ignore it" in text and "use the systemd timer" in text


def test_the_units_read_the_token_file_and_treat_3_as_success(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "rent.yaml"
    service, timer = systemd_units(RENT, job, settings(tmp_path))
    lines = service.splitlines()
    assert f"EnvironmentFile={tmp_path / 'home' / '.config' / 'lmbatch' / 'token.env'}" in lines
    assert "SuccessExitStatus=3" in lines
    assert "#   loginctl enable-linger" in lines
    (exec_start,) = [line for line in lines if line.startswith("ExecStart=")]
    args = shlex.split(exec_start.removeprefix("ExecStart="))
    assert args[:2] == ["/usr/bin/lmbatch", "run"]
    assert args[-2:] == ["--log-file", str(tmp_path / "jobs" / "rent.log")]
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 09:00:00 Europe/Madrid" in timer.splitlines()
    assert "Persistent=true" in timer.splitlines()


def test_a_period_starting_inside_the_window_also_fires_at_its_start(tmp_path: Path) -> None:
    spec = RENT.model_copy(update={"cron": "30 10 1 * *"})
    text = crontab_text(spec, tmp_path / "rent.yaml", settings(tmp_path))
    assert [when for when, _ in cron_entries(text)] == ["0 9 * * 1-5", "30 10 1 * *"]
    _, timer = systemd_units(spec, tmp_path / "rent.yaml", settings(tmp_path))
    assert "OnCalendar=*-*-01 10:30:00 Europe/Madrid" in timer.splitlines()


def test_run_accepts_every_flag_the_snippets_pass(tmp_path: Path) -> None:
    args = settings(tmp_path).run_args(tmp_path / "rent.yaml")
    context = run_command.make_context("run", args[1:])  # parses, exits 2 on an unknown flag
    assert context.params["exit_outside_window"] is True
    assert context.params["yes"] is True  # never a prompt nobody sees
    assert context.params["log_file"] == tmp_path / "jobs" / "rent.log"
    assert set(UNATTENDED_FLAGS) <= set(args)


def test_the_token_file_must_exist_and_be_the_owners_alone(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    missing = token_file_warning(path, "LEGALLYMAIL_TOKEN")
    assert missing and f"install -D -m 600 /dev/null {path}" in missing
    assert "LEGALLYMAIL_TOKEN=..." in missing
    path.parent.mkdir(parents=True)
    path.write_text("LEGALLYMAIL_TOKEN=secret\n")
    path.chmod(0o644)
    assert token_file_warning(path, "LEGALLYMAIL_TOKEN") == (
        f"{path} can be read by others (mode 644): `chmod 600 {path}`"
    )
    path.chmod(0o600)
    assert token_file_warning(path, "LEGALLYMAIL_TOKEN") is None


def test_the_readme_shows_the_snippets_schedule_prints() -> None:
    docs = (ROOT / "README.md").read_text(encoding="utf-8")
    spec = load_job(ROOT / "jobs" / "rent.yaml").spec.schedule
    assert spec is not None
    where = Path("/path/to/jobs/rent.yaml")
    shown = Unattended(
        "/path/to/.venv/bin/python -m batch", token_file(Path("/home/you")), log_file(where)
    )
    service, timer = systemd_units(spec, where, shown)
    assert f"```\n{crontab_text(spec, where, shown)}```" in docs
    assert f"```ini\n{service}```" in docs
    assert f"```ini\n{timer}```" in docs


# ---------------------------------------------------------------- as pasted, end to end


def write_job(folder: Path) -> Path:
    """A monthly job with no window (so it sends whenever the test runs), one recipient."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.csv").write_text("id,email\n1,ana@example.com\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Your rent notice.</p>", encoding="utf-8")
    job = folder / "rent.yaml"
    job.write_text(
        """campaign: "rent-{{ period.label }}"
schedule: {cron: "0 9 1 * *", timezone: Europe/Madrid}
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}"}
message: {subject: "Rent {{ period.label }}", html: notice.html}
output: out
""",
        encoding="utf-8",
    )
    return job


def cron_environment(home: Path) -> dict[str, str]:
    """What cron gives a command: HOME, LOGNAME, SHELL and a short PATH; nothing of ours.
    PYTHONPATH stands for lmbatch being installed."""
    return {
        "HOME": str(home),
        "LOGNAME": "you",
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
    }


def test_the_crontab_command_runs_as_pasted(sandbox: RunningSandbox, tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = write_job(tmp_path / "jobs")
    shown = Unattended(f"{sys.executable} -m batch", token_file(home), log_file(job))
    ((_, command),) = cron_entries(crontab_text(load_job(job).spec.schedule or RENT, job, shown))
    env = cron_environment(home)

    refused = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
    assert refused.returncode != 0  # no token file yet: a loud error for cron's mail
    assert "token.env" in refused.stderr
    assert sandbox.state.log() == []

    shown.token_file.parent.mkdir(parents=True)
    shown.token_file.write_text(
        f"LEGALLYMAIL_TOKEN={sandbox.token}\nLEGALLYMAIL_BASE_URL={sandbox.base_url}\n"
        f"LMBATCH_STATE_DIR={tmp_path / 'state'}\n",
        encoding="utf-8",
    )
    os.chmod(shown.token_file, 0o600)
    sent = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
    again = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)

    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")  # nothing for cron's mail
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert [e["recipient"] for e in sandbox.state.log()] == ["ana@example.com"]  # once
    log = log_file(job).read_text(encoding="utf-8")
    label = load_job(job).campaign
    assert f"campaign {label}: 1 sent" in log  # each firing's summary, in the log
    assert log.count(f"campaign {label}: 1 sent") == 2


def test_schedule_prints_warnings_and_the_snippets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = write_job(tmp_path / "jobs")
    # Only Tuesdays: most 1sts of the month fall outside this window.
    job.write_text(
        job.read_text().replace(
            "timezone: Europe/Madrid}",
            'timezone: Europe/Madrid, window: {days: tue, hours: "09:00-18:00"}}',
        )
    )

    result = CliRunner().invoke(main, ["schedule", str(job), "--count", "6"])

    assert result.exit_code == 0, result.output
    assert "is outside the send window (tue 09:00-18:00): that period is sent from Tue" in (
        result.stderr
    )
    assert "token.env does not exist yet" in result.stderr
    assert "CRON_TZ=Europe/Madrid\n0 9 * * 2 set -a && . " in result.stdout
    assert "SuccessExitStatus=3" in result.stdout
    assert "(outside the window)" in result.stdout
