"""The `lmbatch` command line: parse options, call one core function, map errors to exit codes.

Exit codes, shared by every command:
  0  done
  1  error (API refused the token, ledger unwritable, unexpected failure)
  2  the job or its input is invalid, or a deliberate flag is needed (nothing was sent)
  3  stopped with work pending (credits exhausted, interrupted, in doubt, outside the window,
     nothing sent yet)
  4  another run holds the campaign's lock
  5  done with problems: nothing left to send, but rows failed, bounced or were skipped
"""

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
from batch.limits import MAX_RECIPIENTS_PER_REQUEST, REQUESTS_PER_WINDOW, WINDOW_SECONDS
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
    from batch.client import base_url

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


@main.command()
@job_argument
@campaign_option
@click.option("--retry-failed", is_flag=True, help="Count what `run --retry-failed` would send.")
@handle_errors
def validate(job: Path, period: str | None, campaign: str | None, retry_failed: bool) -> None:
    """Check every row of JOB (exit 2 on any problem); nothing is sent.

    The count to send is what `lmbatch run` with the same options sends (batch.forecast).
    """
    from batch.progress import NullReporter
    from batch.runner import RunOptions, run

    class Notes(NullReporter):  # what the dataset reader decided, e.g. the delimiter picked
        def note(self, message: str) -> None:
            console.print(f"note: {message}", markup=False, highlight=False)

    loaded = _pinned(_load(job, period), campaign)
    options = RunOptions(dry_run=True, skip_invalid=True, offline=True, retry_failed=retry_failed)
    summary = run(loaded, options, settings=_settings(loaded), reporter=Notes())
    if summary.invalid:
        raise errors.RowErrors(summary.invalid, valid_rows=summary.valid_rows)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", markup=True, highlight=False)
    if summary.refused:
        raise errors.InputError(f"`run` would refuse to start: {summary.refused}")
    stats = summary.stats
    settled = summary.valid_rows - stats.recipients
    already = f" ({settled} already settled in the ledger)" if settled else ""
    _out().print(
        f"[green]ok[/]: {summary.valid_rows} row(s) valid; {stats.recipients} to send{already} "
        f"in {stats.requests_planned} request(s), {_about(stats.eta_seconds)} at the rate limit"
    )


@main.command()
@job_argument
@click.option("--limit", default=200, show_default=True, help="How many messages to write.")
@handle_errors
def preview(job: Path, period: str | None, limit: int) -> None:
    """Write JOB's rendered messages to <output>/<campaign>/preview/ to browse."""
    from batch.preview import write_preview
    from batch.runner import validate as read_and_scan

    loaded = _load(job, period)
    frame, result = read_and_scan(loaded)
    index = write_preview(
        loaded, frame, loaded.output_dir / "preview", limit=limit, errors_total=len(result.errors)
    )
    _out().print(f"preview: {index}", markup=False)
    if result.errors:
        raise result.problem()


