"""The run, end to end against the sandbox over loopback with a scaled window."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from batch import errors
from batch.jobfile import load_job
from batch.ledger import Entry, Ledger, Outcome, read_ledger
from batch.runner import NullReporter, RunOptions, RunStats, run, validate
from batch.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from batch.sender import Sender
from batch.settings import Settings

WINDOW = 1.0  # 10 requests per second: the real limit, scaled 60×


def write_job(
    folder: Path,
    rows: list[dict[str, str]],
    *,
    body: str = "<p>Dear {{ name }}, you owe {{ amount }}.</p>",
    subject: str = "Notice {{ id }}",
    extra: str = "",
    per_window: int = 10,
    window: float = WINDOW,
) -> Path:
    """A job file with its CSV and template in `folder`."""
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text(body, encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: test
channel: email
dataset: {{path: people.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "{subject}", html: notice.html}}
limits: {{requests_per_window: {per_window}, window_seconds: {window},
  max_recipients_per_request: 10}}
retry: {{attempts: 4, max_backoff_seconds: 0.2}}
output: out
{extra}""",
        encoding="utf-8",
    )
    return job


def people(n: int, *, prefix: str = "p") -> list[dict[str, str]]:
    """n recipients with distinct keys and addresses."""
    return [
        {
            "id": f"C-{i:04d}",
            "name": f"Name {i}",
            "email": f"{prefix}{i}@example.com",
            "amount": str(i),
        }
        for i in range(n)
    ]


@pytest.fixture
def api(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox], tmp_path: Path
) -> Iterator[RunningSandbox]:
    """A real sandbox with the scaled window, and the environment pointing at it."""
    config = SandboxConfig(rate_limit=10, rate_window=WINDOW, delivered_after=0.5, read_after=1)
    with running_sandbox(config) as sandbox:
        use_sandbox(sandbox)
        yield sandbox


def sent_by_sandbox(sandbox: RunningSandbox) -> pl.DataFrame:
    """What the sandbox accepted: one row per recipient."""
    log = sandbox.state.log()
    return pl.DataFrame(
        {
            "email": [r["recipient"] for r in log],
            "tracking_id": [r["tracking_id"] for r in log],
        },
        schema={"email": pl.String, "tracking_id": pl.String},
    )


def assert_exactly_once(sandbox: RunningSandbox, ledger: pl.DataFrame) -> None:
    """Nobody twice at the sandbox, and the ledger's tracking ids are the sandbox's."""
    accepted = sent_by_sandbox(sandbox)
    assert accepted["email"].is_duplicated().sum() == 0, "a recipient was sent twice"
    sent = ledger.filter(
        pl.col("status").is_in(["sent", "failed"]) & pl.col("tracking_id").is_not_null()
    )
    assert sorted(sent["tracking_id"].to_list()) == sorted(accepted["tracking_id"].to_list())


def busiest_window(sandbox: RunningSandbox, window: float) -> int:
    """The most requests the sandbox saw arrive within any sliding `window`."""
    times = sorted(r["at"] for r in sandbox.state.requests())
    return max(
        (sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)),
        default=0,
    )


def test_personal_campaign_is_sent_once_and_recorded(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(33)))
    summary = run(job)
    ledger = read_ledger(job.output_dir)
    assert summary.exit_code == 0
    assert ledger["status"].to_list() == ["sent"] * 33
    assert ledger["tracking_id"].null_count() == 0
    assert_exactly_once(api, ledger)
    assert api.state.request_count(status=429) == 0
    assert busiest_window(api, WINDOW) <= 10  # sends and look-ups alike, as the server saw them


def test_the_settings_given_steer_the_run_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything in the environment points elsewhere: only the settings passed down count.
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", "env-token")
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "env-state"))
    job = load_job(write_job(tmp_path, people(3)))
    with running_sandbox(SandboxConfig(rate_limit=10, rate_window=WINDOW)) as sandbox:
        settings = Settings(sandbox.token, base_url=sandbox.base_url, state_dir=tmp_path / "s")
        summary = run(job, settings=settings)
        assert summary.counts == {"sent": 3}
        assert len(sandbox.state.log()) == 3
    assert summary.stats.api_calls >= 2  # the info call and the send, counted by the run
    assert list((tmp_path / "s").glob("ratelimit-*.json"))
    assert not (tmp_path / "env-state").exists()


