"""`lmbatch rehearse`: a whole campaign (run, track, certificates, report) against an
in-process sandbox, with time compressed, before a credit is spent.

The job is the job as written (its dataset, templates, grouping, limits and retry policy),
with three changes: its output goes to a fresh `<output>/<campaign>-rehearsal-<time>/` folder
(a rehearsal must never write into a real campaign's ledger, which may record real sends);
every wait is `TIME_SCALE` times shorter (the job's rate window, and the sandbox's delays
to "delivered" and "read"); and the send window of a schedule is not applied (a rehearsal
runs now, whatever the hour). The sandbox enforces the job's own limits, scaled, so a job
that would trip the real rate limit trips this one too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from batch.certificates import FOLDER, CertificateSummary, download_certificates
from batch.connect import build_client
from batch.jobfile import load_job
from batch.jobmodel import Job
from batch.progress import NullReporter, Reporter
from batch.report import write_report
from batch.runner import RunOptions, RunSummary, run
from batch.sandbox import SandboxConfig, running_sandbox
from batch.settings import Settings
from batch.timeutil import utcnow
from batch.track import track
from batch.tracker import TrackSummary

TIME_SCALE = 30.0  # 10 requests per 60 s become 10 per 2 s
# The sandbox's delays to "delivered" and "read", before scaling: a brisk real recipient.
DELIVERED_AFTER, READ_AFTER = 30.0, 90.0


@dataclass(frozen=True)
class Rehearsal:
    """Where a rehearsal wrote its campaign, and what each stage said."""

    folder: Path  # the rehearsal's campaign folder (ledger, certificates, report)
    report: Path
    run: RunSummary
    tracked: TrackSummary
    certificates: CertificateSummary
    notes: tuple[str, ...] = ()  # what differs from the real campaign, for the operator
    stopped: bool = False  # interrupted (Ctrl-C): the stages after it were left out


def rehearsal_job(job: Job, stamp: str | None = None) -> tuple[Job, list[str]]:
    """The job pointed at a fresh rehearsal folder, without its send window; and notes."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    folder = job.output_dir.parent / f"{job.campaign}-rehearsal-{stamp}"
    update: dict[str, object] = {"output": str(folder)}
    notes = []
    schedule = job.spec.schedule
    if schedule is not None and schedule.window is not None:
        update["schedule"] = schedule.model_copy(update={"window": None})
        notes.append("the send window is not applied: a rehearsal sends now")
    return dataclasses.replace(job, spec=job.spec.model_copy(update=update)), notes


def rehearse(
    job: Job,
    settings: Settings | None = None,
    *,
    scale: float = TIME_SCALE,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> Rehearsal:
    """Run, track, download certificates and write the report, all against a sandbox.

    Only the limiter's state folder of `settings` is used (the sandbox's own URL is a
    separate budget); the environment is never read or changed. `say` hears each stage as
    it starts (the run has its own `reporter`).
    """
    tell = say or (lambda line: None)
    job, notes = rehearsal_job(job)
    stop = stop or threading.Event()
    limits = job.spec.limits
    window = limits.window_seconds / scale
    config = SandboxConfig(
        rate_limit=limits.requests_per_window,
        rate_window=window,
        max_recipients=limits.max_recipients_per_request,
        delivered_after=DELIVERED_AFTER / scale,
        read_after=READ_AFTER / scale,
    )
    with running_sandbox(config) as sandbox:
        pointed = dataclasses.replace(
            settings or Settings(), base_url=sandbox.base_url, token=sandbox.token
        )
        sent = run(
            job,
            RunOptions(window_seconds=window, skip_invalid=True),
            settings=pointed,
            reporter=reporter or NullReporter(),
            stop=stop,
        )
        if stop.is_set():  # interrupted: the report still shows how far it got
            tracked = TrackSummary(job.campaign)
            certificates = CertificateSummary(job.output_dir / FOLDER)
        else:
            with build_client(pointed, job, stop=stop, window_seconds=window) as api:
                # Long enough for every recipient to be read, at the scaled pace.
                wait = 2 * READ_AFTER / scale + 2 * window
                horizon = utcnow() + timedelta(seconds=wait)
                tell(f"tracking delivery and reading (at most {wait:.0f} s)")
                tracked = track(
                    job,
                    client=api,
                    watch=True,
                    until=horizon,
                    interval=READ_AFTER / scale / 2,
                    stop=stop,
                )
                tell("downloading certificates")
                certificates = download_certificates(job, client=api)
    tell("writing the report")
    report = write_report(job)
    return Rehearsal(
        job.output_dir, report, sent, tracked, certificates, tuple(notes), stop.is_set()
    )


def rehearse_file(
    job_path: Path,
    settings: Settings | None = None,
    *,
    period: str | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> Rehearsal:
    """`rehearse` for a job file."""
    job = load_job(job_path, period=period)
    return rehearse(job, settings, reporter=reporter, stop=stop, say=say)
