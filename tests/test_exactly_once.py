"""Exactly once, whatever fails: fault injection against the sandbox over loopback.

Each campaign runs (in this process, over a real socket) against a sandbox injecting the four
fault kinds with a fixed seed, again and again until nothing is left to send or to look up;
then the sandbox's record and the ledger must agree: every recipient received its own
message exactly once, and the ledger holds the very tracking ids the sandbox handed out.

The helpers here (job writers, the exactly-once check) are shared with test_crash.py and
test_concurrent_runs.py.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from click.testing import CliRunner
from helpers import (
    Campaign,
    accepted,
    assert_exactly_once,
    done_code,
    email_campaign,
    fault_sandbox,
    figures,
    in_doubt_keys,
    ledger_of,
    resolve_by_hand,
    signature_campaign,
    sms_campaign,
)

from batch import errors
from batch.cli import main
from batch.client import LegallyMailClient
from batch.jobfile import load_job
from batch.pacing import SlidingWindowLimiter
from batch.runner import NullReporter, RunStats, RunSummary, run
from batch.sandbox import RunningSandbox, running_sandbox

WINDOW = 0.5  # 10 requests per half second: the real limit, scaled 120×
REPO = Path(__file__).resolve().parent.parent
PDF = REPO / "jobs" / "data" / "terms.pdf"
SEEDS = [11, 23, 37]


# --- campaigns ----------------------------------------------------------------------------


# --- running ------------------------------------------------------------------------------


class Notes(NullReporter):
    """Keeps the run's notes (answers lost, in doubt, proven absent) for the figures."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        """Keep the line."""
        self.lines.append(message)

    def count(self, text: str) -> int:
        """How many notes mention `text`."""
        return sum(text in line for line in self.lines)


def run_until_settled(campaign: Campaign, notes: Notes, *, most: int = 6) -> list[RunSummary]:
    """Run the campaign until a run ends with nothing pending or in doubt."""
    job = load_job(campaign.job_path)
    summaries: list[RunSummary] = []
    while len(summaries) < most:
        summaries.append(run(job, reporter=notes))
        if summaries[-1].exit_code == done_code(campaign):
            return summaries
    counts = summaries[-1].counts
    raise AssertionError(f"still not settled after {most} runs: {counts}")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A host-wide limiter state of this test's own; the API env set by `point_at`."""
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "state"))
    yield monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, sandbox: RunningSandbox) -> None:
    """Point LEGALLYMAIL_BASE_URL and LEGALLYMAIL_TOKEN at `sandbox`."""
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", sandbox.token)


FAULTS = {"error_500": 0.05, "lost_response": 0.07, "slow": 0.04, "burst_429": 0.02}


