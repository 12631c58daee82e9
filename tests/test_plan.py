"""Grouping: identical messages share a request, never past the limit, nobody twice."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.plan import eta_seconds, group


def pending(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    """A pending frame from (key, address, content_hash) triples, in dataset order."""
    return pl.DataFrame(
        {
            "row": list(range(2, len(rows) + 2)),
            "key": [r[0] for r in rows],
            "address": [r[1] for r in rows],
            "name": ["" for _ in rows],
            "content_hash": [r[2] for r in rows],
        }
    )


def test_identical_messages_share_requests_up_to_the_limit() -> None:
    rows = [(f"k{i}", f"a{i}@example.com", "same") for i in range(25)]
    batches = group(pending(rows), max_recipients=10, grouping=True)
    assert [len(b.entries) for b in batches] == [10, 10, 5]


def test_personal_messages_go_one_per_request() -> None:
    rows = [(f"k{i}", f"a{i}@example.com", f"h{i}") for i in range(4)]
    batches = group(pending(rows), max_recipients=10, grouping=True)
    assert [b.keys for b in batches] == [["k0"], ["k1"], ["k2"], ["k3"]]


def test_grouping_off_sends_one_per_request() -> None:
    rows = [(f"k{i}", f"a{i}@example.com", "same") for i in range(3)]
    assert len(group(pending(rows), max_recipients=10, grouping=False)) == 3


def test_same_address_twice_never_shares_a_request() -> None:
    rows = [
        ("k1", "x@example.com", "h"),
        ("k2", "X@example.com", "h"),
        ("k3", "y@example.com", "h"),
    ]
    batches = group(pending(rows), max_recipients=10, grouping=True)
    assert [b.keys for b in batches] == [["k1", "k3"], ["k2"]]


def test_requests_follow_dataset_order() -> None:
    rows = [("k1", "a@e.com", "A"), ("k2", "b@e.com", "B"), ("k3", "c@e.com", "A")]
    batches = group(pending(rows), max_recipients=10, grouping=True)
    assert [b.keys for b in batches] == [["k1", "k3"], ["k2"]]


@given(
    contents=st.lists(st.sampled_from("ABC"), max_size=80),
    addresses=st.lists(st.integers(0, 15), max_size=80),
    limit=st.integers(1, 12),
    grouping=st.booleans(),
)
def test_grouping_invariants(
    contents: list[str], addresses: list[int], limit: int, grouping: bool
) -> None:
    n = min(len(contents), len(addresses))
    rows = [(f"k{i}", f"u{addresses[i]}@example.com", contents[i]) for i in range(n)]
    batches = group(pending(rows), max_recipients=limit, grouping=grouping)
    seen = [k for b in batches for k in b.keys]
    assert sorted(seen) == sorted(r[0] for r in rows)  # everyone exactly once
    for batch in batches:
        assert 1 <= len(batch.entries) <= limit
        assert len({e.content_hash for e in batch.entries}) == 1
        assert len({e.address.lower() for e in batch.entries}) == len(batch.entries)


def model(rows: list[tuple[str, str, str]], limit: int) -> list[list[str]]:
    """The requests row by row: the k-th time an address meets a content it goes to that
    content's k-th layer; each layer is cut into requests of `limit`; ordered by first row."""
    layers: dict[tuple[str, str], int] = {}
    filled: dict[tuple[str, int], int] = {}
    requests: dict[tuple[str, int, int], list[str]] = {}
    for key, address, content in rows:
        layer = layers.get((content, address.lower()), 0)
        layers[(content, address.lower())] = layer + 1
        chunk = filled.get((content, layer), 0) // limit
        filled[(content, layer)] = filled.get((content, layer), 0) + 1
        requests.setdefault((content, layer, chunk), []).append(key)
    return list(requests.values())  # dicts keep insertion order: by each request's first row


@given(
    contents=st.lists(st.sampled_from("ABCDEFGHIJKLMNOPQRST"), max_size=80),
    addresses=st.lists(st.integers(0, 15), max_size=80),
    limit=st.integers(1, 12),
)
def test_grouping_is_the_layering_rule(
    contents: list[str], addresses: list[int], limit: int
) -> None:
    """Messages sent to one recipient only (most of them, in a personal campaign) and shared
    ones, mixed: the same requests, in the same order, as the rule computed row by row."""
    n = min(len(contents), len(addresses))
    rows = [(f"k{i}", f"u{addresses[i]}@example.com", contents[i]) for i in range(n)]
    batches = group(pending(rows), max_recipients=limit, grouping=True)
    assert [b.keys for b in batches] == model(rows, limit)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [(0, 0.0), (1, 0.0), (10, 0.0), (11, 60.0), (500, 2940.0)],
)
def test_eta_counts_whole_windows(requests: int, expected: float) -> None:
    assert eta_seconds(requests, per_window=10, window=60.0) == expected
