"""What the ledger says: the `status` summary, the campaign report and spreadsheet exports.

`report.html` is one self-contained page: inline CSS and inline SVG charts drawn here, no
script, no external asset, and a Content-Security-Policy that forbids loading any; every
value from the data is HTML-escaped. Exports join the dataset's rows with their ledger
columns; cells a spreadsheet would run as a formula are neutralised with a leading `'`.
Every file is written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
from rich.console import Console
from rich.table import Table

from batch.files import write_atomic
from batch.jobfile import Job
from batch.ledger import IN_DOUBT, PENDING, read_ledger
from batch.plan import eta_seconds

IN_DOUBT_NEXT = (
    "looked up against the API's latest sends before anything else; found ones are "
    "recorded as sent, proven-absent ones are sent, the rest stay in doubt (never re-sent blindly)"
)
# Certified SMS have no listing to look them up in: only the operator can settle them.
IN_DOUBT_SMS_NEXT = (
    "never sent again automatically; find each in the LegallyMail panel, then settle it with "
    "`lmbatch resolve JOB KEY --sent` (found) or `--not-sent` (absent: the next run sends it)"
)


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

    @property
    def remaining(self) -> int:
        """Recipients not yet settled."""
        return self.counts.get(PENDING, 0) + self.counts.get(IN_DOUBT, 0) + self.not_queued


def ledger_frame(job: Job) -> pl.DataFrame:
    """The campaign's ledger, or an empty frame when nothing was recorded yet."""
    folder = job.output_dir
    if not (folder / "ledger.parquet").exists() and not (folder / "journal.jsonl").exists():
        return pl.DataFrame()
    return read_ledger(folder)


def status(job: Job, dataset_keys: pl.Series | None = None) -> StatusSummary:
    """Summarise the ledger; `dataset_keys` lets it count rows not yet queued."""
    ledger = ledger_frame(job)
    counts: dict[str, int] = {}
    failures: list[tuple[str, str, str]] = []
    in_doubt: list[tuple[str, str, str]] = []
    if ledger.height:
        for status_name, n in ledger.group_by("status").len().iter_rows():
            counts[str(status_name)] = int(n)
        rows = ledger.filter(pl.col("status").is_in([*_PROBLEMS, IN_DOUBT]))
        for key, email, status_name, why in rows.select(
            "key", "address", "status", "error_details"
        ).iter_rows():
            item = (str(key), str(email or ""), str(why or status_name))
            (in_doubt if status_name == IN_DOUBT else failures).append(item)
    not_queued = 0
    if dataset_keys is not None:
        keys = pl.DataFrame({"key": dataset_keys.cast(pl.String)})
        not_queued = (
            keys.join(ledger.select("key"), on="key", how="anti").height
            if ledger.height
            else keys.height
        )
    limits = job.spec.limits
    left = counts.get(PENDING, 0) + counts.get(IN_DOUBT, 0) + not_queued
    return StatusSummary(
        job.campaign,
        job.output_dir / "ledger.parquet",
        counts,
        not_queued,
        failures,
        in_doubt,
        eta_seconds(left, per_window=limits.requests_per_window, window=limits.window_seconds),
        channel=job.spec.channel,
    )


def print_status(summary: StatusSummary, console: Console) -> None:
    """The terminal view of `lmbatch status`."""
    table = Table(title=f"campaign {summary.campaign}")
    table.add_column("status")
    table.add_column("recipients", justify="right")
    for name, n in sorted(summary.counts.items()):
        table.add_row(name, str(n))
    if summary.not_queued:
        table.add_row("not yet queued", str(summary.not_queued))
    console.print(table)
    if summary.failures:
        console.print(f"[red]{len(summary.failures)} failed, bounced or declined:[/]")
        for key, email, why in summary.failures[:20]:
            console.print(f"  {key} {email}: {why}")
        if len(summary.failures) > 20:
            console.print(f"  … and {len(summary.failures) - 20} more")
    if summary.in_doubt:
        advice = (
            f"these SMS are {IN_DOUBT_SMS_NEXT}"
            if summary.channel == "sms"
            else f"next run, {IN_DOUBT_NEXT}"
        )
        console.print(f"[yellow]{len(summary.in_doubt)} in doubt[/] (answer lost): {advice}")
        for key, email, why in summary.in_doubt[:20]:
            console.print(f"  {key} {email}: {why}")
    if summary.remaining:
        console.print(
            f"{summary.remaining} left to send; at most {summary.eta_seconds / 3600:.1f} h "
            "at the full rate limit"
        )
    else:
        console.print("nothing left to send")
    console.print(f"ledger: {summary.ledger_path}")


