"""Ledgers written before the `address` column: read without loss, migrated on the next checkpoint.

The fixtures in tests/fixtures/ledger_v1/ were written by lmbatch's ledger code as it was
before the column was renamed (column `email`, no `channel`, journal lines `"v": 1`): a
checkpoint holding a sent, a failed (its address never written, as the old code left it) and a
pending row, then a journal holding a send and an intent whose answer never came (a crash).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from batch.ledger import (
    IN_DOUBT,
    JOURNAL_NAME,
    PARQUET_NAME,
    PENDING,
    SCHEMA,
    Entry,
    Ledger,
    decode_json_cell,
    read_ledger,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ledger_v1"


def legacy(tmp_path: Path, channel: str) -> Path:
    folder = tmp_path / channel
    shutil.copytree(FIXTURES / channel, folder)
    return folder


def test_the_fixtures_are_in_the_old_form() -> None:
    old = pl.read_parquet(FIXTURES / "email" / PARQUET_NAME)
    assert "email" in old.columns and "address" not in old.columns
    assert "channel" not in old.columns
    lines = (FIXTURES / "email" / JOURNAL_NAME).read_bytes().splitlines()
    assert [json.loads(line)["v"] for line in lines] == [1, 1, 1]
    assert "email" in json.loads(lines[0])["rows"]["d"]


@pytest.mark.parametrize(
    ("channel", "addresses"),
    [
        ("email", [f"{k}@example.com" for k in "acde"]),
        ("sms", ["+346000000" + n for n in ("00", "02", "03", "04")]),
    ],
)
def test_an_old_ledger_reads_without_loss(
    tmp_path: Path, channel: str, addresses: list[str]
) -> None:
    folder = legacy(tmp_path, channel)
    frame = read_ledger(folder)

    assert list(frame.columns) == list(SCHEMA)  # `email` is now `address`; `channel` added
    assert frame["key"].to_list() == ["a", "b", "c", "d", "e"]
    assert frame["status"].to_list() == ["sent", "failed", PENDING, "sent", IN_DOUBT]
    known = frame.filter(pl.col("address").is_not_null())
    assert known["address"].to_list() == addresses  # from the parquet and the journal alike
    assert frame["channel"].to_list() == [None] * 5  # a reader does not guess the channel
    a = frame.row(0, named=True)
    assert a["tracking_id"] == "t1" and a["delivered_at"] == datetime(2025, 3, 2, tzinfo=UTC)
    assert decode_json_cell(a["certificates"]) == {"delivery": "x.pdf"}
    assert frame.row(4, named=True)["request_id"] == "r3"


def test_an_old_ledger_is_migrated_on_its_next_checkpoint(tmp_path: Path) -> None:
    folder = legacy(tmp_path, "sms")
    before = read_ledger(folder)

    with Ledger.open(folder, channel="sms") as ledger:
        assert ledger.frame()["channel"].to_list() == ["sms"] * 5
        assert ledger.get("d")["address"] == "+34600000003"  # type: ignore[index]

    written = pl.read_parquet(folder / PARQUET_NAME)
    assert list(written.columns) == list(SCHEMA)
    assert (folder / JOURNAL_NAME).stat().st_size == 0
    assert written.drop("channel").equals(before.drop("channel"))  # nothing else changed
    assert written["channel"].to_list() == ["sms"] * 5
    assert read_ledger(folder).equals(written)


def test_an_old_checkpoint_without_events_is_migrated_too(tmp_path: Path) -> None:
    folder = legacy(tmp_path, "email")
    with Ledger.open(folder, channel="email") as ledger:
        ledger.checkpoint()  # folds the old journal
    (folder / JOURNAL_NAME).write_bytes(b"")
    old = pl.read_parquet(folder / PARQUET_NAME).rename({"address": "email"}).drop("channel")
    old.write_parquet(folder / PARQUET_NAME)  # as the old code left it: no events pending

    with Ledger.open(folder, channel="email") as ledger:
        ledger.checkpoint()

    assert pl.read_parquet_schema(folder / PARQUET_NAME) == pl.Schema(SCHEMA)


def test_an_old_ledger_goes_on_recording(tmp_path: Path) -> None:
    folder = legacy(tmp_path, "email")
    with Ledger.open(folder, channel="email") as ledger:
        ledger.not_sent("r3", ["e"], "proven absent")
        ledger.intent("r4", [Entry("e", "e@example.com", "E", "h1")])
        line = json.loads((folder / JOURNAL_NAME).read_bytes().splitlines()[-1])
        assert line["v"] == 2 and line["rows"]["e"]["address"] == "e@example.com"
        assert ledger.get("e")["attempts"] == 2  # type: ignore[index]
    assert read_ledger(folder).filter(pl.col("key") == "e")["status"].to_list() == [IN_DOUBT]


def test_queue_reads_the_old_column_name(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "c", channel="email") as ledger:
        ledger.queue(pl.DataFrame({"key": ["k"], "email": ["k@example.com"]}))
        assert ledger.get("k")["address"] == "k@example.com"  # type: ignore[index]


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        (None, None),
        ("", None),
        ("not json", None),
        ('{"a": 1}', {"a": 1}),
        ("[1, 2]", [1, 2]),
        ({"already": "decoded"}, {"already": "decoded"}),
    ],
)
def test_decode_json_cell_is_lenient(cell: object, value: object) -> None:
    assert decode_json_cell(cell) == value
