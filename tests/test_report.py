"""The campaign report: terminal summary, the HTML page in a real browser, and exports."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from batch.export import export, neutralise
from batch.jobfile import Job, load_job
from batch.ledger import Entry, Ledger, Outcome
from batch.report import _requests_chart, print_report, write_report

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
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    assert '<a href="certificates/K-00-read.pdf">read</a>' in page
    assert "missing.pdf" not in page  # only files that are there are linked
    assert page.count('id="status-chart"') == page.count('id="requests-chart"') == 1
    assert not list(job.output_dir.glob(".*.tmp"))


def test_links_follow_the_page_elsewhere(job: Job, tmp_path: Path) -> None:
    page = write_report(job, tmp_path / "pages" / "r.html").read_text(encoding="utf-8")
    assert 'href="../out/spring/certificates/K-00-read.pdf"' in page


def test_long_campaigns_merge_windows_into_at_most_120_bars() -> None:
    requests = [START + timedelta(seconds=7 * i) for i in range(5000)]  # ~10 h, 60 s windows
    svg = _requests_chart(requests, limit=10, window=60.0)
    assert 0 < svg.count("<rect") <= 120
    assert "limit 50 per 5 min" in svg  # 5 windows per bar: the line scales with them


# -- the page in a real browser --------------------------------------------------------------


def chromium() -> str:
    """The browser, or a skip when it is missing and cannot be installed here."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0:  # CI runs as root: `make browser` installs it, so missing is a bug
        pytest.fail("chromium is missing: run `make browser` (.ci/install-chromium)")
    pytest.skip("chromium is not installed and installing it needs root (make browser)")


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run(
        [chromium(), *flags, *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit PNG: enough to look at colours."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                corner = previous[i - channels] if i >= channels else 0
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [r if channels == 3 else _rgb(r) for r in rows]


def _rgb(row: bytes) -> bytes:
    return bytes(b for i, b in enumerate(row) if i % 4 != 3)


def count_colour(rows: list[bytes], hex_colour: str) -> int:
    target = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(1 for row in rows for x in range(0, len(row), 3) if row[x : x + 3] == target)


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

    shot = tmp_path / "report.png"
    result = browse(
        page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,1600"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
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
