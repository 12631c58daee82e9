"""The crontab entry and systemd units `lmbatch schedule` prints, ready to paste as they are.

An unattended run has no terminal and no login shell, so each snippet carries what a run
needs: the API token, read from a file only its owner can read (`token_file`: `KEY=VALUE`
lines, the format both systemd's `EnvironmentFile=` and a POSIX shell's `.` read); a log
file for its lines and its summary; `--exit-outside-window`, so that a firing leaves when the
window is closed instead of sleeping through it; the firings of `batch.firings`; and for
systemd `SuccessExitStatus=3`, since 3 means "work left for the next firing", not a failure.
The token never goes into the job file or the crontab itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from croniter import croniter

from batch.firings import firing_crons, schedule_warnings, send_window
from batch.jobmodel import Job, ScheduleSpec
from batch.schedule import load_zone, next_fire_times, parse_cron

_SYSTEMD_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
# Flags every scheduled run gets. `run` asks before spending only on a terminal, yet --yes
# says so in the unit itself: a scheduled run must never wait on a prompt nobody sees.
UNATTENDED_FLAGS = ("--exit-outside-window", "--yes")


def token_file(home: Path) -> Path:
    """Where the snippets read the API token from: `~/.config/lmbatch/token.env`, mode 600."""
    return home / ".config" / "lmbatch" / "token.env"


def log_file(job_path: Path) -> Path:
    """The scheduled runs' log: next to the job file (a folder that exists before any run)."""
    job = job_path.absolute()
    return job.with_name(f"{job.stem}.log")


@dataclass(frozen=True)
class Unattended:
    """How the snippets run lmbatch: the command, the token file and the log file."""

    lmbatch: str  # e.g. "/opt/lmbatch/.venv/bin/python -m batch"
    token_file: Path
    log_file: Path
    token_env: str = "LEGALLYMAIL_TOKEN"  # the job's api.token_env

    def run_args(self, job_path: Path) -> list[str]:
        """The arguments after the lmbatch command, as a scheduled run passes them."""
        return [
            "run",
            str(job_path.absolute()),
            *UNATTENDED_FLAGS,
            "--log-file",
            str(self.log_file),
        ]

    def command(self, job_path: Path) -> str:
        """The whole command line, quoted for a POSIX shell."""
        return " ".join([self.lmbatch, *(shlex.quote(a) for a in self.run_args(job_path))])


def _firing_note(spec: ScheduleSpec) -> str:
    crons = firing_crons(spec)
    if crons == [parse_cron(spec.cron)]:
        return (
            f"# Each firing of {spec.cron!r} starts a period and sends what is pending in it;\n"
            "# a period cut short is finished with the --period command its run prints.\n"
        )
    window = send_window(spec)
    when = (
        f"at every opening of the send window ({window.text})"
        if window
        else "every day at the same time"
    )
    also = ", and when a period starts inside it" if len(crons) > 1 else ""
    return (
        f"# Periods start at {spec.cron!r}. These entries fire again and again:\n"
        f"# {when}{also}.\n"
        "# Each firing sends what is pending in the period holding now (exit 3: work left\n"
        "# for the next firing); once that period is done it sends nothing and exits 0.\n"
    )


