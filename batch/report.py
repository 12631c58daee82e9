"""What the ledger says: the `status` summary and the campaign report's figures.

The report is written for the people who file it (a legal team): the campaign, everyone not
reached and why, the evidence per recipient with certificate hashes, every time in the
campaign's time zone (`Job.tz`; the ledger stays UTC). This module gathers it
(`campaign_report`) and prints the terminal view; batch.report_html draws `report.html`.
What differs per channel (the rate, the times kept, what the campaign sends, credits) is the
channel's (batch.channels). Spreadsheet exports are batch.export's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batch import errors
from batch.campaigns import unfinished_other
from batch.channels import channel_for
from batch.files import write_atomic
from batch.forecast import COLUMNS as FORECAST_COLUMNS
from batch.forecast import Forecast, RunFlags, forecast
from batch.jobmodel import Job
from batch.ledger import FAILED, IN_DOUBT, PARQUET_NAME, PENDING, SKIPPED, has_history
from batch.lock import LockOwner, live_holder
from batch.plan import eta_seconds
from batch.report_data import PROBLEMS, CampaignReport, campaign_report, ledger_frame, local_time
from batch.report_html import render_html
from batch.stats import human_duration

__all__ = ["CampaignReport", "campaign_report", "ledger_frame", "local_time"]

REPORT_NAME = "report.html"
RUN_LOCK = "run.lock"  # the campaign lock `run` holds (batch.lock)


@dataclass
class StatusSummary:
    """Counts per status, what failed and why, what is left and how long it will take."""

    campaign: str
    ledger_path: Path
    counts: dict[str, int]
    not_queued: int
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # key, email, reason
    in_doubt: list[tuple[str, str, str]] = field(default_factory=list)
    eta_seconds: float = 0.0
    channel: str = "email"
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # key, address, reason
    job_path: Path | None = None  # for the commands it suggests

    # A live run holds the campaign lock: its in-doubt rows are in flight, not lost.
    live_run: LockOwner | None = None
    in_flight: list[tuple[str, str, str]] = field(default_factory=list)
    # The forecast a plain `run` starts from (batch.forecast): rows it would withdraw, the
    # two-versions count, what it would send.
    forecast: Forecast | None = None
    # An earlier campaign of this job file, unfinished, when this one has no ledger yet.
    unfinished_other: str | None = None

    @property
    def doubt_by_hand(self) -> bool:
        """Whether rows in doubt wait for the operator (never looked up or re-sent by a run)."""
        return not channel_for(self.channel).anchored

    @property
    def remaining(self) -> int:
        """Recipients a run would still send or look up (in doubt by hand counted apart;
        pending rows that left the dataset are withdrawn)."""
        doubt = 0 if self.doubt_by_hand else self.counts.get(IN_DOUBT, 0)
        withdrawing = len(self.forecast.withdraw) if self.forecast is not None else 0
        return self.counts.get(PENDING, 0) + doubt + self.not_queued - withdrawing


def status(
    job: Job, dataset_keys: pl.Series | None = None, scanned: pl.DataFrame | None = None
) -> StatusSummary:
    """Summarise the ledger; `dataset_keys` lets it count rows not yet queued, and with the
    scan's valid rows (`scanned`) it says what a plain `run` would do (batch.forecast)."""
    # Nothing sent yet, unless an earlier campaign of this job file is what is unfinished.
    if not has_history(job.output_dir) and unfinished_other(job) is None:
        raise errors.NothingSent(job.output_dir, job.path)
    ledger = ledger_frame(job)
    holder = live_holder(job.output_dir / RUN_LOCK)
    counts: dict[str, int] = {}
    failures: list[tuple[str, str, str]] = []
    in_doubt: list[tuple[str, str, str]] = []
    skipped: list[tuple[str, str, str]] = []
    if ledger.height:
        for status_name, n in ledger.group_by("status").len().iter_rows():
            counts[str(status_name)] = int(n)
        rows = ledger.filter(pl.col("status").is_in([*PROBLEMS, IN_DOUBT, SKIPPED]))
        for key, email, status_name, why in rows.select(
            "key", "address", "status", "error_details"
        ).iter_rows():
            item = (str(key), str(email or ""), str(why or status_name))
            if status_name == IN_DOUBT:
                in_doubt.append(item)
            elif status_name == SKIPPED:
                skipped.append(item)
            else:
                failures.append(item)
    in_flight: list[tuple[str, str, str]] = []
    if holder is not None and in_doubt:
        in_flight, in_doubt = _held_by_live_run(ledger, in_doubt, holder)
    ahead = None
    if dataset_keys is not None and scanned is not None:
        ahead = forecast(_forecast_columns(ledger), scanned, dataset_keys, RunFlags())
    not_queued = 0
    if dataset_keys is not None:
        keys = pl.DataFrame({"key": dataset_keys.cast(pl.String)})
        not_queued = (
            keys.join(ledger.select("key"), on="key", how="anti").height
            if ledger.height
            else keys.height
        )
    limits = job.spec.limits
    summary = StatusSummary(
        job.campaign,
        job.output_dir / PARQUET_NAME,
        counts,
        not_queued,
        failures,
        in_doubt,
        channel=job.spec.channel,
        skipped=skipped,
        job_path=job.path,
        live_run=holder,
        in_flight=in_flight,
        forecast=ahead,
        unfinished_other=None if ledger.height else unfinished_other(job),
    )
    summary.eta_seconds = eta_seconds(
        summary.remaining, per_window=limits.requests_per_window, window=limits.window_seconds
    )
    return summary


