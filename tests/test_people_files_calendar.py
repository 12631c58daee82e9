"""Exactly once whatever a person, a file or the calendar does (issue 12, items 3 5 6 7 9 11 12 13).

Each test reproduces the failure first: what an operator does between two runs (edits the
dataset, the template, the key), what the calendar does to a campaign name, what `status`
says while a run is live. Runs go against the sandbox over loopback.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from batch import errors
from batch.campaigns import pinned
from batch.cli import main
from batch.jobfile import load_job
from batch.jobmodel import Job
from batch.ledger import Ledger, read_ledger, read_resolutions
from batch.lock import CampaignLock
from batch.report import status
from batch.runner import NullReporter, RunOptions, RunStats, run
from batch.runner import validate as read_and_scan
from batch.sandbox import RunningSandbox, SandboxConfig, running_sandbox

WINDOW = 1.0
NOV_30 = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def write_job(
    folder: Path,
    rows: list[dict[str, str]],
    *,
    campaign: str = "people",
    key: str = "key: id",
    subject: str = "Notice {{ id }}",
    body: str = "<p>Dear {{ name }}, you owe {{ amount }}.</p>",
) -> Path:
    """A job file with its CSV (as a spreadsheet writes it) and template in `folder`."""
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    (folder / "people.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    (folder / "notice.html").write_text(body, encoding="utf-8")
    dataset = f"{{path: people.csv, {key}}}" if key else "{path: people.csv}"
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: "{campaign}"
channel: email
dataset: {dataset}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "{subject}", html: notice.html}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}, max_recipients_per_request: 10}}
retry: {{attempts: 3, max_backoff_seconds: 0.2}}
output: out
""",
        encoding="utf-8",
    )
    return job


def people(n: int, *, ids: Callable[[int], str] = lambda i: f"C-{i:03d}") -> list[dict[str, str]]:
    return [
        {"id": ids(i), "name": f"Name {i}", "email": f"p{i}@example.com", "amount": str(i)}
        for i in range(n)
    ]


@pytest.fixture
def api(
    use_sandbox: Callable[[RunningSandbox], RunningSandbox], tmp_path: Path
) -> Iterator[RunningSandbox]:
    config = SandboxConfig(rate_limit=10, rate_window=WINDOW, delivered_after=0.2, read_after=1)
    with running_sandbox(config) as sandbox:
        use_sandbox(sandbox)
        yield sandbox


def accepted(sandbox: RunningSandbox) -> list[str]:
    return [str(r["recipient"]) for r in sandbox.state.log()]


class StopAfter(NullReporter):
    """Asks the run to stop once `n` recipients are sent (as Ctrl-C would)."""

    def __init__(self, n: int, stop: threading.Event) -> None:
        self.n, self.stop_event = n, stop

    def update(self, stats: RunStats) -> None:
        if stats.sent >= self.n:
            self.stop_event.set()


def stopped_run(job: Job, n: int, options: RunOptions | None = None) -> int:
    stop = threading.Event()
    return run(job, options, reporter=StopAfter(n, stop), stop=stop).exit_code


def lmbatch(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)


def statuses(job: Job) -> dict[str, str]:
    ledger = read_ledger(job.output_dir)
    return dict(zip(ledger["key"].to_list(), ledger["status"].to_list(), strict=True))


# -- 3. a campaign name that moves with the clock ----------------------------------------------


def test_a_dated_campaign_name_does_not_restart_a_stopped_campaign_next_month(
    api: RunningSandbox, tmp_path: Path
) -> None:
    path = write_job(tmp_path, people(6), campaign="notice-{{ today.strftime('%Y-%m') }}")
    november = load_job(path, now=NOV_30)
    assert stopped_run(november, 2) == errors.EXIT_PENDING
    sent_in_november = accepted(api)
    assert 2 <= len(sent_in_november) < 6

    december = load_job(path, now=DEC_1)
    assert december.campaign == "notice-2026-12"
    for options in (RunOptions(), RunOptions(dry_run=True, offline=True)):
        with pytest.raises(errors.InputError, match=r"notice-2026-11 .*unfinished") as refused:
            run(december, options)
    assert "--campaign notice-2026-11" in (refused.value.hint or "")
    assert accepted(api) == sent_in_november  # nobody sent twice
    assert not (december.output_dir / "ledger.parquet").exists()
    assert status(december).unfinished_other == "notice-2026-11"  # status points at it too

    # The deliberate ways on: finish the earlier campaign, or open the new one on purpose.
    new = run(december, RunOptions(dry_run=True, offline=True, new_campaign=True))
    assert new.stats.recipients == 6
    assert run(pinned(december, "notice-2026-11")).exit_code == 0
    assert sorted(accepted(api)) == sorted(f"p{i}@example.com" for i in range(6))
    # Finished, it no longer holds the next month back.
    assert run(december, RunOptions(dry_run=True, offline=True)).stats.recipients == 6


