"""The `lmbatch` command line: parse options, call one core function, map errors to exit codes.

Exit codes, shared by every command:
  0  done
  1  error (API refused the token, ledger unwritable, unexpected failure)
  2  the job or its input is invalid (nothing was sent)
  3  stopped with work pending (credits exhausted, interrupted, in doubt, outside the window)
  4  another run holds the campaign's lock
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

from batch import errors
from batch.limits import MAX_RECIPIENTS_PER_REQUEST, REQUESTS_PER_WINDOW, WINDOW_SECONDS
from batch.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
# soft_wrap: never break a line at the terminal's width. Under cron or in a pipe rich assumes 80
# columns, which split `file:line key` errors, resume commands and crontab lines in two.
console = Console(stderr=True, highlight=False, soft_wrap=True)


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
            console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
            if err.hint:
                console.print(f"[dim]hint:[/] {err.hint}")
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]


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
    return Settings.from_env(job.spec.api.token_env)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmbatch")
def main() -> None:
    """lmbatch: certified e-mail, SMS and e-signature campaigns over LegallyMail.

    Typical order: validate → preview → run → status → track → certificates → report.
    The API token is read from LEGALLYMAIL_TOKEN (or the job's api.token_env);
    LEGALLYMAIL_BASE_URL points a job at another server, such as `lmbatch sandbox`.
    """


@main.command()
@job_argument
@handle_errors
def validate(job: Path, period: str | None) -> None:
    """Check every row of JOB (exit 2 on any problem); nothing is sent."""
    from batch.runner import RunOptions, run

    loaded = _load(job, period)
    summary = run(loaded, RunOptions(dry_run=True, skip_invalid=True), settings=_settings(loaded))
    if summary.invalid:
        raise errors.RowErrors(summary.invalid)
    stats = summary.stats
    settled = summary.valid_rows - stats.recipients
    already = f" ({settled} already settled in the ledger)" if settled else ""
    _out().print(
        f"[green]ok[/]: {summary.valid_rows} row(s) valid; {stats.recipients} to send{already} "
        f"in {stats.requests_planned} request(s), about {stats.eta_seconds / 60:.0f} min "
        "at the rate limit"
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
    _out().print(f"preview: {index}")
    if result.errors:
        raise errors.RowErrors(result.errors)


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
    log_file: Path | None,
    json_log: bool,
    limit: int | None,
    yes: bool,
) -> None:
    """Send JOB's campaign; run it again to resume where it stopped."""
    from batch.runner import RunOptions
    from batch.runner import run as run_campaign

    loaded = _load(job, period)
    options = RunOptions(
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        allow_partial=allow_partial,
        retry_failed=retry_failed,
        exit_outside_window=exit_outside_window,
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
    if summary.cancelled is not None:  # `lmbatch cancel` ended it: say so, and when
        ended = summary.cancelled.describe(loaded.tz)
        _out().print(f"campaign {summary.campaign} was {ended}; nothing sent", markup=False)
        sys.exit(summary.exit_code)
    _print_run(summary, job, loaded.period.label if loaded.period else period)
    sys.exit(summary.exit_code)


@main.command()
@job_argument
@click.option(
    "--export-failed",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the failed rows to this .csv/.xlsx/.parquet file, to fix and re-run.",
)
@handle_errors
def status(job: Path, period: str | None, export_failed: Path | None) -> None:
    """Summarise JOB's ledger: counts per status, failures, in doubt, what is left."""
    from batch.dataset import read_dataset
    from batch.report import print_status
    from batch.report import status as summarize

    loaded = _load(job, period)
    if export_failed is not None:
        from batch.export import export_failed as write_failed

        path, n = write_failed(loaded, export_failed)
        console.print(
            f"{n} failed row(s) written to {path}; fix them, then: lmbatch run {job} --retry-failed"
        )
        return
    try:
        keys = read_dataset(loaded)["__key__"]
    except errors.InputError:
        keys = None
    print_status(summarize(loaded, keys), Console())


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
    from batch.track import console_reporter
    from batch.track import track as track_campaign

    loaded = _load(job, period)
    deadline = until.replace(tzinfo=UTC) if until is not None else None
    stop = threading.Event()
    with _stop_on_signals(stop), build_client(_settings(loaded), loaded, stop=stop) as api:
        summary = track_campaign(
            loaded,
            client=api,
            watch=watch,
            until=deadline,
            interval=interval,
            stop=stop,
            reporter=console_reporter(Console(stderr=True)) if watch else None,
        )
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    _out().print(f"{counts}; {summary.calls_total} API call(s); {summary.open} not final yet")
    for problem in summary.errors[:10]:
        console.print(f"[yellow]warning:[/] {problem}")
    sys.exit(summary.exit_code)


@main.command()
@job_argument
@handle_errors
def certificates(job: Path, period: str | None) -> None:
    """Download JOB's certificates of delivery and reading, verified against their hashes."""
    from batch.certificates import download_certificates
    from batch.client import build_client

    loaded = _load(job, period)
    with build_client(_settings(loaded), loaded, stop=threading.Event()) as api:
        summary = download_certificates(loaded, client=api)
    _out().print(
        f"{summary.downloaded} downloaded, {summary.present} already present in {summary.folder}"
    )
    for key, kind, reason in summary.failures[:20]:
        console.print(f"[red]{key} {kind}:[/] {reason}")
    sys.exit(summary.exit_code)


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
    print_report(loaded, Console())
    _out().print(f"report: {write_report(loaded)}")
    if fmt is not None:
        from batch.export import export

        _out().print(f"export: {export(loaded, 'xlsx' if fmt == 'xlsx' else 'csv', output)}")


@main.command()
@job_argument
@click.argument("keys", nargs=-1, required=True)
@click.option("--sent", "verdict", flag_value="sent", help="It is in the LegallyMail panel.")
@click.option("--not-sent", "verdict", flag_value="not-sent", help="It is not: send it again.")
@click.option("--tracking-id", default=None, help="With --sent: the id shown in the panel.")
@handle_errors
def resolve(
    job: Path,
    period: str | None,
    keys: tuple[str, ...],
    verdict: str | None,
    tracking_id: str | None,
) -> None:
    """Settle rows left in doubt by hand, after checking the LegallyMail panel."""
    from batch.ledger import Ledger
    from batch.lock import CampaignLock
    from batch.reconcile import settle_by_hand

    if verdict is None:
        raise click.UsageError("say --sent or --not-sent")
    loaded = _load(job, period)
    with CampaignLock(loaded.output_dir / "run.lock"), Ledger.open(loaded.output_dir) as ledger:
        done = settle_by_hand(ledger, list(keys), sent=verdict == "sent", tracking_id=tracking_id)
    _out().print(f"{len(done)} row(s) recorded as {verdict}")
    if verdict == "sent" and tracking_id is None:
        console.print(
            "[yellow]warning:[/] without --tracking-id, `track` and `certificates` cannot "
            "follow these rows; run resolve again with the id shown in the panel to add it"
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
        console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
    Console(highlight=False, soft_wrap=True).print(text, markup=False)


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
    out.print(f"wrote {job}, {folder / 'recipients.csv'} and {folder / 'letter.html'}")
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
        console.print(f"[yellow]rehearsal stopped[/]; start a fresh one: lmbatch rehearse {job}")
        sys.exit(errors.EXIT_PENDING)


def _say_stage(line: str) -> None:
    console.print(f"rehearsal: {line}…", markup=False, highlight=False)


def _print_rehearsal(done: Any, job: Path) -> None:
    out = _out()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(done.tracked.counts.items()))
    out.print(f"rehearsal of {done.run.campaign}: {counts or 'nothing sent'}")
    out.print(f"{done.certificates.downloaded} certificate(s); ledger in {done.folder}")
    for note in done.notes:
        out.print(f"note: {note}")
    for problem in done.run.invalid[:10]:
        console.print(f"[yellow]skipped:[/] {problem}", markup=True, highlight=False)
    out.print(f"report: {done.report}")


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
    _out().print(f"recorded in {sent.record}; the row is still to send")


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
            f"`lmbatch status {job}` lists them"
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


def _print_run(summary: Any, job: Path, period: str | None) -> None:
    out = Console(soft_wrap=True)
    verb = "would send" if summary.dry_run else "campaign"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items())) or "nothing to do"
    out.print(f"{verb} {summary.campaign}: {counts}")
    stats = summary.stats
    if summary.dry_run:
        out.print(f"{stats.requests_planned} request(s), about {stats.eta_seconds / 60:.0f} min")
        return
    out.print(
        f"{stats.api_calls} API call(s), {stats.rate_limited}×429; ledger: {summary.ledger_path}"
    )
    suffix = f" --period {period}" if period else ""
    if summary.stopped or summary.counts.get("pending", 0):
        again = f"lmbatch run {job}{suffix}"
        out.print(f"[yellow]stopped[/]: {summary.stopped or 'work left'}; resume with: {again}")
    if summary.counts.get("in_doubt", 0):
        out.print(
            f"[yellow]{summary.counts['in_doubt']} in doubt[/]: the next run looks them up again "
            f"where the API allows; see `lmbatch status {job}{suffix}`, and settle the rest with "
            f"`lmbatch resolve {job} KEY --sent|--not-sent` after checking the LegallyMail panel"
        )


class _stop_on_signals:
    """Ctrl-C and SIGTERM ask the run to stop after the request in flight."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop.is_set():  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.stop.set()
        console.print("[yellow]stopping after the request in flight…[/]")

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
