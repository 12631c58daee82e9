"""Certificates: download each recipient's legal PDFs next to the ledger, verified and atomic.

Where: `<output>/<campaign>/certificates/<key>-<type>.pdf`, the type being the API's
certificate type (delivered, read), `sms`, or for signatures `acta` and `original` (each
channel's `certificate_kinds`, batch.channels). A key is
made safe for a file name (letters, digits, `.`, `_`, `-`; anything else becomes `_`); when
that changed it, 8 hex digits of its SHA-256 follow (`a_b~1f2e3d4c`) so two keys never share a
file.

Each file is written as `<name>.part`, fsync'd, then renamed, and the folder fsync'd: a crash
leaves at most a `.part`, which the next run overwrites. A file already present is kept when
its SHA-256 is the one the API reports (or when the API reports none: it was complete when it
was renamed); a wrong-hash file is downloaded again. A download whose SHA-256 differs from the
API's is an error for that file: reported, never kept. The API does not document range
requests, so a partial file is downloaded again whole (certificates are small).

The metadata comes from `lmbatch track` (the ledger's `certificates` column); the local paths,
relative to the campaign folder, go to `certificate_paths` as {type: path}.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch import errors
from batch.client import LegallyMailClient
from batch.connect import build_client_from_env as build_client
from batch.files import write_atomic
from batch.jobmodel import Job
from batch.ledger import Ledger, has_history
from batch.progress import NullReporter, Reporter
from batch.stats import StepStats

FOLDER = "certificates"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 100  # file systems allow 255 bytes; leave room for the suffixes


@dataclass
class CertificateSummary:
    """What a download pass did, file by file."""

    folder: Path
    downloaded: int = 0
    present: int = 0  # already there with the right hash
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # key, type, reason
    without_metadata: int = 0  # rows final or sent with no certificate known yet
    stopped: str | None = None  # why it ended early (Ctrl-C): what is not on disk is left

    @property
    def exit_code(self) -> int:
        """0; 3 when interrupted with files left; 1 when a file could not be had or verified."""
        if self.failures:
            return errors.EXIT_ERROR
        return errors.EXIT_PENDING if self.stopped else errors.EXIT_OK


def safe_name(key: str) -> str:
    """`key` as a file-name stem: safe characters only, unique per key."""
    clean = _UNSAFE.sub("_", key)[:_MAX_STEM]
    if clean != key or clean.startswith("."):
        clean = f"{clean.lstrip('.')}~{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    return clean


def certificate_file(key: str, kind: str) -> str:
    """The file name of `key`'s certificate of type `kind`."""
    return f"{safe_name(key)}-{_UNSAFE.sub('_', kind)}.pdf"


def download_certificates(
    job: Job,
    *,
    client: LegallyMailClient | None = None,
    stop: threading.Event | None = None,
    progress: Reporter | None = None,
) -> CertificateSummary:
    """Download every certificate the ledger knows of that is not on disk yet, verified.

    `stop` (Ctrl-C) ends it after the download in flight; `progress` shows each file.
    """
    stop = stop or threading.Event()
    shown = progress or NullReporter()
    out = job.output_dir
    folder = out / FOLDER
    summary = CertificateSummary(folder)
    if not has_history(out):
        raise errors.NothingSent(out, job.path)
    folder.mkdir(parents=True, exist_ok=True)
    own = client is None
    if client is None:
        client = build_client(job, stop=stop)
    limits = job.spec.limits
    limiter = getattr(client, "limiter", None)  # scripted clients in tests have none
    stats = StepStats(
        per_window=limits.requests_per_window,
        window=limits.window_seconds,
        next_free=limiter.next_free_in if limiter is not None else None,
        tz=job.tz,
        label="certificates",
        unit="files",
    )
    try:
        with Ledger.open(out) as ledger:
            rows = list(ledger.frame().iter_rows(named=True))
            stats.total = sum(_urls(r) for r in rows)
            shown.start(stats)
            for row in rows:
                if stop.is_set():
                    summary.stopped = "interrupted"
                    break
                try:
                    _row(client, ledger, row, out, summary)
                except errors.WorkPending as err:  # a wait cut short by Ctrl-C
                    summary.stopped = str(err)
                    break
                stats.done += _urls(row)
                stats.calls = summary.downloaded
                stats.detail = f"{summary.downloaded} downloaded, {summary.present} present"
                shown.update(stats)
    finally:
        shown.stop()
        if own:
            client.close()
    return summary


def _urls(row: dict[str, Any]) -> int:
    """How many certificate files the ledger row names (the display's steps)."""
    return sum(1 for c in _list(row.get("certificates")) if c.get("url"))


def _row(
    api: LegallyMailClient, ledger: Ledger, row: dict[str, Any], out: Path, s: CertificateSummary
) -> None:
    key = str(row["key"])
    certificates = _list(row.get("certificates"))
    if not certificates:
        if row.get("tracking_id"):
            s.without_metadata += 1
        return
    paths = dict(_dict(row.get("certificate_paths")))
    before = dict(paths)
    for certificate in certificates:
        kind = str(certificate.get("type") or "certificate")
        url = certificate.get("url")
        if not url:
            continue
        name = certificate_file(key, kind)
        target = out / FOLDER / name
        expected = certificate.get("file_hash")
        expected = str(expected).lower() if expected else None
        if _complete(target, expected):
            s.present += 1
        else:
            try:
                data = api.download(str(url))
            except errors.StopRun:
                raise
            except errors.ApiError as err:
                s.failures.append((key, kind, str(err)))
                paths.pop(kind, None)
                continue
            actual = hashlib.sha256(data).hexdigest()
            if expected and actual != expected:
                s.failures.append(
                    (key, kind, f"SHA-256 {actual} differs from the API's {expected}; not kept")
                )
                target.unlink(missing_ok=True)  # a wrong file must not pass for the proof
                paths.pop(kind, None)
                continue
            if not is_pdf(data):
                shown = data[:16].decode("ascii", "replace").encode("unicode_escape").decode()
                s.failures.append((key, kind, f"not a PDF (it starts {shown!r}); not kept"))
                paths.pop(kind, None)
                continue
            write_atomic(target, data, temp=target.with_name(target.name + ".part"))
            s.downloaded += 1
        paths[kind] = f"{FOLDER}/{name}"
    if paths != before:
        ledger.update(key, certificate_paths=json.dumps(paths, ensure_ascii=False, sort_keys=True))


def is_pdf(data: bytes) -> bool:
    """Whether `data` is a PDF by its magic bytes: `%PDF-` within the first 1,024 bytes, where
    readers look for it. A server answering an HTML error page with 200 is not a certificate."""
    return b"%PDF-" in data[:1024]


def _complete(path: Path, expected: str | None) -> bool:
    """Whether `path` is there and, when a hash is known, holds exactly those bytes."""
    if not path.is_file():
        return False
    if expected is None:
        with open(path, "rb") as fh:
            return is_pdf(fh.read(1024))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest() == expected


def _list(value: Any) -> list[dict[str, Any]]:
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return []
    return [c for c in loaded if isinstance(c, dict)] if isinstance(loaded, list) else []


def _dict(value: Any) -> dict[str, str]:
    try:
        loaded = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