def test_identical_messages_share_requests(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(25), body="<p>Same for all</p>", subject="Hello"))
    summary = run(job)
    ledger = read_ledger(job.output_dir)
    assert summary.stats.requests_done == 3
    assert ledger["parent_tracking_id"].n_unique() == 3
    assert_exactly_once(api, ledger)


def test_per_recipient_failures_are_recorded(api: RunningSandbox, tmp_path: Path) -> None:
    rows = people(3)
    rows[1]["email"] = "fail-1@example.com"
    job = load_job(write_job(tmp_path, rows, body="<p>same</p>", subject="Same"))
    run(job)
    ledger = read_ledger(job.output_dir).sort("key")
    assert ledger["status"].to_list() == ["sent", "failed", "sent"]
    assert ledger["error_details"][1]


def test_resume_after_stop_sends_nothing_twice(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(30)))
    stop = threading.Event()

    class StopAfter(NullReporter):
        def update(self, stats: RunStats) -> None:
            if stats.requests_done >= 12:
                stop.set()

    first = run(job, reporter=StopAfter(), stop=stop)
    assert first.exit_code == errors.EXIT_PENDING
    assert 12 <= first.counts["sent"] < 30
    second = run(job)
    assert second.exit_code == 0
    ledger = read_ledger(job.output_dir)
    assert ledger["status"].to_list() == ["sent"] * 30
    assert_exactly_once(api, ledger)


class Killed(BaseException):
    """SIGKILL, as far as the run can tell: nothing handles it, nothing is recorded after it."""


class KilledWhileWaiting(threading.Event):
    """The run's stop event, through which every wait of the run goes: the first wait once
    `sent()` holds is where the process is killed."""

    def __init__(self, sent: Callable[[], bool]) -> None:
        super().__init__()
        self.sent = sent

    def wait(self, timeout: float | None = None) -> bool:
        if timeout and self.sent():
            raise Killed
        return super().wait(timeout)


def test_a_kill_while_waiting_for_the_rate_limit_leaves_the_rows_pending(
    api: RunningSandbox, tmp_path: Path
) -> None:
    """Issue 12 item 7: at 10 requests a minute a run spends most of its time waiting for a
    slot. An intent written before that wait made a kill during it leave the row in doubt,
    to be looked up (an SMS: resolved by hand) although nothing had left."""
    job = load_job(write_job(tmp_path, people(2), per_window=1, window=0.2))
    with pytest.raises(Killed):
        run(job, stop=KilledWhileWaiting(lambda: len(api.state.log()) > 0))
    assert len(api.state.log()) == 1
    statuses = read_ledger(job.output_dir).sort("key")["status"].to_list()
    assert statuses == ["sent", "pending"]
    again = run(job)
    assert again.exit_code == 0 and again.counts == {"sent": 2}
    assert_exactly_once(api, read_ledger(job.output_dir))


@pytest.mark.slow  # faults over loopback, several runs
def test_lost_answers_are_reconciled_not_resent(api: RunningSandbox, tmp_path: Path) -> None:
    api.state.faults.set({"lost_response": 0.3}, seed=7)
    rows = people(40)
    for i, row in enumerate(rows):  # groups of 4 identical messages and some personal ones
        row["amount"] = str(i // 4) if i < 24 else str(i)
    job = load_job(write_job(tmp_path, rows, body="<p>You owe {{ amount }}.</p>", subject="Notice"))
    run(job)
    run(job)  # whatever stayed in doubt is looked up again
    ledger = read_ledger(job.output_dir)
    assert_exactly_once(api, ledger)
    assert set(ledger["status"].to_list()) <= {"sent", "in_doubt"}
    assert (ledger["status"] == "sent").sum() == 40


@pytest.mark.slow  # faults over loopback, retries
def test_server_errors_before_commit_are_retried(api: RunningSandbox, tmp_path: Path) -> None:
    api.state.faults.set({"error_500": 0.3}, seed=3)
    job = load_job(write_job(tmp_path, people(20)))
    run(job)
    run(job)
    ledger = read_ledger(job.output_dir)
    assert (ledger["status"] == "sent").sum() == 20
    assert_exactly_once(api, ledger)


def test_credits_running_out_stop_cleanly(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox], tmp_path: Path
) -> None:
    config = SandboxConfig(rate_limit=10, rate_window=WINDOW, credits=5)
    with running_sandbox(config) as sandbox:
        use_sandbox(sandbox)
        job = load_job(write_job(tmp_path, people(8)))
        with pytest.raises(errors.CreditsExhausted, match="5 e-mail credits"):
            run(job)
        summary = run(job, RunOptions(allow_partial=True))
        ledger = read_ledger(job.output_dir)
        assert summary.exit_code == errors.EXIT_PENDING
        assert summary.stopped and "credit" in summary.stopped.lower()
        assert (ledger["status"] == "sent").sum() == 5
        assert (ledger["status"] == "pending").sum() == 3
        assert_exactly_once(sandbox, ledger)


