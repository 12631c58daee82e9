"""Crash tests: `python -m batch run` killed with SIGKILL at seeded moments, then resumed.

The sandbox runs in this process over loopback; lmbatch runs as a child process. Two kinds
of kill, chosen by a seeded RNG together with the number of accepted sends to wait for:

- in the gap: the next send is made `slow`, so the sandbox records it and then holds its
  answer; the kill lands while the child waits for that answer, i.e. after the send and
  before the ledger could record it (detected from the sandbox's own counters, not timed);
- anywhere: as soon as the sandbox has accepted that many sends, wherever the child is
  (pacing, journal write, checkpoint, look-up).

After the kills, the campaign is resumed until settled, and the sandbox and the ledger must
agree exactly as in test_exactly_once.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import (
    DEADLINE,
    Campaign,
    accepted,
    assert_exactly_once,
    child_env,
    done_code,
    email_campaign,
    fault_sandbox,
    figures,
    in_doubt_keys,
    ledger_of,
    resolve_by_hand,
    signature_campaign,
    sms_campaign,
    start_run,
)

from batch import errors
from batch.cli import main
from batch.sandbox import RunningSandbox, running_sandbox

pytestmark = pytest.mark.slow  # end to end: child processes killed and resumed

SEND_PATH = {"email": "/api/send", "sms": "/api/sms/send", "signature": "/api/signature/send"}
STAT = {"email": "emails", "sms": "sms", "signature": "signatures"}


def wait_until(condition: Callable[[], bool], child: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll `condition` until it holds (True) or the child has exited (False)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if condition():
            return True
        if child is not None and child.poll() is not None:
            return condition()
        time.sleep(0.001)  # a poll interval, not a stand-in for synchronisation
    if child is not None:
        child.kill()
    raise AssertionError("no progress before the deadline")


def recorded(sandbox: RunningSandbox, channel: str) -> int:
    """Send requests the sandbox has accepted (and recorded) on this channel."""
    return int(sandbox.state.stats()[STAT[channel]])


def unanswered(sandbox: RunningSandbox, channel: str) -> int:
    """Sends recorded whose answer has not gone out yet (a slow answer being held)."""
    answered = sum(
        1
        for r in sandbox.state.requests()
        if r["path"] == SEND_PATH[channel] and r["status"] in (200, 0)
    )
    return recorded(sandbox, channel) - answered


def kill(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no handler, no cleanup, no flush."""
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=DEADLINE) == -signal.SIGKILL


def crash_repeatedly(
    sandbox: RunningSandbox,
    campaign: Campaign,
    env: dict[str, str],
    logs: Path,
    *,
    seed: int,
    kills: int,
    requests: int,
) -> dict[str, int]:
    """Run and SIGKILL the campaign `kills` times at seeded moments; what each kind did."""
    rng = random.Random(seed)
    channel = campaign.channel
    targets = sorted(rng.sample(range(2, requests - 2), kills))
    done = {"gap": 0, "anywhere": 0, "finished_first": 0}
    for number, target in enumerate(targets):
        in_gap = number == 0 or rng.random() < 0.5  # the first kill always in the gap
        child = start_run(campaign, env, logs)
        if in_gap:
            if not wait_until(lambda t=target: recorded(sandbox, channel) >= t - 1, child):
                done["finished_first"] += 1
                continue
            slow_before = sandbox.state.faults.counts.get("slow", 0)
            sandbox.state.faults.force("slow")

            def held(before: int = slow_before) -> bool:
                return (
                    sandbox.state.faults.counts.get("slow", 0) > before
                    and unanswered(sandbox, channel) > 0
                )

            if not wait_until(held, child):
                done["finished_first"] += 1
                sandbox.state.faults.clear()
                continue
            kill(child)
            sandbox.state.faults.clear()
            assert unanswered(sandbox, channel) > 0, "the held answer went out before the kill"
            # The send is at the sandbox; the ledger has only its intent.
            assert in_doubt_keys(campaign), "the kill did not land between send and ledger"
            done["gap"] += 1
            # The held answer goes out to the dead socket; from then on, an unanswered send
            # can only be the next child's.
            wait_until(lambda: unanswered(sandbox, channel) == 0)
        else:
            if not wait_until(lambda t=target: recorded(sandbox, channel) >= t, child):
                done["finished_first"] += 1
                continue
            kill(child)
            done["anywhere"] += 1
    return done


