"""`make demo`: an example campaign sent to an in-process sandbox, start to finish."""

from __future__ import annotations

import os
from pathlib import Path

from batch.jobfile import load_job
from batch.progress import RichReporter
from batch.runner import RunOptions, RunSummary, run
from batch.sandbox import SandboxConfig, running_sandbox

DEMO_RATE = (10, 1.0)  # the real limit is 10 per 60 s; the demo scales the window down


def run_demo(job_path: Path) -> RunSummary:
    """Start a sandbox, point the job at it, send, and return the summary."""
    limit, window = DEMO_RATE
    config = SandboxConfig(rate_limit=limit, rate_window=window, delivered_after=1, read_after=3)
    with running_sandbox(config) as sandbox:
        job = load_job(job_path)
        saved = {k: os.environ.get(k) for k in ("LEGALLYMAIL_BASE_URL", job.spec.api.token_env)}
        os.environ["LEGALLYMAIL_BASE_URL"] = sandbox.base_url
        os.environ[job.spec.api.token_env] = sandbox.token
        try:
            return run(job, RunOptions(window_seconds=window), reporter=RichReporter())
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
