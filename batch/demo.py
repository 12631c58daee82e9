"""`make demo` / `lmbatch demo`: a rehearsal of the bundled example, start to finish.

The example (`jobs/notice.yaml`) is run, tracked, its certificates downloaded and its report
written against an in-process sandbox with time compressed (batch.rehearse): no account, no
credits, and a fresh folder beside the example's output, never the example's own ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batch.jobfile import load_job
from batch.progress import Reporter
from batch.rehearse import Rehearsal, rehearse
from batch.settings import Settings

EXAMPLE = Path("jobs/notice.yaml")


def run_demo(
    job_path: Path = EXAMPLE,
    settings: Settings | None = None,
    reporter: Reporter | None = None,
    *,
    say: Callable[[str], None] | None = None,
) -> Rehearsal:
    """Rehearse `job_path` (the bundled example by default) and return what it did.

    The sandbox's URL and token replace those of `settings` (the limiter's state folder is
    kept); the process's environment is neither read nor changed.
    """
    return rehearse(load_job(job_path), settings, reporter=reporter, say=say)