def test_bad_token_stops_before_sending(
    api: RunningSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", "not-the-token")
    job = load_job(write_job(tmp_path, people(3)))
    with pytest.raises(errors.AuthError) as caught:
        run(job)
    assert "not-the-token" not in str(caught.value)
    assert api.state.log() == []


def test_invalid_rows_stop_the_run_unless_skipped(api: RunningSandbox, tmp_path: Path) -> None:
    rows = people(4)
    rows[2]["email"] = "not-an-address"
    job = load_job(write_job(tmp_path, rows))
    with pytest.raises(errors.RowErrors, match="C-0002"):
        run(job)
    assert api.state.log() == []
    run(job, RunOptions(skip_invalid=True))
    ledger = read_ledger(job.output_dir).sort("key")
    assert ledger["status"].to_list() == ["sent", "sent", "skipped", "sent"]


def test_dry_run_sends_nothing(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(12), body="<p>x</p>", subject="Same"))
    summary = run(job, RunOptions(dry_run=True))
    assert summary.stats.requests_planned == 2
    assert api.state.log() == []
    assert not (job.output_dir / "ledger.parquet").exists()


def test_the_token_never_reaches_the_ledger(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(3)))
    run(job)
    run(job)
    for path in job.output_dir.rglob("*"):
        if path.is_file():
            assert api.token.encode() not in path.read_bytes(), path


class _Limiter:
    """Says how long until the next request may start."""

    def __init__(self, wait: float) -> None:
        self.wait = wait

    def next_free_in(self) -> float:
        return self.wait


class _Api:
    def __init__(self, wait: float) -> None:
        self.limiter = _Limiter(wait)


@pytest.mark.parametrize(("wait", "checkpointed"), [(0.0, False), (0.4, False), (5.0, True)])
def test_the_ledger_is_checkpointed_only_while_the_limit_makes_us_wait(
    tmp_path: Path, wait: float, checkpointed: bool
) -> None:
    job = load_job(write_job(tmp_path, people(1)))
    with Ledger.open(job.output_dir) as ledger:
        ledger.intent("r1", [Entry("C-0000", "p0@example.com", "", "h")])
        sender = Sender(
            job, _Api(wait), ledger, pl.DataFrame(), RunStats(), NullReporter(), threading.Event()
        )  # type: ignore[arg-type]
        sender._checkpoint_while_waiting()
        assert ledger.unsaved is not checkpointed
        assert ((job.output_dir / "journal.jsonl").stat().st_size == 0) is checkpointed


def test_dry_run_counts_sends_still_only_in_the_journal(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = load_job(write_job(tmp_path, people(3)))
    content_hash = validate(job)[1].ok.filter(pl.col("key") == "C-0000")["content_hash"][0]
    # A first run killed before its first checkpoint leaves a journal and no parquet yet.
    with Ledger.open(job.output_dir) as ledger:
        ledger.intent("r1", [Entry("C-0000", "p0@example.com", "", content_hash)])
        ledger.sent(
            "r1", parent_tracking_id="p", outcomes=[Outcome("C-0000", "sent", "t")], sent_at=None
        )
        assert not (job.output_dir / "ledger.parquet").exists()
        summary = run(job, RunOptions(dry_run=True))
    assert summary.stats.recipients == 2
    assert api.state.log() == []
