"""Settings: the environment is read once, at the edge, and everything below is handed it."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import tomllib
from pathlib import Path

import pytest

import batch
from batch.connect import base_url, build_client
from batch.demo import run_demo
from batch.errors import AuthError
from batch.jobfile import Job, load_job
from batch.pacing import HostLimiter
from batch.settings import Settings, state_dir_from

BATCH = Path(__file__).resolve().parent.parent / "batch"


@pytest.fixture
def job(tmp_path: Path) -> Job:
    (tmp_path / "people.csv").write_text("id,email\n1,a@example.com\n", encoding="utf-8")
    (tmp_path / "notice.html").write_text("<p>hi</p>", encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        """campaign: settings
channel: email
dataset: {path: people.csv, key: id}
recipient: {email: "{{ email }}"}
message: {subject: "s", html: notice.html}
api: {base_url: "https://www.legallymail.com/", token_env: ACME_TOKEN}
limits: {requests_per_window: 7, window_seconds: 30}
output: out
""",
        encoding="utf-8",
    )
    return load_job(tmp_path / "job.yaml")


def test_from_env_reads_the_named_token_the_base_url_and_the_state_folder(tmp_path: Path) -> None:
    env = {
        "ACME_TOKEN": "  tok-1  \n",
        "LEGALLYMAIL_TOKEN": "not-this-one",
        "LEGALLYMAIL_BASE_URL": "http://127.0.0.1:9",
        "LMBATCH_STATE_DIR": str(tmp_path / "state"),
    }
    settings = Settings.from_env("ACME_TOKEN", env)
    assert settings == Settings(
        token="tok-1",
        token_env="ACME_TOKEN",
        base_url="http://127.0.0.1:9",
        state_dir=tmp_path / "state",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.token = "other"  # type: ignore[misc]


def test_an_empty_environment_gives_no_token_and_no_override(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={"HOME": str(tmp_path), "LEGALLYMAIL_BASE_URL": ""})
    assert (settings.token, settings.token_env, settings.base_url) == (
        "",
        "LEGALLYMAIL_TOKEN",
        None,
    )
    assert settings.state_dir == tmp_path / ".local/state/lmbatch"


def test_the_state_folder_follows_lmbatch_then_xdg_then_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert state_dir_from(env) == tmp_path / ".local/state/lmbatch"
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    assert state_dir_from(env) == tmp_path / "xdg/lmbatch"
    env["LMBATCH_STATE_DIR"] = str(tmp_path / "explicit")
    assert state_dir_from(env) == tmp_path / "explicit"


def test_the_token_never_shows_in_the_settings_repr() -> None:
    shown = repr(Settings(token="tok-secret-7f"))
    assert "tok-secret-7f" not in shown
    assert "token=<set>" in shown
    assert "token=<unset>" in repr(Settings())


def test_the_base_url_override_beats_the_job_file(job: Job) -> None:
    assert base_url(Settings(), job) == "https://legallymail.com"  # normalised at load time
    assert base_url(Settings(base_url="http://127.0.0.1:9"), job) == "http://127.0.0.1:9"


def test_build_client_takes_everything_from_settings_and_the_job(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment says otherwise on every point: only the settings may count.
    monkeypatch.setenv("ACME_TOKEN", "env-token")
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "env-state"))
    settings = Settings("tok-2", "ACME_TOKEN", "http://127.0.0.1:9", tmp_path / "state")
    with build_client(settings, job, stop=threading.Event(), window_seconds=3.0) as client:
        assert client.base_url == "http://127.0.0.1:9"
        limiter = client.limiter
        assert isinstance(limiter, HostLimiter)
        assert limiter.path == tmp_path / "state/ratelimit-127.0.0.1_9.json"
        assert (limiter.limit, limiter.window) == (7, 3.0)
    assert not (tmp_path / "env-state").exists()


def test_without_a_token_build_client_names_the_variable_to_set(job: Job, tmp_path: Path) -> None:
    settings = Settings(token="", token_env="ACME_TOKEN", state_dir=tmp_path)
    with pytest.raises(AuthError, match="ACME_TOKEN is not set") as info:
        build_client(settings, job, stop=threading.Event())
    assert "export ACME_TOKEN=" in (info.value.hint or "")


def test_only_the_cli_and_settings_read_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(BATCH))
        for path in BATCH.rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|environ\[", path.read_text(encoding="utf-8"))
    )
    # documents.py only *sets* SOURCE_DATE_EPOCH, which fontTools reads to stamp fonts (so PDFs
    # are reproducible); jobmodel.py reads TZ, the operating system's own setting for the local
    # zone (as the C library does), for jobs that name no time zone.
    assert readers == ["documents.py", "jobmodel.py", "settings.py"]


def test_the_demo_points_its_settings_at_the_sandbox_and_leaves_the_environment_alone(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", "http://127.0.0.1:1")  # would fail if used
    before = dict(os.environ)
    done = run_demo(tmp_path / "job.yaml", Settings(state_dir=tmp_path / "state"))
    assert done.run.counts == {"sent": 1}
    assert dict(os.environ) == before
    assert list((tmp_path / "state").glob("ratelimit-127.0.0.1_*.json"))


def test_the_version_has_one_source() -> None:
    project = tomllib.loads((BATCH.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert batch.__version__ == project["project"]["version"]
    # No second copy of the number in the package (the fallback "0+unknown" is not one).
    assert re.search(r'__version__\s*=\s*"\d+\.\d+', (BATCH / "__init__.py").read_text()) is None
