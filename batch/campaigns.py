"""Which campaigns each job file opened: a campaign name that moves with the clock is caught.

The campaign name is the ledger's identity, and it may be a template. On an unscheduled job,
`campaign: notice-{{ today.strftime('%Y-%m') }}` renders differently on 1 December than on
30 November: a run stopped on the 30th and resumed on the 1st would open a new, empty
ledger and send again to everyone the first one reached.

Decision: lmbatch never switches ledgers silently, in either direction. Each output root
keeps a registry, `<output root>/.lmbatch/campaigns.json` (beside the ledgers' markers,
batch.ledger.history): per job file, the campaigns it opened and whether the last run of
each ended with nothing left ("done") or not ("open"). A run of an unscheduled job whose
campaign name is new while an earlier campaign of the same job file is still open is refused
(exit 2), naming that campaign and the two deliberate ways on:

- `--campaign NAME` runs (or shows, resolves…) the earlier campaign: it finishes its rows;
- `--new-campaign` opens the new ledger anyway (the earlier one stays as it is).

Scheduled jobs are exempt: their period is the campaign, and a new period is a new campaign
by design (an earlier period's leftovers are run with `--period`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from batch import errors
from batch.files import fsync_dir
from batch.jobmodel import Job
from batch.ledger import IN_DOUBT, PENDING, has_history, read_ledger

REGISTRY_NAME = "campaigns.json"
OPEN, DONE = "open", "done"
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")


def registry_path(job: Job) -> Path:
    """`<output root>/.lmbatch/campaigns.json`."""
    return job.output_dir.parent / ".lmbatch" / REGISTRY_NAME


def campaigns_of(job: Job) -> dict[str, str]:
    """The campaigns this job file opened under its output root, and their state."""
    return dict(_read(registry_path(job)).get("jobs", {}).get(_job_id(job), {}))


def unfinished_other(job: Job) -> str | None:
    """An earlier, unfinished campaign of this unscheduled job file, when `job`'s is new."""
    if job.spec.schedule is not None:
        return None
    known = campaigns_of(job)
    if job.campaign in known or has_history(job.output_dir):
        return None
    unfinished = [name for name, state in known.items() if state == OPEN]
    return unfinished[-1] if unfinished else None


def check_new_ledger(job: Job, *, allow_new: bool) -> None:
    """Refuse to open a new campaign of this job file while an earlier one is open."""
    name = None if allow_new else unfinished_other(job)
    if name is None:
        return
    left = _left(job.output_dir.parent / name)
    raise errors.InputError(
        f"campaign {name} of {job.path} is unfinished{left}, and the campaign name now renders "
        f"as {job.campaign}: a new ledger would send again to everyone {name} already reached",
        hint=f"finish it with `lmbatch run {job.path} --campaign {name}`; or, if a new campaign "
        "is what you want, run with --new-campaign (the unfinished one stays as it is)",
    )


def mark(job: Job, *, done: bool) -> None:
    """Record that this job file's campaign is open (a run started) or done (nothing left)."""
    path = registry_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        data = _read(path)
        jobs = data.setdefault("jobs", {})
        entry = jobs.setdefault(_job_id(job), {})
        state = DONE if done else OPEN
        if entry.get(job.campaign) == state:
            return
        entry[job.campaign] = state
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise errors.LedgerError(f"{path}: cannot record the campaign: {err}") from err


def pinned(job: Job, name: str) -> Job:
    """`job` aimed at its campaign `name` (`--campaign`): one it opened, under its output root."""
    if not name or _UNSAFE.search(name) or name in (".", ".."):
        raise errors.InputError(f"--campaign {name!r}: not a campaign name")
    chosen = replace(job, campaign=name)
    if name not in campaigns_of(job) and not has_history(chosen.output_dir):
        known = ", ".join(sorted(campaigns_of(job))) or "none recorded"
        raise errors.InputError(
            f"--campaign {name}: {job.path} has no such campaign under "
            f"{job.output_dir.parent} (its campaigns: {known})"
        )
    return chosen


def _job_id(job: Job) -> str:
    return str(job.path.resolve())


def _left(folder: Path) -> str:
    if not has_history(folder):
        return ""
    try:
        statuses = read_ledger(folder)["status"]
    except errors.BatchError:
        return " (its ledger cannot be read: see `lmbatch status`)"
    pending = int((statuses == PENDING).sum())
    doubt = int((statuses == IN_DOUBT).sum())
    return f" ({pending} pending, {doubt} in doubt)"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # none yet (or no output root: said later)
        return {}
    except (OSError, ValueError) as err:
        raise errors.LedgerError(
            f"{path}: cannot read the campaign registry: {err}",
            hint="restore it from a backup; it lists which campaigns each job file opened",
        ) from err
    if not isinstance(data, dict):
        return {}
    jobs = data.get("jobs")
    return {"jobs": jobs} if isinstance(jobs, dict) else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
