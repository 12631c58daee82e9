"""A send in doubt is matched on what was sent, and only to a send shown to be ours.

Issue 12 items 1 and 2, reproduced end to end against the sandbox over loopback: a run loses
one send's answer (or the send itself) and cannot look it up (the listing answers 500), so it
stops with the row in doubt; then a person edits the subject, or another campaign on the same
account sends the same subject to the same address; the next run must neither send a second
certified e-mail nor take the other campaign's message for its own.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import (
    DEADLINE,
    WINDOW,
    Campaign,
    child_env,
    done_code,
    email_campaign,
    fault_sandbox,
    in_doubt_keys,
    ledger_of,
    start_run,
    wait_for,
)

from batch import errors
from batch.cli import main
from batch.client import LegallyMailClient
from batch.jobfile import load_job
from batch.ledger import Ledger
from batch.pacing import SlidingWindowLimiter
from batch.reconcile import MISSING_FROM_ANSWER
from batch.runner import NullReporter, RunStats, run
from batch.sandbox import RunningSandbox, ShiftedClock, running_sandbox
from batch.sandbox.faults import Faults

LISTING = "/api/emails"
SEND = "/api/send"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A host-wide limiter state of this test's own; the API env set by `point_at`."""
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "state"))
    yield monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, sandbox: RunningSandbox) -> None:
    """Point LEGALLYMAIL_BASE_URL and LEGALLYMAIL_TOKEN at `sandbox`."""
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", sandbox.token)


class Notes(NullReporter):
    """Keeps the run's notes; after `after` requests, breaks the next send and its look-up."""

    def __init__(self, faults: Faults | None = None, kind: str = "", after: int = 3) -> None:
        self.lines: list[str] = []
        self.faults, self.kind, self.after = faults, kind, after

    def note(self, message: str) -> None:
        """Keep the line."""
        self.lines.append(message)

    def update(self, stats: RunStats) -> None:
        """Arm the faults once: the next send, then every attempt of the look-up after it."""
        if self.faults is not None and stats.requests_done == self.after:
            self.faults.force(self.kind)
            self.faults.force("error_500", 5)  # the job's retry.attempts: the look-up fails
            self.faults = None

    def count(self, text: str) -> int:
        """How many notes mention `text`."""
        return sum(text in line for line in self.lines)


def sends_to(sandbox: RunningSandbox, address: str) -> list[dict[str, object]]:
    """Every e-mail the sandbox accepted for `address`, any campaign."""
    return [
        e
        for e in sandbox.state.log()
        if e["channel"] == "email" and str(e["recipient"]).lower() == address.lower()
    ]


def stop_with_one_in_doubt(sandbox: RunningSandbox, campaign: Campaign, kind: str) -> str:
    """Run until the fourth send is broken by `kind` and cannot be looked up; its key."""
    job = load_job(campaign.job_path)
    first = run(job, reporter=Notes(sandbox.state.faults, kind))
    assert first.exit_code == errors.EXIT_PENDING
    assert "could not be looked up" in (first.stopped or "")
    doubtful = in_doubt_keys(campaign)
    assert len(doubtful) == 1
    return doubtful[0]


def rewrite_cell(path: Path, key: str, column: str, value: str) -> None:
    """Edit one cell of the campaign's CSV, as a person would between two runs."""
    frame = pl.read_csv(path, infer_schema=False)
    frame = frame.with_columns(
        pl.when(pl.col("id") == key).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )
    frame.write_csv(path)


def other_campaign(folder: Path, row: dict[str, str]) -> Path:
    """Campaign `other`: one row with the same address and subject, in `folder`'s output root."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "other.csv").write_text(
        f"id,email,subject,greeting\nB-1,{row['email']},{row['subject']},{row['greeting']}\n",
        encoding="utf-8",
    )
    (folder / "notice.html").write_text("<p>{{ greeting }}</p>", encoding="utf-8")
    job = folder / "other.yaml"
    job.write_text(
        f"""campaign: other