def finish(campaign: Campaign, env: dict[str, str], logs: Path) -> tuple[int, str]:
    """Run the campaign to its end (no kill); its exit code and output."""
    child = start_run(campaign, env, logs)
    code = child.wait(timeout=DEADLINE * 2)
    output = sorted(logs.iterdir(), key=lambda p: p.stat().st_mtime)[-1].read_text("utf-8")
    return code, output


@pytest.mark.parametrize("seed", [5, 17, 29])
def test_email_campaign_survives_sigkill_at_random_moments(tmp_path: Path, seed: int) -> None:
    campaign = email_campaign(tmp_path / "job", personal=60, grouped=70, seed=seed)
    with running_sandbox(fault_sandbox(slow_seconds=1.0)) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        started = time.monotonic()
        done = crash_repeatedly(
            sandbox, campaign, env, logs, seed=seed, kills=4, requests=60 + 70 // 10
        )
        assert done["gap"] >= 1 and done["gap"] + done["anywhere"] >= 3
        doubtful = in_doubt_keys(campaign)
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)
        # Pacing held across the restarts: the limiter's state outlives a killed process.
        assert sandbox.state.request_count(status=429) == 0
        figures(
            f"crash email seed={seed}",
            recipients=len(campaign.recipients),
            kills=done,
            in_doubt_before_last_run=len(doubtful),
            duplicates=0,
            losses=0,
            seconds=round(time.monotonic() - started, 1),
        )


def test_status_shows_rows_in_doubt_and_the_next_run_settles_them(tmp_path: Path) -> None:
    campaign = email_campaign(tmp_path / "job", personal=12, grouped=20, seed=3)
    with running_sandbox(fault_sandbox(slow_seconds=1.0)) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        done = crash_repeatedly(sandbox, campaign, env, logs, seed=3, kills=1, requests=12)
        assert done["gap"] == 1
        doubtful = in_doubt_keys(campaign)
        result = CliRunner().invoke(main, ["status", str(campaign.job_path)])
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert f"{len(doubtful)} in doubt" in text
        assert "next run, looked up against the API's latest sends" in text
        assert "never re-sent blindly" in text
        for key in doubtful:
            assert key in text
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert "found in the account's latest sends" in output  # what status promised
        assert_exactly_once(sandbox, campaign)
        after = CliRunner().invoke(main, ["status", str(campaign.job_path)])
        assert "in doubt" not in after.output and "nothing left to send" in after.output


@pytest.mark.parametrize("seed", [8, 19])
def test_sms_campaign_survives_sigkill_and_in_doubt_sms_are_never_resent(
    tmp_path: Path, seed: int
) -> None:
    campaign = sms_campaign(tmp_path / "job", n=30)
    with running_sandbox(fault_sandbox(slow_seconds=1.0)) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        done = crash_repeatedly(sandbox, campaign, env, logs, seed=seed, kills=3, requests=30)
        assert done["gap"] >= 1
        code, output = finish(campaign, env, logs)
        doubtful = in_doubt_keys(campaign)
        # Every SMS whose answer the kill swallowed is still in doubt: nothing looked it up
        # and nothing sent it again.
        assert len(doubtful) >= done["gap"]
        assert code == errors.EXIT_PENDING, output
        status = CliRunner().invoke(main, ["status", str(campaign.job_path)])
        text = " ".join(status.output.split())
        assert f"{len(doubtful)} in doubt" in text
        assert "never sent again automatically" in text and "lmbatch resolve" in text
        verdicts = resolve_by_hand(sandbox, campaign, doubtful)
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)
        # Pacing held across the restarts: the limiter's state outlives a killed process.
        assert sandbox.state.request_count(status=429) == 0
        figures(
            f"crash sms seed={seed}",
            recipients=len(campaign.recipients),
            kills=done,
            in_doubt=len(doubtful),
            resolved=dict(verdicts),
            duplicates=0,
            losses=0,
        )