def attention_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Statuses by what needs attention first: in doubt, failures, skipped, pending, the rest."""
    first = [IN_DOUBT, FAILED, *[p for p in PROBLEMS if p != FAILED], SKIPPED, PENDING]
    rank = {name: i for i, name in enumerate(first)}
    return sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(first)), kv[0]))


def _held_by_live_run(
    ledger: pl.DataFrame, in_doubt: list[tuple[str, str, str]], holder: LockOwner
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Split the rows in doubt: those the live run wrote (in flight) and older ones.

    A row whose intent the live run journalled (updated since it took the lock) is in the
    air: its answer is on its way or is being looked up. One left by an earlier run is looked
    up by the live run before it sends anything new; neither needs the panel yet.
    """
    started = _parse_time(holder.started)
    updated = dict(zip(ledger["key"].to_list(), ledger["updated_at"].to_list(), strict=True))
    who = f"run pid {holder.pid or '?'}"
    flying, older = [], []
    for key, email, _ in in_doubt:
        at = updated.get(key)
        if started is None or at is None or at >= started:
            flying.append((key, email, f"in flight ({who})"))
        else:
            older.append((key, email, f"left in doubt by an earlier run; {who} looks it up first"))
    return flying + older, []


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _forecast_columns(ledger: pl.DataFrame) -> pl.DataFrame:
    return ledger.select(c for c in ("key", *FORECAST_COLUMNS) if c in ledger.columns)


