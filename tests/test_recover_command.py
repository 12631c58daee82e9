"""`lmbatch recover JOB`: a lost checkpoint is rebuilt, never deleted (batch.ledger.recover)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner
from helpers import email_campaign

from batch.cli import main
from batch.errors import EXIT_ERROR, EXIT_OK
from batch.jobfile import load_job
from batch.ledger import PARQUET_NAME, Entry, Ledger, Outcome, read_ledger


def test_a_lost_checkpoint_is_rebuilt_by_the_recover_command(tmp_path: Path) -> None:
    campaign = email_campaign(tmp_path / "job", personal=6, grouped=0, seed=1)
    folder = load_job(campaign.job_path).output_dir
    keys = [r.key for r in campaign.recipients]
    with Ledger.open(folder, channel="email") as ledger:
        for number, key in enumerate(keys[:4]):
            ledger.intent(f"r-{key}", [Entry(key, f"{key}@example.com", "", "h")])
            outcome = Outcome(key, "sent", tracking_id=f"t-{key}")
            ledger.sent(f"r-{key}", parent_tracking_id=f"p-{key}", outcomes=[outcome], sent_at=None)
            if number % 2:
                ledger.checkpoint()  # two checkpoints: the second keeps the first beside it
    (folder / PARQUET_NAME).unlink()

    refused = CliRunner().invoke(main, ["status", str(campaign.job_path)])
    assert refused.exit_code == EXIT_ERROR
    assert "recover" in refused.output  # the hint names the way back, never "delete it"

    result = CliRunner().invoke(main, ["recover", str(campaign.job_path)])
    assert result.exit_code == EXIT_OK, result.output
    assert "rebuilt" in result.output
    sent = read_ledger(folder).filter(pl.col("status") == "sent")["key"].to_list()
    assert sent == keys[:4]
