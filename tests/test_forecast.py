"""The forecast's counts against a plain model of its rules, on frames and on a real ledger.

The forecast reads a large ledger in pieces (statuses a slice of keys at a time, the versions
check a key range at a time, issue 11); these tests shrink the pieces so that every boundary
is crossed, and compare with the rule computed row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batch.forecast as forecast_module
import batch.ledger.files as ledger_files
from batch.forecast import RunFlags, forecast
from batch.ledger import FAILED, IN_DOUBT, PENDING, SENT, SKIPPED, UNSENT, Entry, Ledger, Outcome
from batch.sandbox.clock import FakeClock

STATUSES = [PENDING, SENT, FAILED, SKIPPED, IN_DOUBT, "delivered", "read"]
KEYS = [f"k{i:02d}" for i in range(40)]


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(forecast_module, "_RANGES", 3)
    monkeypatch.setattr(forecast_module, "_SLICE", 4)
    monkeypatch.setattr(ledger_files, "ROW_GROUP_ROWS", 5)
    yield


ledger_rows = st.dictionaries(
    st.sampled_from(KEYS),
    st.tuples(st.sampled_from(STATUSES), st.sampled_from(["h1", "h2", "", None]), st.booleans()),
    max_size=30,
)
dataset_rows = st.dictionaries(
    st.sampled_from(KEYS), st.tuples(st.sampled_from(["h1", "h2"]), st.booleans()), max_size=30
)


def address(key: str, moved: bool) -> str:
    return f"{key}@{'new' if moved else 'old'}.example"


def ledger_frame(rows: dict[str, tuple[str, str | None, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": list(rows),
            "status": [s for s, _, _ in rows.values()],
            "content_hash": [h for _, h, _ in rows.values()],
            "address": [address(k, m) for k, (_, _, m) in rows.items()],
        },
        schema={c: pl.String() for c in ("key", "status", "content_hash", "address")},
    )


def dataset_frame(rows: dict[str, tuple[str, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": list(rows),
            "address": [address(k, m) for k, (_, m) in rows.items()],
            "content_hash": [h for h, _ in rows.values()],
        },
        schema={c: pl.String() for c in ("key", "address", "content_hash")},
    )


def model(
    ledger: dict[str, tuple[str, str | None, bool]], dataset: dict[str, tuple[str, bool]]
) -> tuple[set[str], int]:
    """The rows to send and the rows sent in another version, row by row (no flags)."""
    to_send = {k for k in dataset if k not in ledger or ledger[k][0] in (PENDING, SKIPPED)}
    changed = 0
    for key, (now_hash, now_moved) in dataset.items():
        if key not in ledger or key in to_send:
            continue
        status, then_hash, then_moved = ledger[key]
        if status in UNSENT or status == IN_DOUBT or not then_hash:
            continue
        changed += (then_hash, then_moved) != (now_hash, now_moved)
    return to_send, changed


@settings(max_examples=150, deadline=None)
@given(ledger=ledger_rows, dataset=dataset_rows)
def test_a_ledger_frame_forecasts_as_the_rules_say(
    ledger: dict[str, tuple[str, str | None, bool]], dataset: dict[str, tuple[str, bool]]
) -> None:
    ok = dataset_frame(dataset)
    ahead = forecast(ledger_frame(ledger), ok, ok["key"], RunFlags())
    want_send, want_changed = model(ledger, dataset)
    assert set(ahead.to_send["key"]) == want_send
    assert ahead.changed_sent == want_changed
    gone = {k for k, (status, _, _) in ledger.items() if status == PENDING and k not in dataset}
    assert set(ahead.withdraw) == gone


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sent=st.dictionaries(st.sampled_from(KEYS), st.booleans(), max_size=30), data=st.data())
def test_a_checkpointed_ledger_forecasts_as_the_rules_say(
    tmp_path_factory: pytest.TempPathFactory, sent: dict[str, bool], data: st.DataObject
) -> None:
    """Rows sent with h1 through a real ledger, checkpointed in 5-row groups; the dataset
    renders some with h2 or moves their address."""
    folder = tmp_path_factory.mktemp("forecast") / "campaign"
    dataset = data.draw(dataset_rows)
    with Ledger.open(folder, clock=FakeClock(0.0, tick=0.001).utc) as ledger:
        queued = dataset_frame({k: ("h1", moved) for k, moved in sent.items()})
        ledger.queue(queued)
        ledger.checkpoint()
        entries = [Entry(k, address(k, m), None, "h1") for k, m in sent.items()]
        if entries:
            ledger.intent("r1", entries)
            outcomes = [Outcome(e.key, SENT, f"t-{e.key}") for e in entries]
            ledger.sent("r1", parent_tracking_id="P", outcomes=outcomes, sent_at=None)
        ledger.checkpoint()
        ok = dataset_frame(dataset)
        ahead = forecast(ledger, ok, ok["key"], RunFlags())
    want_send, want_changed = model({k: (SENT, "h1", m) for k, m in sent.items()}, dataset)
    assert set(ahead.to_send["key"]) == want_send
    assert ahead.changed_sent == want_changed


def test_rows_of_a_ledger_with_no_key_in_common_are_not_a_second_version(
    tmp_path: Path,
) -> None:
    ledger = ledger_frame({"a": (SENT, "h1", False)})
    ok = dataset_frame({"0": ("h2", False), "b": ("h2", False)})
    ahead = forecast(ledger, ok, ok["key"], RunFlags())
    assert (ahead.changed_sent, sorted(ahead.to_send["key"])) == (0, ["0", "b"])