def print_status(summary: StatusSummary, console: Console) -> None:
    """The terminal view of `lmbatch status`: what needs attention first, with real commands."""
    job = str(summary.job_path) if summary.job_path is not None else "JOB"
    console.print(f"campaign {summary.campaign}", markup=False, highlight=False)
    table = Table()
    table.add_column("status")
    table.add_column("recipients", justify="right")
    for name, n in attention_order(summary.counts):
        table.add_row(escape(name), str(n))
    if summary.not_queued:
        table.add_row("not yet queued", str(summary.not_queued))
    console.print(table)
    if summary.in_doubt:
        keys = " ".join(k for k, _, _ in summary.in_doubt[:5])
        advice = channel_for(summary.channel).in_doubt_advice
        advice = advice.replace(" JOB ", f" {job} ").replace(" KEY ", f" {keys} ")
        console.print(
            f"[yellow]{len(summary.in_doubt)} in doubt[/] (answer lost): {escape(advice)}"
        )
        _rows(console, summary.in_doubt)
    if summary.failures:
        console.print(f"[red]{len(summary.failures)} failed, bounced or declined:[/]")
        _rows(console, summary.failures)
        console.print(
            f"  fix them, then: lmbatch status {job} --export-failed failed.csv; "
            f"lmbatch run {job} --retry-failed",
            markup=False,
        )
    if summary.skipped:
        console.print(f"[yellow]{len(summary.skipped)} skipped[/] (invalid when sent):")
        _rows(console, summary.skipped)
        console.print(f"  fix the rows, then: lmbatch run {job}", markup=False)
    if summary.unfinished_other is not None:
        console.print(
            f"[yellow]campaign {escape(summary.unfinished_other)} of this job file is "
            "unfinished[/]: "
            f"`run` refuses to open {escape(summary.campaign)} until it is done; see it with "
            f"--campaign {escape(summary.unfinished_other)}"
        )
    if summary.live_run is not None:
        console.print(f"a run is sending now: {summary.live_run}", markup=False)
    if summary.in_flight:
        console.print(
            f"[cyan]{len(summary.in_flight)} in flight[/]: the live run records or looks "
            "them up itself; nothing to do"
        )
        for key, email, why in summary.in_flight[:20]:
            console.print(f"  {key} {email}: {why}", markup=False)
    if summary.forecast is not None:
        for note in summary.forecast.notes():
            if not note.endswith("is sent as well"):  # the in-doubt line is said below
                console.print(f"[yellow]note:[/] {escape(note)}")
    if summary.remaining:
        console.print(
            f"{summary.remaining} left to send: about {human_duration(summary.eta_seconds)} "
            f"at the full rate limit; send with: lmbatch run {job}",
            markup=False,
        )
    elif summary.in_doubt and summary.doubt_by_hand:
        console.print(f"nothing left to send; {len(summary.in_doubt)} in doubt to settle by hand")
    elif summary.failures or summary.skipped:
        console.print("nothing left to send; not everyone was reached (see above)")
    else:
        console.print("nothing left to send")
    console.print(f"ledger: {summary.ledger_path}", markup=False, highlight=False)


def _rows(console: Console, rows: list[tuple[str, str, str]], shown: int = 20) -> None:
    for key, address, why in rows[:shown]:
        console.print(f"  {key} {address}: {why}", markup=False, highlight=False)
    if len(rows) > shown:
        console.print(f"  … and {len(rows) - shown} more")


# -- the campaign report ---------------------------------------------------------------------


def print_report(job: Job, console: Console) -> None:
    """The terminal view of `lmbatch report`: counts, the rate, failures with reasons."""
    if not has_history(job.output_dir):
        raise errors.NothingSent(job.output_dir, job.path)
    data = campaign_report(job)
    console.print(f"campaign {data.campaign} ({data.channel})", markup=False, highlight=False)
    table = Table()
    table.add_column("status")
    table.add_column("recipients", justify="right")
    table.add_column("share", justify="right")
    total = sum(data.counts.values())
    for name, n in sorted(data.counts.items(), key=lambda kv: -kv[1]):
        table.add_row(escape(name), str(n), f"{n / total:.0%}" if total else "")
    console.print(table)
    if data.rate is not None:
        console.print(f"{data.rate_label}: {data.rate:.1%} of {data.sent} sent")
    elif data.sent:
        console.print(f"{data.rate_label}: not tracked yet (run `lmbatch track`)")
    if data.problems:
        problems = Table(title=f"{len(data.problems)} failed or bounced")
        for column in ("key", "address", "status", "reason"):
            problems.add_column(column)
        for p in data.problems[:20]:
            problems.add_row(*(escape(str(p[c])) for c in ("key", "email", "status", "reason")))
        console.print(problems)
        if len(data.problems) > 20:
            console.print(f"… and {len(data.problems) - 20} more in {REPORT_NAME}")


def write_report(job: Job, path: Path | None = None, *, now: datetime | None = None) -> Path:
    """Write the self-contained HTML report (default `<output>/<campaign>/report.html`).

    `now` is the "generated at" time: fixed, the same ledger gives the same bytes.
    """
    target = path or job.output_dir / REPORT_NAME
    data = campaign_report(job, now=now)
    page = render_html(data, links_from=target.parent.resolve())
    write_atomic(target, page.encode("utf-8"))
    return target
