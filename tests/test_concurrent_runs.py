"""Two `lmbatch run` processes of two campaigns share one host's rate limit without a 429.

Both children point at one sandbox (10 requests per 0.5 s per IP, sliding) and one
$LMBATCH_STATE_DIR, so their HostLimiters share the budget through its file. The sandbox's
own request timestamps must show no sliding window over the limit, and its counters no 429.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import (
    DEADLINE,
    WINDOW,
    accepted,
    assert_exactly_once,
    child_env,
    done_code,
    email_campaign,
    fault_sandbox,
    figures,
    start_run,
)

from batch.sandbox import running_sandbox

pytestmark = pytest.mark.slow  # end to end: child processes against a sandbox

LIMIT = 10


def most_in_any_window(stamps: list[float], window: float) -> int:
    """The largest number of stamps in any half-open sliding window (t - window, t]."""
    stamps = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamps[first] <= stamp - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_most_in_any_window_counts_a_sliding_window() -> None:
    assert most_in_any_window([0.0, 0.1, 0.2, 0.5, 0.55], 0.5) == 4
    assert most_in_any_window([0.0, 0.5, 1.0], 0.5) == 1
    assert most_in_any_window([], 0.5) == 0


def test_two_processes_share_the_limit_without_429(tmp_path: Path) -> None:
    alpha = email_campaign(tmp_path / "alpha", personal=45, grouped=30, seed=1, name="alpha")
    beta = email_campaign(tmp_path / "beta", personal=45, grouped=30, seed=2, name="beta")
    with running_sandbox(fault_sandbox()) as sandbox:
        env = child_env(sandbox, tmp_path / "state")  # one state dir: one host budget
        started = time.monotonic()
        children = [
            start_run(c, env, tmp_path / f"logs-{c.job_path.parent.name}") for c in (alpha, beta)
        ]
        codes = [child.wait(timeout=DEADLINE * 2) for child in children]
        seconds = time.monotonic() - started
        assert codes == [done_code(alpha), done_code(beta)]

        requests = sandbox.state.requests()
        assert sandbox.state.request_count(status=429) == 0
        assert {r["status"] for r in requests} == {200}
        stamps = [float(r["at"]) for r in requests]
        busiest = most_in_any_window(stamps, WINDOW)
        assert busiest <= LIMIT

        # The two campaigns really ran side by side: each sent while the other was sending.
        spans = []
        for campaign in (alpha, beta):
            sent = [float(str(e["sent_ts"])) for e in accepted(sandbox, campaign)]
            spans.append((min(sent), max(sent)))
        overlap = min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0])
        shorter = min(end - start for start, end in spans)
        assert overlap > 0.5 * shorter, f"the runs hardly overlapped: {spans}"

        assert_exactly_once(sandbox, alpha)
        assert_exactly_once(sandbox, beta)
        span = max(stamps) - min(stamps)
        # At most LIMIT * (span / WINDOW + 1) requests fit in `span` without a window over.
        utilisation = len(stamps) / (LIMIT * (span / WINDOW + 1))
        figures(
            "two processes",
            requests=len(stamps),
            span_seconds=round(span, 2),
            busiest_window=busiest,
            utilisation=f"{utilisation:.0%}",
            status_429=0,
            wall_seconds=round(seconds, 1),
        )
