"""The job file: typed, strict, every error located as `file:line key.path: message`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch.errors import JobFileError
from batch.jobfile import load_job
from batch.templating import template_dirs

EXAMPLES = Path(__file__).resolve().parent.parent / "jobs"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

EMAIL_JOB = """\
campaign: notice
dataset: {path: data.csv, key: id}
message:
  subject: "Hello {{ name }}"
  html: body.html
"""


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    (tmp_path / "data.csv").write_text("id,name,email\n1,Ann,ann@example.com\n")
    return tmp_path


def write(job_dir: Path, text: str, name: str = "job.yaml") -> Path:
    path = job_dir / name
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(JobFileError) as info:
        load_job(path, now=NOW, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_a_valid_email_job_loads(job_dir: Path) -> None:
    job = load_job(write(job_dir, EMAIL_JOB), now=NOW)
    assert job.campaign == "notice"
    assert job.spec.channel == "email"
    assert job.period is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EMAIL_JOB.replace("  subject", "  subjet"), "job.yaml:4 message.subjet: unknown key"),
        (EMAIL_JOB + "colour: red\n", "job.yaml:6 colour: unknown key"),
        (
            EMAIL_JOB.replace('  subject: "Hello {{ name }}"\n', ""),
            "job.yaml:3 message.subject: field required",
        ),
        (
            EMAIL_JOB.replace("{path: data.csv, key: id}", "{key: id}"),
            "job.yaml:2 dataset.path: field required",
        ),
        (EMAIL_JOB + "channel: fax\n", "job.yaml:6 channel: input should be 'email'"),
        (
            EMAIL_JOB + "limits: {requests_per_window: 0}\n",
            "job.yaml:6 limits.requests_per_window:",
        ),
        (
            EMAIL_JOB.replace("Hello {{ name }}", "Hello {{ name }"),
            "job.yaml:4 message.subject: template error",
        ),
        (
            EMAIL_JOB.replace("body.html", "missing.html"),
            "job.yaml:5 message.html: template not found",
        ),
        (EMAIL_JOB + "campaign: twice\n", "job.yaml:6 campaign: key appears twice"),
        ("campaign: [unclosed\n", "job.yaml:2: invalid YAML"),
        ("- a list\n", "job.yaml:1: the job file must be a mapping"),
    ],
)
def test_errors_name_file_line_and_key(job_dir: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(job_dir, text))


def test_all_errors_are_reported_at_once_one_per_line(job_dir: Path) -> None:
    text = EMAIL_JOB.replace("  subject", "  subjet") + "colour: red\nsigners: oops\n"
    lines = error_of(write(job_dir, text)).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{job_dir / 'job.yaml'}:4 message.subjet: unknown key")


def test_signer_errors_point_at_the_list_item(job_dir: Path) -> None:
    text = """\
campaign: c
channel: signature
dataset: {path: data.csv}
signers:
  - {name: "{{ name }}", email: "{{ email }}"}
  - {name: "{{ name }}"}
document: {path: x.pdf}
"""
    assert "job.yaml:6 signers[1].email: field required" in error_of(write(job_dir, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("campaign: s\nchannel: sms\ndataset: {path: d.csv}\n", "message.text: field required"),
        (
            "campaign: s\nchannel: sms\ndataset: {path: d.csv}\nmessage: {text: hi, subject: x}\n",
            "message.subject: only for channel email",
        ),
        ("campaign: s\nchannel: signature\ndataset: {path: d.csv}\n", "signers: at least one"),
        ("campaign: s\nchannel: signature\ndataset: {path: d.csv}\n", "document: field required"),
        (
            "campaign: s\nchannel: signature\ndataset: {path: d.csv}\ndocument: {path: a.pdf}\n"
            "signers:\n" + "  - {name: n, email: e}\n" * 6,
            "signers: at most 5 signers, found 6",
        ),
        ("campaign: s\ndataset: {path: d.csv}\nmessage: {html: body.html}\n", "message.subject:"),
    ],
)
def test_channel_requirements(job_dir: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(job_dir, text))


def test_template_file_syntax_error_names_the_template(job_dir: Path) -> None:
    (job_dir / "body.html").write_text("<p>\n{% if x %}unclosed</p>")
    message = error_of(write(job_dir, EMAIL_JOB))
    assert "job.yaml:5 message.html: template error in " in message
    assert "body.html:2: Unexpected end of template" in message


def test_templates_are_found_in_the_project_templates_folder(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    (tmp_path / "templates").mkdir()
    jobs.mkdir()
    (tmp_path / "templates" / "body.html").write_text("<p>{{ name }}</p>")
    job = load_job(write(jobs, EMAIL_JOB), now=NOW)
    assert job.spec.message.html == "body.html"


@pytest.mark.parametrize(
    ("campaign", "expected"),
    [
        ("'x-{{ today.strftime(\"%Y-%m\") }}'", "x-2026-11"),
        ("'n-{{ now.hour }}'", "n-12"),
        ("'  padded  '", "padded"),
    ],
)
def test_campaign_is_a_template(job_dir: Path, campaign: str, expected: str) -> None:
    text = EMAIL_JOB.replace("campaign: notice", f"campaign: {campaign}")
    assert load_job(write(job_dir, text), now=NOW).campaign == expected


@pytest.mark.parametrize("campaign", ["'a/b'", "'..'", "'{{ \"\" }}'", "'.hidden'", "'a\\\\b'"])
def test_campaign_must_be_a_safe_folder_name(job_dir: Path, campaign: str) -> None:
    text = EMAIL_JOB.replace("campaign: notice", f"campaign: {campaign}")
    assert "job.yaml:1 campaign: renders to" in error_of(write(job_dir, text))


def test_period_without_schedule_is_an_error_unless_given(job_dir: Path) -> None:
    text = EMAIL_JOB.replace("campaign: notice", "campaign: 'rent-{{ period.label }}'")
    path = write(job_dir, text)
    assert "campaign:" in error_of(path)
    assert load_job(path, now=NOW, period="2026-10").campaign == "rent-2026-10"


def test_schedule_resolves_the_period(job_dir: Path) -> None:
    text = EMAIL_JOB.replace("campaign: notice", "campaign: 'rent-{{ period.label }}'")
    text += "schedule: {cron: '0 9 1 * *', timezone: Europe/Madrid}\n"
    job = load_job(write(job_dir, text), now=NOW)
    assert job.campaign == "rent-2026-11"
    assert job.period is not None and job.period.label == "2026-11"


def test_missing_job_file(tmp_path: Path) -> None:
    assert "job file not found" in error_of(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_jobs_load(name: str) -> None:
    job = load_job(EXAMPLES / name, now=NOW)
    assert job.campaign


def test_a_job_named_from_its_own_folder_finds_the_shared_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "shared.html").write_text("<p>{{ name }}</p>", encoding="utf-8")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "people.csv").write_text("email,name\na@example.com,A\n", encoding="utf-8")
    (jobs / "job.yaml").write_text(
        "campaign: c\ndataset: {path: people.csv}\nmessage: {subject: s, html: shared.html}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(jobs)
    job = load_job(Path("job.yaml"))
    assert job.base_dir == jobs
    assert (tmp_path / "templates") in template_dirs(job.base_dir)