def test_an_unknown_campaign_is_refused(api: RunningSandbox, tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, people(1)))
    with pytest.raises(errors.InputError, match="no such campaign"):
        pinned(job, "nope")


# -- 5. identity changes -------------------------------------------------------------------------


def test_removing_the_key_column_is_refused_before_any_send(
    api: RunningSandbox, tmp_path: Path
) -> None:
    path = write_job(tmp_path, people(5))
    job = load_job(path)
    assert stopped_run(job, 2) == errors.EXIT_PENDING
    before = accepted(api)

    changed = load_job(write_job(tmp_path, people(5), key=""))  # key: the address now
    with pytest.raises(errors.InputError, match=r"keys changed.*already sent under another key"):
        run(changed)
    summary = run(changed, RunOptions(dry_run=True, offline=True))
    assert summary.refused and "--accept-key-change" in summary.refused
    assert accepted(api) == before


def test_a_spreadsheet_round_trip_that_drops_leading_zeros_is_refused(
    api: RunningSandbox, tmp_path: Path
) -> None:
    job = load_job(write_job(tmp_path, people(6, ids=lambda i: f"{i:03d}")))
    assert stopped_run(job, 3) == errors.EXIT_PENDING
    before = accepted(api)

    job = load_job(write_job(tmp_path, people(6, ids=str)))  # 007 became 7
    with pytest.raises(errors.InputError, match="sent as 000, now 0"):
        run(job)
    assert accepted(api) == before
    # Deliberately: the new keys are right, and those recipients get a second message.
    assert run(job, RunOptions(accept_key_change=True)).exit_code == 0
    assert len(accepted(api)) == len(before) + 6


# -- 6. resolve ------------------------------------------------------------------------------


def in_doubt_ledger(job: Job) -> None:
    """Two rows in doubt: their intent journalled, no outcome (a run killed mid-send)."""
    _, scanned = read_and_scan(job)
    from batch.ledger import Entry

    rows = scanned.ok.head(2)
    with Ledger.open(job.output_dir, channel="email") as ledger:
        ledger.intent(
            "req-1",
            [
                Entry(k, a, n, h)
                for k, a, n, h in rows.select("key", "address", "name", "content_hash").iter_rows()
            ],
        )


def test_resolve_takes_exactly_one_verdict(tmp_path: Path) -> None:
    path = write_job(tmp_path, people(2))
    in_doubt_ledger(load_job(path))
    for flags in (["--sent", "--not-sent"], []):
        result = lmbatch("resolve", path, "C-000", *flags)
        assert result.exit_code == 2, result.output
        assert "exactly one of --sent or --not-sent" in result.output
    assert set(statuses(load_job(path)).values()) == {"in_doubt"}


def test_resolve_refuses_a_key_the_ledger_does_not_hold(tmp_path: Path) -> None:
    path = write_job(tmp_path, people(2))
    in_doubt_ledger(load_job(path))
    result = lmbatch("resolve", path, "C-000", "C-999", "--not-sent")
    assert result.exit_code == 2
    assert "not in the ledger: C-999" in result.output
    assert set(statuses(load_job(path)).values()) == {"in_doubt"}


def test_each_resolution_is_journalled_with_its_note_and_evidence(tmp_path: Path) -> None:
    path = write_job(tmp_path, people(2))
    job = load_job(path)
    in_doubt_ledger(job)
    args = ["--sent", "--tracking-id", "cm_42", "--note", "seen in the panel at 10:02"]
    assert lmbatch("resolve", path, "C-000", *args).exit_code == 0
    assert lmbatch("resolve", path, "C-001", "--not-sent", "--note", "absent").exit_code == 0

    first, second = read_resolutions(job.output_dir)
    assert (first["keys"], first["verdict"], first["tracking_id"]) == (["C-000"], "sent", "cm_42")
    assert first["note"] == "seen in the panel at 10:02" and first["requests"] == ["req-1"]
    assert datetime.fromisoformat(first["at"]).tzinfo is not None
    assert (second["verdict"], second["note"]) == ("not sent", "absent")
    ledger = read_ledger(job.output_dir).sort("key")
    assert ledger["status"].to_list() == ["sent", "pending"]
    assert ledger["tracking_id"][0] == "cm_42"
    assert "seen in the panel" in ledger["error_details"][0]


# -- 7. status during a live run -----------------------------------------------------------------


