"""The commands that follow a campaign and file its proof: status, track, certificates,
report, evidence, schedule; and the local sandbox.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from batch import errors
from batch.cli.common import (
    _load,
    _out,
    _period,
    _pinned,
    _quoted,
    _settings,
    _stop_on_signals,
    campaign_option,
    console,
    handle_errors,
    job_argument,
    main,
)
from batch.limits import MAX_RECIPIENTS_PER_REQUEST, REQUESTS_PER_WINDOW, WINDOW_SECONDS


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

    from batch.connect import build_client
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
    from batch.connect import build_client
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
