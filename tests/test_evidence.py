"""The evidence bundle: byte-identical when built twice, verifiable with `sha256sum -c`, one
manifest row per recipient, and a clear account of what is missing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.certificates import certificate_file, safe_name
from batch.documents import document_path
from batch.errors import InputError
from batch.evidence import build_evidence
from batch.ledger import SCHEMA

CAMPAIGN = "demand-2026"
TOP = f"evidence-{CAMPAIGN}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdf(label: str) -> bytes:
    return f"%PDF-1.7\n% {label}\n%%EOF\n".encode()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Campaign:
    """A campaign folder with its job, templates, documents, certificates and ledger rows."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "output" / CAMPAIGN
        self.out.mkdir(parents=True)
        self.job = root / "jobs" / "demand.yaml"
        self.job.parent.mkdir()
        self.job.write_text(f"campaign: {CAMPAIGN}\nchannel: email\n", encoding="utf-8")
        self.template = root / "templates" / "letters" / "demand.html"
        self.template.parent.mkdir(parents=True)
        self.template.write_text("<p>{{ name }}</p>\n", encoding="utf-8")
        self.rows: list[dict[str, Any]] = []

    def document(self, key: str, name: str, data: bytes) -> str:
        path = document_path(self.out, key, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return sha(data)

    def certificate(self, key: str, kind: str, data: bytes) -> str:
        path = self.out / "certificates" / certificate_file(key, kind)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return f"certificates/{path.name}"

    def row(self, key: str, status: str, **fields: Any) -> None:
        self.rows.append(
            {"key": key, "address": f"{key.lower()}@example.com", "name": f"Name {key}"}
            | {"status": status}
            | fields
        )

    def frame(self) -> pl.DataFrame:
        schema = dict(SCHEMA) | {"documents": pl.String()}
        shuffled = list(reversed(self.rows))  # the bundle sorts by key itself
        return pl.DataFrame(shuffled, schema=schema)

    def build(self, tz: str = "Europe/Madrid") -> Path:
        return build_evidence(
            self.out,
            campaign=CAMPAIGN,
            job_path=self.job,
            template_paths=[self.template],
            ledger_frame=self.frame(),
            tz=tz,
        )


def certificates_json(*items: tuple[str, str | None]) -> str:
    return json.dumps(
        [{"type": kind, "file_hash": digest, "url": f"https://x/{kind}"} for kind, digest in items]
    )


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    """Five recipients: complete, half-certified, in doubt, pending, no certificate known."""
    c = Campaign(tmp_path)
    doc1 = c.document("A-1", "Requerimiento A-1.pdf", pdf("A-1"))
    delivered, read = pdf("A-1 delivered"), pdf("A-1 read")
    c.row(
        "A-1",
        "read",
        tracking_id="t-1",
        sent_at=at("2026-03-01T09:00:00"),
        delivered_at=at("2026-03-01T09:05:00"),
        read_at=at("2026-07-01T12:00:00"),
        certificates=certificates_json(("delivered", sha(delivered)), ("read", sha(read))),
        certificate_paths=json.dumps(
            {
                "delivered": c.certificate("A-1", "delivered", delivered),
                "read": c.certificate("A-1", "read", read),
            }
        ),
        documents=json.dumps([{"name": "Requerimiento A-1.pdf", "sha256": doc1}]),
    )
    doc2 = c.document("B/2", "Requerimiento B-2.pdf", pdf("B-2"))
    c.row(
        "B/2",
        "delivered",
        tracking_id="t-2",
        sent_at=at("2026-03-01T09:00:01"),
        certificates=certificates_json(("delivered", "0" * 64), ("read", None)),
        certificate_paths=json.dumps(
            {"delivered": c.certificate("B/2", "delivered", pdf("B-2 delivered"))}
        ),
        documents=json.dumps([{"name": "Requerimiento B-2.pdf", "sha256": doc2}]),
    )
    c.row("C-3", "in_doubt")
    c.row("D-4", "pending")
    c.document("E-5", "Requerimiento E-5.pdf", pdf("E-5"))  # no `documents` cell: the folder
    c.row("E-5", "sent", tracking_id="t-5", sent_at=at("2026-03-01T09:00:02"))
    return c


def manifest_of(zip_path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read(f"{TOP}/manifest.csv").decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def missing_of(zip_path: Path) -> str:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(f"{TOP}/MISSING.txt").decode()


# --- reproducible and verifiable --------------------------------------------------------------


def test_the_bundle_is_byte_identical_when_built_twice(campaign: Campaign) -> None:
    first = campaign.build().read_bytes()
    for path in campaign.out.rglob("*.pdf"):  # newer file times must not change a byte
        os.utime(path, (2_000_000_000, 2_000_000_000))
    second = campaign.build().read_bytes()
    assert first == second


def test_the_bundle_changes_when_a_file_does(campaign: Campaign) -> None:
    first = campaign.build().read_bytes()
    campaign.template.write_text("<p>{{ name }}!</p>\n", encoding="utf-8")
    assert campaign.build().read_bytes() != first


def test_sha256sum_verifies_the_unzipped_bundle(campaign: Campaign, tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is not installed")
    target = tmp_path / "unzipped"
    with zipfile.ZipFile(campaign.build()) as archive:
        archive.extractall(target)
    folder = target / TOP
    done = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    checked = done.stdout.splitlines()
    assert len(checked) == len([p for p in folder.rglob("*") if p.is_file()]) - 1
    assert all(line.endswith(": OK") for line in checked)

    (folder / "manifest.csv").write_bytes(b"key\r\nforged\r\n")
    tampered = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, check=False
    )
    assert tampered.returncode != 0


def test_entries_are_sorted_dated_1980_and_0644(campaign: Campaign) -> None:
    with zipfile.ZipFile(campaign.build()) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert all(name.startswith(f"{TOP}/") for name in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    stored = {i.filename for i in infos if i.compress_type == zipfile.ZIP_STORED}
    assert {n for n in names if n.endswith((".pdf", ".parquet"))} == stored


def test_the_bundle_holds_every_file_named(campaign: Campaign) -> None:
    (campaign.out / "report.html").write_text("<html>report</html>", encoding="utf-8")
    with zipfile.ZipFile(campaign.build()) as archive:
        names = {n.removeprefix(f"{TOP}/") for n in archive.namelist()}
        ledger = pl.read_parquet(io.BytesIO(archive.read(f"{TOP}/ledger.parquet")))
        job = archive.read(f"{TOP}/inputs/jobs/demand.yaml")
    assert names == {
        "MISSING.txt",
        "SHA256SUMS",
        "manifest.csv",
        "ledger.parquet",
        "report.html",
        "inputs/jobs/demand.yaml",
        "inputs/templates/letters/demand.html",
        f"documents/{safe_name('A-1')}/Requerimiento A-1.pdf",
        f"documents/{safe_name('B/2')}/Requerimiento B-2.pdf",
        f"documents/{safe_name('E-5')}/Requerimiento E-5.pdf",
        f"certificates/{certificate_file('A-1', 'delivered')}",
        f"certificates/{certificate_file('A-1', 'read')}",
        f"certificates/{certificate_file('B/2', 'delivered')}",
    }
    assert ledger["key"].to_list() == ["A-1", "B/2", "C-3", "D-4", "E-5"]
    assert job == campaign.job.read_bytes()


# --- the manifest -----------------------------------------------------------------------------


def test_the_manifest_has_one_row_per_recipient(campaign: Campaign) -> None:
    rows = manifest_of(campaign.build())
    assert [r["key"] for r in rows] == ["A-1", "B/2", "C-3", "D-4", "E-5"]
    a1, b2, c3, d4, e5 = rows
    assert (a1["name"], a1["address"], a1["status"], a1["tracking_id"]) == (
        "Name A-1",
        "a-1@example.com",
        "read",
        "t-1",
    )
    assert a1["sent_at_utc"] == "2026-03-01T09:00:00Z"
    assert a1["sent_at_local"] == "2026-03-01T10:00:00+01:00"
    assert a1["read_at_local"] == "2026-07-01T14:00:00+02:00"  # summer time
    assert a1["document_1_name"] == "Requerimiento A-1.pdf"
    assert a1["document_1_sha256"] == sha(pdf("A-1"))
    assert a1["certificate_delivered_sha256"] == sha(pdf("A-1 delivered"))
    assert a1["certificate_delivered_matches_api"] == "yes"
    assert a1["certificate_read_matches_api"] == "yes"
    assert a1["missing"] == ""
    assert b2["certificate_delivered_matches_api"] == "no"
    assert b2["certificate_read_matches_api"] == "not downloaded"
    assert "in doubt" in c3["missing"]
    assert d4["missing"] == "not sent yet"
    assert e5["document_1_name"] == "Requerimiento E-5.pdf"
    assert "no certificate known yet" in e5["missing"]


def test_the_manifest_accepts_a_legacy_email_column(campaign: Campaign) -> None:
    frame = campaign.frame().rename({"address": "email"})
    zip_path = build_evidence(
        campaign.out,
        campaign=CAMPAIGN,
        job_path=campaign.job,
        template_paths=[],
        ledger_frame=frame,
        tz="UTC",
    )
    assert manifest_of(zip_path)[0]["address"] == "a-1@example.com"


def test_a_signature_s_document_hash_is_compared_with_the_api_s(tmp_path: Path) -> None:
    c = Campaign(tmp_path)
    good = c.document("S-1", "Contrato S-1.pdf", pdf("S-1"))
    bad = c.document("S-2", "Contrato S-2.pdf", pdf("S-2"))
    for key, api_hash in (("S-1", good), ("S-2", "f" * 64)):
        data = {"document_hash": api_hash, "signed_at": "2026-03-02 08:30:00"}
        c.row(
            key,
            "signed",
            tracking_id=f"u-{key}",
            channel_data=json.dumps(data),
            documents=json.dumps({f"Contrato {key}.pdf": good if key == "S-1" else bad}),
        )
    rows = manifest_of(c.build())
    assert [r["document_matches_api"] for r in rows] == ["yes", "no"]
    assert rows[0]["signed_at_utc"] == "2026-03-02T08:30:00Z"
    assert rows[0]["signed_at_local"] == "2026-03-02T09:30:00+01:00"
    assert "differs from Contrato S-2.pdf's" in rows[1]["missing"]


def test_a_formula_in_a_name_is_neutralised(tmp_path: Path) -> None:
    c = Campaign(tmp_path)
    c.row("F-1", "pending", name='=HYPERLINK("http://x")')
    assert manifest_of(c.build())[0]["name"] == '\'=HYPERLINK("http://x")'


# --- what is missing --------------------------------------------------------------------------


def test_missing_txt_names_every_gap(campaign: Campaign) -> None:
    text = missing_of(campaign.build())
    assert "5 recipient(s)" in text
    assert "Europe/Madrid" in text
    assert "report.html: not written yet" in text
    assert "B/2: certificate 'read': not downloaded yet" in text
    assert "B/2: certificate 'delivered': SHA-256" in text
    assert "C-3: in doubt" in text
    assert "D-4: not sent yet" in text
    assert "E-5: no certificate known yet" in text
    assert "A-1:" not in text


def test_nothing_missing_is_said_plainly(tmp_path: Path) -> None:
    c = Campaign(tmp_path)
    (c.out / "report.html").write_text("<html></html>", encoding="utf-8")
    c.row("A-1", "failed")
    assert "Nothing is missing" in missing_of(c.build())


def test_a_document_changed_since_it_was_sent_is_left_out(campaign: Campaign) -> None:
    document_path(campaign.out, "A-1", "Requerimiento A-1.pdf").write_bytes(pdf("forged"))
    zip_path = campaign.build()
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    assert not any("Requerimiento A-1.pdf" in n for n in names)
    assert "A-1: document 'Requerimiento A-1.pdf' changed since it was sent" in missing_of(zip_path)


def test_a_recorded_document_not_on_disk_is_missing(campaign: Campaign) -> None:
    document_path(campaign.out, "B/2", "Requerimiento B-2.pdf").unlink()
    assert "B/2: document 'Requerimiento B-2.pdf': not in documents/" in missing_of(
        campaign.build()
    )


def test_a_certificate_path_leading_out_of_the_campaign_is_not_followed(tmp_path: Path) -> None:
    c = Campaign(tmp_path)
    (tmp_path / "secret.pdf").write_bytes(b"secret")
    c.row(
        "A-1",
        "delivered",
        tracking_id="t",
        certificate_paths=json.dumps({"delivered": "../../secret.pdf"}),
    )
    zip_path = c.build()
    with zipfile.ZipFile(zip_path) as archive:
        assert not any("secret" in n for n in archive.namelist())
    assert "certificate 'delivered': not downloaded yet" in missing_of(zip_path)


def test_an_unknown_time_zone_is_an_input_error(campaign: Campaign) -> None:
    with pytest.raises(InputError, match="Mars/Olympus"):
        campaign.build(tz="Mars/Olympus")


# --- any keys and names -----------------------------------------------------------------------

_KEYS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)
_NAMES = st.text(
    st.characters(whitelist_categories=("L", "N", "Zs"), whitelist_characters="-_()ñé"),
    min_size=1,
    max_size=20,
).map(lambda s: s.strip() or "x")


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(_KEYS, min_size=1, max_size=6, unique=True), name=_NAMES)
def test_any_keys_and_names_give_a_verifiable_reproducible_bundle(
    tmp_path_factory: pytest.TempPathFactory, keys: list[str], name: str
) -> None:
    c = Campaign(tmp_path_factory.mktemp("any"))
    for key in keys:
        digest = c.document(key, f"{name}.pdf", pdf(key))
        c.row(
            key,
            "sent",
            tracking_id=f"t-{len(c.rows)}",
            documents=json.dumps({f"{name}.pdf": digest}),
        )
    first = c.build().read_bytes()
    assert c.build().read_bytes() == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        sums = archive.read(f"{TOP}/SHA256SUMS").decode().splitlines()
        listed = dict(reversed(line.split("  ", 1)) for line in sums)
        names = {n.removeprefix(f"{TOP}/") for n in archive.namelist()} - {"SHA256SUMS"}
        assert set(listed) == names
        for arcname, digest in listed.items():
            assert sha(archive.read(f"{TOP}/{arcname}")) == digest
    rows = manifest_of(c.build())
    shown = {("'" + k if k.startswith(("=", "+", "-", "@", "\t", "\r")) else k): k for k in keys}
    assert sorted(r["key"] for r in rows) == sorted(shown)
    assert all(r["document_1_sha256"] == sha(pdf(shown[r["key"]])) for r in rows)
