"""Helpers shared by several test files (end-to-end campaigns, waits, child processes).

Test modules import from here, never from one another: a test file is free to change its own
helpers without breaking another suite.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
from click.testing import CliRunner

from batch.cli import main
from batch.errors import EXIT_OK, EXIT_PROBLEMS
from batch.jobfile import load_job
from batch.ledger import read_ledger
from batch.sandbox import RunningSandbox, SandboxConfig

WINDOW = 0.5  # 10 requests per half second: the real limit, scaled 120×
REPO = Path(__file__).resolve().parent.parent
PDF = REPO / "jobs" / "data" / "terms.pdf"
DEADLINE = 60.0  # seconds any one wait for a child process may take before a test gives up


# --- waiting ------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` (another process or thread is working) until true, or fail naming it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def recipients_accepted(sandbox: RunningSandbox) -> list[str]:
    """Recipients the sandbox accepted, oldest first."""
    return [str(entry["recipient"]) for entry in sandbox.state.log()]


# --- campaigns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One row of a test campaign and what the sandbox must end up holding for it."""

    key: str
    address: str  # as the sandbox records it: e-mail, E.164 phone, or signer e-mail
    subject: str  # e-mail subject, SMS text or signature document name
    fails: bool = False  # an e-mail address the sandbox rejects (`fail*`): status failed


@dataclass
class Campaign:
    """A job file on disk and the recipients it must reach."""

    job_path: Path
    channel: str
    recipients: list[Recipient] = field(default_factory=list)

    @property
    def by_key(self) -> dict[str, Recipient]:
        """The recipients by dataset key."""
        return {r.key: r for r in self.recipients}


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _job_text(campaign: str, channel: str, body: str, *, timeout: float, attempts: int) -> str:
    return f"""campaign: {campaign}
channel: {channel}
dataset: {{path: people.csv, key: id}}
{body}
api: {{timeout_seconds: {timeout}}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
retry: {{attempts: {attempts}, max_backoff_seconds: 0.1}}
output: out
"""


def email_campaign(
    folder: Path,
    *,
    personal: int,
    grouped: int,
    seed: int,
    name: str = "mail",
    timeout: float = 5.0,
    attempts: int = 5,
) -> Campaign:
    """`personal` one-off messages and `grouped` recipients in groups of 2..14 identical ones.

    Groups above 10 are split into two requests of the same subject, which reconciliation
    must tell apart by their recipient lists. Two addresses are `fail*` (rejected by the
    sandbox), one personal and one inside a group.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    topics: list[str] = []
    group_no = 0
    while len(topics) < grouped:
        size = min(rng.randint(2, 14), grouped - len(topics))
        topics += [f"Group {name} {group_no}"] * size
        group_no += 1
    topics += [""] * personal
    rng.shuffle(topics)  # groups interleave with personal messages, as in real data
    failing = {topics.index(""), next(i for i, t in enumerate(topics) if t)} if grouped else set()
    rows, recipients = [], []
    for i, topic in enumerate(topics):
        key = f"K-{i:04d}"
        local = f"fail-{name}{i}" if i in failing else f"{name}{i}"
        subject = topic or f"Personal {name} {key}"
        greeting = f"Notice for {topic}" if topic else f"Dear person {i} ({key})"
        address = f"{local}@example.com"
        rows.append({"id": key, "email": address, "subject": subject, "greeting": greeting})
        recipients.append(Recipient(key, address, subject, fails=local.startswith("fail")))
    _write_csv(folder / "people.csv", rows)
    (folder / "notice.html").write_text("<p>{{ greeting }}</p>", encoding="utf-8")
    body = (
        'recipient: {email: "{{ email }}"}\nmessage: {subject: "{{ subject }}", html: notice.html}'
    )
    job = folder / "job.yaml"
    job.write_text(
        _job_text(name, "email", body, timeout=timeout, attempts=attempts), encoding="utf-8"
    )
    return Campaign(job, "email", recipients)


def sms_campaign(
    folder: Path, *, n: int, name: str = "sms", timeout: float = 5.0, attempts: int = 5
) -> Campaign:
    """`n` certified SMS to Spanish mobiles written without +34 (default_region ES)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, recipients = [], []
    for i in range(n):
        key = f"S-{i:04d}"
        phone = f"6123{i:05d}" if i != 4 else "612340000"  # ends in 0000: fails at tracking
        text = f"Hola {i} su recibo {key} vence pronto."
        rows.append({"id": key, "phone": phone, "text": text})
        recipients.append(Recipient(key, f"+34{phone}", text))
    _write_csv(folder / "people.csv", rows)
    body = 'recipient: {phone: "{{ phone }}", default_region: ES}\nmessage: {text: "{{ text }}"}'
    job = folder / "job.yaml"
    job.write_text(_job_text(name, "sms", body, timeout=timeout, attempts=attempts), "utf-8")
    return Campaign(job, "sms", recipients)


