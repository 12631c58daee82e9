"""The campaign report: terminal summary, the HTML page in a real browser, and exports."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from browser import FLAGS, Browser, chromium, count_colour, png_pixels
from pypdf import PdfReader
from rich.console import Console

from batch.errors import JobFileError
from batch.export import export, neutralise
from batch.jobfile import Job, load_job
from batch.jobmodel import local_zone
from batch.ledger import Entry, Ledger, Outcome
from batch.report import campaign_report, local_time, print_report, write_report
from batch.report_html import _requests_chart

XSS = '<img src=x onerror="alert(1)">'
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

ROWS = [  # id, name, email: formula-looking cells included
    ("K-00", "Ana", "ana@example.com"),
    ("K-01", '=HYPERLINK("http://evil.example","x")', "bruno@example.com"),
    ("K-02", "+34 600", "bounce@example.com"),
    ("K-03", "-2+3", "fail@example.com"),
    ("K-04", "@SUM(A1)", "dora@example.com"),
    ("K-05", "\tTabbed", "eva@example.com"),
    ("K-06", "\rCarriage", f"{XSS}@example.com"),
    ("K-07", "Plain", "gil@example.com"),
]
# key -> status after tracking, and why it failed
OUTCOMES = {
    "K-00": "read",
    "K-01": "read",
    "K-02": "bounced",
    "K-03": "failed",
    "K-04": "delivered",
    "K-05": "sent",
    "K-06": "bounced",
}


def campaign(folder: Path) -> Job:
    """An e-mail job whose ledger holds a tracked campaign (built without any API)."""
    with open(folder / "people.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name", "email"])
        writer.writerows(ROWS)
    (folder / "notice.html").write_text("<p>Hi {{ name }}</p>", encoding="utf-8")
    (folder / "job.yaml").write_text(
        """campaign: spring
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message: {subject: "Notice", html: notice.html}
limits: {requests_per_window: 3, window_seconds: 1.0}
output: out
""",
        encoding="utf-8",
    )
    job = load_job(folder / "job.yaml")
    with Ledger.open(job.output_dir) as ledger:
        for i, (key, name, email) in enumerate(ROWS[:7]):
            ledger.intent(f"r{i}", [Entry(key, email, name, "h")])
            failed = OUTCOMES[key] == "failed"
            outcome = Outcome(key, "failed" if failed else "sent", f"t-{key}", None)
            at = START + timedelta(seconds=0.4 * i)  # 3 requests per 1 s window
            ledger.sent(f"r{i}", parent_tracking_id=f"p{i}", outcomes=[outcome], sent_at=at)
        for key, status_name in OUTCOMES.items():
            if status_name in ("read", "delivered", "bounced"):
                ledger.update(key, status=status_name, delivered_at=START + timedelta(minutes=5))
        ledger.update("K-02", error_details="Hard bounce: mailbox does not exist")
        ledger.update("K-06", error_details=XSS)
        ledger.update("K-03", error_details="550 user unknown")
        certificates = job.output_dir / "certificates"
        certificates.mkdir()
        (certificates / "K-00-read.pdf").write_bytes(b"%PDF-1.4\n")
        ledger.update("K-00", certificate_paths={"read": "certificates/K-00-read.pdf"})
        ledger.update("K-01", certificate_paths={"read": "certificates/missing.pdf"})
    return job


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return campaign(tmp_path)


def test_terminal_summary(job: Job) -> None:
    console = Console(record=True, width=140)
    print_report(job, console)
    text = console.export_text()
    assert "read rate: 33.3% of 6 sent" in text  # K-03 failed at send: never sent
    assert "Hard bounce: mailbox does not exist" in text and "550 user unknown" in text
    assert "3 failed or bounced" in text


def test_html_is_self_contained_and_escaped(job: Job) -> None:
    page = write_report(job).read_text(encoding="utf-8")
    assert XSS not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "<script" not in page.lower()
    links = re.findall(r"""\b(?:src|href|url)\s*[=(]\s*["']?([^"')\s>]*)""", page)
    assert links and all(":" not in link for link in links)  # relative links, no assets
    assert "default-src 'none'" in page
    assert '<a href="certificates/K-00-read.pdf">K-00-read.pdf</a>' in page
    assert "missing.pdf" not in page  # only files that are there are linked
    assert page.count('id="status-chart"') == page.count('id="requests-chart"') == 1
    assert not list(job.output_dir.glob(".*.tmp"))


def test_links_follow_the_page_elsewhere(job: Job, tmp_path: Path) -> None:
    page = write_report(job, tmp_path / "pages" / "r.html").read_text(encoding="utf-8")
    assert 'href="../out/spring/certificates/K-00-read.pdf"' in page


def test_long_campaigns_merge_windows_into_at_most_120_bars() -> None:
    requests = [START + timedelta(seconds=7 * i) for i in range(5000)]  # ~10 h, 60 s windows
    svg = _requests_chart(requests, limit=10, window=60.0, tz=UTC)
    assert 0 < svg.count("<rect") <= 120
    assert "limit 50 per 5 min" in svg  # 5 windows per bar: the line scales with them


# -- the page in a real browser --------------------------------------------------------------


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = [*FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(
        [chromium(), *flags, *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_report_renders_in_chromium(job: Job, tmp_path: Path) -> None:
    page = write_report(job)
    dom = browse(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<svg id="status-chart"' in dom.stdout and '<svg id="requests-chart"' in dom.stdout
    assert "<img" not in dom.stdout  # the injected markup stayed text
    console = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Content Security Policy" in line
    ]
    assert console == []

    with Browser(tmp_path / "profile-shot") as browser:
        shot = browser.open(page, 1200).screenshot()
    width, _, rows = png_pixels(shot)
    assert width == 1200
    # The status chart's bars: read (2 recipients) and bounced (2) in their colours.
    assert count_colour(rows, "#2e7d32") > 1000
    assert count_colour(rows, "#ef6c00") > 1000
    assert count_colour(rows, "#1e88e5") > 500  # request bars (and the sent status bar)


# -- exports ---------------------------------------------------------------------------------


def test_csv_export_joins_the_ledger_and_neutralises_formulas(job: Job) -> None:
    path = export(job, "csv")
    assert path == job.output_dir / "export.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [key for key, _, _ in ROWS]  # dataset order
    names = [r["name"] for r in rows]
    assert names[1] == '\'=HYPERLINK("http://evil.example","x")'
    assert names[2:7] == ["+34 600", "'-2+3", "'@SUM(A1)", "'\tTabbed", "'\rCarriage"]
    assert names[0] == "Ana" and names[7] == "Plain"
    first = rows[0]
    assert first["lmbatch_status"] == "read" and first["lmbatch_tracking_id"] == "t-K-00"
    assert first["lmbatch_sent_at_utc"] == "2026-03-02 09:00:00"
    assert first["lmbatch_delivered_at_utc"] == "2026-03-02 09:05:00"
    assert rows[7]["lmbatch_status"] == ""  # never queued: no ledger row


def test_xlsx_export_holds_no_formula(job: Job, tmp_path: Path) -> None:
    path = export(job, "xlsx", tmp_path / "mine.xlsx")
    with zipfile.ZipFile(path) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
        strings = book.read("xl/sharedStrings.xml").decode()
    assert "<f>" not in sheet
    assert '>=HYPERLINK("http://evil.example","x")<' in strings.replace("&quot;", '"')
    frame = pl.read_excel(path)
    assert frame["lmbatch_status"].to_list()[:2] == ["read", "read"]


def test_headers_are_neutralised_too() -> None:
    frame = pl.DataFrame({"=cmd": ["ok"], "n": [-5]})
    assert neutralise(frame).columns == ["'=cmd", "n"]
    assert neutralise(frame)["n"].to_list() == [-5]  # a number is not a formula


# -- a realistic campaign, read as the legal team reads it -----------------------------------

MADRID = ZoneInfo("Europe/Madrid")
NOTICES_START = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)  # 09:30 CET
GENERATED = datetime(2026, 3, 4, 16, 5, 12, tzinfo=UTC)
PEOPLE = [
    "María José García-López",
    "Carlos Fernández Ruiz",
    "Lucía Martín Serrano",
    "Javier Sánchez Ortega",
    "Ana Belén Romero Díaz",
    "Francisco Javier Moreno Gil",
    "Elena Navarro Castro",
    "Miguel Ángel Torres Blanco",
    "Carmen Domínguez Vega",
    "Pablo Ramos Herrero",
    "Isabel Gutiérrez Molina",
    "Sergio Vázquez Prieto",
    "Rocío Jiménez Cano",
    "Alejandro Iglesias Nieto",
    "Marta Castillo Reyes",
    "David Ortiz Rubio",
    "Laura Marín Sanz",
    "Antonio Peña Calvo",
    "Cristina Herrera Fuentes",
    "Jorge Medina Campos",
    "Beatriz Cortés León",
    "Raúl Garrido Márquez",
    "Nuria Santana Vidal",
    "Óscar Lozano Pastor",
    "Patricia Guerrero Soler",
    "Fernando Cabrera Méndez",
    "Silvia Montero Aguilar",
]
# key -> (status, reason); the rest are read, delivered or sent
NOT_REACHED = {
    "C-1004": (
        "skipped",
        "row 5: recipient.email: 'javier.sanchez@' is not a valid e-mail address",
    ),
    "C-1012": ("skipped", "row 13: recipient.email: the template rendered an empty address"),
    "C-1007": ("failed", "550 5.1.2 domain ejemplo-inexistente.es does not exist"),
    "C-1019": ("failed", "553 5.1.3 recipient address rejected"),
    "C-1009": ("bounced", "Hard bounce: mailbox does not exist"),
    "C-1022": ("bounced", "Mailbox full (quota exceeded)"),
    "C-1015": ("in_doubt", "connection reset after the request was sent"),
}
LONG_ADDRESS = "francisco.javier.moreno.gil.departamento.juridico@asesoria-integral-levante.es"


def _address(i: int, name: str) -> str:
    if i == 6:
        return LONG_ADDRESS
    plain = name.lower().translate(str.maketrans("áéíóúñü", "aeiounu")).replace(" ", ".")
    return f"{plain.split('.')[0]}.{plain.split('.')[-1]}@example.es"


def notices(folder: Path, *, tracked: bool = True) -> Job:
    """A 27-notice certified e-mail campaign in Madrid: sent, tracked, certificates on disk."""
    (folder / "notice.html").write_text("<p>Estimado/a {{ name }}</p>", encoding="utf-8")
    (folder / "terms.pdf").write_bytes(b"%PDF-1.4\n% terms\n")
    rows = [(f"C-{1001 + i}", name, _address(i + 1, name)) for i, name in enumerate(PEOPLE)]
    with open(folder / "customers.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name", "email"])
        writer.writerows(rows)
    (folder / "notice.yaml").write_text(
        """campaign: notice-2026
dataset: {path: customers.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message:
  subject: "Payment notice {{ id }}"
  html: notice.html
  reply_to: cobros@asesoria-levante.es
  reply_to_name: Asesoría Levante, cobros
  attachments: [{path: terms.pdf, name: Terms.pdf}]
timezone: Europe/Madrid
output: out
""",
        encoding="utf-8",
    )
    job = load_job(folder / "notice.yaml")
    certificates = job.output_dir / "certificates"
    with Ledger.open(job.output_dir) as ledger:
        sent = 0
        for i, (key, name, email) in enumerate(rows):
            status, reason = NOT_REACHED.get(key, ("", ""))
            entry = Entry(key, email, name, f"h{i}")
            if status == "skipped":
                ledger.skip([entry], reason)
                continue
            ledger.intent(f"r{i}", [entry])
            if status == "in_doubt":
                ledger.update(key, error_details=reason)
                continue
            failed = status == "failed"
            outcome = Outcome(key, "failed" if failed else "sent", f"t-{key}", reason or None)
            at = NOTICES_START + timedelta(seconds=6 * sent)  # 10 requests per 60 s
            sent += 1
            ledger.sent(f"r{i}", parent_tracking_id=f"p-{key}", outcomes=[outcome], sent_at=at)
            if failed or not tracked:
                continue
            delivered, read = at + timedelta(minutes=2), at + timedelta(hours=3, minutes=i)
            final = status or ("read", "read", "read", "delivered", "sent")[i % 5]
            fields: dict[str, object] = {"status": final, "tracked_at": GENERATED}
            if final == "bounced":
                fields["error_details"] = reason
            if final in ("read", "delivered"):
                fields["delivered_at"] = delivered
            if final == "read":
                fields["read_at"] = read
            paths, metadata = {}, []
            for kind in {"read": ("delivered", "read"), "delivered": ("delivered",)}.get(final, ()):
                body = f"%PDF-1.4\n% {kind} certificate of {key}\n".encode()
                certificates.mkdir(exist_ok=True)
                (certificates / f"{key}-{kind}.pdf").write_bytes(body)
                paths[kind] = f"certificates/{key}-{kind}.pdf"
                digest = hashlib.sha256(body).hexdigest()
                metadata.append({"type": kind, "file_hash": digest, "url": f"https://x/{key}"})
            if paths:
                fields |= {"certificate_paths": paths, "certificates": metadata}
            ledger.update(key, **fields)
    return job


def keep(shot: bytes, name: str, tmp_path: Path) -> Path:
    """Save a screenshot under the test's folder, and in $LMBATCH_SCREENSHOTS when set."""
    path = tmp_path / name
    path.write_bytes(shot)
    folder = os.environ.get("LMBATCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)
    return path


# What a page's own script would measure, asked over DevTools: the page has no script.
MEASURE = """(() => {
  const el = document.documentElement;
  const over = [...document.querySelectorAll('td, th, dd, dt, h1, h2, p, code, span')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).display !== 'inline')
    .map(e => e.outerHTML.slice(0, 120));
  const right = Math.max(...[...document.body.querySelectorAll('*')]
    .map(e => e.getBoundingClientRect().right));
  const rows = id => [...document.querySelectorAll(`#${id} tbody tr[data-key]`)]
    .map(tr => [tr.dataset.key, tr.innerText]);
  return {scroll: el.scrollWidth, client: el.clientWidth, right, over,
          notReached: rows('not-reached-table'), evidence: rows('evidence-table'),
          text: document.body.innerText};
})()"""


@pytest.mark.parametrize("width", [800, 1280])
def test_report_reads_at_800_and_1280_px(tmp_path: Path, width: int) -> None:
    job = notices(tmp_path)
    page = write_report(job, now=GENERATED)
    with Browser(tmp_path / "profile") as browser:
        tab = browser.open(page, width)
        seen = tab.evaluate(MEASURE)
        shot = keep(tab.screenshot(), f"report-{width}.png", tmp_path)
        printed = tab.pdf() if width == 800 else b""

    assert seen["scroll"] <= seen["client"] == width  # no horizontal scroll
    assert seen["right"] <= width and seen["over"] == []  # nothing sticks out of its box
    shot_width, shot_height, _ = png_pixels(shot.read_bytes())
    assert shot_width == width and shot_height > 1500

    not_reached = dict(seen["notReached"])
    assert set(not_reached) == set(NOT_REACHED)  # everyone, and no one else
    for key, (status, reason) in NOT_REACHED.items():
        assert status in not_reached[key] and reason in not_reached[key], key
    order = [key for key, _ in seen["notReached"]]
    assert order.index("C-1007") < order.index("C-1015") < order.index("C-1004")

    evidence = dict(seen["evidence"])
    assert len(evidence) == 27 - 0  # every ledger row, the skipped ones too
    first = evidence["C-1001"]
    assert "María José García-López" in first and "maria.garcia-lopez@example.es" in first
    assert "2026-03-02" in first and "09:30:00 CET" in first  # sent 08:30 UTC
    assert "09:32:00 CET" in first and "12:30:00 CET" in first  # delivered, read
    assert LONG_ADDRESS in evidence["C-1006"]
    text = seen["text"]
    assert "every time is in Europe/Madrid" in text and "Asesoría Levante, cobros" in text
    assert "Terms.pdf" in text and "17:05:12 CET" in text  # generated at 16:05 UTC
    assert str(job.output_dir / "certificates") in text
    sha = hashlib.sha256(b"%PDF-1.4\n% read certificate of C-1001\n").hexdigest()
    assert sha in first or sha in text
    assert "UTC" not in text.replace("Europe/Madrid", "")  # every time a person reads is local

    if printed:
        pdf = PdfReader(io.BytesIO(printed))
        words = "".join(p.extract_text() for p in pdf.pages)
        assert all(key in words for key in NOT_REACHED) and "C-1027" in words
        width_mm = float(pdf.pages[0].mediabox.width) / 72 * 25.4
        assert round(width_mm) == 210  # A4, from the print stylesheet


def test_before_tracking_the_page_says_so(tmp_path: Path) -> None:
    job = notices(tmp_path, tracked=False)
    page = write_report(job, now=GENERATED).read_text(encoding="utf-8")
    assert "not tracked yet" in page and "0.0%" not in page
    assert "read rate: not tracked yet" in _terminal(job)


def test_the_report_is_the_same_bytes_for_the_same_ledger(tmp_path: Path) -> None:
    job = notices(tmp_path)
    first = write_report(job, tmp_path / "a.html", now=GENERATED).read_bytes()
    assert write_report(job, tmp_path / "a.html", now=GENERATED).read_bytes() == first


def test_campaign_header_facts(tmp_path: Path) -> None:
    job = notices(tmp_path)
    data = campaign_report(job, now=GENERATED)
    assert data.credits == 22 and data.credit_unit == "e-mail"  # one per accepted recipient
    assert data.local(data.first_send) == "2026-03-02 09:30:00 CET"
    assert dict(data.facts)["subject"] == "Payment notice {{ id }} (per recipient)"
    assert dict(data.facts)["reply-to"] == "Asesoría Levante, cobros <cobros@asesoria-levante.es>"
    summer = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert local_time(summer, MADRID) == "2026-07-01 10:00:00 CEST"


def _terminal(job: Job) -> str:
    console = Console(record=True, width=140)
    print_report(job, console)
    return console.export_text()


# -- the campaign's time zone ----------------------------------------------------------------


def _job(folder: Path, extra: str) -> Path:
    (folder / "people.csv").write_text("id,email\n1,a@example.com\n", encoding="utf-8")
    (folder / "n.html").write_text("<p>hi</p>", encoding="utf-8")
    path = folder / "job.yaml"
    path.write_text(
        "campaign: c\ndataset: {path: people.csv}\nmessage: {subject: s, html: n.html}\n" + extra,
        encoding="utf-8",
    )
    return path


def test_timezone_is_the_jobs_then_the_schedules_then_the_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_job(_job(tmp_path, "timezone: America/New_York\n")).tz.key == "America/New_York"
    scheduled = "schedule: {cron: '0 9 * * *', timezone: Europe/Madrid}\n"
    assert load_job(_job(tmp_path, scheduled)).tz.key == "Europe/Madrid"
    both = scheduled + "timezone: Atlantic/Canary\n"
    assert load_job(_job(tmp_path, both)).tz.key == "Atlantic/Canary"
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert load_job(_job(tmp_path, "")).tz.key == "Asia/Tokyo"
    assert local_zone().key == "Asia/Tokyo"


def test_an_unknown_timezone_is_a_located_job_file_error(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as caught:
        load_job(_job(tmp_path, "timezone: Europe/Madird\n"))
    message = str(caught.value)
    assert "timezone" in message and "Europe/Madird" in message and ":4" in message


# -- exports: local times, certificates, signatures ------------------------------------------


def test_export_has_local_times_and_certificate_paths(tmp_path: Path) -> None:
    job = notices(tmp_path)
    rows = {r["id"]: r for r in pl.read_csv(export(job, "csv"), infer_schema=False).to_dicts()}
    first = rows["C-1001"]
    assert first["lmbatch_sent_at_utc"] == "2026-03-02 08:30:00"
    assert first["lmbatch_sent_at (Europe/Madrid)"] == "2026-03-02 09:30:00"
    assert first["lmbatch_read_at (Europe/Madrid)"] == "2026-03-02 12:30:00"
    folder = job.output_dir / "certificates"
    assert first["lmbatch_certificate_read"] == str(folder / "C-1001-read.pdf")
    assert first["lmbatch_certificate_delivered"] == str(folder / "C-1001-delivered.pdf")
    assert rows["C-1004"]["lmbatch_certificate_read"] is None  # skipped: nothing to prove


def signature_campaign(folder: Path) -> Job:
    """A signature job with one signed request and one awaiting its second signer."""
    (folder / "contract.pdf").write_bytes(b"%PDF-1.4\n% contract\n")
    (folder / "people.csv").write_text(
        "id,name,email\nS-1,Ana Ruiz,ana@example.es\nS-2,Luis Gil,luis@example.es\n",
        encoding="utf-8",
    )
    (folder / "job.yaml").write_text(
        """campaign: contracts
channel: signature
dataset: {path: people.csv, key: id}
signers:
  - {name: "{{ name }}", email: "{{ email }}"}
  - {name: Notaría Central, email: firma@notaria.es, phone: "+34600111222"}
document: {path: contract.pdf, name: "Contrato {{ id }}.pdf"}
timezone: Europe/Madrid
output: out
""",
        encoding="utf-8",
    )
    job = load_job(folder / "job.yaml")
    with Ledger.open(job.output_dir) as ledger:
        for i, (key, email, state) in enumerate(
            [("S-1", "ana@example.es", "signed"), ("S-2", "luis@example.es", "sent")]
        ):
            ledger.intent(f"r{i}", [Entry(key, email, key, "h")])
            at = NOTICES_START + timedelta(minutes=i)
            outcome = Outcome(key, "sent", f"u-{key}")
            ledger.sent(f"r{i}", parent_tracking_id=f"u-{key}", outcomes=[outcome], sent_at=at)
            signed = "2026-03-03 10:00:00" if state == "signed" else None
            signers = [
                {"name": key, "email": email, "status": state, "signed_at": signed},
                {"name": "Notaría Central", "email": "firma@notaria.es", "status": "signed"},
            ]
            data = {"signed_at": signed, "expires_at": "2026-04-01 21:59:59", "signers": signers}
            ledger.update(key, status=state, channel_data=data, tracked_at=GENERATED)
    return job


def test_signature_export_has_signed_expiry_and_signers(tmp_path: Path) -> None:
    job = signature_campaign(tmp_path)
    rows = {r["id"]: r for r in pl.read_csv(export(job, "csv"), infer_schema=False).to_dicts()}
    signed = rows["S-1"]
    assert signed["lmbatch_signed_at_utc"] == "2026-03-03 10:00:00"
    assert signed["lmbatch_signed_at (Europe/Madrid)"] == "2026-03-03 11:00:00"
    assert signed["lmbatch_expires_at (Europe/Madrid)"] == "2026-04-01 23:59:59"  # CEST
    assert signed["lmbatch_signers"] == (
        "S-1 <ana@example.es>: signed; Notaría Central <firma@notaria.es>: signed"
    )
    assert rows["S-2"]["lmbatch_signed_at_utc"] is None
    assert "S-2 <luis@example.es>: sent" in rows["S-2"]["lmbatch_signers"]


def test_a_request_awaiting_signature_is_not_reached_with_its_expiry(tmp_path: Path) -> None:
    job = signature_campaign(tmp_path)
    data = campaign_report(job)
    assert [(r.key, r.reason) for r in data.not_reached] == [
        ("S-2", "awaiting signature (1 of 2 signers signed); expires 2026-04-01 23:59:59 CEST")
    ]
    assert data.credits is None  # the API reports none for signatures
    assert data.rate == pytest.approx(0.5)
    page = write_report(job).read_text(encoding="utf-8")
    assert "<th>signed</th><th>expires</th>" in page
    assert "signers: S-1 &lt;ana@example.es&gt;: signed; Notaría Central" in page
    assert "Contrato {{ id }}.pdf (per recipient)" in page and "+34600111222" in page
    assert "not reported by the API for this channel" in page