@pytest.mark.parametrize("seed", [8, 19])
def test_signature_campaign_survives_sigkill_at_random_moments(tmp_path: Path, seed: int) -> None:
    campaign = signature_campaign(tmp_path / "job", n=30)
    with running_sandbox(fault_sandbox(slow_seconds=1.0)) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        done = crash_repeatedly(sandbox, campaign, env, logs, seed=seed, kills=3, requests=30)
        assert done["gap"] >= 1
        doubtful = in_doubt_keys(campaign)
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)
        # Pacing held across the restarts: the limiter's state outlives a killed process.
        assert sandbox.state.request_count(status=429) == 0
        figures(
            f"crash signature seed={seed}",
            recipients=len(campaign.recipients),
            kills=done,
            in_doubt_before_last_run=len(doubtful),
            duplicates=0,
            losses=0,
        )


def test_credits_running_out_mid_run_stop_cleanly_and_resume(tmp_path: Path) -> None:
    # Enough credits when the run checks them; another user of the account spends them
    # while it sends, so the 403 comes mid-run, not from the pre-flight check.
    campaign = email_campaign(tmp_path / "job", personal=30, grouped=30, seed=6)
    with running_sandbox(fault_sandbox()) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        child = start_run(campaign, env, logs)
        assert wait_until(lambda: recorded(sandbox, "email") >= 8, child)
        sandbox.state.set_credits(2)
        code = child.wait(timeout=DEADLINE)
        output = " ".join(next(logs.iterdir()).read_text("utf-8").split())
        assert code == errors.EXIT_PENDING, output
        assert "HTTP 403" in output and "no credits left" in output
        assert "what was not sent stays pending" in output
        assert f"resume with: lmbatch run {campaign.job_path}" in output
        counts = ledger_of(campaign)["status"].value_counts()
        by_status = dict(zip(counts["status"].to_list(), counts["count"].to_list(), strict=True))
        assert set(by_status) <= {"sent", "failed", "pending"}, by_status  # nothing in doubt
        assert by_status.get("pending", 0) > 0
        # What the sandbox took is exactly what the ledger calls sent or failed.
        took = {str(e["recipient"]).lower() for e in accepted(sandbox, campaign)}
        settled = ledger_of(campaign).filter(pl.col("status") != "pending")["address"]
        assert {a.lower() for a in settled.to_list()} == took

        sandbox.state.set_credits(1000)
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)


def test_a_crash_before_the_first_request_left_is_settled_on_a_busy_account(
    tmp_path: Path,
) -> None:
    # The account already holds 30 e-mails of other campaigns, more than the listing shows.
    # The first send is refused with a 429 (surely not processed): the child, its intent
    # written, waits out the penalty before trying again and is killed there, so the request
    # never left. The next run must prove it absent and send it. (Waiting for a first slot
    # happens before the intent: a kill there leaves nothing in doubt, test_runner.)
    campaign = email_campaign(tmp_path / "job", personal=5, grouped=10, seed=9)
    with running_sandbox(fault_sandbox(rate_limit=100)) as sandbox:
        with sandbox.client() as other:
            for i in range(30):
                mail = {"to": f"other{i}@example.com", "subject": "Other", "message": "x"}
                assert other.post("/api/send", json=mail).status_code == 200
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        sandbox.state.faults.force("burst_429")
        child = start_run(campaign, env, logs)

        def refused_and_waiting() -> bool:
            refused = sandbox.state.request_count(status=429) >= 1
            return refused and bool(in_doubt_keys_or_none(campaign))

        assert wait_until(refused_and_waiting, child)
        kill(child)
        assert recorded(sandbox, "email") == 30, "the first request left before the kill"
        assert in_doubt_keys(campaign)
        code, output = finish(campaign, env, logs)
        assert code == done_code(campaign), output
        assert_exactly_once(sandbox, campaign)


def in_doubt_keys_or_none(campaign: Campaign) -> list[str]:
    """The keys in doubt, or none while the ledger does not exist yet."""
    try:
        return in_doubt_keys(campaign)
    except errors.LedgerError:
        return []
