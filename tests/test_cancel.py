"""`lmbatch cancel`: rows not yet sent become cancelled, nothing more is sent, the report says
so, and a running campaign's lock is respected."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import recipients_accepted

from batch.cli import main
from batch.ledger import read_ledger
from batch.lock import CampaignLock
from batch.sandbox import RunningSandbox

WINDOW = 0.5


def write_job(folder: Path, n: int) -> Path:
    rows = ["id,name,email"] + [f"C-{i:03d},Name {i},p{i}@example.com" for i in range(n)]
    (folder / "people.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Dear {{ name }}</p>", encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: cx
dataset: {{path: people.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "Notice {{{{ id }}}}", html: notice.html}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
output: out
""",
        encoding="utf-8",
    )
    return job


def lmbatch(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)


@pytest.fixture
def api(sandbox: RunningSandbox, use_sandbox: object) -> RunningSandbox:
    use_sandbox(sandbox)  # type: ignore[operator]
    return sandbox


def test_cancel_after_a_first_batch_ends_the_campaign(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, 5)
    assert lmbatch("run", job, "--limit", "2").exit_code == 3
    result = lmbatch("cancel", job, "--note", "debt settled by agreement")
    assert result.exit_code == 0, result.output
    assert "debt settled by agreement" in result.stdout and "3 row(s)" in result.stdout
    ledger = read_ledger(tmp_path / "out" / "cx")
    statuses = dict(zip(ledger["key"], ledger["status"], strict=True))
    assert sorted(statuses.values()) == ["cancelled"] * 3 + ["sent"] * 2
    assert all("debt settled" in d for d in ledger.filter(status="cancelled")["error_details"])

    again = lmbatch("run", job)
    assert again.exit_code == 0
    assert "was cancelled" in again.stdout and "nothing sent" in again.stdout
    assert len(recipients_accepted(api)) == 2

    report = lmbatch("report", job)
    assert report.exit_code == 0
    page = (tmp_path / "out" / "cx" / "report.html").read_text(encoding="utf-8")
    assert "debt settled by agreement" in page


def test_rows_added_after_a_cancel_are_not_sent(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, 2)
    assert lmbatch("cancel", job, "--note", "wrong list").exit_code == 0
    write_job(tmp_path, 4)  # the dataset grows afterwards
    result = lmbatch("run", job)
    assert result.exit_code == 0
    assert "nothing sent" in result.stdout
    assert recipients_accepted(api) == []
    again = lmbatch("cancel", job, "--note", "second thoughts")
    assert again.exit_code == 0 and "(wrong list); 2 row(s)" in again.stdout  # the first record


def test_cancel_refuses_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    job = write_job(tmp_path, 2)
    with CampaignLock(tmp_path / "out" / "cx" / "run.lock"):
        result = lmbatch("cancel", job, "--note", "stop")
    assert result.exit_code == 4
    assert "already running" in result.stderr
    assert not (tmp_path / "out" / "cx" / "cancelled.json").exists()


def test_cancel_needs_a_note(tmp_path: Path) -> None:
    result = lmbatch("cancel", write_job(tmp_path, 1))
    assert result.exit_code == 2
    assert "--note" in result.output
