"""The commands that prepare and send a campaign: init, validate, preview, rehearse,
send-test, run, resolve, recover, cancel, demo.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from batch import errors
from batch.cli.common import (
    _about,
    _confirmed,
    _finish,
    _load,
    _out,
    _pinned,
    _print_run,
    _settings,
    _stop_on_signals,
    campaign_option,
    console,
    handle_errors,
    job_argument,
    main,
)
from batch.settings import Settings


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
    from batch.connect import build_client
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
