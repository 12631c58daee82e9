"""The end of a run, told truthfully: what needs attention first, why, and what to run next.

Counts come in attention order (in doubt, failed, bounced…, skipped, pending, then sent), the
rows not reached are listed with their reason, every suggested command carries the real job
path (and `--period`), and a run done with problems says so with its exit code (5).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.markup import escape

from batch import errors
from batch.channels import channel_for
from batch.ledger import IN_DOUBT, has_history, read_ledger
from batch.report import attention_order
from batch.runner import PROBLEM_STATUSES, RunSummary
from batch.stats import human_duration

__all__ = ["about", "in_doubt_advice", "print_run", "problem_rows"]


def about(seconds: float) -> str:
    """`about 12 min`, `under a second`: a duration a person reads."""
    return "under a second" if seconds < 1 else f"about {human_duration(seconds)}"


def _period(period: str | None) -> str:
    return f" --period {period}" if period else ""


def print_run(
    summary: RunSummary,
    job: Path,
    period: str | None,
    out: Console,
    *,
    next_step: bool = True,
    resume: str | None = None,
) -> None:
    """The end-of-run summary: counts by what needs attention, reasons, the next command."""
    verb = "would send" if summary.dry_run else "campaign"
    ordered = attention_order(summary.counts)
    counts = ", ".join(f"{n} {s}" for s, n in ordered) or "nothing to do"
    out.print(f"{verb} {summary.campaign}: {counts}", markup=False)
    stats = summary.stats
    if summary.dry_run:
        for note in summary.notes:
            out.print(f"note: {note}", markup=False)
        if summary.refused:
            out.print(f"[red]`run` would refuse to start[/]: {escape(str(summary.refused))}")
        out.print(f"{stats.requests_planned} request(s), {about(stats.eta_seconds)}")
        return
    out.print(f"{stats.api_calls} API call(s), {stats.rate_limited}×429", markup=False)
    out.print(f"ledger: {summary.ledger_path}", markup=False)
    run_again = resume or f"lmbatch run {job}{_period(period)}"
    problems = problem_rows(summary.ledger_path.parent)
    if summary.counts.get("in_doubt", 0):
        keys = " ".join(k for k, _, _ in problems.get("in_doubt", [])[:5]) or "KEY"
        advice = in_doubt_advice(summary.ledger_path.parent)
        out.print(f"[yellow]{summary.counts['in_doubt']} in doubt[/]: {escape(advice)}")
        for key, address, why in problems.get("in_doubt", [])[:10]:
            out.print(f"  {key} {address}: {why}", markup=False)
        out.print(
            f"  after checking the LegallyMail panel: lmbatch resolve {job} {keys} "
            "--sent|--not-sent",
            markup=False,
        )
    for status, rows in problems.items():
        if status == "in_doubt":
            continue
        out.print(f"[red]{len(rows)} {status}[/]:")
        for key, address, why in rows[:10]:
            out.print(f"  {key} {address}: {why}", markup=False)
        if len(rows) > 10:
            more = f"  … and {len(rows) - 10} more: lmbatch status {job}{_period(period)}"
            out.print(more, markup=False)
    if "skipped" in problems:
        out.print(f"  fix the skipped rows in the dataset, then: {run_again}", markup=False)
    if any(s not in ("in_doubt", "skipped") for s in problems):
        out.print(
            f"  fix the addresses, then: lmbatch run {job}{_period(period)} --retry-failed",
            markup=False,
        )
    if summary.stopped or summary.counts.get("pending", 0):
        reason = summary.stopped or "work left"
        out.print(f"[yellow]stopped[/]: {escape(reason)}; resume with: {escape(run_again)}")
    elif summary.exit_code == errors.EXIT_PROBLEMS:
        then = f"; then follow the deliveries: lmbatch track {job}{_period(period)}"
        out.print(
            f"done with problems (exit {errors.EXIT_PROBLEMS}){then if next_step else ''}",
            markup=False,
        )
    elif summary.exit_code == errors.EXIT_OK and next_step:
        out.print(f"done; next: lmbatch track {job}{_period(period)}", markup=False)


def in_doubt_advice(folder: Path) -> str:
    """What happens to this campaign's sends in doubt: its channel's word (batch.channels)."""
    try:
        channels = read_ledger(folder)["channel"].drop_nulls().unique().to_list()
    except (errors.BatchError, KeyError, ValueError):
        channels = []
    if len(channels) != 1:
        return "the next run looks them up again where the API allows"
    advice = channel_for(str(channels[0])).in_doubt_advice
    # The advice's own command is shown below with the real path and keys.
    return advice.split("; find each")[0] if "resolve JOB" in advice else advice


def problem_rows(folder: Path) -> dict[str, list[tuple[str, str, str]]]:
    """The ledger's rows needing attention, by status in attention order, with reasons."""
    if not has_history(folder):
        return {}
    try:
        frame = read_ledger(folder).filter(pl.col("status").is_in([IN_DOUBT, *PROBLEM_STATUSES]))
    except errors.BatchError:
        return {}
    found: dict[str, list[tuple[str, str, str]]] = {}
    for key, address, status, why in frame.select(
        "key", "address", "status", "error_details"
    ).iter_rows():
        found.setdefault(str(status), []).append((str(key), str(address or ""), str(why or "")))
    order = [s for s, _ in attention_order({s: len(r) for s, r in found.items()})]
    return {s: found[s] for s in order}
