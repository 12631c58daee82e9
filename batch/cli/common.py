"""What every `lmbatch` command shares: the group, the console, error handling, the job
argument, the settings read once, and the end-of-run summary (batch.cli draws the exit codes)."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from batch import errors
from batch.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
# soft_wrap: never break a line at the terminal's width. Under cron or in a pipe rich assumes 80
# columns, which split `file:line key` errors, resume commands and crontab lines in two.
console = Console(stderr=True, highlight=False, soft_wrap=True)
# After Ctrl-C or SIGTERM, how long a request in flight may still take before it is cut short.
STOP_GRACE_SECONDS = 10.0


def _out() -> Console:
    """Stdout, for results: lines never wrap either."""
    return Console(soft_wrap=True)


def handle_errors(func: F) -> F:
    """Turn a BatchError into its message, a next step and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except errors.BatchError as err:
            # Messages hold data and server text: escaped, so `[/x]` or `[red]` print as written.
            console.print(f"[red]error:[/] {escape(str(err))}", markup=True, highlight=False)
            if err.hint:
                console.print(f"[dim]hint:[/] {escape(err.hint)}")
            if "log_file" in kwargs and not getattr(err, "logged", False):
                _log_outcome(kwargs.get("log_file"), bool(kwargs.get("json_log")), err)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            # A second Ctrl-C or SIGTERM cut a request short: the journal holds its intent, so
            # the ledger is consistent and the next run looks that request up first.
            console.print(
                "[yellow]interrupted[/]: the ledger is consistent; run the same command again "
                "to resume (a request cut short is looked up before anything new is sent)"
            )
            sys.exit(errors.EXIT_PENDING)

    return wrapper  # type: ignore[return-value]


def _log_outcome(log_file: Path | None, as_json: bool, err: errors.BatchError) -> None:
    """The last log line of a run that failed before its display opened (job file, lock)."""
    from batch.progress import open_reporter, outcome_of

    try:
        with open_reporter(log_file, as_json, console) as reporter:
            reporter.finish(outcome_of(err.exit_code), err.exit_code, {}, message=str(err))
    except errors.BatchError:
        pass  # the log itself is what failed: the error already says so on stderr


# `lmbatch --help` lists commands in the order a campaign is worked, each with a summary that
# fits one line at 80 columns. Names not defined (yet) are passed over; commands missing
# here come after, alphabetically, with their docstring's first sentence.
WORKFLOW: tuple[tuple[str, str], ...] = (
    ("init", "Write a working job folder to start from."),
    ("validate", "Check every row of JOB; nothing is sent."),
    ("preview", "Write JOB's rendered messages to browse."),
    ("rehearse", "Run the whole campaign against a fast local sandbox."),
    ("send-test", "Send one row's message to your own address."),
    ("run", "Send JOB's campaign; run it again to resume."),
    ("status", "What was sent, what needs attention, what is left."),
    ("track", "Bring delivery and reading statuses into the ledger."),
    ("certificates", "Download the certificates, verified by hash."),
    ("report", "Print the summary and write report.html."),
    ("evidence", "Bundle the campaign's evidence for the file."),
    ("resolve", "Settle rows in doubt after checking the panel."),
    ("cancel", "End a campaign on purpose; nothing more is sent."),
    ("recover", "Rebuild a damaged ledger from what is left."),
    ("schedule", "Show next periods and crontab/systemd snippets."),
    ("sandbox", "Run a local LegallyMail stand-in."),
    ("demo", "Run an example job against an in-process sandbox."),
)


