"""`lmbatch send-test`: one request, to the given address only, marked, never in the ledger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batch.cli import main
from batch.ledger import LEDGER_FILES
from batch.sandbox import RunningSandbox
from batch.sendtest import marked


def write_job(folder: Path, rows: list[str]) -> Path:
    (folder / "people.csv").write_text("\n".join(["id,name,email", *rows]) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Dear {{ name }}</p>", encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        """campaign: st
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}", name: "{{ name }}"}
message: {subject: "Notice {{ id }}", html: notice.html}
limits: {requests_per_window: 10, window_seconds: 0.5}
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


def sends(sandbox: RunningSandbox) -> list[dict[str, object]]:
    return [r for r in sandbox.state.requests() if r["method"] == "POST"]


def test_one_request_to_the_given_address_marked_and_not_in_the_ledger(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = write_job(tmp_path, ["A-1,Bad Row,not-an-address", "A-2,Ana,ana@example.com"])
    result = lmbatch("send-test", job, "--to", " me@example.org ")
    assert result.exit_code == 0, result.output
    assert len(api.state.requests()) == 1  # exactly one request, of any kind
    [entry] = api.state.log()
    assert entry["recipient"] == "me@example.org"  # never the row's own recipient
    assert entry["subject"] == "[TEST] Notice A-2"  # the first *valid* row
    assert "Dear Ana" in str(entry["message"])
    folder = tmp_path / "out" / "st"
    assert not any((folder / name).exists() for name in LEDGER_FILES)
    [line] = (folder / "tests.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["key"] == "A-2" and record["to"] == "me@example.org"
    assert record["outcome"] == "sent" and record["id"]

    run = lmbatch("run", job, "--skip-invalid")  # the row is still to send, once
    assert run.exit_code == 5, run.output  # done; the invalid row stays skipped
    assert [e["recipient"] for e in api.state.log()] == ["me@example.org", "ana@example.com"]


def test_a_chosen_key(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, ["A-1,Ana,ana@example.com", "A-2,Bo,bo@example.com"])
    assert lmbatch("send-test", job, "--to", "me@example.org", "--key", "A-2").exit_code == 0
    assert [e["subject"] for e in api.state.log()] == ["[TEST] Notice A-2"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--key", "A-9"], "key A-9: no such row"),
        (["--key", "A-1"], "row 2 (key A-1)"),
    ],
)
def test_a_bad_key_sends_nothing(
    api: RunningSandbox, tmp_path: Path, args: list[str], expected: str
) -> None:
    job = write_job(tmp_path, ["A-1,Bad,not-an-address", "A-2,Bo,bo@example.com"])
    result = lmbatch("send-test", job, "--to", "me@example.org", *args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert sends(api) == []


def test_a_bad_own_address_sends_nothing(api: RunningSandbox, tmp_path: Path) -> None:
    job = write_job(tmp_path, ["A-1,Ana,ana@example.com"])
    result = lmbatch("send-test", job, "--to", "me-at-example")
    assert result.exit_code == 2
    assert "--to me-at-example" in result.stderr
    assert sends(api) == []


@pytest.mark.parametrize(
    ("content", "field", "expected"),
    [
        ({"subject": "Notice", "message": "<p>x</p>"}, "subject", "[TEST] Notice"),
        ({"message": "Your notice"}, "message", "[TEST] Your notice"),
        (
            {"document_name": "Lease", "signers": [{"name": "A", "email": "a@x.es"}]},
            "document_name",
            "[TEST] Lease",
        ),
    ],
)
def test_every_channel_marks_the_test_where_the_recipient_sees_it_first(
    content: dict[str, object], field: str, expected: str
) -> None:
    out, line = marked(content, "me@example.org")
    assert out[field] == expected == line
    if "signers" in content:
        assert out["signers"] == [{"name": "A", "email": "me@example.org"}]


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    root = Path(__file__).parent.parent
    shutil.copytree(root / "jobs", tmp_path / "jobs")
    shutil.copytree(root / "templates", tmp_path / "templates")
    return tmp_path / "jobs"


def test_an_sms_test_goes_to_the_given_phone_with_the_mark_first(
    api: RunningSandbox, jobs: Path
) -> None:
    result = lmbatch("send-test", jobs / "reminders-sms.yaml", "--to", "612 345 678")
    assert result.exit_code == 0, result.output
    [entry] = api.state.log()
    assert entry["recipient"] == "+34612345678"  # the job's default region applies
    assert str(entry["message"]).startswith("[TEST] Hola ")
    assert len(sends(api)) == 1


def test_a_signature_test_has_the_operator_as_its_only_signer(
    api: RunningSandbox, jobs: Path
) -> None:
    result = lmbatch("send-test", jobs / "contracts.yaml", "--to", "me@example.org")
    assert result.exit_code == 0, result.output
    entries = api.state.log()
    assert entries and {e["recipient"] for e in entries} == {"me@example.org"}
    assert len(sends(api)) == 1