# -- the campaign report ---------------------------------------------------------------------

REPORT_NAME = "report.html"
_PROBLEMS = ("failed", "bounced", "declined", "rejected", "expired", "cancelled", "canceled")
# What "done" means per channel, for the rate shown next to the counts.
_DONE: dict[str, tuple[str, tuple[str, ...]]] = {
    "email": ("read rate", ("read",)),
    "sms": ("delivery rate", ("delivered",)),
    "signature": ("signed rate", ("signed",)),
}
_COLOURS = {
    "read": "#2e7d32",
    "signed": "#2e7d32",
    "delivered": "#00897b",
    "sent": "#1e88e5",
    "pending": "#9e9e9e",
    "in_doubt": "#f9a825",
    "skipped": "#bdbdbd",
    "bounced": "#ef6c00",
    "failed": "#c62828",
    "declined": "#c62828",
}
_OTHER_COLOUR = "#7e57c2"  # any status the API invents
_MAX_TABLE_ROWS = 2000  # a huge campaign's page must stay openable
_MAX_BARS = 120


@dataclass
class CampaignReport:
    """Everything the terminal summary and the HTML page show."""

    campaign: str
    channel: str
    counts: dict[str, int]
    sent: int  # recipients the API accepted (a send time is recorded)
    rate_label: str
    rate: float | None
    problems: list[dict[str, Any]]  # key, email, status, reason
    requests: list[datetime]  # start of each send request
    limit: int
    window: float
    certificates: list[tuple[str, str, list[tuple[str, str]]]]  # key, status, [(type, path)]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def campaign_report(job: Job) -> CampaignReport:
    """Gather the report's figures from the ledger."""
    ledger = ledger_frame(job)
    channel = job.spec.channel
    label, done = _DONE[channel]
    counts: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    requests: list[datetime] = []
    certificates: list[tuple[str, str, list[tuple[str, str]]]] = []
    sent = 0
    if ledger.height:
        counts = {str(k): int(n) for k, n in ledger.group_by("status").len().sort("status").rows()}
        sent = ledger.filter(pl.col("sent_at").is_not_null()).height
        for row in ledger.filter(pl.col("status").is_in(list(_PROBLEMS))).iter_rows(named=True):
            reason = row.get("error_details") or row.get("error_status") or row["status"]
            problems.append(
                {
                    "key": row["key"],
                    "email": row.get("address") or "",
                    "status": row["status"],
                    "reason": str(reason),
                    "error_status": row.get("error_status") or "",
                }
            )
        requests = (
            ledger.filter(pl.col("sent_at").is_not_null())
            .group_by(pl.coalesce("request_id", "parent_tracking_id", "key"))
            .agg(pl.col("sent_at").min())
            .sort("sent_at")["sent_at"]
            .to_list()
        )
        for row in ledger.filter(pl.col("certificate_paths").is_not_null()).iter_rows(named=True):
            paths = _json_object(row["certificate_paths"])
            found = [
                (str(kind), str(path))
                for kind, path in sorted(paths.items())
                if (job.output_dir / str(path)).is_file()
            ]
            if found:
                certificates.append((str(row["key"]), str(row["status"]), found))
    done_count = sum(counts.get(s, 0) for s in done)
    return CampaignReport(
        campaign=job.campaign,
        channel=channel,
        counts=counts,
        sent=sent,
        rate_label=label,
        rate=done_count / sent if sent else None,
        problems=problems,
        requests=requests,
        limit=job.spec.limits.requests_per_window,
        window=job.spec.limits.window_seconds,
        certificates=certificates,
    )


