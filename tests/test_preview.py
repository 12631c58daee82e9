"""`lmbatch preview`: truthful counts, the channel's own column in the index, and pages that
show what the recipient sees first (subject, reply-to, sender; SMS text; signers)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batch.cli import main
from batch.preview import counts_line

ROOT = Path(__file__).parent.parent


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path / "jobs"


def lmbatch(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)


def index_of(result: Result) -> str:
    path = Path(result.stdout.split("preview: ")[1].strip())
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("total", "shown", "errors_total", "shown_errors", "expected"),
    [
        (10, 10, 3, 3, "10 messages, 3 with errors"),
        (10, 10, None, 0, "10 messages, none with errors"),
        (1, 1, 0, 0, "1 message, none with errors"),
        (600, 200, 7, 2, "600 messages, 7 with errors; showing 200 of 600: `--limit` shows more"),
        (600, 200, None, 2, "600 messages (2 with errors among those shown); showing 200 of 600: "
         "`--limit` shows more"),
    ],
)  # fmt: skip
def test_the_counts_tell_the_truth(
    total: int, shown: int, errors_total: int | None, shown_errors: int, expected: str
) -> None:
    assert counts_line(total, shown, errors_total, shown_errors) == expected


def test_an_email_preview_counts_errors_and_shows_subject_reply_to_and_sender(jobs: Path) -> None:
    data = jobs / "data" / "customers.csv"
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("@example.com", "-at-example.com")  # one bad address
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = lmbatch("preview", jobs / "notice.yaml", "--limit", "5")
    assert result.exit_code == 2  # the bad row is still an error
    page = index_of(result)
    assert re.search(r"\d+ messages, 1 with errors; showing 5 of \d+: `--limit` shows more", page)
    assert "<th>subject</th>" in page and "Payment notice C-1002" in page
    assert 'class="error"' in page and "<style>" in page and "<script" not in page
    folder = jobs.parent / "output" / "notice-2026" / "preview"
    message = next(folder.glob("*C-1002*.html")).read_text(encoding="utf-8")
    for label in ("subject", "to", "from", "reply-to", "attachments"):
        assert f"<th>{label}</th>" in message
    assert "LEGALLYMAIL_TOKEN" in message  # who sends: the account of the job's token


def test_an_sms_index_shows_the_text_not_an_empty_subject(jobs: Path) -> None:
    result = lmbatch("preview", jobs / "reminders-sms.yaml")
    page = index_of(result)
    assert "<th>text</th>" in page and "<th>subject</th>" not in page
    rows = re.findall(r'<td class="text">([^<]*)</td>', page)
    assert rows and all(text.strip() for text in rows)


def test_a_signature_index_names_the_document(jobs: Path) -> None:
    result = lmbatch("preview", jobs / "contracts.yaml")
    page = index_of(result)
    assert "<th>document</th>" in page
    assert all(t.strip() for t in re.findall(r'<td class="text">([^<]*)</td>', page))
