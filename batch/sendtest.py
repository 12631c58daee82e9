"""`lmbatch send-test`: one row's real message, sent once to the operator's own address.

The first look at a campaign as its recipients will see it, before anyone receives it. The
message is the row's (the first valid row unless a key is given), marked as a test where the
recipient sees it first: `[TEST] ` before an e-mail's subject, before an SMS's text; for a
signature request the given address replaces the signers. It is exactly one request, paced
by the host's limiter like every other, and recorded in `<output>/<campaign>/tests.jsonl`,
never in the ledger: the row is still to send.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from batch import errors
from batch.channels import channel_for
from batch.client import LegallyMailClient
from batch.dataset import read_dataset
from batch.jobmodel import Job
from batch.message import Message
from batch.render import render_keys, scan
from batch.timeutil import utcnow

TEST_MARK = "[TEST] "
TESTS_NAME = "tests.jsonl"


@dataclass(frozen=True)
class TestSend:
    """What `send_test` sent and where it recorded it."""

    key: str
    to: str
    subject: str  # the marked subject, text or document name: what the operator looks for
    tracking_id: str | None
    record: Path


def choose_row(job: Job, frame: pl.DataFrame, key: str | None) -> Message:
    """The row to send: `key`, else the first row that validates (errors name the row)."""
    result = scan(job, frame)
    if key is None:
        if not result.ok.height:
            raise errors.RowErrors(result.errors, source=job.spec.dataset.path)
        key = str(result.ok["key"][0])
    elif key not in set(result.ok["key"].cast(pl.String).to_list()):
        mine = [e for e in result.errors if e.key == key]
        if mine:
            raise errors.RowErrors(mine, source=job.spec.dataset.path)
        raise errors.DatasetError(
            f"key {key}: no such row in the dataset (after `where:`)",
            hint="give a key shown by `lmbatch preview`, or leave out --key for the first row",
        )
    return next(render_keys(job, frame, [key]))


def marked(content: dict[str, Any], to: str) -> tuple[dict[str, Any], str]:
    """The content marked as a test, and the line the operator will recognise it by.

    E-mail has a subject; SMS only a text; a signature request its signers, all replaced by
    the operator (their names kept, so the test shows who would sign).
    """
    out = dict(content)
    if "signers" in out:
        signers = [dict(s) for s in out["signers"]]
        for signer in signers:
            signer["email"] = to
            signer.pop("phone", None)  # a code sent to a stranger's phone is not a test
        out["signers"] = signers
        name = f"{TEST_MARK}{out.get('document_name', '')}"
        out["document_name"] = name
        return out, name
    if "subject" in out:
        out["subject"] = f"{TEST_MARK}{out['subject']}"
        return out, out["subject"]
    out["message"] = f"{TEST_MARK}{out['message']}"
    return out, out["message"]


def send_test(job: Job, to: str, *, client: LegallyMailClient, key: str | None = None) -> TestSend:
    """Send row `key`'s message (default: the first valid row) once to `to`, marked as a test."""
    channel = channel_for(job.spec)
    try:
        address = channel.normalize_address(to.strip(), job.spec.recipient.default_region)
    except ValueError as err:
        raise errors.InputError(
            f"--to {to}: {err}", hint="give your own address for this channel"
        ) from err
    message = choose_row(job, read_dataset(job), key)
    content, line = marked(message.content, address)
    payload = channel.payload(content, [address])
    record = job.output_dir / TESTS_NAME
    entry: dict[str, Any] = {"key": message.key, "to": address, "subject": line}
    try:
        data = channel.post(client, payload)
    except errors.ApiError as err:
        failed = {"outcome": "error", "error": str(err)}
        _append(record, {**entry, "at": utcnow().isoformat(), **failed})
        raise
    answer = data.get("tracking_id") or data.get("uuid") or (data.get("data") or {}).get("uuid")
    tracking = str(answer) if answer else None
    _append(record, {**entry, "at": utcnow().isoformat(), "outcome": "sent", "id": tracking})
    return TestSend(message.key, address, line, tracking, record)


def _append(path: Path, entry: dict[str, Any]) -> None:
    """One line per test send, flushed to disk: the evidence that it was only a test."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
