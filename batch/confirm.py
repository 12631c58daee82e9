"""What a run is about to do, said before it spends anything (`lmbatch run` on a terminal).

The figures come from the same plan a dry run makes (the ledger and the dataset, no lock, no
send) plus one `GET /api/info` for the credits left, paced like any other request. The CLI
asks only on a terminal: without one (cron, a pipe) a run never waits for an answer nobody
will type.

`ask` reads the answer by polling stdin rather than blocking in `input()`: the dataset's
reader leaves worker threads behind, a Ctrl-C may be delivered to one of them, and a main
thread blocked in a read would not see it until Enter.
"""

from __future__ import annotations

import dataclasses
import select
import threading
from dataclasses import dataclass
from typing import TextIO

from batch import errors
from batch.cancel import cancellation
from batch.channels import channel_for
from batch.connect import build_client
from batch.jobmodel import Job
from batch.runner import RunOptions, run
from batch.settings import Settings


@dataclass(frozen=True)
class Outlook:
    """The run ahead: recipients, requests, credits and time."""

    campaign: str
    recipients: int
    requests: int
    eta_seconds: float
    credit_unit: str
    credits_needed: int | None  # None when the channel's credits are not counted (signatures)
    credits_left: int | None  # None when unknown (the API did not say, or not asked)

    @property
    def shared(self) -> int:
        """Recipients who share an envelope with another (grouping saved this many requests)."""
        return self.recipients - self.requests

    def lines(self) -> list[str]:
        """The outlook as a person reads it, one short line each (they fit in 80 columns)."""
        out = [
            f"campaign {self.campaign}:",  # a long name alone on its line: nothing wraps
            f"  {self.recipients} recipient(s) to send",
            f"  {self.requests} request(s)"
            + (f"; {self.shared} recipient(s) share an envelope" if self.shared > 0 else ""),
        ]
        if self.credits_needed is not None:
            left = "unknown" if self.credits_left is None else str(self.credits_left)
            out.append(f"  credits: {self.credits_needed} {self.credit_unit} needed, {left} left")
        minutes = self.eta_seconds / 60
        took = f"about {minutes:.0f} min" if minutes >= 1 else f"about {self.eta_seconds:.0f} s"
        out.append(f"  time at the rate limit: {took}")
        return out


def outlook(job: Job, options: RunOptions, settings: Settings) -> Outlook:
    """What `run(job, options)` would send, and what it would spend."""
    channel = channel_for(job.spec)
    if cancellation(job.output_dir) is not None:  # the run will send nothing: nothing to ask
        return Outlook(job.campaign, 0, 0, 0.0, channel.credit_unit, None, None)
    planned = run(job, dataclasses.replace(options, dry_run=True), settings=settings)
    stats = planned.stats
    left: int | None = None
    if stats.recipients and channel.checks_credits:
        try:
            with build_client(settings, job, stop=threading.Event()) as api:
                left = channel.remaining_credits(api.info())
        except errors.ApiError as err:
            if isinstance(err, errors.AuthError):
                raise  # the run itself would fail the same way: say so now
    return Outlook(
        job.campaign,
        stats.recipients,
        stats.requests_planned,
        stats.eta_seconds,
        channel.credit_unit,
        stats.recipients if channel.checks_credits else None,
        left,
    )


def ask(question: str, answers: TextIO, prompt: TextIO) -> bool:
    """Write `question [y/N]: ` to `prompt` and read a line from `answers`; True for y/yes.

    End of input is no. Ctrl-C raises KeyboardInterrupt within a fraction of a second.
    """
    prompt.write(f"{question} [y/N]: ")
    prompt.flush()
    while not select.select([answers], [], [], 0.2)[0]:
        pass  # a signal's handler runs between these polls
    return answers.readline().strip().lower() in ("y", "yes")
