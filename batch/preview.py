"""`lmbatch preview`: the rendered messages as pages to browse, with an index.

The index says how many messages the job holds and how many of them have errors, and when
it shows fewer than all, how many and how to see more: a preview that silently stops at
200 of 600 rows hides the 400th row's problem. Each page leads with what the recipient
sees first (the channel's fragment: subject and reply-to, text, or signers and document),
who sends, then the body. One stylesheet, inline, and no script.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

import polars as pl

from batch.attachments import DOCUMENTS
from batch.channels import channel_for
from batch.channels.base import sender
from batch.documents import document_path
from batch.files import write_atomic
from batch.jobmodel import Job
from batch.message import Message
from batch.render import Renderer, RowProblems, with_meta

# Preview pages show what templates and data made: nothing in them may run. A srcdoc iframe
# inherits this policy, on top of its own `sandbox`. Images and inline styles stay, as a mail
# client shows them.
CSP = (
    "default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-src 'self'; style-src 'unsafe-inline'; "
    "img-src data: https: http:; font-src data: https:"
)
_HEAD = (
    "<!doctype html><meta charset=utf-8>"
    f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
)

STYLE = """<style>
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;
color:#1c2733}
h1{font-size:1.3rem;margin:0 0 .3rem}p.counts{color:#44525f;margin:0 0 1rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #dde3e8}
thead th{background:#f2f5f7;font-weight:600}
table.head th{width:9rem;color:#44525f;font-weight:600}
td.text{white-space:pre-wrap;max-width:32rem}tr.error td{background:#fff3f2}
ul.errors{margin:0;padding-left:1.1rem;color:#a4161a}
a{color:#0b5cad}iframe{border:1px solid #dde3e8}
</style>"""


def write_preview(
    job: Job,
    frame: pl.DataFrame,
    out_dir: Path,
    *,
    limit: int = 200,
    errors_total: int | None = None,
) -> Path:
    """Write one HTML page per message (first `limit` rows) and an index; return the index.

    `errors_total` is the number of rows with errors in the whole dataset when the caller
    has checked them all (the CLI has); otherwise the count covers the rows shown.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    channel = channel_for(job.spec)
    renderer = Renderer(job)
    entries: list[str] = []
    label = ""
    shown_errors = 0
    for i, row in enumerate(with_meta(frame).head(limit).iter_rows(named=True), start=1):
        try:
            message = renderer.render(row)
        except RowProblems as err:
            shown_errors += 1
            problems = "".join(f"<li>{html.escape(str(e))}</li>" for e in err.errors)
            key = html.escape(str(row.get("__key__") or ""))
            entries.append(
                f'<tr class="error"><td>{row["__row__"]}</td><td>{key}</td>'
                f'<td colspan=3><ul class="errors">{problems}</ul></td></tr>'
            )
            continue
        page = f"{i:04d}-{_safe_name(message.key)}.html"
        write_atomic(out_dir / page, _message_page(job, message, out_dir).encode("utf-8"))
        label, value = channel.preview(message).summary
        entries.append(
            f'<tr><td>{message.row}</td><td><a href="{html.escape(page)}">'
            f"{html.escape(message.key)}</a></td><td>{html.escape(message.address)}</td>"
            f"<td>{html.escape(message.name)}</td>"
            f'<td class="text">{html.escape(value)}</td></tr>'
        )
    counts = html.escape(counts_line(frame.height, len(entries), errors_total, shown_errors))
    title = html.escape(f"{job.campaign}: preview")
    index = out_dir / "index.html"
    column = f"<th>{html.escape(label)}</th>" if label else "<th></th>"
    page = (
        f"{_HEAD}<title>{title}</title>{STYLE}"
        f'<h1>{title}</h1><p class="counts">{counts}</p>'
        "<table><thead><tr><th>row</th><th>key</th><th>to</th><th>name</th>"
        f"{column}</tr></thead><tbody>{''.join(entries)}</tbody></table>\n"
    )
    write_atomic(index, page.encode("utf-8"))
    return index


def counts_line(total: int, shown: int, errors_total: int | None, shown_errors: int) -> str:
    """'10 messages, 3 with errors', and 'showing 200 of 600: `--limit` shows more' when cut."""
    noun = "message" if total == 1 else "messages"
    if errors_total is not None:
        errors = f", {errors_total} with errors" if errors_total else ", none with errors"
    elif shown == total:
        errors = f", {shown_errors} with errors" if shown_errors else ", none with errors"
    else:
        errors = f" ({shown_errors} with errors among those shown)" if shown_errors else ""
    line = f"{total} {noun}{errors}"
    if shown < total:
        line += f"; showing {shown} of {total}: `--limit` shows more"
    return line


def _message_page(job: Job, message: Message, out_dir: Path) -> str:
    esc = html.escape
    parts = channel_for(job.spec).preview(message)
    head = [
        *parts.before,
        ("to", message.address),
        ("name", message.name),
        ("from", sender(job.spec)),
        ("row", str(message.row)),
        *parts.after,
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in head)
    title = esc(f"{job.campaign}: {message.key}")
    back = '<p><a href="index.html">← all messages</a></p>'
    page = (
        f"{_HEAD}<title>{title}</title>{STYLE}"
        f'{back}<h1>{title}</h1><table class="head">{rows}</table>'
    )
    return f"{page}{_documents(job, message, out_dir)}<hr>{parts.body}\n"


def _documents(job: Job, message: Message, out_dir: Path) -> str:
    """Links to the message's generated documents, as stored (and as `run` will send them)."""
    links = []
    for item in message.content.get(DOCUMENTS) or []:
        target = document_path(job.output_dir, message.key, str(item["name"]))
        href = quote(Path(os.path.relpath(target, out_dir.resolve())).as_posix())
        links.append(
            f'<li><a href="{html.escape(href)}">{html.escape(str(item["name"]))}</a> '
            f"<small>SHA-256 {html.escape(str(item['sha256']))}</small></li>"
        )
    return f"<p>generated documents:</p><ul>{''.join(links)}</ul>" if links else ""


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60] or "row"
