"""Generated documents under SIGKILL: killed runs and a resume send each document once.

The harness is test_crash's: `python -m batch run` in a child process, killed at seeded
moments (between a send and its record, or anywhere), then run to the end. Each row's
letter must reach the sandbox exactly once, and be the very PDF the ledger records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import (
    WINDOW,
    Campaign,
    Recipient,
    accepted,
    assert_exactly_once,
    child_env,
    fault_sandbox,
    ledger_of,
)
from test_crash import crash_repeatedly, finish

from batch import errors
from batch.documents import sha256_file
from batch.jobfile import load_job
from batch.sandbox import running_sandbox

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # end to end: child processes killed and resumed
LETTER = """<!DOCTYPE html><html lang="es"><head><meta charset="utf-8">
<link rel="stylesheet" href="letters/letter.css"></head><body>
<h1>Requerimiento de pago</h1><p>{{ name }}: {{ amount|money("EUR") }}</p></body></html>
"""


def letter_campaign(folder: Path, n: int) -> Campaign:
    """`n` certified e-mails, each with its own letter generated from `letter.html`."""
    folder.mkdir(parents=True)
    (folder / "letters").mkdir()
    shutil.copy(REPO / "templates" / "letters" / "letter.css", folder / "letters")
    (folder / "letter.html").write_text(LETTER, encoding="utf-8")
    (folder / "body.html").write_text("<p>Adjuntamos su requerimiento.</p>", encoding="utf-8")
    lines, recipients = ["id,name,email,amount"], []
    for i in range(n):
        key = f"D-{i:04d}"
        lines.append(f"{key},Persona {i},doc{i}@example.com,{100 + i}.50")
        recipients.append(Recipient(key, f"doc{i}@example.com", f"Requerimiento {key}"))
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "job.yaml").write_text(
        f"""campaign: letters
dataset: {{path: people.csv, key: id}}
recipient: {{email: "{{{{ email }}}}", name: "{{{{ name }}}}"}}
message:
  subject: "Requerimiento {{{{ id }}}}"
  html: body.html
  attachments: [{{template: letter.html, name: "Requerimiento {{{{ id }}}}.pdf"}}]
api: {{timeout_seconds: 5.0}}
limits: {{requests_per_window: 10, window_seconds: {WINDOW}}}
retry: {{attempts: 5, max_backoff_seconds: 0.1}}
output: out
""",
        encoding="utf-8",
    )
    return Campaign(folder / "job.yaml", "email", recipients)


@pytest.mark.parametrize("seed", [7])
def test_killed_runs_and_a_resume_send_each_generated_letter_once(
    tmp_path: Path, seed: int
) -> None:
    campaign = letter_campaign(tmp_path / "job", 24)
    with running_sandbox(fault_sandbox(slow_seconds=1.0)) as sandbox:
        env = child_env(sandbox, tmp_path / "state")
        logs = tmp_path / "logs"
        done = crash_repeatedly(sandbox, campaign, env, logs, seed=seed, kills=3, requests=24)
        assert done["gap"] >= 1
        code, output = finish(campaign, env, logs)
        assert code == errors.EXIT_OK, output
        assert_exactly_once(sandbox, campaign)
        out = load_job(campaign.job_path).output_dir
        sent = {str(e["recipient"]): e for e in accepted(sandbox, campaign)}
        for row in ledger_of(campaign).iter_rows(named=True):
            letter = sent[row["address"]]["attachments"][0]  # type: ignore[index]
            name = f"Requerimiento {row['key']}.pdf"
            assert json.loads(row["documents"]) == [{"name": name, "sha256": letter["sha256"]}]
            assert sha256_file(out / "documents" / row["key"] / name) == letter["sha256"]
