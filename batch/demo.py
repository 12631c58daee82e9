"""`make demo`: an example campaign sent to an in-process sandbox, start to finish."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from batch.jobfile import Job, load_job
from batch.progress import terminal_reporter
from batch.runner import RunOptions, RunSummary, run
from batch.sandbox import SandboxConfig, running_sandbox
from batch.settings import Settings

DEMO_RATE = (10, 1.0)  # the real limit is 10 per 60 s; the demo scales the window down


def demo_job(job_path: Path) -> Job:
    """The job, with its output in a fresh output/demo-<time>/ folder.

    A demo never writes into a real campaign's ledger: that ledger may record real sends.
    """
    job = load_job(job_path)
    folder = job.output_dir.parent / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    return dataclasses.replace(job, spec=job.spec.model_copy(update={"output": str(folder)}))


def run_demo(job_path: Path, settings: Settings | None = None) -> RunSummary:
    """Start a sandbox, point the job at it, send, and return the summary.

    The sandbox's URL and token replace those of `settings` (the limiter's state folder is
    kept, so a demo and a real run on one host still share its budget file).
    """
    limit, window = DEMO_RATE
    config = SandboxConfig(rate_limit=limit, rate_window=window, delivered_after=1, read_after=3)
    job = demo_job(job_path)
    with running_sandbox(config) as sandbox:
        pointed = dataclasses.replace(
            settings or Settings(), base_url=sandbox.base_url, token=sandbox.token
        )
        return run(
            job, RunOptions(window_seconds=window), settings=pointed, reporter=terminal_reporter()
        )