def test_status_during_a_live_run_says_in_flight_not_check_the_panel(tmp_path: Path) -> None:
    path = write_job(tmp_path, people(2))
    job = load_job(path)
    with CampaignLock(job.output_dir / "run.lock"):
        in_doubt_ledger(job)  # the live run's intent, journalled while it waits for its answer
        live = status(job)
        shown = lmbatch("status", path).output
    assert live.in_doubt == [] and len(live.in_flight) == 2
    assert live.live_run is not None and "in flight (run pid" in live.in_flight[0][2]
    assert "in flight" in shown and "panel" not in shown
    # Once no run holds the lock, the same rows are in doubt and need a look.
    after = status(job)
    assert len(after.in_doubt) == 2 and after.in_flight == []


def test_status_says_a_live_run_looks_up_what_an_earlier_run_left_in_doubt(
    tmp_path: Path,
) -> None:
    path = write_job(tmp_path, people(2))
    job = load_job(path)
    in_doubt_ledger(job)  # an earlier run, killed
    later = datetime.now(UTC) + timedelta(minutes=5)  # the live run started after it
    with CampaignLock(job.output_dir / "run.lock", clock=lambda: later):
        live = status(job)
        shown = lmbatch("status", path).output
    assert live.in_doubt == [] and len(live.in_flight) == 2
    assert "earlier run" in live.in_flight[0][2] and "looks it up first" in live.in_flight[0][2]
    assert "panel" not in shown


# -- 9. rows withdrawn from the dataset ------------------------------------------------------


