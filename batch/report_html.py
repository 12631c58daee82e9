"""`report.html`: the campaign report as a page a legal team can read, print and file.

Order: the campaign (what was sent, by whom, when, at what cost), everyone not reached and
why, the evidence per recipient (times in the campaign's zone, certificate files with their
SHA-256), then a technical appendix (statuses, requests against the rate limit).

One self-contained file: inline CSS and inline SVG, no script, no external asset, and a
Content-Security-Policy that forbids loading any; every value from the data is HTML-escaped.
Certificate links are relative to where the page is written (they work there, and when the
folder moves with it); the page also names the certificates' folder by its absolute path.
Tables use a fixed layout and wrap long keys, addresses and hashes inside their cells, so
nothing scrolls sideways at 800 px; a print stylesheet makes the browser's "Save as PDF" a
clean document (A4, headers repeated, no recipient split across pages).
"""

from __future__ import annotations

import html
import math
import os
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batch.report_data import CampaignReport, CertificateFile, Recipient, local_time

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


def render_html(data: CampaignReport, *, links_from: Path) -> str:
    """The report page; certificate links are relative to `links_from`."""
    e = _e
    total = sum(data.counts.values())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lmbatch report: {e(data.campaign)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Campaign {e(data.campaign)}</h1>",
        f'<p class="meta">{e(data.channel)} campaign · report generated '
        f"{_when(data.generated_at, data.tz)} · every time is in {e(data.tz_name)}</p>",
        _cards(data, total),
        '<section id="campaign"><h2>The campaign</h2>',
        _facts(data, total),
        "</section>",
        f'<section id="not-reached"><h2>Not reached ({len(data.not_reached)})</h2>',
        _not_reached(data),
        "</section>",
        f'<section id="evidence"><h2>Evidence per recipient ({len(data.recipients)})</h2>',
        _evidence(data, links_from),
        "</section>",
        '<section id="appendix"><h2>Technical appendix</h2>',
        "<h3>Recipients per status</h3>",
        _status_chart(data.counts),
        "<h3>Send requests against the rate limit</h3>",
        _requests_chart(data.requests, data.limit, data.window, data.tz),
        "</section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;
max-width:1100px;padding:0 1rem;color:#212121;background:#fff;line-height:1.4}
h1{margin:0 0 .2rem;overflow-wrap:anywhere}
h2{margin-top:2rem;border-bottom:1px solid #e0e0e0;padding-bottom:.3rem}
h3{margin:1.2rem 0 .4rem;font-size:1rem}
.meta,.note{color:#616161}.meta{margin-top:0}
.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #e0e0e0;border-radius:8px;padding:.6rem 1rem;flex:1 1 8rem}
.card b{display:block;font-size:1.4rem}.card span{color:#616161}
.card.warn b{color:#c62828}
dl.facts{display:grid;grid-template-columns:minmax(7rem,12rem) minmax(0,1fr);gap:.25rem 1rem;
margin:0}
dl.facts dt{color:#616161}dl.facts dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;vertical-align:top;overflow-wrap:anywhere}
th{background:#f5f5f5;font-weight:600}
tbody{border-bottom:1px solid #e0e0e0}
td small,.key{color:#616161}
.name{font-weight:600}
.t{white-space:nowrap}
td.status{font-weight:600}
tr.files td{padding-top:0;font-size:.8rem;color:#424242}
code,.sha{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:.78rem}
.sha{word-break:break-all}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
svg{max-width:100%;height:auto}
svg text{font-family:inherit;font-size:12px;fill:#424242}
@page{size:A4;margin:14mm 12mm}
@media print{
body{max-width:none;margin:0;padding:0;font-size:9.5pt}
h2{break-after:avoid}section{break-inside:auto}
thead{display:table-header-group}tbody,tr,.card{break-inside:avoid}
a{color:inherit;text-decoration:none}
th{background:#eee;-webkit-print-color-adjust:exact;print-color-adjust:exact}
#appendix{break-before:page}
}
"""


def _cards(data: CampaignReport, total: int) -> str:
    if data.rate is not None:
        rate = f"{data.rate:.1%}"
    elif data.sent:
        rate = "not tracked yet"
    else:
        rate = "nothing sent yet"
    cards = [
        ("", str(total), "recipients"),
        ("", str(data.sent), "sent"),
        ("", rate, data.rate_label),
        ("warn" if data.not_reached else "", str(len(data.not_reached)), "not reached"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {c}"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for c, v, k in cards
        )
        + "</div>"
    )


def _facts(data: CampaignReport, total: int) -> str:
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(data.counts.items(), key=lambda kv: -kv[1]))
    if data.credits is None:
        credits = "not reported by the API for this channel"
    else:
        credits = f"{data.credits} {data.credit_unit} credit(s)"
    rows: list[tuple[str, str]] = [
        ("job file", _e(data.job_file)),
        ("channel", _e(data.channel)),
        *((_e(k), _e(v)) for k, v in data.facts),
        ("recipients", _e(f"{total}" + (f" ({statuses})" if statuses else ""))),
        ("first send", _when(data.first_send, data.tz) or "none yet"),
        ("last send", _when(data.last_send, data.tz) or "none yet"),
        ("credits used", _e(credits)),
        ("time zone", _e(data.tz_name)),
        ("certificates", f"<code>{_e(data.certificates_folder)}</code>"),
        ("generated at", _when(data.generated_at, data.tz)),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="facts">{items}</dl>'


def _who(r: Recipient) -> str:
    name = f'<span class="name">{_e(r.name)}</span><br>' if r.name else ""
    return (
        f'{name}<span class="addr">{_e(r.address)}</span><br><small class="key">{_e(r.key)}</small>'
    )


def _not_reached(data: CampaignReport) -> str:
    rows = data.not_reached
    if not rows:
        return '<p class="note">Everyone sent to was reached or is on the way.</p>'
    out = [
        '<table id="not-reached-table"><colgroup><col style="width:36%"><col style="width:16%">'
        "<col></colgroup><thead><tr><th>recipient</th><th>status</th><th>reason</th></tr>"
        "</thead>"
    ]
    for r in rows[:_MAX_TABLE_ROWS]:
        out.append(
            f'<tbody><tr data-key="{_e(r.key)}"><td>{_who(r)}</td>'
            f'<td class="status">{_e(r.status)}</td><td class="reason">{_e(r.reason)}</td></tr>'
            "</tbody>"
        )
    out.append("</table>")
    if len(rows) > _MAX_TABLE_ROWS:
        out.append(f'<p class="note">… and {len(rows) - _MAX_TABLE_ROWS} more.</p>')
    return "".join(out)


def _evidence(data: CampaignReport, links_from: Path) -> str:
    folder = (
        f'<p class="note">Certificates are in <code>{_e(data.certificates_folder)}</code>; '
        "the links below open them from there while this page stays next to that folder. "
        "Each file's SHA-256 is computed from its bytes when the report is written.</p>"
    )
    if not data.recipients:
        return '<p class="note">Nothing recorded yet.</p>'
    names = ["sent", *(t.removesuffix("_at") for t in data.evidence_times)]
    width = (100 - 34 - 13) / len(names)
    cols = '<col style="width:34%"><col style="width:13%">' + "".join(
        f'<col style="width:{width:.1f}%">' for _ in names
    )
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    out = [
        folder,
        f'<table id="evidence-table"><colgroup>{cols}</colgroup><thead><tr><th>recipient</th>'
        f"<th>status</th>{head}</tr></thead>",
    ]
    for r in data.recipients[:_MAX_TABLE_ROWS]:
        times = [r.sent_at, *(r.evidence.times.get(t) for t in data.evidence_times)]
        cells = "".join(f"<td>{_when(t, data.tz)}</td>" for t in times)
        out.append(
            f'<tbody><tr data-key="{_e(r.key)}"><td>{_who(r)}</td>'
            f'<td class="status">{_e(r.status)}</td>{cells}</tr>'
        )
        extra = _files(r.documents + r.certificates, links_from) + [
            f"{_e(k)}: {_e(v)}" for k, v in r.evidence.notes.items()
        ]
        if extra:
            out.append(
                f'<tr class="files"><td colspan="{len(names) + 2}">{"<br>".join(extra)}</td></tr>'
            )
        out.append("</tbody>")
    out.append("</table>")
    if len(data.recipients) > _MAX_TABLE_ROWS:
        out.append(f'<p class="note">… and {len(data.recipients) - _MAX_TABLE_ROWS} more.</p>')
    return "".join(out)


def _files(files: list[CertificateFile], links_from: Path) -> list[str]:
    out = []
    for f in files:
        what = "document" if f.kind == "document" else f"{f.kind} certificate"
        if f.kind == "document" and not f.sha256:
            out.append(f"document {_e(f.path.name)}: not on disk")
            continue
        if f.kind == "document":  # api_sha256 holds what the ledger recorded when it was sent
            check = (
                ' <span class="ok">= as sent</span>'
                if f.matches
                else f' <span class="bad">differs from the one sent ({_e(f.api_sha256)})</span>'
            )
        elif f.matches is True:
            check = ' <span class="ok">= the API\'s hash</span>'
        elif f.matches is False:
            check = f' <span class="bad">differs from the API\'s {_e(f.api_sha256)}</span>'
        else:
            check = ""
        out.append(
            f'{_e(what)} <a href="{_e(_href(f.path, links_from))}">'
            f'{_e(f.path.name)}</a> SHA-256 <span class="sha">{_e(f.sha256)}</span>{check}'
        )
    return out


def _when(at: datetime | None, tz: tzinfo) -> str:
    """A local time whose date and time each stay on one line (a narrow cell breaks between)."""
    text = local_time(at, tz)
    if not text:
        return ""
    day, clock = text.split(" ", 1)
    return f'<span class="t">{_e(day)}</span> <span class="t">{_e(clock)}</span>'


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


def _requests_chart(requests: list[datetime], limit: int, window: float, tz: tzinfo) -> str:
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
        f'<text x="{left}" y="{plot_h + 35}">{_e(local_time(start, tz))}</text>',
        f'<text x="{left + plot_w}" y="{plot_h + 35}" text-anchor="end">'
        f"{_e(local_time(end, tz))}</text>",
        f'<text x="{left}" y="{plot_h + 52}">{len(requests)} send requests, one bar per '
        f"{_e(unit)}; {over} bar(s) above the limit</text>",
        "</svg>",
    ]
    return "".join(out)


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
