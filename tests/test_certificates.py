"""Certificate downloads: verified against the API's SHA-256, atomic, resumable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_track import DELIVERED, READ, World, people, sent_job, tracked
from test_track import world as world  # the fixture, shared with the tracking tests

from batch.certificates import certificate_file, download_certificates, safe_name
from batch.jobfile import Job
from batch.ledger import Ledger, read_ledger


def read_job(world: World, *emails: str, **options: object) -> Job:
    """A campaign sent and tracked until every recipient read it (or bounced)."""
    job = sent_job(world, people(*emails), **options)
    world.clock.advance(READ + 1)
    tracked(world, job)
    return job


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloads_each_certificate_once_verified(world: World) -> None:
    job = read_job(world, "a@example.com", "b/c@example.com")
    summary = download_certificates(job)
    assert summary.downloaded == 4 and not summary.failures
    ledger = {r["key"]: r for r in read_ledger(job.output_dir).iter_rows(named=True)}
    for key, row in ledger.items():
        paths = json.loads(row["certificate_paths"])
        assert set(paths) == {"delivered", "read"}
        for certificate in json.loads(row["certificates"]):
            local = job.output_dir / paths[certificate["type"]]
            assert local.name == certificate_file(key, certificate["type"])
            assert sha256(local) == certificate["file_hash"]
            assert local.read_bytes().startswith(b"%PDF-")
    assert not list((job.output_dir / "certificates").glob("*.part"))

    again = download_certificates(job)
    assert again.downloaded == 0 and again.present == 4


def test_resumes_after_a_crash_and_replaces_a_wrong_file(world: World) -> None:
    job = read_job(world, "a@example.com")
    folder = job.output_dir / "certificates"
    folder.mkdir(parents=True)
    read = folder / certificate_file("K-00", "read")
    delivered = folder / certificate_file("K-00", "delivered")
    read.with_name(read.name + ".part").write_bytes(b"%PDF-1.4 half of a fi")  # crash mid-write
    delivered.write_bytes(b"%PDF-1.4 not the certificate")  # a wrong file under the right name
    summary = download_certificates(job)
    assert summary.downloaded == 2 and summary.present == 0 and not summary.failures
    hashes = {c["type"]: c["file_hash"] for c in certificates(job, "K-00")}
    assert sha256(read) == hashes["read"] and sha256(delivered) == hashes["delivered"]
    assert not read.with_name(read.name + ".part").exists()


def test_a_hash_mismatch_is_reported_and_the_file_not_kept(world: World) -> None:
    job = read_job(world, "a@example.com")
    tampered = certificates(job, "K-00")
    tampered[1]["file_hash"] = "0" * 64
    with Ledger.open(job.output_dir) as ledger:
        ledger.update("K-00", certificates=tampered)
    summary = download_certificates(job)
    assert summary.downloaded == 1 and summary.exit_code == 1
    [(key, kind, reason)] = summary.failures
    assert (key, kind) == ("K-00", tampered[1]["type"]) and "differs" in reason
    assert not (job.output_dir / "certificates" / certificate_file("K-00", kind)).exists()
    paths = json.loads(read_ledger(job.output_dir)["certificate_paths"][0])
    assert set(paths) == {tampered[0]["type"]}


def test_a_download_that_is_not_a_pdf_is_refused_before_it_is_written(world: World) -> None:
    job = read_job(world, "a@example.com")
    tampered = certificates(job, "K-00")
    tampered[0]["url"] = "/api/info"  # a 200 with a JSON body, and no hash to compare with
    tampered[0]["file_hash"] = None
    with Ledger.open(job.output_dir) as ledger:
        ledger.update("K-00", certificates=tampered)
    summary = download_certificates(job)
    assert summary.downloaded == 1 and summary.exit_code == 1
    [(key, kind, reason)] = summary.failures
    assert (key, kind) == ("K-00", tampered[0]["type"])
    assert reason.startswith("not a PDF (it starts '{") and reason.endswith("not kept")
    assert not (job.output_dir / "certificates" / certificate_file("K-00", kind)).exists()
    assert not list((job.output_dir / "certificates").glob("*.part"))


def test_sms_and_signature_documents(world: World) -> None:
    sms = read_job(world, "a@example.com", channel="sms")
    assert download_certificates(sms).downloaded == 1
    assert (sms.output_dir / "certificates" / "K-00-sms.pdf").is_file()

    world.folder = world.folder / "sig"
    world.folder.mkdir()
    signature = read_job(world, "ana@example.com", channel="signature")
    summary = download_certificates(signature)
    assert summary.downloaded == 2 and not summary.failures  # acta and original, both verified
    data = json.loads(read_ledger(signature.output_dir)["channel_data"][0])
    original = signature.output_dir / "certificates" / "K-00-original.pdf"
    assert sha256(original) == data["document_hash"]


def test_rows_without_certificates_yet_are_counted(world: World) -> None:
    job = sent_job(world, people("a@example.com"))
    tracked(world, job)
    summary = download_certificates(job)
    assert summary.downloaded == 0 and summary.without_metadata == 1
    world.clock.advance(DELIVERED + 1)
    tracked(world, job)
    assert download_certificates(job).downloaded == 1


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("C-1001", "C-1001"),
        ("a.b_c-d", "a.b_c-d"),
        ("a/b", "a_b~"),
        ("../etc/passwd", "_etc_passwd~"),
        ("ñandú", "_and_~"),
        ("x" * 300, "x" * 100 + "~"),
    ],
)
def test_safe_names(key: str, expected: str) -> None:
    name = safe_name(key)
    assert name.startswith(expected) and "/" not in name and not name.startswith(".")
    assert safe_name("a_b") != safe_name("a/b")


def certificates(job: Job, key: str) -> list[dict[str, object]]:
    """The certificate metadata `track` recorded for `key`."""
    frame = read_ledger(job.output_dir)
    row = frame.filter(frame["key"] == key).row(0, named=True)
    loaded: list[dict[str, object]] = json.loads(row["certificates"])
    return loaded