def print_report(job: Job, console: Console) -> None:
    """The terminal view of `lmbatch report`: counts, the rate, failures with reasons."""
    data = campaign_report(job)
    table = Table(title=f"campaign {data.campaign} ({data.channel})")
    table.add_column("status")
    table.add_column("recipients", justify="right")
    table.add_column("share", justify="right")
    total = sum(data.counts.values())
    for name, n in sorted(data.counts.items(), key=lambda kv: -kv[1]):
        table.add_row(name, str(n), f"{n / total:.0%}" if total else "")
    console.print(table)
    if data.rate is not None:
        console.print(f"{data.rate_label}: {data.rate:.1%} of {data.sent} sent")
    if data.problems:
        problems = Table(title=f"{len(data.problems)} failed or bounced")
        for column in ("key", "address", "status", "reason"):
            problems.add_column(column)
        for p in data.problems[:20]:
            problems.add_row(p["key"], p["email"], p["status"], p["reason"])
        console.print(problems)
        if len(data.problems) > 20:
            console.print(f"… and {len(data.problems) - 20} more in {REPORT_NAME}")


def write_report(job: Job, path: Path | None = None) -> Path:
    """Write the self-contained HTML report (default `<output>/<campaign>/report.html`)."""
    target = path or job.output_dir / REPORT_NAME
    data = campaign_report(job)
    page = render_html(data, links_from=target.parent.resolve(), out=job.output_dir)
    write_atomic(target, page.encode("utf-8"))
    return target


