"""Documents rendered per second: the one-page Spanish demand letter, 1 and 2 processes.

    python bench/documents.py [--rows 1000] [--workers 1,2] [--json]

Renders `templates/letters/demand.html` (A4, its stylesheet, embedded DejaVu fonts) for
`--rows` generated rows with `batch.documents.render_many`, storing each PDF as `validate`
will, once per worker count into a fresh folder; then runs the last count again over the
stored files, which only checks their hashes (a second `validate` or the `run` after it).
Then `validate` itself (batch.runner.validate: the parallel scan, every row's e-mail and
letter) on a `--rows` job attaching that letter, fresh and again, next to the time the
campaign takes to send at the API's limit (10 requests a minute; one request per row, as
every letter differs). Times are wall clock, the process pool's start included.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from batch.documents import DocumentRenderer, DocumentTask, render_many  # noqa: E402
from batch.jobfile import template_dirs  # noqa: E402
from batch.templating import make_environments  # noqa: E402

TEMPLATE = "letters/demand.html"


def renderer() -> DocumentRenderer:
    """The project's HTML environment over the example jobs' templates (pickles for the pool)."""
    _, html = make_environments(REPO / "jobs")
    return DocumentRenderer(html, roots=template_dirs(REPO / "jobs"))


def tasks(rows: int) -> list[DocumentTask]:
    """`rows` demand letters with distinct names and amounts."""
    out = []
    for i in range(1, rows + 1):
        key = f"C-{i:06d}"
        row = {"id": key, "name": f"Cliente Número {i}", "amount": f"{100 + i * 7.31:.2f}"}
        row["due"] = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}"
        out.append(DocumentTask(i, key, "document", TEMPLATE, f"Requerimiento {key}.pdf", row))
    return out


def measure(rows: int, workers: int, folder: Path) -> dict[str, Any]:
    """Render `rows` documents into `folder` with `workers` processes; figures as a dict."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    size = reused = errors = 0
    for result in render_many(
        tasks(rows),
        make_renderer=functools.partial(renderer),
        output_dir=folder,
        workers=workers,
    ):
        if result.document is None:
            errors += 1
            continue
        size += result.document.size
        reused += result.document.reused
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return {
        "rows": rows,
        "workers": workers,
        "seconds": round(seconds, 2),
        "docs_per_second": round(rows / seconds, 1),
        "cpu_ms_per_doc": round(cpu * 1000 / rows, 1),
        "mean_kb": round(size / max(rows - errors, 1) / 1024, 1),
        "reused": reused,
        "errors": errors,
    }


JOB = """campaign: bench-documents
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message:
  subject: "Requerimiento {{ id }}"
  html: letters/demand-email.html
  attachments: [{template: letters/demand.html, name: "Requerimiento {{ id }}.pdf"}]
output: out
"""


def measure_validate(rows: int, folder: Path) -> list[dict[str, Any]]:
    """`validate` of a `rows`-row job attaching a generated letter: fresh, then stored."""
    from batch.jobfile import load_job
    from batch.runner import validate

    jobs = folder / "jobs"
    jobs.mkdir(parents=True)
    shutil.copytree(REPO / "templates", folder / "templates")
    lines = ["id,name,email,amount,due"] + [
        f"C-{t.row:06d},{t.variables['name']},c{t.row}@example.com,"
        f"{t.variables['amount']},{t.variables['due']}"
        for t in tasks(rows)
    ]
    (jobs / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (jobs / "job.yaml").write_text(JOB, encoding="utf-8")
    job = load_job(jobs / "job.yaml")
    out = []
    for label in ("validate, fresh", "validate, documents stored"):
        started = time.perf_counter()
        _, scanned = validate(job)
        seconds = time.perf_counter() - started
        limits = job.spec.limits
        requests = scanned.ok["content_hash"].n_unique()
        out.append(
            {
                "pass": label,
                "rows": rows,
                "workers": os.cpu_count() or 1,
                "seconds": round(seconds, 2),
                "docs_per_second": round(rows / seconds, 1),
                "errors": len(scanned.errors),
                "requests": requests,
                "sending_seconds": round(
                    requests / limits.requests_per_window * limits.window_seconds
                ),
            }
        )
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers, once joined).

    The machine is shared: wall-clock rates move with its load, CPU per document does not.
    """
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Print documents per second for each worker count, then for a pass over stored files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    figures = []
    with tempfile.TemporaryDirectory(prefix="lmbatch-bench-docs-") as tmp:
        for workers in counts:
            figures.append(measure(args.rows, workers, Path(tmp) / f"w{workers}"))
        again = measure(args.rows, counts[-1], Path(tmp) / f"w{counts[-1]}")
        figures.append(again | {"pass": "stored (hash check only)"})
        checks = measure_validate(args.rows, Path(tmp) / "validate")
    for figure in figures + checks:
        if args.json:
            print(json.dumps(figure))
            continue
        if "sending_seconds" in figure:
            print(
                f"{figure['pass']}: {figure['rows']} rows, {figure['workers']} process(es): "
                f"{figure['seconds']} s, {figure['docs_per_second']} documents/s "
                f"({figure['errors']} errors); sending them at the API's limit: "
                f"{figure['requests']} requests, {figure['sending_seconds'] / 60:.0f} min"
            )
            continue
        label = figure.get("pass", "fresh render")
        print(
            f"{figure['rows']} one-page documents, {figure['workers']} process(es), {label}: "
            f"{figure['seconds']} s, {figure['docs_per_second']} documents/s, "
            f"{figure['cpu_ms_per_doc']} ms CPU each ({figure['mean_kb']} KB, "
            f"{figure['errors']} errors)"
        )
    if not args.json:
        fresh = checks[0]
        print(
            f"Closing note: validate renders every document in {fresh['seconds']} s, once, "
            f"before the first send; sending takes {fresh['sending_seconds'] / 60:.0f} min at "
            f"10 requests a minute, {fresh['sending_seconds'] / max(fresh['seconds'], 0.01):.0f}"
            "x longer, and run re-renders nothing that did not change. Document generation is "
            "never what the user waits for, beyond validate's first pass."
        )


if __name__ == "__main__":
    main()