channel: email
dataset: {{path: other.csv, key: id}}
recipient: {{email: "{{{{ email }}}}"}}
message: {{subject: "{{{{ subject }}}}", html: notice.html}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
retry: {{attempts: 5, max_backoff_seconds: 0.1}}
output: out
""",
        encoding="utf-8",
    )
    return job


def row_of(campaign: Campaign, key: str) -> dict[str, str]:
    """The dataset row of `key`, as written."""
    frame = pl.read_csv(campaign.job_path.parent / "people.csv", infer_schema=False)
    return frame.filter(pl.col("id") == key).row(0, named=True)


# --- item 1: the look-up compares what was sent, not today's render -----------------------


def test_a_subject_edited_while_a_send_is_in_doubt_does_not_cause_a_second_send(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=8, grouped=0, seed=1)
    with running_sandbox(fault_sandbox(fault_endpoints=(SEND, LISTING))) as sandbox:
        point_at(environment, sandbox)
        key = stop_with_one_in_doubt(sandbox, campaign, "lost_response")
        address = campaign.by_key[key].address
        assert len(sends_to(sandbox, address)) == 1  # the answer was lost, the send was made

        rewrite_cell(campaign.job_path.parent / "people.csv", key, "subject", "Corrected notice")
        notes = Notes()
        again = run(load_job(campaign.job_path), reporter=notes)

        assert again.exit_code == errors.EXIT_OK, again.counts
        sent = sends_to(sandbox, address)
        assert len(sent) == 1, "the edited subject was not found and the notice went out twice"
        assert notes.count("found in the account's latest sends") == 1
        row = ledger_of(campaign).filter(pl.col("key") == key).row(0, named=True)
        assert row["status"] == "sent" and row["tracking_id"] == sent[0]["tracking_id"]


@pytest.mark.slow
def test_killed_while_the_answer_is_on_its_way_then_edited_the_notice_goes_out_once(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # SIGKILL between the send and its answer, on the campaign's very first send: no answer
    # has taught the server's clock yet, and the look-up follows within the request's span,
    # so the match is taken on ordering (sent after the anchor, seen before the look-up).
    campaign = email_campaign(tmp_path / "job", personal=6, grouped=0, seed=2)
    with running_sandbox(fault_sandbox(slow_seconds=3.0)) as sandbox:
        sandbox.state.faults.force("slow")  # the first send is recorded, its answer held
        child = start_run(campaign, child_env(sandbox, tmp_path / "state"), tmp_path / "logs")
        wait_for(
            lambda: sandbox.state.faults.counts.get("slow") == 1 and len(sandbox.state.log()) == 1,
            "the first send recorded with its answer held",
            timeout=DEADLINE,
        )
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=DEADLINE) == -signal.SIGKILL
        (key,) = in_doubt_keys(campaign)
        address = campaign.by_key[key].address

        rewrite_cell(campaign.job_path.parent / "people.csv", key, "subject", "Corrected notice")
        point_at(environment, sandbox)
        notes = Notes()
        again = run(load_job(campaign.job_path), reporter=notes)

        assert again.exit_code == errors.EXIT_OK, (again.counts, notes.lines)
        assert len(sends_to(sandbox, address)) == 1
        assert notes.count("found in the account's latest sends") == 1


def test_the_intent_records_what_its_look_up_needs(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=4, grouped=6, seed=3)
    with running_sandbox(fault_sandbox()) as sandbox:
        point_at(environment, sandbox)
        assert run(load_job(campaign.job_path)).exit_code == done_code(campaign)
    ledger = ledger_of(campaign)
    for row in ledger.iter_rows(named=True):
        probe = pl.Series([row["probe"]]).str.json_decode().to_list()[0]
        group = ledger.filter(pl.col("request_id") == row["request_id"])
        assert probe["subject"] == campaign.by_key[row["key"]].subject
        assert sorted(probe["addresses"]) == sorted(group["address"].to_list())
        assert probe["count"] == group.height and probe["at"] and probe["span"] > 0
    clock = (load_job(campaign.job_path).output_dir / "server-clock.json").read_text()
    assert "offset_low" in clock  # learned from the campaign's own answers


# --- item 2: another campaign's message is never taken for ours ----------------------------


def test_another_campaigns_send_on_this_machine_is_not_taken_for_ours(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A's fourth send is lost before it reaches the server (a 500: nothing recorded) and A
    # stops. Campaign B, same output root, sends the same subject to the same address, at
    # once: by time alone B's message could be A's. Its id is registered as B's.
    campaign = email_campaign(tmp_path / "job", personal=8, grouped=0, seed=1)
    with running_sandbox(fault_sandbox(fault_endpoints=(SEND, LISTING))) as sandbox:
        point_at(environment, sandbox)
        key = stop_with_one_in_doubt(sandbox, campaign, "error_500")
        address = campaign.by_key[key].address
        assert sends_to(sandbox, address) == []

        other = other_campaign(tmp_path / "job", row_of(campaign, key))
        assert run(load_job(other)).exit_code == errors.EXIT_OK
        (theirs,) = sends_to(sandbox, address)

        notes = Notes()
        again = run(load_job(campaign.job_path), reporter=notes)

        assert again.exit_code == errors.EXIT_OK, again.counts
        both = sends_to(sandbox, address)
        assert len(both) == 2, "A took B's message for its own and never sent its notice"
        row = ledger_of(campaign).filter(pl.col("key") == key).row(0, named=True)
        assert row["status"] == "sent"
        assert row["tracking_id"] != theirs["tracking_id"]
        assert row["tracking_id"] == both[1]["tracking_id"]
        # B's message was set aside and A's own send proven absent (any forced fault left over
        # from the first run may prove a second attempt absent too, never send twice).
        assert notes.count("proven not sent") >= 1
        registry = (tmp_path / "job" / "out" / ".lmbatch" / "tracking-ids").read_text()
        assert f"other\t{theirs['tracking_id']}" in registry


def test_a_like_send_from_elsewhere_outside_the_intents_window_keeps_the_row_in_doubt(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As above, but B runs on another machine (another output root: no shared registry) an
    # hour later by the server's clock. Only the time can tell: the row stays in doubt, says
    # why, and nothing is sent until the operator settles it.
    campaign = email_campaign(tmp_path / "job", personal=8, grouped=0, seed=1)
    clock = ShiftedClock()
    config = fault_sandbox(fault_endpoints=(SEND, LISTING), clock=clock)
    with running_sandbox(config) as sandbox:
        point_at(environment, sandbox)
        key = stop_with_one_in_doubt(sandbox, campaign, "error_500")
        address = campaign.by_key[key].address

        clock.advance(3600)
        other = other_campaign(tmp_path / "elsewhere", row_of(campaign, key))
        assert run(load_job(other)).exit_code == errors.EXIT_OK
        assert len(sends_to(sandbox, address)) == 1

        notes = Notes()
        again = run(load_job(campaign.job_path), reporter=notes)

        assert again.exit_code == errors.EXIT_PENDING, "taken for ours, or re-sent blindly"
        assert len(sends_to(sandbox, address)) == 1
        row = ledger_of(campaign).filter(pl.col("key") == key).row(0, named=True)
        assert row["status"] == "in_doubt"
        assert "cannot be shown to be ours" in row["error_details"]
        assert "outside this send's window" in row["error_details"]
        status = CliRunner().invoke(main, ["status", str(campaign.job_path)])
        assert "cannot be shown to be ours" in " ".join(status.output.split())

        settled = CliRunner().invoke(main, ["resolve", str(campaign.job_path), key, "--not-sent"])
        assert settled.exit_code == 0, settled.output
        final = run(load_job(campaign.job_path))
        assert final.exit_code == errors.EXIT_OK
        assert len(sends_to(sandbox, address)) == 2
        counted = Counter(str(e["recipient"]) for e in sandbox.state.log())
        assert all(n == 1 for a, n in counted.items() if a != address)


# --- rows in doubt written before intents kept a probe -------------------------------------


@pytest.mark.parametrize("edited", [False, True], ids=["unchanged", "subject edited"])
def test_a_row_in_doubt_without_a_probe_uses_todays_render_only_if_it_is_what_was_sent(
    environment: pytest.MonkeyPatch, tmp_path: Path, edited: bool
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=8, grouped=0, seed=1)
    with running_sandbox(fault_sandbox(fault_endpoints=(SEND, LISTING))) as sandbox:
        point_at(environment, sandbox)
        key = stop_with_one_in_doubt(sandbox, campaign, "lost_response")
        address = campaign.by_key[key].address
        with Ledger.open(load_job(campaign.job_path).output_dir) as ledger:
            ledger.update(key, probe=None)  # as an older lmbatch left it
        if edited:
            rewrite_cell(campaign.job_path.parent / "people.csv", key, "subject", "Corrected")

        again = run(load_job(campaign.job_path))

        assert len(sends_to(sandbox, address)) == 1, "sent twice"
        row = ledger_of(campaign).filter(pl.col("key") == key).row(0, named=True)
        if edited:  # today's render is not what was sent: it cannot prove anything
            assert again.exit_code == errors.EXIT_PENDING
            assert row["status"] == "in_doubt"
            assert "row changed since" in row["error_details"]
        else:
            assert again.exit_code == errors.EXIT_OK and row["status"] == "sent"


# --- a recipient its send's answer left out keeps saying so while it stays in doubt --------


class DropsOneRecipient(httpx.BaseTransport):
    """A real-socket transport whose first group send's answer forgets one recipient."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.dropped: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Pass the request on; trim the answer once."""
        response = self.inner.handle_request(request)
        if self.dropped is not None or request.url.path != SEND:
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


def test_a_recipient_left_out_of_an_answer_is_looked_up_in_its_send_after_a_failed_look_up(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    campaign = email_campaign(tmp_path / "job", personal=3, grouped=12, seed=2)
    config = fault_sandbox(fault_endpoints=("/api/email",))
    with running_sandbox(config) as sandbox:
        point_at(environment, sandbox)
        job = load_job(campaign.job_path)
        transport = DropsOneRecipient()
        limiter = SlidingWindowLimiter(10, WINDOW)
        with LegallyMailClient(
            sandbox.base_url, sandbox.token, limiter=limiter, transport=transport
        ) as client:
            assert run(job, client=client).exit_code == errors.EXIT_PENDING
        assert transport.dropped is not None
        (key,) = in_doubt_keys(campaign)

        sandbox.state.faults.force("error_500", 5)  # every attempt at the send's detail
        assert run(job).exit_code == errors.EXIT_PENDING
        row = ledger_of(campaign).filter(pl.col("key") == key).row(0, named=True)
        assert row["status"] == "in_doubt"
        assert row["error_details"].startswith(f"{MISSING_FROM_ANSWER}: look-up of ")

        notes = Notes()
        assert run(job, reporter=notes).exit_code == done_code(campaign)
        assert notes.count("found among the recipients of") == 1
        assert len(sends_to(sandbox, transport.dropped)) == 1