def test_rows_removed_while_pending_are_withdrawn_and_the_campaign_ends(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(6)
    job = load_job(write_job(tmp_path, rows))
    assert stopped_run(job, 2) == errors.EXIT_PENDING
    done = {k for k, s in statuses(job).items() if s == "sent"}
    pending = sorted(k for k, s in statuses(job).items() if s == "pending")
    gone = pending[:2]
    job = load_job(write_job(tmp_path, [r for r in rows if r["id"] not in gone]))

    predicted = run(job, RunOptions(dry_run=True, offline=True))
    assert predicted.counts.get("withdrawn") == 2
    shown = status(job, *_scan(job))
    assert shown.remaining == predicted.stats.recipients == 6 - len(done) - 2
    summary = run(job)
    assert summary.exit_code == 0
    assert summary.stats.sent == predicted.stats.recipients
    assert {k for k, s in statuses(job).items() if s == "withdrawn"} == set(gone)
    assert run(job).exit_code == 0  # and stays done
    assert status(job, *_scan(job)).remaining == 0


def test_a_withdrawn_row_back_in_the_dataset_is_sent(api: RunningSandbox, tmp_path: Path) -> None:
    rows = people(4)
    job = load_job(write_job(tmp_path, rows))
    assert stopped_run(job, 1) == errors.EXIT_PENDING
    pending = sorted(k for k, s in statuses(job).items() if s == "pending")
    load_job(write_job(tmp_path, [r for r in rows if r["id"] != pending[0]]))
    assert run(job).exit_code == 0
    assert statuses(job)[pending[0]] == "withdrawn"
    job = load_job(write_job(tmp_path, rows))
    assert run(job, RunOptions(dry_run=True, offline=True)).stats.recipients == 1
    assert run(job).exit_code == 0
    assert sorted(accepted(api)) == sorted(r["email"] for r in rows)


def _scan(job: Job) -> tuple[pl.Series, pl.DataFrame]:
    frame, scanned = read_and_scan(job)
    return frame["__key__"], scanned.ok


# -- 11. predictions that hold ---------------------------------------------------------------


def test_validate_and_dry_run_count_rows_fixed_since_they_were_skipped(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(5)
    broken = [dict(r, email="not-an-address") if i < 3 else r for i, r in enumerate(rows)]
    path = write_job(tmp_path, broken)
    assert lmbatch("run", path, "--skip-invalid").exit_code == 5  # done, three rows skipped
    write_job(tmp_path, rows)  # the three rows fixed
    assert "3 to send" in lmbatch("validate", path).stdout
    assert "would send people: 3 pending" in lmbatch("run", path, "--dry-run").stdout
    assert run(load_job(path)).stats.sent == 3


def test_retry_failed_is_predicted_with_the_same_flag(api: RunningSandbox, tmp_path: Path) -> None:
    rows = people(3)
    rows[1]["email"] = "fail-1@example.com"
    path = write_job(tmp_path, rows)
    assert lmbatch("run", path).exit_code == 5  # done, one recipient refused
    rows[1]["email"] = "fixed-1@example.com"
    write_job(tmp_path, rows)
    assert "0 to send" in lmbatch("validate", path).stdout
    assert "1 to send" in lmbatch("validate", path, "--retry-failed").stdout
    dry = lmbatch("run", path, "--dry-run", "--retry-failed")
    assert "would send people: 1 pending" in dry.stdout
    assert run(load_job(path), RunOptions(retry_failed=True)).stats.sent == 1


def test_the_resume_hint_repeats_the_flags_and_works_as_printed(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(6)
    rows[5]["email"] = "broken"
    path = write_job(tmp_path, rows, campaign="notice-{{ today.strftime('%Y-%m') }}")
    api.state.set_credits(2)
    first = lmbatch("run", path, "--skip-invalid", "--allow-partial")
    assert first.exit_code == 3, first.output
    hint = first.stdout.split("resume with: ", 1)[1].splitlines()[0]
    words = shlex.split(hint)
    assert words[:3] == ["lmbatch", "run", str(path)]
    assert {"--skip-invalid", "--allow-partial", "--campaign"} <= set(words)
    api.state.set_credits(100)
    again = lmbatch(*words[1:])
    assert again.exit_code == 5, again.output  # done; the broken row stays skipped
    assert len(accepted(api)) == 5


# -- 12. bounces have a way back -------------------------------------------------------------


def bounce(job: Job, key: str) -> None:
    """What `lmbatch track` records when the recipient's server refused the message."""
    with Ledger.open(job.output_dir) as ledger:
        ledger.update(key, status="bounced", error_status="Hard Bounce", final=True)


def test_a_bounced_row_is_exported_and_sent_once_to_its_corrected_address(
    api: RunningSandbox, tmp_path: Path
) -> None:
    rows = people(3)
    rows[1]["email"] = "bounce-1@example.com"
    path = write_job(tmp_path, rows)
    job = load_job(path)
    assert run(job).exit_code == 0
    bounce(job, "C-001")

    exported = tmp_path / "failed.csv"
    assert lmbatch("status", path, "--export-failed", exported).exit_code == 0
    failed = pl.read_csv(exported)
    assert failed["id"].to_list() == ["C-001"]
    assert failed["lmbatch_status"].to_list() == ["bounced"]
    assert failed["lmbatch_reason"].to_list() == ["Hard Bounce"]

    # Unchanged address: --retry-failed leaves it alone, and says so.
    same = run(job, RunOptions(retry_failed=True))
    assert same.stats.sent == 0 and any("bounced at" in n for n in same.notes)

    rows[1]["email"] = "ok-1@example.com"
    job = load_job(write_job(tmp_path, rows))
    assert run(job, RunOptions(dry_run=True, offline=True, retry_failed=True)).stats.recipients == 1
    assert run(job, RunOptions(retry_failed=True)).stats.sent == 1
    assert run(job, RunOptions(retry_failed=True)).stats.sent == 0  # once
    assert accepted(api).count("ok-1@example.com") == 1
    row = read_ledger(job.output_dir).filter(pl.col("key") == "C-001").row(0, named=True)
    assert (row["status"], row["address"]) == ("sent", "ok-1@example.com")
    assert json.loads(row["bounced_addresses"]) == ["bounce-1@example.com"]

    # Never again to the address that bounced, even if the dataset goes back to it.
    bounce(job, "C-001")
    rows[1]["email"] = "bounce-1@example.com"
    job = load_job(write_job(tmp_path, rows))
    assert run(job, RunOptions(retry_failed=True, accept_new_version=True)).stats.sent == 0
    assert accepted(api).count("bounce-1@example.com") == 1


# -- 13. two versions ------------------------------------------------------------------------


def test_a_template_changed_mid_campaign_needs_a_flag_to_send_the_new_version(
    api: RunningSandbox, tmp_path: Path
) -> None:
    path = write_job(tmp_path, people(6))
    job = load_job(path)
    assert stopped_run(job, 2) == errors.EXIT_PENDING
    sent = sum(1 for s in statuses(job).values() if s == "sent")
    before = accepted(api)

    write_job(tmp_path, people(6), body="<p>Dear {{ name }}, you now owe {{ amount }}.</p>")
    words = f"{sent} sent with an earlier version"
    with pytest.raises(errors.InputError, match=words):
        run(job)
    assert accepted(api) == before
    checked = lmbatch("validate", path)
    assert checked.exit_code == 2 and words in checked.output
    assert f"{6 - sent} still to send get the new one" in checked.output
    shown = lmbatch("status", path)
    assert words in shown.output

    assert run(job, RunOptions(accept_new_version=True)).exit_code == 0
    assert len(accepted(api)) == 6
