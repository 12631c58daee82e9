"""`lmbatch rehearse`: the whole campaign against a sandbox, time compressed, in a folder of its
own; `lmbatch demo` is the same for the bundled example."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from batch.cli import main
from batch.jobfile import load_job
from batch.rehearse import TIME_SCALE, rehearsal_job, rehearse
from batch.settings import Settings


def write_job(folder: Path, n: int, *, extra: str = "") -> Path:
    rows = ["id,name,email"] + [f"R-{i:03d},Name {i},p{i}@example.com" for i in range(n)]
    (folder / "people.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "notice.html").write_text("<p>Dear {{ name }}</p>", encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        f"""campaign: rh
dataset: {{path: people.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message: {{subject: "Notice {{{{ id }}}}", html: notice.html}}
output: out
{extra}""",
        encoding="utf-8",
    )
    return job


@pytest.mark.slow
@pytest.mark.timeout(60)  # the done-when: a 30-row job rehearses in under a minute
def test_a_30_row_job_rehearses_in_under_a_minute_and_writes_a_report(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, 30))
    done = rehearse(job, Settings(state_dir=tmp_path / "state"))
    assert done.run.counts == {"sent": 30}
    assert done.run.stats.rate_limited == 0  # the job's own limits, scaled, were kept
    assert sum(done.tracked.counts.values()) == 30 and done.tracked.open == 0
    assert done.certificates.downloaded == 60
    assert done.report.is_file() and "R-029" in done.report.read_text(encoding="utf-8")
    assert done.folder.parent.name.startswith("rh-rehearsal-")
    assert not job.output_dir.exists()  # the real campaign's folder is never touched


def test_the_rehearsal_keeps_the_job_but_its_folder_and_send_window(tmp_path: Path) -> None:
    extra = """schedule:
  cron: "0 9 1 * *"
  timezone: Europe/Madrid
  window: {days: mon-fri, hours: "09:00-18:00"}
"""
    job = load_job(write_job(tmp_path, 2, extra=extra))
    rehearsed, notes = rehearsal_job(job, "20261130-010000")
    assert rehearsed.output_dir.parent == job.output_dir.parent / "rh-rehearsal-20261130-010000"
    assert rehearsed.spec.schedule is not None and rehearsed.spec.schedule.window is None
    assert rehearsed.spec.limits == job.spec.limits
    assert notes == ["the send window is not applied: a rehearsal sends now"]
    assert TIME_SCALE == 30


def test_rehearse_prints_where_the_report_is(tmp_path: Path) -> None:
    job = write_job(tmp_path, 3, extra="limits: {window_seconds: 15}\n")
    env = {"LMBATCH_STATE_DIR": str(tmp_path / "state"), "LEGALLYMAIL_TOKEN": "real-token"}
    before = dict(os.environ)
    result = CliRunner(env=env).invoke(main, ["rehearse", str(job)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "rehearsal of rh: 3 read" in result.stdout
    report = Path(result.stdout.split("report: ")[1].strip())
    assert report.is_file() and report.parent.parent.name.startswith("rh-rehearsal-")
    assert dict(os.environ) == before


def test_an_interrupted_rehearsal_stops_and_still_reports(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()  # Ctrl-C before the first request
    done = rehearse(
        load_job(write_job(tmp_path, 3)), Settings(state_dir=tmp_path / "state"), stop=stop
    )
    assert done.stopped and done.run.counts == {"pending": 3}
    assert done.tracked.counts == {} and done.certificates.downloaded == 0
    assert done.report.is_file()