@main.command()
@job_argument
@click.option("--dry-run", is_flag=True, help="Do everything but send.")
@click.option("--skip-invalid", is_flag=True, help="Record invalid rows as skipped; send the rest.")
@click.option("--allow-partial", is_flag=True, help="Send what the remaining credits cover.")
@click.option("--retry-failed", is_flag=True, help="Send again to recipients that failed before.")
@click.option(
    "--exit-outside-window",
    is_flag=True,
    help="Outside the job's send window, exit 3 (work left) instead of waiting.",
)
@click.option(
    "--accept-key-change",
    is_flag=True,
    help="Send although the dataset's keys changed (recipients may get a second message).",
)
@click.option(
    "--accept-new-version",
    is_flag=True,
    help="Send the rest although earlier rows were sent with other content.",
)
@click.option("--offline", is_flag=True, help="With --dry-run: skip the token and credit check.")
@campaign_option
@click.option(
    "--new-campaign",
    is_flag=True,
    help="Open a new campaign although an earlier one of this job file is unfinished.",
)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Log lines here.")
@click.option("--json-log", is_flag=True, help="Log JSON lines (with --log-file, or on stderr).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Send to at most N recipients, then stop with the rest pending (exit 3).",
)
@click.option(
    "--yes", "-y", is_flag=True, help="Do not ask before sending (a terminal asks; cron never)."
)
@handle_errors
def run(
    job: Path,
    period: str | None,
    dry_run: bool,
    skip_invalid: bool,
    allow_partial: bool,
    retry_failed: bool,
    exit_outside_window: bool,
    accept_key_change: bool,
    accept_new_version: bool,
    offline: bool,
    campaign: str | None,
    new_campaign: bool,
    log_file: Path | None,
    json_log: bool,
    limit: int | None,
    yes: bool,
) -> None:
    """Send JOB's campaign; run it again to resume where it stopped."""
    from batch.runner import RunOptions
    from batch.runner import run as run_campaign

    loaded = _pinned(_load(job, period), campaign)
    options = RunOptions(
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        allow_partial=allow_partial,
        retry_failed=retry_failed,
        exit_outside_window=exit_outside_window,
        accept_key_change=accept_key_change,
        accept_new_version=accept_new_version,
        offline=offline,
        new_campaign=new_campaign,
        limit=limit,
    )
    if not (dry_run or yes) and sys.stdin.isatty() and not _confirmed(loaded, options):
        _out().print("nothing sent")
        return
    stop = threading.Event()
    from batch.progress import open_reporter

    with open_reporter(log_file, json_log, console) as reporter, _stop_on_signals(stop):
        summary = run_campaign(
            loaded, options, settings=_settings(loaded), reporter=reporter, stop=stop
        )
        _finish(reporter, summary)
    if summary.cancelled is not None:  # `lmbatch cancel` ended it: say so, and when
        ended = summary.cancelled.describe(loaded.tz)
        _out().print(f"campaign {summary.campaign} was {ended}; nothing sent", markup=False)
        sys.exit(summary.exit_code)
    _print_run(summary, job, loaded.period.label if loaded.period else period, options, loaded)
    sys.exit(summary.exit_code)


@main.command()
@job_argument
@click.option(
    "--export-failed",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the failed rows to this .csv/.xlsx/.parquet file, to fix and re-run.",
)
@campaign_option
@handle_errors
def status(job: Path, period: str | None, export_failed: Path | None, campaign: str | None) -> None:
    """Summarise JOB's ledger: counts per status, failures, in doubt, what is left."""
    from batch.report import print_status
    from batch.report import status as summarize
    from batch.runner import validate as read_and_scan

    loaded = _pinned(_load(job, period), campaign)
    if export_failed is not None:
        from batch.export import export_failed as write_failed

        path, n = write_failed(loaded, export_failed)
        console.print(
            f"{n} failed or bounced row(s) written to {path} (reason in lmbatch_reason); "
            f"correct them in the dataset itself, then: lmbatch run {_quoted(job)} --retry-failed",
            markup=False,
        )
        return
    try:
        frame, scanned = read_and_scan(loaded)
    except errors.InputError:
        frame, scanned = None, None
    keys = frame["__key__"] if frame is not None else None
    ok = scanned.ok if scanned is not None else None
    print_status(summarize(loaded, keys, ok), _out())


@main.command()
@job_argument
@click.option("--watch", is_flag=True, help="Keep polling until every recipient is final.")
@click.option(
    "--until",
    type=click.DateTime(),
    default=None,
    help="With --watch: stop polling at this time (UTC); default 14 days after sending.",
)
@click.option("--interval", default=300.0, show_default=True, help="Seconds between passes.")
@handle_errors
def track(job: Path, period: str | None, watch: bool, until: Any, interval: float) -> None:
    """Bring sent recipients' statuses (delivered, read, bounced…) into JOB's ledger."""
    from datetime import UTC

    from batch.client import build_client
    from batch.progress import open_reporter, outcome_of
    from batch.report import attention_order
    from batch.track import console_reporter
    from batch.track import track as track_campaign

    loaded = _load(job, period)
    deadline = until.replace(tzinfo=UTC) if until is not None else None
    stop = threading.Event()
    with (
        _stop_on_signals(stop),
        open_reporter(None, False, console) as progress,
        build_client(_settings(loaded), loaded, stop=stop) as api,
    ):
        summary = track_campaign(
            loaded,
            client=api,
            watch=watch,
            until=deadline,
            interval=interval,
            stop=stop,
            reporter=console_reporter(console, loaded.tz) if watch else None,
            progress=progress,
        )
        progress.finish(outcome_of(summary.exit_code), summary.exit_code, summary.counts)
    counts = ", ".join(f"{n} {s}" for s, n in attention_order(summary.counts))
    _out().print(
        f"{counts}; {summary.calls_total} API call(s); {summary.open} not final yet", markup=False
    )
    for problem in summary.errors[:10]:
        console.print(f"[yellow]warning:[/] {escape(str(problem))}")
    if summary.stopped:
        again = f"lmbatch track {job}{_period(period)}{' --watch' if watch else ''}"
        _out().print(f"stopped: {summary.stopped}; continue with: {again}", markup=False)
    sys.exit(summary.exit_code)


