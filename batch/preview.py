"""`lmbatch preview`: the rendered messages as pages to browse, with an index."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

import polars as pl

from batch.attachments import DOCUMENTS
from batch.channels import channel_for
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


def write_preview(job: Job, frame: pl.DataFrame, out_dir: Path, *, limit: int = 200) -> Path:
    """Write one HTML page per message (first `limit` rows) and an index; return the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(job)
    entries: list[str] = []
    for i, row in enumerate(with_meta(frame).head(limit).iter_rows(named=True), start=1):
        try:
            message = renderer.render(row)
        except RowProblems as err:
            problems = "".join(f"<li>{html.escape(str(e))}</li>" for e in err.errors)
            entries.append(
                f"<tr><td>{row['__row__']}</td><td colspan=3><ul>{problems}</ul></td></tr>"
            )
            continue
        page = f"{i:04d}-{_safe_name(message.key)}.html"
        write_atomic(out_dir / page, _message_page(job, message, out_dir).encode("utf-8"))
        subject = message.content.get("subject") or message.content.get("document_name") or ""
        entries.append(
            f'<tr><td>{message.row}</td><td><a href="{html.escape(page)}">'
            f"{html.escape(message.key)}</a></td><td>{html.escape(message.address)}</td>"
            f"<td>{html.escape(str(subject))}</td></tr>"
        )
    title = html.escape(f"{job.campaign}: preview of {len(entries)} message(s)")
    index = out_dir / "index.html"
    page = (
        f"{_HEAD}<title>{title}</title><h1>{title}</h1>"
        "<table border=1 cellpadding=4><tr><th>row</th><th>key</th><th>to</th>"
        f"<th>subject</th></tr>{''.join(entries)}</table>\n"
    )
    write_atomic(index, page.encode("utf-8"))
    return index


def _message_page(job: Job, message: Message, out_dir: Path) -> str:
    esc = html.escape
    parts = channel_for(job.spec).preview(message)
    head = [
        *parts.before,
        ("to", message.address),
        ("name", message.name),
        ("row", str(message.row)),
        *parts.after,
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in head)
    title = esc(f"{job.campaign}: {message.key}")
    page = f"{_HEAD}<title>{title}</title><table>{rows}</table>"
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
