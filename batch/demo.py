"""`make demo`: an example campaign sent to an in-process sandbox, start to finish."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from batch.jobfile import Job, load_job
from batch.progress import RichReporter
from batch.runner import RunOptions, RunSummary, run
from batch.sandbox import SandboxConfig, running_sandbox

DEMO_RATE = (10, 1.0)  # the real limit is 10 per 60 s; the demo scales the window down


def demo_job(job_path: Path) -> Job:
    """The job, with its output in a fresh output/demo-<time>/ folder.

    A demo never writes into a real campaign's ledger: that ledger may record real sends.
    """
    job = load_job(job_path)
    folder = job.output_dir.parent / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    return dataclasses.replace(job, spec=job.spec.model_copy(update={"output": str(folder)}))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(job_path: Path) -> RunSummary:
    """Start a sandbox, point the job at it, send, and return the summary."""
    limit, window = DEMO_RATE
    config = SandboxConfig(rate_limit=limit, rate_window=window, delivered_after=1, read_after=3)
    job = demo_job(job_path)
    with (
        running_sandbox(config) as sandbox,
        _environment(
            {"LEGALLYMAIL_BASE_URL": sandbox.base_url, job.spec.api.token_env: sandbox.token}
        ),
    ):
        return run(job, RunOptions(window_seconds=window), reporter=RichReporter())