def token_file_warning(path: Path, token_env: str) -> str | None:
    """What is wrong with the token file the snippets read, if anything."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return (
            f"{path} does not exist yet: the snippets read the API token from it; create it with "
            f"`install -D -m 600 /dev/null {shlex.quote(str(path))}` "
            f"and write {token_env}=... in it"
        )
    if mode & 0o077:
        return (
            f"{path} can be read by others (mode {mode & 0o777:o}): "
            f"`chmod 600 {shlex.quote(str(path))}`"
        )
    return None


def _token_note(settings: Unattended) -> str:
    return (
        f"# The token: {settings.token_file} holds {settings.token_env}=... and only you can\n"
        f"# read it: install -D -m 600 /dev/null {shlex.quote(str(settings.token_file))}\n"
    )


def crontab_text(spec: ScheduleSpec, job_path: Path, settings: Unattended) -> str:
    """Crontab entries for the job's firings, with CRON_TZ, the token and the log file."""
    load_zone(spec.timezone)
    token = shlex.quote(str(settings.token_file))
    log = shlex.quote(str(settings.log_file))
    # `set -a` exports what the file sets; crontab reads a bare % as a newline.
    command = f"set -a && . {token} && set +a && {settings.command(job_path)} >>{log}"
    command = command.replace("%", r"\%")
    entries = "".join(f"{cron} {command}\n" for cron in firing_crons(spec))
    return (
        f"# lmbatch {job_path.name}, in {spec.timezone}.\n"
        + _firing_note(spec)
        + _token_note(settings)
        + f"# Lines and summaries go to {settings.log_file}; errors reach cron's mail.\n"
        "# CRON_TZ (cronie: Fedora, RHEL, Arch) applies to every entry below it. Debian and\n"
        "# Ubuntu cron ignore it and fire on the system's clock, which can put every firing\n"
        "# outside the window: there, use the systemd timer.\n"
        f"CRON_TZ={spec.timezone}\n" + entries
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


def _systemd_escape(text: str) -> str:
    return text.replace("%", "%%")  # systemd expands %-specifiers in unit files


def systemd_units(spec: ScheduleSpec, job_path: Path, settings: Unattended) -> tuple[str, str]:
    """A oneshot service and a persistent timer (service text, timer text) running the job."""
    load_zone(spec.timezone)
    job = job_path.absolute()
    unit = f"lmbatch-{job.stem}"
    service = (
        f"# {unit}.service, next to {unit}.timer in ~/.config/systemd/user/;\n"
        f"# enable with: systemctl --user enable --now {unit}.timer\n"
        "# A user timer runs only while you are logged in, unless you once run:\n"
        "#   loginctl enable-linger\n"
        "[Unit]\n"
        f"Description=lmbatch campaign {job.name}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={_systemd_escape(str(job.parent))}\n"
        + _token_note(settings)
        + f"EnvironmentFile={_systemd_escape(str(settings.token_file))}\n"
        "# 3 means work left for the next firing (window closed, credits ran out): not a failure.\n"
        "SuccessExitStatus=3\n"
        + (
            ""
            if settings.lmbatch.startswith("/")
            else "# systemd before 239 needs an absolute path here.\n"
        )
        + f"ExecStart={_systemd_escape(settings.command(job_path))}\n"
    )
    events: list[str] = []
    left_out: list[str] = []
    for cron in firing_crons(spec):
        translated, why_not = on_calendar(cron, spec.timezone)
        events += translated
        if why_not:
            left_out.append(
                f"# OnCalendar= for cron {cron!r} is left out rather than guessed: it uses\n"
                f"# {why_not}, which systemd calendar events cannot express exactly.\n"
                f"# Write it by hand (man systemd.time) in {spec.timezone} and check it with:\n"
                "#   systemd-analyze calendar --iterations=5 '...'\n"
            )
    calendar = "".join(left_out)
    if events:
        quoted = " ".join(shlex.quote(e) for e in events)
        calendar += (
            "# Zones in OnCalendar= need systemd 235+; check with:\n"
            f"#   systemd-analyze calendar --iterations=5 {quoted}\n"
            + "".join(f"OnCalendar={e}\n" for e in events)
        )
    timer = (
        "[Unit]\n"
        f"Description=Schedule of lmbatch campaign {job.name}\n"
        "\n"
        "[Timer]\n"
        + _firing_note(spec)
        + calendar
        + "# A firing missed while the machine was off runs at boot.\n"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer


def schedule_text(
    job: Job, now: datetime, count: int, settings: Unattended
) -> tuple[str, list[str]]:
    """What `lmbatch schedule JOB` prints: (the listing and snippets, the warnings)."""
    spec = job.spec.schedule
    if spec is None:
        raise ValueError("schedule_text needs a job with a schedule")
    where = job.path.absolute()
    unit = f"lmbatch-{where.stem}"
    label = job.period.label if job.period else "-"
    service, timer = systemd_units(spec, where, settings)
    lines = [f"campaign {job.campaign} (period {label})", "periods start:"]
    window = send_window(spec)
    for moment in next_fire_times(spec, now, count):
        closed = window is not None and not window.is_open(moment)
        lines.append(
            f"  {moment:%a %Y-%m-%d %H:%M %Z}" + ("  (outside the window)" if closed else "")
        )
    lines += [
        "",
        "# crontab (crontab -e):",
        crontab_text(spec, where, settings),
        f"# ~/.config/systemd/user/{unit}.service:",
        service,
        f"# ~/.config/systemd/user/{unit}.timer:",
        timer,
    ]
    warnings = schedule_warnings(spec, now, count)
    token = token_file_warning(settings.token_file, settings.token_env)
    return "\n".join(lines), warnings + ([token] if token else [])
