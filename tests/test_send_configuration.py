"""A send endpoint that answers 3xx, 404 or 405 is a wrong setting, not a recipient's failure.

Issue 12 item 10: a wrong base URL path or a proxy answers every send the same way. Marking
each recipient `failed` (and exiting 0) burnt the whole campaign on one setting; the run must
stop (exit 1) with the rows pending, and never follow a redirect with a send.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import Unlimited, email_campaign, fault_sandbox, ledger_of, sms_campaign

from batch import errors
from batch.cli import main
from batch.client import LegallyMailClient
from batch.jobfile import load_job
from batch.runner import run
from batch.sandbox import running_sandbox


def proxy(send: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[str]]:
    """An API whose reads work and whose sends all get `send`; the requests it saw."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.host}{request.url.path}")
        if request.method == "POST":
            return send
        if request.url.path == "/api/info":
            return httpx.Response(200, json={"user": {"remaining_emails": 1000}})
        if request.url.path == "/api/emails":
            return httpx.Response(200, json={"success": True, "emails": []})
        return httpx.Response(404, json={"message": "not found"})

    return handle, seen


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(404, json={"message": "Not Found"}),
        httpx.Response(405, json={"message": "Method Not Allowed"}),
        httpx.Response(301, headers={"location": "https://www.legallymail.test/api/send"}),
        httpx.Response(307, headers={"location": "https://legallymail.test/v2/api/send"}),
    ],
    ids=["404", "405", "301", "307"],
)
def test_a_send_answered_as_misconfigured_stops_the_run_with_every_row_pending(
    tmp_path: Path, answer: httpx.Response
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=6, grouped=0, seed=1)
    handle, seen = proxy(answer)
    client = LegallyMailClient(
        "https://legallymail.test",
        "token-123",
        limiter=Unlimited(),
        transport=httpx.MockTransport(handle),
        sleep=lambda _: None,
    )
    with client, pytest.raises(errors.ConfigurationError) as raised:
        run(load_job(campaign.job_path), client=client)
    assert raised.value.exit_code == errors.EXIT_ERROR
    assert raised.value.hint and "base_url" in raised.value.hint
    posts = [s for s in seen if s.startswith("POST")]
    assert posts == ["POST legallymail.test/api/send"], "one send, no redirect followed"
    ledger = ledger_of(campaign)
    assert set(ledger["status"]) == {"pending"}, ledger.select("key", "status", "error_details")
    assert ledger["attempts"].sum() == 1


def test_a_wrong_base_url_path_exits_1_and_the_campaign_resumes_once_fixed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # SMS campaigns check no credits and take no anchor: the send is the first request, so
    # nothing before it notices the wrong path.
    campaign = sms_campaign(tmp_path / "job", n=5)
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "state"))
    with running_sandbox(fault_sandbox()) as sandbox:
        monkeypatch.setenv("LEGALLYMAIL_TOKEN", sandbox.token)
        monkeypatch.setenv("LEGALLYMAIL_BASE_URL", sandbox.base_url + "/v1")
        result = CliRunner().invoke(main, ["run", str(campaign.job_path)])
        assert result.exit_code == errors.EXIT_ERROR, result.output
        assert "base_url" in " ".join(result.output.split())
        assert set(ledger_of(campaign)["status"]) == {"pending"}
        assert sandbox.state.log() == []

        monkeypatch.setenv("LEGALLYMAIL_BASE_URL", sandbox.base_url)
        result = CliRunner().invoke(main, ["run", str(campaign.job_path)])
        assert result.exit_code == errors.EXIT_OK, result.output
        assert len(sandbox.state.log()) == 5
        assert ledger_of(campaign).filter(pl.col("status") != "sent").is_empty()


def test_a_404_on_a_look_up_still_means_an_unknown_id() -> None:
    handle, _ = proxy(httpx.Response(200, json={}))
    with (
        LegallyMailClient(
            "https://legallymail.test",
            "token-123",
            limiter=Unlimited(),
            transport=httpx.MockTransport(handle),
            sleep=lambda _: None,
        ) as client,
        pytest.raises(errors.PermanentApiError) as raised,
    ):
        client.email("T-UNKNOWN")
    assert raised.value.status == 404
    assert not isinstance(raised.value, errors.ConfigurationError)