@main.command()
@job_argument
@handle_errors
def certificates(job: Path, period: str | None) -> None:
    """Download JOB's certificates of delivery and reading, verified against their hashes."""
    from batch.certificates import download_certificates
    from batch.client import build_client
    from batch.progress import open_reporter, outcome_of

    loaded = _load(job, period)
    stop = threading.Event()
    with (
        _stop_on_signals(stop),
        open_reporter(None, False, console) as progress,
        build_client(_settings(loaded), loaded, stop=stop) as api,
    ):
        summary = download_certificates(loaded, client=api, stop=stop, progress=progress)
        counts = {"downloaded": summary.downloaded, "present": summary.present}
        progress.finish(outcome_of(summary.exit_code), summary.exit_code, counts)
    _out().print(
        f"{summary.downloaded} downloaded, {summary.present} already present in {summary.folder}",
        markup=False,
    )
    for key, kind, reason in summary.failures[:20]:
        console.print(f"[red]{escape(f'{key} {kind}')}:[/] {escape(str(reason))}")
    if summary.stopped:
        again = f"lmbatch certificates {job}{_period(period)}"
        _out().print(f"stopped: {summary.stopped}; continue with: {again}", markup=False)
    sys.exit(summary.exit_code)


@main.command()
@job_argument
@handle_errors
def evidence(job: Path, period: str | None) -> None:
    """Write <output>/<campaign>/evidence-<campaign>.zip: what was sent and the proof of it."""
    from batch.evidence import evidence_for

    bundle = evidence_for(_load(job, period))
    _out().print(f"evidence: {bundle.path}")
    for line in bundle.missing[:20]:
        console.print(f"[yellow]missing:[/] {line}", markup=True, highlight=False)
    if len(bundle.missing) > 20:
        console.print(f"… {len(bundle.missing) - 20} more in MISSING.txt inside the bundle")


@main.command()
@job_argument
@click.option("--export", "fmt", type=click.Choice(["xlsx", "csv"]), help="Also export rows.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the export."
)
@handle_errors
def report(job: Path, period: str | None, fmt: str | None, output: Path | None) -> None:
    """Print JOB's summary and write <output>/<campaign>/report.html (and an export)."""
    from batch.report import print_report, write_report

    loaded = _load(job, period)
    print_report(loaded, _out())
    _out().print(f"report: {write_report(loaded)}", markup=False)
    if fmt is not None:
        from batch.export import export

        written = export(loaded, "xlsx" if fmt == "xlsx" else "csv", output)
        _out().print(f"export: {written}", markup=False)


@main.command()
@job_argument
@click.argument("keys", nargs=-1, required=True)
@click.option("--sent", is_flag=True, help="It is in the LegallyMail panel.")
@click.option("--not-sent", is_flag=True, help="It is not: send it again.")
@click.option("--tracking-id", default=None, help="With --sent: the id shown in the panel.")
@click.option("--note", default=None, help="Why: what you checked (kept with the verdict).")
@campaign_option
@handle_errors
def resolve(
    job: Path,
    period: str | None,
    keys: tuple[str, ...],
    sent: bool,
    not_sent: bool,
    tracking_id: str | None,
    note: str | None,
    campaign: str | None,
) -> None:
    """Settle rows left in doubt by hand, after checking the LegallyMail panel.

    Each verdict is journalled with its time, the note and the tracking id given, and kept
    in <output>/<campaign>/resolutions.jsonl.
    """
    from batch.ledger import Ledger
    from batch.lock import CampaignLock
    from batch.reconcile import settle_by_hand

    if sent == not_sent:
        raise click.UsageError("say exactly one of --sent or --not-sent")
    if not_sent and tracking_id is not None:
        raise click.UsageError("--tracking-id goes with --sent")
    verdict = "sent" if sent else "not-sent"
    loaded = _pinned(_load(job, period), campaign)
    with CampaignLock(loaded.output_dir / "run.lock"), Ledger.open(loaded.output_dir) as ledger:
        done = settle_by_hand(ledger, list(keys), sent=sent, tracking_id=tracking_id, note=note)
    _out().print(f"{len(done)} row(s) recorded as {verdict}")
    if sent and tracking_id is None:
        console.print(
            "[yellow]warning:[/] without --tracking-id, `track` and `certificates` cannot "
            "follow these rows; the verdict stands and is journalled without evidence"
        )