def render_html(data: CampaignReport, *, links_from: Path, out: Path) -> str:
    """The report page; certificate links are relative to `links_from`."""
    e = _e
    total = sum(data.counts.values())
    rate = f"{data.rate:.1%}" if data.rate is not None else "–"
    cards = [
        ("recipients", str(total)),
        ("sent", str(data.sent)),
        (data.rate_label, rate),
        ("failed or bounced", str(len(data.problems))),
        ("send requests", str(len(data.requests))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lmbatch report: {e(data.campaign)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Campaign {e(data.campaign)}</h1>",
        f'<p class="meta">channel {e(data.channel)} · generated '
        f"{e(data.generated_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC</p>",
        '<div class="cards">',
        *(f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>' for k, v in cards),
        "</div>",
        "<h2>Status breakdown</h2>",
        _status_chart(data.counts),
        "<h2>Sends over time against the rate limit</h2>",
        _requests_chart(data.requests, data.limit, data.window),
        f"<h2>Failures and bounces ({len(data.problems)})</h2>",
        _problems_table(data.problems),
        f"<h2>Certificates ({len(data.certificates)} recipients)</h2>",
        _certificates_table(data.certificates, links_from, out),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#212121;background:#fff}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #e0e0e0;padding-bottom:.3rem}
.meta{color:#616161;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #e0e0e0;border-radius:8px;padding:.8rem 1.2rem;min-width:120px}
.card b{display:block;font-size:1.6rem}.card span{color:#616161}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa}td.reason{word-break:break-word}
svg text{font-family:inherit;font-size:12px;fill:#424242}
.note{color:#616161}
"""


def _status_chart(counts: dict[str, int]) -> str:
    """Horizontal bars, one per status, with their counts."""
    if not counts:
        return '<p class="note">Nothing recorded yet.</p>'
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    top = max(n for _, n in rows)
    label_w, bar_w, row_h = 110, 560, 30
    height = row_h * len(rows) + 10
    out = [
        f'<svg id="status-chart" role="img" aria-label="recipients per status" '
        f'width="{label_w + bar_w + 80}" height="{height}" '
        f'viewBox="0 0 {label_w + bar_w + 80} {height}">'
    ]
    for i, (name, n) in enumerate(rows):
        y = 5 + i * row_h
        width = max(2.0, bar_w * n / top)
        colour = _COLOURS.get(name, _OTHER_COLOUR)
        out.append(
            f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"><title>{_e(name)}: {n}</title></rect>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 19}">{n}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _requests_chart(requests: list[datetime], limit: int, window: float) -> str:
    """Send requests per window as bars, with the limit as a line."""
    if not requests:
        return '<p class="note">No send recorded yet.</p>'
    start, end = requests[0], requests[-1]
    span = (end - start).total_seconds()
    buckets = math.floor(span / window) + 1
    per_bar = max(1, math.ceil(buckets / _MAX_BARS))  # windows merged into one bar
    width_s = window * per_bar
    counts = [0] * (math.floor(span / width_s) + 1)
    for at in requests:
        counts[math.floor((at - start).total_seconds() / width_s)] += 1
    cap = limit * per_bar
    top = max(max(counts), cap) * 1.15
    left, plot_w, plot_h, pad = 50, 900, 220, 10
    bar = plot_w / len(counts)
    over = sum(1 for c in counts if c > cap)

    def y(value: float) -> float:
        return pad + plot_h - plot_h * value / top

    unit = f"{_seconds(width_s)} window" if per_bar == 1 else f"{_seconds(width_s)} bucket"
    out = [
        f'<svg id="requests-chart" role="img" aria-label="send requests per {_e(unit)}" '
        f'width="{left + plot_w + 20}" height="{plot_h + 60}" '
        f'viewBox="0 0 {left + plot_w + 20} {plot_h + 60}">',
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{left + plot_w}" y2="{y(0):.1f}" '
        'stroke="#9e9e9e"/>',
    ]
    for i, c in enumerate(counts):
        if c:
            colour = "#c62828" if c > cap else "#1e88e5"
            out.append(
                f'<rect x="{left + i * bar + bar * 0.1:.1f}" y="{y(c):.1f}" '
                f'width="{max(1.0, bar * 0.8):.1f}" height="{y(0) - y(c):.1f}" fill="{colour}">'
                f"<title>{c} request(s)</title></rect>"
            )
    out += [
        f'<line x1="{left}" y1="{y(cap):.1f}" x2="{left + plot_w}" y2="{y(cap):.1f}" '
        'stroke="#c62828" stroke-width="2" stroke-dasharray="6 4"/>',
        f'<text x="{left + plot_w}" y="{y(cap) - 5:.1f}" text-anchor="end">'
        f"limit {cap} per {_e(_seconds(width_s))}</text>",
        f'<text x="{left - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
        f'<text x="{left - 6}" y="{y(cap) + 4:.1f}" text-anchor="end">{cap}</text>',
        f'<text x="{left}" y="{plot_h + 35}">{_e(start.strftime("%Y-%m-%d %H:%M:%S"))} UTC</text>',
        f'<text x="{left + plot_w}" y="{plot_h + 35}" text-anchor="end">'
        f"{_e(end.strftime('%Y-%m-%d %H:%M:%S'))} UTC</text>",
        f'<text x="{left}" y="{plot_h + 52}">{len(requests)} send requests, one bar per '
        f"{_e(unit)}; {over} bar(s) above the limit</text>",
        "</svg>",
    ]
    return "".join(out)


def _problems_table(problems: list[dict[str, Any]]) -> str:
    if not problems:
        return '<p class="note">None.</p>'
    out = ["<table><tr><th>key</th><th>address</th><th>status</th><th>reason</th></tr>"]
    for p in problems[:_MAX_TABLE_ROWS]:
        out.append(
            f"<tr><td>{_e(p['key'])}</td><td>{_e(p['email'])}</td><td>{_e(p['status'])}</td>"
            f'<td class="reason">{_e(p["reason"])}</td></tr>'
        )
    out.append("</table>")
    if len(problems) > _MAX_TABLE_ROWS:
        out.append(f'<p class="note">… and {len(problems) - _MAX_TABLE_ROWS} more.</p>')
    return "".join(out)


def _certificates_table(
    rows: list[tuple[str, str, list[tuple[str, str]]]], links_from: Path, out: Path
) -> str:
    if not rows:
        return '<p class="note">None downloaded yet: run <code>lmbatch certificates</code>.</p>'
    html_rows = ["<table><tr><th>key</th><th>status</th><th>documents</th></tr>"]
    for key, status_name, files in rows[:_MAX_TABLE_ROWS]:
        links = " · ".join(
            f'<a href="{_e(_href(out / path, links_from))}">{_e(kind)}</a>' for kind, path in files
        )
        html_rows.append(f"<tr><td>{_e(key)}</td><td>{_e(status_name)}</td><td>{links}</td></tr>")
    html_rows.append("</table>")
    if len(rows) > _MAX_TABLE_ROWS:
        html_rows.append(f'<p class="note">… and {len(rows) - _MAX_TABLE_ROWS} more.</p>')
    return "".join(html_rows)


def _href(target: Path, links_from: Path) -> str:
    """A relative, percent-encoded link: works offline and when the folder moves."""
    relative = os.path.relpath(target.resolve(), links_from)
    return quote(Path(relative).as_posix(), safe="/")


def _seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_object(value: Any) -> dict[str, Any]:
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}