# --- e-mail -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_email_campaign_under_every_fault_is_sent_exactly_once(
    environment: pytest.MonkeyPatch, tmp_path: Path, seed: int
) -> None:
    # Faults hit every /api path, look-ups included: a look-up that fails leaves the send
    # in doubt for the next run, which must still settle it.
    # A read timeout shorter than a slow answer: the send is recorded, the client gives up.
    campaign = email_campaign(
        tmp_path / "job", personal=70, grouped=140, seed=seed, timeout=0.4, attempts=5
    )
    config = fault_sandbox(faults=FAULTS, fault_seed=seed, fault_endpoints=("*",))
    started = time.monotonic()
    with running_sandbox(config) as sandbox:
        point_at(environment, sandbox)
        notes = Notes()
        summaries = run_until_settled(campaign, notes)
        assert_exactly_once(sandbox, campaign)
        stats = sandbox.state.stats()
        assert sum(stats["faults"].values()) >= 5, "the seed drew too few faults to prove much"
        assert notes.count("answer lost") >= 3
        figures(
            f"email seed={seed}",
            recipients=len(campaign.recipients),
            runs=len(summaries),
            requests=stats["requests"],
            faults=stats["faults"],
            answers_lost=notes.count("answer lost"),
            read_timeouts=notes.count("ReadTimeout"),
            found_after_loss=notes.count("found in the account"),
            proven_absent=notes.count("proven not sent"),
            left_in_doubt=notes.count("stay in doubt"),
            duplicates=0,
            losses=0,
            seconds=round(time.monotonic() - started, 1),
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_sms_in_doubt_is_never_resent_and_is_settled_by_hand(
    environment: pytest.MonkeyPatch, tmp_path: Path, seed: int
) -> None:
    campaign = sms_campaign(tmp_path / "job", n=40, timeout=0.4)
    faults = {"error_500": 0.08, "lost_response": 0.1, "slow": 0.06, "burst_429": 0.03}
    with running_sandbox(fault_sandbox(faults=faults, fault_seed=seed)) as sandbox:
        point_at(environment, sandbox)
        job = load_job(campaign.job_path)
        first = run(job)
        doubtful = in_doubt_keys(campaign)
        drawn = sandbox.state.stats()["faults"]
        # Every 500, lost or slow answer to an SMS leaves it in doubt: none can be looked up.
        answered_badly = sum(drawn.get(k, 0) for k in ("error_500", "lost_response", "slow"))
        assert len(doubtful) == answered_badly >= 2
        assert first.exit_code == errors.EXIT_PENDING
        sent_before = len(accepted(sandbox, campaign))

        sandbox.state.faults.set({})
        again = run(job)
        assert again.exit_code == errors.EXIT_PENDING, "rows in doubt are work left"
        assert in_doubt_keys(campaign) == doubtful, "a second run settled an SMS it cannot see"
        assert len(accepted(sandbox, campaign)) == sent_before, "an SMS in doubt was re-sent"

        verdicts = resolve_by_hand(sandbox, campaign, doubtful)
        assert verdicts["not-sent"] == drawn.get("error_500", 0)  # 500s come before the commit
        final = run(job)
        assert final.exit_code == done_code(campaign)
        assert_exactly_once(sandbox, campaign)
        figures(
            f"sms seed={seed}",
            recipients=len(campaign.recipients),
            faults=drawn,
            in_doubt=len(doubtful),
            resolved_sent=verdicts["sent"],
            resolved_not_sent=verdicts["not-sent"],
            duplicates=0,
            losses=0,
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_signature_requests_in_doubt_are_looked_up_not_resent(
    environment: pytest.MonkeyPatch, tmp_path: Path, seed: int
) -> None:
    campaign = signature_campaign(tmp_path / "job", n=40, timeout=0.4)
    faults = {"error_500": 0.08, "lost_response": 0.12, "slow": 0.06, "burst_429": 0.03}
    with running_sandbox(fault_sandbox(faults=faults, fault_seed=seed)) as sandbox:
        point_at(environment, sandbox)
        notes = Notes()
        summaries = run_until_settled(campaign, notes)
        assert_exactly_once(sandbox, campaign)
        drawn = sandbox.state.stats()["faults"]
        assert notes.count("answer lost") >= 2
        assert notes.count("found in the account's latest signature requests") >= drawn.get(
            "lost_response", 0
        )
        figures(
            f"signature seed={seed}",
            recipients=len(campaign.recipients),
            runs=len(summaries),
            faults=drawn,
            answers_lost=notes.count("answer lost"),
            proven_absent=notes.count("proven not sent"),
            duplicates=0,
            losses=0,
        )


# --- before the first send: the output folder, the credits -------------------------------


def cli_run(campaign: Campaign, *options: str) -> tuple[int, str]:
    """`lmbatch run JOB [options]` in this process; exit code and output, one line per line."""
    result = CliRunner().invoke(main, ["run", str(campaign.job_path), *options])
    return result.exit_code, result.output


def one_line(text: str) -> str:
    """`text` with rich's line wrapping undone."""
    return " ".join(text.split())


def test_an_output_folder_that_cannot_be_created_fails_before_any_request(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=5, grouped=5, seed=1)
    (tmp_path / "job" / "out").write_text("a file where the output folder should be\n")
    with running_sandbox(fault_sandbox()) as sandbox:
        point_at(environment, sandbox)
        code, output = cli_run(campaign)
        assert code == errors.EXIT_ERROR
        text = one_line(output)
        assert "cannot write the ledger here" in text and "Not a directory" in text
        assert "choose a writable `output:` folder" in text
        assert sandbox.state.request_count() == 0  # not even the credit check went out


def test_a_nearly_full_disk_fails_before_any_request(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=5, grouped=5, seed=1)
    mib = 1024 * 1024
    full = SimpleNamespace(total=100 * mib, used=99 * mib, free=mib)
    environment.setattr(shutil, "disk_usage", lambda path: full)
    with running_sandbox(fault_sandbox()) as sandbox:
        point_at(environment, sandbox)
        code, output = cli_run(campaign)
        assert code == errors.EXIT_ERROR
        text = one_line(output)
        assert "only 1024 KiB free" in text and "free some disk space" in text
        assert sandbox.state.request_count() == 0


def test_too_few_credits_stop_before_sending_unless_partial_is_allowed(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=15, grouped=35, seed=4)
    with running_sandbox(fault_sandbox(credits=24)) as sandbox:
        point_at(environment, sandbox)
        code, output = cli_run(campaign)
        text = one_line(output)
        assert code == errors.EXIT_PENDING
        assert "24 e-mail credits left; this run needs 50" in text
        assert "--allow-partial" in text
        assert accepted(sandbox, campaign) == []

        code, output = cli_run(campaign, "--allow-partial")
        text = one_line(output)
        assert code == errors.EXIT_PENDING
        assert "HTTP 403" in text and "no credits left" in text  # the hint, whatever the API says
        assert f"resume with: lmbatch run {campaign.job_path}" in text
        ledger = ledger_of(campaign)
        got = {str(e["recipient"]).lower() for e in accepted(sandbox, campaign)}
        assert got, "the credits covered some requests"
        # The refused request's recipients and everything after stay pending, none failed.
        for row in ledger.iter_rows(named=True):
            recipient = campaign.by_key[row["key"]]
            if recipient.address.lower() in got:
                assert row["status"] == ("failed" if recipient.fails else "sent")
            else:
                assert row["status"] == "pending", row
        assert ledger.height == len(campaign.recipients)

        sandbox.state.set_credits(1000)
        code, output = cli_run(campaign)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)


@pytest.mark.parametrize("channel", ["email", "signature"])
def test_a_look_up_that_fails_does_not_let_the_send_slip_out_of_the_listing(
    environment: pytest.MonkeyPatch, tmp_path: Path, channel: str
) -> None:
    # The answer to one send is lost and every attempt to look it up fails (the listing
    # endpoint answers 500). The listing shows only the latest 25: had the run gone on
    # sending, the lost send would fall out of it and stay in doubt for ever.
    if channel == "email":
        campaign = email_campaign(tmp_path / "job", personal=40, grouped=0, seed=1)
        listing = "/api/emails"
    else:
        campaign = signature_campaign(tmp_path / "job", n=40)
        listing = "/api/signatures"
    send = {"email": "/api/send", "signature": "/api/signature/send"}[channel]
    attempts = load_job(campaign.job_path).spec.retry.attempts
    config = fault_sandbox(fault_endpoints=(send, listing))
    with running_sandbox(config) as sandbox:
        point_at(environment, sandbox)
        faults = sandbox.state.faults

        class LoseTheFifth(Notes):
            def update(self, stats: RunStats) -> None:
                if stats.requests_done == 5 and not faults.counts:
                    faults.force("lost_response")
                    faults.force("error_500", attempts)

        notes = LoseTheFifth()
        job = load_job(campaign.job_path)
        summaries = [run(job, reporter=notes)]
        assert faults.counts == {"lost_response": 1, "error_500": attempts}
        # The run stops at once: nothing sent after the send it could not look up.
        assert summaries[0].exit_code == errors.EXIT_PENDING
        assert "could not be looked up" in (summaries[0].stopped or "")
        assert len(accepted(sandbox, campaign)) == 6
        while summaries[-1].exit_code != done_code(campaign) and len(summaries) < 4:
            summaries.append(run(job, reporter=notes))
        assert summaries[-1].exit_code == done_code(campaign), summaries[-1].counts
        assert_exactly_once(sandbox, campaign)


class DropsOneRecipient(httpx.BaseTransport):
    """A real-socket transport whose first multi-recipient send answer omits one recipient.

    The request is processed in full; only the answer forgets to name someone (the API's
    documentation does not promise every recipient is named).
    """

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.dropped: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Pass the request on; trim the answer once."""
        response = self.inner.handle_request(request)
        if self.dropped is not None or request.url.path != "/api/send":
            return response
        response.read()
        body = json.loads(response.content)
        named = body["data"]["recipients"]
        if len(named) < 2 or named[0]["status"] != "sent":
            return response
        self.dropped = str(named.pop(0)["email"])
        return httpx.Response(response.status_code, json=body)

    def close(self) -> None:
        """Close the real transport."""
        self.inner.close()


def test_a_recipient_missing_from_the_answer_is_not_sent_twice(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=3, grouped=12, seed=2)
    with running_sandbox(fault_sandbox()) as sandbox:
        point_at(environment, sandbox)
        job = load_job(campaign.job_path)
        transport = DropsOneRecipient()
        client = LegallyMailClient(
            sandbox.base_url,
            sandbox.token,
            limiter=SlidingWindowLimiter(10, WINDOW),
            transport=transport,
        )
        with client:
            first = run(job, client=client)
        assert transport.dropped is not None
        assert first.exit_code == errors.EXIT_PENDING
        assert len(in_doubt_keys(campaign)) == 1
        notes = Notes()
        second = run(job, reporter=notes)
        assert second.exit_code == done_code(campaign), second.counts
        assert notes.count("found among the recipients of") == 1
        assert_exactly_once(sandbox, campaign)