@main.command()
@job_argument
@click.option("--count", default=5, show_default=True, help="How many fire times to show.")
@handle_errors
def schedule(job: Path, period: str | None, count: int) -> None:
    """Show JOB's next periods, warnings, and crontab and systemd snippets ready to paste."""
    from datetime import UTC, datetime

    from batch.cronsnippets import Unattended, log_file, schedule_text, token_file

    loaded = _load(job, period)
    if loaded.spec.schedule is None:
        raise errors.JobFileError("the job has no schedule:", path=str(job), key="schedule")
    settings = Unattended(
        f"{sys.executable} -m batch",
        token_file(Path.home()),
        log_file(job),
        token_env=loaded.spec.api.token_env,
    )
    text, warnings = schedule_text(loaded, datetime.now(UTC), count, settings)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", markup=True, highlight=False)
    Console(highlight=False, soft_wrap=True).print(text, markup=False)


@main.command()
@job_argument
@handle_errors
def recover(job: Path, period: str | None) -> None:
    """Rebuild a lost or corrupt ledger.parquet from what the checkpoints kept beside it."""
    from batch.ledger.recover import recover as rebuild
    from batch.lock import CampaignLock

    loaded = _load(job, period)
    with CampaignLock(loaded.output_dir / "run.lock"):  # no run may write meanwhile
        replayed = rebuild(loaded.output_dir)
    _out().print(f"{loaded.output_dir / 'ledger.parquet'} rebuilt ({replayed} events replayed)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, help="Port (0 picks a free one).")
@click.option("--token", default=None, help="The token clients must send (default: random).")
@click.option(
    "--rate",
    default=f"{REQUESTS_PER_WINDOW}/{WINDOW_SECONDS:g}",
    show_default=True,
    help="Requests per window: N/SECONDS.",
)
@click.option("--credits", default=1_000_000, show_default=True, help="E-mail/SMS credits.")
@click.option(
    "--max-recipients",
    default=MAX_RECIPIENTS_PER_REQUEST,
    show_default=True,
    help="Recipients per send.",
)
@click.option(
    "--fault-rate",
    default="",
    help="Faults to inject, KIND=RATE,…: error_500, lost_response, slow, burst_429.",
)
@click.option("--fault-seed", default=0, show_default=True, help="Seed for repeatable faults.")
@click.option("--slow-seconds", default=2.0, show_default=True, help="Delay of a slow response.")
@click.option("--delivered-after", default=2.0, show_default=True, help="Seconds to 'delivered'.")
@click.option("--read-after", default=5.0, show_default=True, help="Seconds to 'read'.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite state file.")
@handle_errors
def sandbox(
    host: str,
    port: int,
    token: str | None,
    rate: str,
    credits: int,
    max_recipients: int,
    fault_rate: str,
    fault_seed: int,
    slow_seconds: float,
    delivered_after: float,
    read_after: float,
    db: Path | None,
) -> None:
    """Run a local LegallyMail stand-in to rehearse a campaign without spending credits.

    Point a job at it with LEGALLYMAIL_BASE_URL=http://HOST:PORT and LEGALLYMAIL_TOKEN=TOKEN.
    Addresses starting with `bounce` end bounced; those starting with `fail` are refused.
    """
    from batch.sandbox import SandboxConfig, parse_faults, parse_rate, serve

    try:
        limit, window = parse_rate(rate)
        faults = parse_faults(fault_rate) if fault_rate else {}
    except ValueError as err:
        raise click.BadParameter(str(err)) from err

    def ready(running: Any) -> None:
        out = Console(highlight=False, soft_wrap=True)
        out.print(
            f"LegallyMail sandbox on {running.base_url} ({limit} requests per {window:g} s, "
            f"{credits} credits); point a job at it with:"
        )
        out.print(f"  export LEGALLYMAIL_BASE_URL={running.base_url}", markup=False)
        out.print(f"  export LEGALLYMAIL_TOKEN={running.token}", markup=False)
        out.print("Ctrl-C stops it.")

    serve(
        SandboxConfig(
            host=host,
            port=port,
            token=token,
            rate_limit=limit,
            rate_window=window,
            max_recipients=max_recipients,
            credits=credits,
            faults=faults,
            fault_seed=fault_seed,
            slow_seconds=slow_seconds,
            delivered_after=delivered_after,
            read_after=read_after,
            db=db,
        ),
        ready=ready,
    )


@main.command()
@click.option(
    "--job",
    "job",
    default="jobs/notice.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@handle_errors
def demo(job: Path) -> None:
    """Rehearse the bundled example: run, track, certificates, report; no account needed."""
    from batch.demo import run_demo
    from batch.progress import open_reporter

    with open_reporter(None, False, console) as reporter:
        done = run_demo(job, Settings.from_env(), reporter, say=_say_stage)
    _print_rehearsal(done, job)


@main.command()
@click.argument("folder", default="new-campaign", type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def init(folder: Path) -> None:
    """Write a working job folder (job file, small dataset, template) to edit: FOLDER."""
    from batch.scaffold import scaffold

    job = scaffold(folder)
    out = _out()
    wrote = f"wrote {job}, {folder / 'recipients.csv'} and {folder / 'letter.html'}"
    out.print(wrote, markup=False)
    out.print(f"next: lmbatch validate {job}, then lmbatch rehearse {job}", markup=False)


@main.command()
@job_argument
@handle_errors
def rehearse(job: Path, period: str | None) -> None:
    """Run JOB's whole campaign against an in-process sandbox, 30× faster; no credits spent."""
    from batch.progress import open_reporter
    from batch.rehearse import rehearse as rehearse_job

    loaded = _load(job, period)
    stop = threading.Event()
    with open_reporter(None, False, console) as reporter, _stop_on_signals(stop):
        done = rehearse_job(loaded, _settings(loaded), reporter=reporter, stop=stop, say=_say_stage)
    _print_rehearsal(done, job)
    if done.stopped:
        again = escape(f"lmbatch rehearse {job}")
        console.print(f"[yellow]rehearsal stopped[/]; start a fresh one: {again}")
        sys.exit(errors.EXIT_PENDING)


def _say_stage(line: str) -> None:
    console.print(f"rehearsal: {line}…", markup=False, highlight=False)


def _print_rehearsal(done: Any, job: Path) -> None:
    out = _out()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(done.tracked.counts.items()))
    out.print(f"rehearsal of {done.run.campaign}: {counts or 'nothing sent'}", markup=False)
    certificates = done.certificates.downloaded
    out.print(f"{certificates} certificate(s); ledger in {done.folder}", markup=False)
    for note in done.notes:
        out.print(f"note: {note}", markup=False)
    for problem in done.run.invalid[:10]:
        console.print(f"[yellow]skipped:[/] {escape(str(problem))}", markup=True, highlight=False)
    out.print(f"report: {done.report}", markup=False)


@main.command("send-test")
@job_argument
@click.option("--to", "to", required=True, help="Your own address (or phone, for SMS).")
@click.option("--key", default=None, help="The row to send (default: the first valid row).")
@handle_errors
def send_test(job: Path, period: str | None, to: str, key: str | None) -> None:
    """Send one row's message once to your own address, marked [TEST]; not in the ledger."""
    from batch.client import build_client
    from batch.sendtest import send_test as send_one

    loaded = _load(job, period)
    with build_client(_settings(loaded), loaded, stop=threading.Event()) as api:
        sent = send_one(loaded, to, client=api, key=key)
    _out().print(f"test of row {sent.key} sent to {sent.to}: {sent.subject}", markup=False)
    _out().print(f"recorded in {sent.record}; the row is still to send", markup=False)


@main.command()
@job_argument
@click.option("--note", required=True, help="Why the campaign ends (the report shows it).")
@handle_errors
def cancel(job: Path, period: str | None, note: str) -> None:
    """End JOB's campaign on purpose: rows not yet sent become cancelled; nothing more is sent."""
    from batch.cancel import cancel as cancel_campaign

    loaded = _load(job, period)
    done = cancel_campaign(loaded, note)
    _out().print(f"campaign {done.describe(loaded.tz)}", markup=False)
    if done.in_doubt:
        console.print(
            f"[yellow]{done.in_doubt} in doubt[/]: they may have been sent; "
            f"`lmbatch status {escape(str(job))}` lists them"
        )


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
