"""`lmbatch preview`: the rendered messages as pages to browse, with an index."""

from __future__ import annotations

import html
import re
from pathlib import Path

import polars as pl

from batch.files import write_atomic
from batch.jobfile import Job
from batch.render import Message, Renderer, RowProblems, with_meta


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
        write_atomic(out_dir / page, _message_page(job, message).encode("utf-8"))
        subject = message.content.get("subject") or message.content.get("document_name") or ""
        entries.append(
            f'<tr><td>{message.row}</td><td><a href="{html.escape(page)}">'
            f"{html.escape(message.key)}</a></td><td>{html.escape(message.address)}</td>"
            f"<td>{html.escape(str(subject))}</td></tr>"
        )
    title = html.escape(f"{job.campaign}: preview of {len(entries)} message(s)")
    index = out_dir / "index.html"
    page = (
        f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>"
        "<table border=1 cellpadding=4><tr><th>row</th><th>key</th><th>to</th>"
        f"<th>subject</th></tr>{''.join(entries)}</table>\n"
    )
    write_atomic(index, page.encode("utf-8"))
    return index


def _message_page(job: Job, message: Message) -> str:
    content = message.content
    esc = html.escape
    head = [("to", message.address), ("name", message.name), ("row", str(message.row))]
    if job.spec.channel == "email":
        head.insert(0, ("subject", content["subject"]))
        names = [a["filename"] for a in content.get("attachments", [])]
        head.append(("attachments", ", ".join(names) or "none"))
        # srcdoc isolates the body's markup and styles from the preview page around it.
        body = (
            f'<iframe style="width:100%;height:80vh" srcdoc="{esc(content["message"])}"></iframe>'
        )
    elif job.spec.channel == "sms":
        body = f"<pre>{esc(content['message'])}</pre><p>{len(content['message'])} characters</p>"
    else:
        signers = ", ".join(f"{s['name']} <{s['email']}>" for s in content["signers"])
        head += [("signers", signers), ("document", content["document_name"])]
        head.append(("language", content["language"]))
        body = ""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in head)
    title = esc(f"{job.campaign}: {message.key}")
    page = f"<!doctype html><meta charset=utf-8><title>{title}</title><table>{rows}</table>"
    return f"{page}<hr>{body}\n"


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:60] or "row"
