"""The world the channel end-to-end tests share: a sandbox, its clock, a copy of jobs/.

Each test copies `jobs/` (job files, data, contracts) into a temporary folder, scales the
rate window to one second and drives validate → run → track → certificates → status,
report and export. Statuses move when the test moves the sandbox's clock, never with sleeps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from batch.cli import main
from batch.jobfile import Job, load_job
from batch.ledger import read_ledger
from batch.sandbox import RunningSandbox, ShiftedClock

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SMS_JOB, SIGNATURE_JOB = "reminders-sms.yaml", "contracts.yaml"
DELIVERED, SIGNED = 100.0, 200.0  # sandbox seconds after a send: far beyond any test's runtime
SCALED = """
limits: {requests_per_window: 10, window_seconds: 1.0}
retry: {attempts: 4, max_backoff_seconds: 0.2}
"""


@dataclass
class World:
    """The sandbox, its clock, and a private copy of jobs/ scaled to a one-second window."""

    sandbox: RunningSandbox
    clock: ShiftedClock
    jobs: Path

    def job(self, name: str) -> Job:
        """Load a copied example job file."""
        return load_job(self.jobs / name)

    def edit_rows(self, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
        """Rewrite the copied customers.csv (an example job with bad or special rows)."""
        path = self.jobs / "data" / "customers.csv"
        change(pl.read_csv(path, infer_schema=False)).write_csv(path)

    def log(self, channel: str) -> list[dict[str, object]]:
        """What the sandbox accepted on this channel."""
        return [e for e in self.sandbox.state.log() if e["channel"] == channel]


def make_world(
    sandbox_factory: Callable[..., RunningSandbox],
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    tmp_path: Path,
) -> World:
    """A sandbox at 10 requests per second and the example jobs pointed at it.

    Each test module's `world` fixture calls this with conftest's sandbox fixtures.
    """
    clock = ShiftedClock()
    sandbox = sandbox_factory(
        rate_limit=10, rate_window=1.0, delivered_after=DELIVERED, read_after=SIGNED, clock=clock
    )
    jobs = tmp_path / "jobs"
    shutil.copytree(JOBS, jobs)
    # The generated documents' templates (contracts, letters) are found in ../templates.
    shutil.copytree(JOBS.parent / "templates", tmp_path / "templates")
    for name in (SMS_JOB, SIGNATURE_JOB):
        path = jobs / name
        path.write_text(path.read_text(encoding="utf-8") + SCALED, encoding="utf-8")
    use_sandbox(sandbox)
    return World(sandbox, clock, jobs)


def cli(*args: str) -> str:
    """Run `lmbatch ARGS` in-process; its output (the exit code must be 0)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def by_key(job: Job) -> dict[str, dict[str, object]]:
    """The ledger's rows by key."""
    return {str(r["key"]): r for r in read_ledger(job.output_dir).iter_rows(named=True)}


def with_signer_list(job_text: str, template: str) -> str:
    """The example signature job with its `signers:` block replaced by a `signer_list`."""
    start, end = job_text.index("signers:"), job_text.index("document:")
    return f"{job_text[:start]}signer_list: '{template}'\n{job_text[end:]}"


def with_ready_made_pdfs(world: World, keys: list[str]) -> Path:
    """The signature example sending ready-made PDFs (`document.path`), one per key given.

    Each is a copy of data/terms.pdf in data/contracts/; returns that folder.
    """
    path = world.jobs / SIGNATURE_JOB
    text = path.read_text(encoding="utf-8")
    start = text.index("document:")
    end = text.index("\n", start)
    line = 'document: {path: "data/contracts/{{ id }}.pdf", name: "Contract {{ id }}.pdf"}'
    path.write_text(text[:start] + line + text[end:], encoding="utf-8")
    folder = world.jobs / "data" / "contracts"
    folder.mkdir(exist_ok=True)
    for key in keys:
        shutil.copy(world.jobs / "data" / "terms.pdf", folder / f"{key}.pdf")
    return folder
