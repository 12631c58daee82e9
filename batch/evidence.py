"""The evidence bundle: one zip holding what was sent, the proof of it, and how to check both.

`<campaign folder>/evidence-<campaign>.zip` unpacks to one folder `evidence-<campaign>/`:

    manifest.csv        one row per recipient: key, name, address, status, tracking id; sent,
                        delivered, read and signed times in UTC and in the job's time zone;
                        each document's and certificate's SHA-256 and whether the API's hash
                        matched; what is missing for that recipient
    MISSING.txt         what the bundle lacks or cannot vouch for, recipient by recipient
                        (certificates not downloaded yet, rows in doubt, changed documents)
    documents/<key>/    the generated documents as sent
    certificates/       the certificates as downloaded
    report.html         the campaign report, when `lmbatch report` wrote one
    ledger.parquet      the ledger's state the bundle was made from
    inputs/             the job file and templates, under their paths relative to each other
    SHA256SUMS          the SHA-256 of every other file: `cd evidence-<campaign> &&
                        sha256sum -c SHA256SUMS` verifies them

The same ledger and files give the same bytes: entries are sorted, every entry has the date
1980-01-01 00:00 and permissions 0644, text is deflated and already-compressed files (PDF,
Parquet, images) are stored. A document whose SHA-256 differs from the one the ledger
recorded at send time is not the document as sent: it is left out and named in MISSING.txt.
Text cells a spreadsheet would run as a formula get a leading `'` in manifest.csv, as in
`lmbatch status --export`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import polars as pl

from batch.certificates import FOLDER as CERTIFICATES
from batch.certificates import certificate_file, safe_name
from batch.channels import channel_for
from batch.documents import FOLDER as DOCUMENTS
from batch.documents import sha256_file
from batch.errors import BatchError, InputError
from batch.files import fsync_dir
from batch.jobmodel import Job
from batch.ledger import PARQUET_NAME, read_ledger
from batch.templating import make_environments

MANIFEST, MISSING, SUMS, LEDGER, REPORT = (
    "manifest.csv",
    "MISSING.txt",
    "SHA256SUMS",
    PARQUET_NAME,
    "report.html",
)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
_STORED = frozenset({".pdf", ".parquet", ".zip", ".png", ".jpg", ".jpeg", ".gif", ".webp"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # as batch.export neutralises them
_UNSAFE_PART = re.compile(r"[\x00-\x1f\\]")
_API_TIME = "%Y-%m-%d %H:%M:%S"
_TIMES = ("sent_at", "delivered_at", "read_at", "signed_at")
_NOT_SENT = frozenset({"pending", "failed", "skipped"})


@dataclass
class _File:
    """One file of the bundle: its path inside the bundle, where its bytes come from, hash."""

    arcname: str
    sha256: str
    source: Path | None = None
    data: bytes | None = None


@dataclass
class _Recipient:
    """What the manifest says of one ledger row."""

    cells: dict[str, str]
    documents: list[tuple[str, str, str]] = field(default_factory=list)  # name, sha, zip path
    certificates: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> sha, match
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Bundle:
    """An evidence bundle written: where, and what it lacks (MISSING.txt's lines)."""

    path: Path
    missing: list[str]


def evidence_for(job: Job) -> Bundle:
    """Write the job's evidence bundle from its ledger, documents, certificates and report."""
    frame = read_ledger(job.output_dir)
    bundle = _bundle(
        job.output_dir,
        campaign=job.campaign,
        job_path=job.path,
        template_paths=job_templates(job),
        ledger_frame=frame,
        tz=job.tz.key,
    )
    if not frame.height:
        bundle.missing.insert(0, "no recipient in the ledger yet: nothing was sent (`lmbatch run`)")
    return bundle


def job_templates(job: Job) -> list[Path]:
    """The template files the job names (body, generated documents) and what they loaded.

    What a generated document loaded (stylesheet, images) is read from the documents'
    sidecars (batch.documents): the files as they are now, inside the job's folders.
    """
    _, html_env = make_environments(job.base_dir)
    found: set[Path] = set()
    for _, name in channel_for(job.spec).template_files(job.spec):
        try:
            filename = html_env.get_template(name).filename
        except jinja2.TemplateError:
            continue  # the job file's checks said so already
        if filename:
            found.add(Path(filename))
    for sidecar in (job.output_dir / DOCUMENTS).glob("*/.*.json"):
        record = _json(sidecar.read_text(encoding="utf-8", errors="replace"))
        resources = record.get("resources") if isinstance(record, dict) else None
        for resource in resources if isinstance(resources, dict) else {}:
            if Path(resource).is_file():
                found.add(Path(resource))
    return sorted(found)


def build_evidence(
    output_dir: Path,
    *,
    campaign: str,
    job_path: Path,
    template_paths: list[Path],
    ledger_frame: pl.DataFrame,
    tz: str,
) -> Path:
    """Write `<output_dir>/evidence-<campaign>.zip` and return its path."""
    return _bundle(
        output_dir,
        campaign=campaign,
        job_path=job_path,
        template_paths=template_paths,
        ledger_frame=ledger_frame,
        tz=tz,
    ).path


def _bundle(
    output_dir: Path,
    *,
    campaign: str,
    job_path: Path,
    template_paths: list[Path],
    ledger_frame: pl.DataFrame,
    tz: str,
) -> Bundle:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InputError(f"unknown time zone {tz!r}", hint="use an IANA name") from err
    out = output_dir.resolve()
    top = f"evidence-{safe_name(campaign)}"
    files: dict[str, _File] = {}
    recipients = []
    for row in ledger_frame.sort("key").iter_rows(named=True):
        recipients.append(_recipient(row, out, zone, files))
    if (out / REPORT).is_file():
        _add_file(files, REPORT, out / REPORT)
    _add_data(files, LEDGER, _parquet(ledger_frame.sort("key")))
    for arcname, path in _inputs([job_path, *template_paths]):
        _add_file(files, arcname, path)
    report_missing = [] if (out / REPORT).is_file() else [f"{REPORT}: not written yet"]
    _add_data(files, MANIFEST, _manifest(recipients))
    _add_data(files, MISSING, _missing_text(campaign, tz, recipients, report_missing))
    sums = "".join(f"{f.sha256}  {name}\n" for name, f in sorted(files.items()))
    _add_data(files, SUMS, sums.encode())
    target = out / f"evidence-{safe_name(campaign)}.zip"
    _write_zip(target, top, files)
    missing = report_missing + [f"{r.cells['key']}: {m}" for r in recipients for m in r.missing]
    return Bundle(target, missing)


# --- one recipient ----------------------------------------------------------------------------


def _recipient(
    row: dict[str, Any], out: Path, zone: ZoneInfo, files: dict[str, _File]
) -> _Recipient:
    key = str(row["key"])
    data = _json(row.get("channel_data"))
    address = row.get("address") or row.get("email")
    status = str(row.get("status") or "")
    cells = {
        "key": key,
        "name": _text(row.get("name")),
        "address": _text(address),
        "status": status,
        "tracking_id": _text(row.get("tracking_id")),
    }
    times = {name: _utc(row.get(name)) for name in ("sent_at", "delivered_at", "read_at")}
    times["signed_at"] = _utc(data.get("signed_at") if isinstance(data, dict) else None)
    for name in _TIMES:
        moment = times[name]
        cells[f"{name}_utc"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""
        cells[f"{name}_local"] = moment.astimezone(zone).isoformat() if moment else ""
    found = _Recipient(cells)
    if status == "in_doubt":
        found.missing.append(
            "in doubt: the send may or may not have happened (`lmbatch run` reconciles it)"
        )
    elif status == "pending":
        found.missing.append("not sent yet")
    _documents(found, row, key, out, files)
    api_hash = data.get("document_hash") if isinstance(data, dict) else None
    if api_hash and found.documents:
        match = "yes" if str(api_hash).lower() == found.documents[0][1] else "no"
        cells["document_matches_api"] = match
        if match == "no":
            found.missing.append(
                f"the API's document_hash {api_hash} differs from {found.documents[0][0]}'s"
            )
    _certificates(found, row, key, status, out, files)
    return found


def _documents(
    found: _Recipient, row: dict[str, Any], key: str, out: Path, files: dict[str, _File]
) -> None:
    folder = out / DOCUMENTS / safe_name(key)
    recorded = _recorded_documents(row.get("documents"))
    if recorded is None:  # the ledger keeps no list: what the folder holds is what was sent
        names = sorted(p.name for p in _listing(folder) if not p.name.startswith("."))
        recorded = [(name, None) for name in names]
    for name, expected in recorded:
        path = _inside(out, folder / name)
        if path is None or not path.is_file():
            found.missing.append(f"document {name!r}: not in {DOCUMENTS}/{safe_name(key)}/")
            continue
        actual = sha256_file(path)
        if expected and actual != expected:
            found.missing.append(
                f"document {name!r} changed since it was sent (SHA-256 {actual}, "
                f"the ledger recorded {expected}): left out"
            )
            continue
        arcname = f"{DOCUMENTS}/{safe_name(key)}/{_part(name)}"
        files[arcname] = _File(arcname, actual, source=path)
        found.documents.append((name, actual, arcname))


def _certificates(
    found: _Recipient,
    row: dict[str, Any],
    key: str,
    status: str,
    out: Path,
    files: dict[str, _File],
) -> None:
    known = _json(row.get("certificates"))
    metadata = {
        str(c.get("type") or "certificate"): c
        for c in (known if isinstance(known, list) else [])
        if isinstance(c, dict)
    }
    stored = _json(row.get("certificate_paths"))
    paths = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}
    for kind in sorted(set(metadata) | set(paths)):
        relative = paths.get(kind, f"{CERTIFICATES}/{certificate_file(key, kind)}")
        path = _inside(out, out / relative)
        api = metadata.get(kind, {}).get("file_hash")
        if path is None or not path.is_file():
            found.certificates[kind] = ("", "not downloaded")
            found.missing.append(
                f"certificate {kind!r}: not downloaded yet (`lmbatch certificates`)"
            )
            continue
        actual = sha256_file(path)
        match = "no API hash" if not api else "yes" if str(api).lower() == actual else "no"
        if match == "no":
            found.missing.append(
                f"certificate {kind!r}: SHA-256 {actual} differs from the API's {api}"
            )
        found.certificates[kind] = (actual, match)
        arcname = f"{CERTIFICATES}/{_part(path.name)}"
        files[arcname] = _File(arcname, actual, source=path)
    if not metadata and not paths and found.cells["tracking_id"] and status not in _NOT_SENT:
        found.missing.append(
            "no certificate known yet (`lmbatch track`, then `lmbatch certificates`)"
        )


def _recorded_documents(value: Any) -> list[tuple[str, str | None]] | None:
    """The ledger's `documents` cell as (name, SHA-256) pairs; None when there is none."""
    loaded = _json(value)
    if isinstance(loaded, dict):
        return sorted((str(k), str(v).lower() if v else None) for k, v in loaded.items())
    if isinstance(loaded, list):
        pairs = [
            (str(d["name"]), str(d["sha256"]).lower() if d.get("sha256") else None)
            for d in loaded
            if isinstance(d, dict) and d.get("name")
        ]
        return pairs
    return None


# --- the files --------------------------------------------------------------------------------


def _manifest(recipients: list[_Recipient]) -> bytes:
    most = max((len(r.documents) for r in recipients), default=0)
    kinds = sorted({kind for r in recipients for kind in r.certificates})
    signature = any("document_matches_api" in r.cells for r in recipients)
    header = ["key", "name", "address", "status", "tracking_id"]
    for name in _TIMES:
        header += [f"{name}_utc", f"{name}_local"]
    for i in range(1, most + 1):
        header += [f"document_{i}_name", f"document_{i}_sha256", f"document_{i}_file"]
    if signature:
        header.append("document_matches_api")
    for kind in kinds:
        header += [f"certificate_{kind}_sha256", f"certificate_{kind}_matches_api"]
    header.append("missing")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for r in recipients:
        cells = dict(r.cells)
        for i, (name, sha, arcname) in enumerate(r.documents, start=1):
            cells |= {f"document_{i}_name": name, f"document_{i}_sha256": sha}
            cells[f"document_{i}_file"] = arcname
        for kind, (sha, match) in r.certificates.items():
            cells |= {f"certificate_{kind}_sha256": sha, f"certificate_{kind}_matches_api": match}
        cells["missing"] = "; ".join(r.missing)
        writer.writerow([_cell(cells.get(column, "")) for column in header])
    return ("\ufeff" + buffer.getvalue()).encode()  # the BOM makes Excel read UTF-8


def _missing_text(
    campaign: str, tz: str, recipients: list[_Recipient], general: list[str]
) -> bytes:
    lines = [
        f"Evidence bundle of campaign {campaign}: {len(recipients)} recipient(s).",
        f"{MANIFEST} gives every time in UTC (*_utc) and in {tz} (*_local).",
        "",
    ]
    problems = [(r.cells["key"], item) for r in recipients for item in r.missing]
    if not problems and not general:
        lines.append("Nothing is missing: every recipient's documents and certificates are here.")
    else:
        lines.append("Missing, or not vouched for:")
        lines += [f"  {item}" for item in general]
        lines += [f"  {key}: {item}" for key, item in problems]
        rows = len({key for key, _ in problems})
        lines += ["", f"{len(problems)} item(s) for {rows} recipient(s)."]
    return ("\n".join(lines) + "\n").encode()


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    return buffer.getvalue()


def _inputs(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    """(zip path, file) for the job file and templates, keeping their relative layout."""
    resolved = sorted({p.resolve() for p in paths})
    missing = [p for p in resolved if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: not found: the bundle must hold the job's inputs")
    if not resolved:
        return []
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return [(f"inputs/{_part(p.relative_to(common).as_posix())}", p) for p in resolved]


def _add_file(files: dict[str, _File], arcname: str, path: Path) -> None:
    files[arcname] = _File(arcname, sha256_file(path), source=path)


def _add_data(files: dict[str, _File], arcname: str, data: bytes) -> None:
    files[arcname] = _File(arcname, hashlib.sha256(data).hexdigest(), data=data)


def _write_zip(target: Path, top: str, files: dict[str, _File]) -> None:
    """Write the zip next to `target` and rename it into place (atomic, like every file)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            with zipfile.ZipFile(raw, "w") as archive:
                for name in sorted(files):
                    _write_entry(archive, f"{top}/{name}", files[name])
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise BatchError(f"{target}: cannot write: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_entry(archive: zipfile.ZipFile, arcname: str, item: _File) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
    info.create_system = 3  # Unix, whatever builds it: the permissions below are Unix ones
    info.external_attr = 0o100644 << 16
    stored = Path(arcname).suffix.lower() in _STORED
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    if item.data is not None:
        archive.writestr(info, item.data)
        return
    assert item.source is not None
    digest = hashlib.sha256()
    size = item.source.stat().st_size
    info.file_size = size
    with open(item.source, "rb") as src, archive.open(info, "w", force_zip64=size > 2**31) as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != item.sha256:
        raise BatchError(
            f"{item.source}: changed while the evidence bundle was written",
            hint="run `lmbatch evidence` again once nothing writes to the campaign",
        )


# --- small helpers ----------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _utc(value: Any) -> datetime | None:
    """A ledger datetime or an API time ("YYYY-MM-DD HH:MM:SS", no zone: UTC), in UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            moment = datetime.strptime(text, _API_TIME)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _part(path: str) -> str:
    """A zip path with no control characters or backslashes (sha256sum would escape them)."""
    return "/".join(_UNSAFE_PART.sub("_", p) for p in path.split("/") if p not in ("", ".", ".."))


def _inside(out: Path, path: Path) -> Path | None:
    """`path` resolved, if it stays in the campaign folder (ledger cells are not trusted)."""
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(out) else None


def _listing(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