def signature_campaign(
    folder: Path, *, n: int, name: str = "sign", timeout: float = 5.0, attempts: int = 5
) -> Campaign:
    """`n` signature requests, one signer each, the same PDF under a per-row name."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PDF, folder / "terms.pdf")
    rows, recipients = [], []
    for i in range(n):
        key = f"G-{i:04d}"
        address = f"signer{i}@example.com"
        rows.append({"id": key, "name": f"Signer {i}", "email": address})
        recipients.append(Recipient(key, address, f"Contract {key}.pdf"))
    _write_csv(folder / "people.csv", rows)
    body = (
        'signers: [{name: "{{ name }}", email: "{{ email }}"}]\n'
        'document: {path: terms.pdf, name: "Contract {{ id }}.pdf"}\n'
        "language: en"
    )
    job = folder / "job.yaml"
    job.write_text(_job_text(name, "signature", body, timeout=timeout, attempts=attempts), "utf-8")
    return Campaign(job, "signature", recipients)


# --- checks -------------------------------------------------------------------------------


def ledger_of(campaign: Campaign) -> pl.DataFrame:
    """The campaign's ledger as `lmbatch status` would read it."""
    return read_ledger(load_job(campaign.job_path).output_dir)


def accepted(sandbox: RunningSandbox, campaign: Campaign) -> list[dict[str, object]]:
    """What the sandbox accepted for this campaign (one entry per recipient or signer)."""
    subjects = {r.subject for r in campaign.recipients}
    log = [e for e in sandbox.state.log() if e["channel"] == campaign.channel]
    if campaign.channel == "sms":
        return [e for e in log if e["message"] in subjects]
    return [e for e in log if e["subject"] in subjects]


def assert_exactly_once(sandbox: RunningSandbox, campaign: Campaign) -> pl.DataFrame:
    """Nobody twice, nobody missing, each with its own message, ids equal to the sandbox's."""
    log = accepted(sandbox, campaign)
    times = Counter(str(e["recipient"]).lower() for e in log)
    twice = sorted(a for a, n in times.items() if n > 1)
    assert not twice, f"{len(twice)} recipient(s) sent more than once: {twice[:5]}"
    wanted = {r.address.lower(): r for r in campaign.recipients}
    lost = sorted(set(wanted) - set(times))
    assert not lost, f"{len(lost)} recipient(s) never sent: {lost[:5]}"
    assert set(times) == set(wanted), "the sandbox holds sends this campaign never asked for"
    by_address = {str(e["recipient"]).lower(): e for e in log}
    ledger = ledger_of(campaign)
    assert sorted(ledger["key"].to_list()) == sorted(r.key for r in campaign.recipients)
    for row in ledger.iter_rows(named=True):
        recipient = campaign.by_key[row["key"]]
        entry = by_address[recipient.address.lower()]
        subject = entry["message"] if campaign.channel == "sms" else entry["subject"]
        assert subject == recipient.subject, f"{row['key']} got another row's message"
        expected = "failed" if recipient.fails else "sent"
        assert row["status"] == expected, f"{row['key']}: {row['status']} ({row['error_details']})"
        assert row["tracking_id"] == entry["tracking_id"], f"{row['key']}: tracking id differs"
        if campaign.channel == "email":
            assert row["parent_tracking_id"] == entry["parent_tracking_id"]
    return ledger


def figures(label: str, **values: object) -> None:
    """One line of measurements, shown with `pytest -s` (and in the report)."""
    print(f"\nFIGURES {label}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def fault_sandbox(**overrides: Any) -> SandboxConfig:
    """A sandbox scaled to WINDOW, with fast status progression."""
    config = SandboxConfig(
        rate_limit=10,
        rate_window=WINDOW,
        delivered_after=0.2,
        read_after=0.4,
        slow_seconds=0.6,
        burst_length=2,
    )
    return replace(config, **overrides)


def in_doubt_keys(campaign: Campaign) -> list[str]:
    """The keys the ledger holds in doubt."""
    return sorted(ledger_of(campaign).filter(pl.col("status") == "in_doubt")["key"].to_list())


def resolve_by_hand(sandbox: RunningSandbox, campaign: Campaign, keys: list[str]) -> Counter[str]:
    """Do what the operator does: look each key up in the panel, then `lmbatch resolve` it."""
    log = {str(e["recipient"]).lower(): e for e in accepted(sandbox, campaign)}
    verdicts: Counter[str] = Counter()
    for key in keys:
        entry = log.get(campaign.by_key[key].address.lower())
        args = ["resolve", str(campaign.job_path), key]
        args += ["--sent", "--tracking-id", str(entry["tracking_id"])] if entry else ["--not-sent"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "1 row(s) recorded as" in result.output
        verdicts["sent" if entry else "not-sent"] += 1
    return verdicts


# --- child processes ----------------------------------------------------------------------


def child_env(sandbox: RunningSandbox, state_dir: Path) -> dict[str, str]:
    """The child's environment: the sandbox's URL and token, a limiter state of its own."""
    env = dict(os.environ)
    env.update(
        LEGALLYMAIL_BASE_URL=sandbox.base_url,
        LEGALLYMAIL_TOKEN=sandbox.token,
        LMBATCH_STATE_DIR=str(state_dir),
    )
    return env


def start_run(campaign: Campaign, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """`python -m batch run JOB` in the background, its output in `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    number = len(list(logs.iterdir()))
    with open(logs / f"run-{number}.out", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "batch", "run", str(campaign.job_path)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def done_code(campaign: Campaign) -> int:
    """The exit code of a run that finished `campaign`: 5 when some recipient was refused."""
    return EXIT_PROBLEMS if any(r.fails for r in campaign.recipients) else EXIT_OK


class Unlimited:
    """A rate limiter that never waits: for tests about answers, not pacing."""

    requests = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        yield

    def penalize(self) -> None:
        return None

    def next_free_in(self) -> float:
        return 0.0

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        yield

    def used(self) -> int:
        return 0
