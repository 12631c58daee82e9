"""`lmbatch init`: a job folder that validates and rehearses as written, and never overwrites."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from batch.cli import main
from batch.jobfile import load_job
from batch.rehearse import rehearse
from batch.scaffold import FILES
from batch.settings import Settings


def lmbatch(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_init_writes_a_job_folder_that_validates(tmp_path: Path) -> None:
    folder = tmp_path / "campaign"
    code, out, _ = lmbatch("init", folder)
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert f"lmbatch rehearse {folder / 'job.yaml'}" in out
    code, out, err = lmbatch("validate", folder / "job.yaml")
    assert code == 0, err
    assert "ok: 5 row(s) valid; 5 to send" in out


def test_the_job_file_is_commented_like_the_readme(tmp_path: Path) -> None:
    lmbatch("init", tmp_path)
    text = (tmp_path / "job.yaml").read_text(encoding="utf-8")
    for key in ("campaign:", "dataset:", "recipient:", "message:", "limits:", "output:"):
        line = next(line for line in text.splitlines() if line.startswith(key))
        assert "#" in line, f"{key} has no comment"


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("mine\n", encoding="utf-8")
    code, _, err = lmbatch("init", tmp_path)
    assert code == 2
    assert "job.yaml already there; nothing written" in err
    assert (tmp_path / "job.yaml").read_text(encoding="utf-8") == "mine\n"
    assert not (tmp_path / "recipients.csv").exists()


def test_the_scaffold_rehearses_as_is(tmp_path: Path) -> None:
    lmbatch("init", tmp_path / "c")
    done = rehearse(load_job(tmp_path / "c" / "job.yaml"), Settings(state_dir=tmp_path / "st"))
    assert done.run.counts == {"sent": 5}
    assert sum(done.tracked.counts.values()) == 5
    assert done.report.is_file()
    assert not (tmp_path / "c" / "output" / done.run.campaign).exists()  # no real ledger