class WorkflowGroup(click.Group):
    """A group whose help lists commands in workflow order, summaries never clipped."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Workflow order first, then any other command alphabetically."""
        order = [name for name, _ in WORKFLOW if name in self.commands]
        return order + sorted(set(self.commands) - set(order))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """One line per command: its name and a summary that click does not cut with `...`."""
        summaries = dict(WORKFLOW)
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            text = summaries.get(name) or command.get_short_help_str(limit=1000)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def job_argument(func: F) -> F:
    """The JOB argument and --period, shared by every command that reads a job file."""
    func = click.option(
        "--period", default=None, help="For scheduled jobs: the period to run, e.g. 2026-10."
    )(func)
    return click.argument("job", type=click.Path(dir_okay=False, path_type=Path))(func)


def _load(job: Path, period: str | None) -> Any:
    from batch.jobfile import load_job

    return load_job(job, period=period)


def _settings(job: Any) -> Settings:
    """The environment, read once per command: the token named by the job's api.token_env,
    LEGALLYMAIL_BASE_URL and the rate limiter's state folder."""
    from batch.connect import base_url

    settings = Settings.from_env(job.spec.api.token_env)
    base_url(settings, job)  # where the token may go: checked before anything is written
    return settings


@click.group(cls=WorkflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmbatch")
def main() -> None:
    """lmbatch: certified e-mail, SMS and e-signature campaigns over LegallyMail.

    Typical order: init → validate → preview → rehearse → send-test → run → status →
    track → certificates → report (the commands below, in that order).
    The API token is read from LEGALLYMAIL_TOKEN (or the job's api.token_env);
    LEGALLYMAIL_BASE_URL points a job at another server, such as `lmbatch sandbox`.
    """


def campaign_option(func: F) -> F:
    """--campaign: aim a command at an earlier campaign of the job file (batch.campaigns)."""
    return click.option(
        "--campaign",
        "campaign",
        default=None,
        help="Use this earlier campaign of the job file (its name no longer renders the same).",
    )(func)


def _pinned(loaded: Any, campaign: str | None) -> Any:
    if campaign is None or campaign == loaded.campaign:
        return loaded
    from batch.campaigns import pinned

    return pinned(loaded, campaign)


def _confirmed(job: Any, options: Any) -> bool:
    """Show what the run will send and spend, and ask; True when there is nothing to ask."""
    from batch.confirm import ask, outlook

    ahead = outlook(job, options, _settings(job))
    if not ahead.recipients:
        return True
    for line in ahead.lines():
        console.print(line, markup=False, highlight=False)
    try:
        return ask("Send now?", sys.stdin, sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C at the question: nothing was sent
        console.print()
        return False


def _period(period: str | None) -> str:
    return f" --period {period}" if period else ""


def _about(seconds: float) -> str:
    """`about 12 min`, `under a second`: a duration a person reads."""
    from batch.run_summary import about

    return about(seconds)


def _finish(reporter: Any, summary: Any) -> None:
    """The run's last log line: counts, outcome, exit code."""
    from batch.progress import outcome_of

    code = summary.exit_code
    reporter.finish(outcome_of(code), code, dict(summary.counts), stopped=summary.stopped)


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _print_run(
    summary: Any,
    job: Path,
    period: str | None,
    options: Any = None,
    loaded: Any = None,
    *,
    next_step: bool = True,
) -> None:
    """The end-of-run summary on stdout (batch.run_summary)."""
    from batch.hints import resume_command
    from batch.run_summary import print_run

    print_run(
        summary,
        job,
        period,
        Console(soft_wrap=True, highlight=False),
        next_step=next_step,
        resume=resume_command(job, period, options, loaded),
    )


class _stop_on_signals:
    """Ctrl-C and SIGTERM ask the run to stop after the request in flight; one is enough.

    A request still in flight STOP_GRACE_SECONDS after the signal (a hung server) is cut short
    by SIGALRM, as a second signal cuts it at once: the journal already holds its intent, so
    the ledger stays consistent and the next run looks the request up before anything new.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop.is_set():  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.stop.set()
        console.print("[yellow]stopping after the request in flight…[/]")
        signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_SECONDS)

    @staticmethod
    def _cut_short(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handle)
        self.saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._cut_short)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
