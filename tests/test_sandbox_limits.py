"""The sandbox's limits: sliding-window rate limit, credits, recipients, and its settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.sandbox import (
    FakeClock,
    InProcessTransport,
    RunningSandbox,
    SandboxConfig,
    parse_faults,
    parse_rate,
)
from batch.sandbox.ratelimit import SlidingWindowLimiter

SandboxFactory = Callable[..., RunningSandbox]
MAIL = {"to": "ana@example.com", "subject": "s", "message": "m"}


def statuses(client: httpx.Client, count: int, path: str = "/api/info") -> list[int]:
    return [client.get(path).status_code for _ in range(count)]


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10/60", (10, 60.0)), ("10/2", (10, 2.0)), (" 10 / 0.5 ", (10, 0.5)), ("1/1", (1, 1.0))],
)
def test_parse_rate(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["10", "", "a/60", "10/b", "0/60", "10/0", "10/-1", "10/inf"])
def test_parse_rate_refuses_nonsense_with_a_readable_message(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_parse_faults() -> None:
    assert parse_faults("lost_response=0.1, error_500=0.05,") == {
        "lost_response": 0.1,
        "error_500": 0.05,
    }
    assert parse_faults("") == {}


@pytest.mark.parametrize(
    "text", ["teleport=0.1", "slow", "slow=fast", "slow=1.5", "slow=-0.1", "slow=0.6,error_500=0.6"]
)
def test_parse_faults_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_faults(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_limit": 0},
        {"rate_window": 0},
        {"max_recipients": 0},
        {"credits": -1},
        {"delivered_after": 5, "read_after": 1},
        {"token": " "},
        {"faults": {"error_500": 2}},
    ],
)
def test_config_refuses_impossible_settings(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(**changes)


# --- the limiter on its own ----------------------------------------------------------------------


def test_limiter_window_slides_instead_of_resetting() -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter(4, 2.0, clock)
    assert all(limiter.acquire("ip") is not None for _ in range(2))
    clock.advance(1.5)
    assert all(limiter.acquire("ip") is not None for _ in range(2))
    assert limiter.acquire("ip") is None
    assert limiter.wait_time("ip") == pytest.approx(0.5)
    clock.advance(0.5)  # the two from t=0 leave the window; the two from t=1.5 stay
    assert [limiter.acquire("ip") is not None for _ in range(3)] == [True, True, False]
    assert limiter.acquire("other-ip") is not None


@given(
    limit=st.integers(1, 5),
    window=st.sampled_from([0.5, 1.0, 2.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]), max_size=60),
)
def test_limiter_never_admits_more_than_the_limit_in_any_window(
    limit: int, window: float, gaps: list[float]
) -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter(limit, window, clock)
    admitted = []
    for gap in gaps:
        clock.advance(gap)
        stamp = limiter.acquire("ip")
        if stamp is not None:
            admitted.append(stamp)
        else:
            # Refused only when the window really is full.
            assert sum(1 for t in admitted if t > clock() - window) >= limit
    for start in admitted:
        assert sum(1 for t in admitted if start <= t < start + window) <= limit


# --- the limit over the wire ---------------------------------------------------------------------


def test_the_11th_request_in_a_window_is_429_and_the_window_frees_up(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    sandbox = sandbox_factory(clock=fake_clock)  # 10 per 2 s
    with sandbox.client() as client:
        assert statuses(client, 10) == [200] * 10
        refused = client.get("/api/info")
        assert refused.status_code == 429
        assert refused.json() == {
            "success": False,
            "message": "Too many requests: rate limit exceeded",
        }
        assert "retry-after" not in refused.headers  # undocumented: clients must not rely on it
        fake_clock.advance(1.9)
        assert client.get("/api/info").status_code == 429
        fake_clock.advance(0.1)
        assert statuses(client, 10) == [200] * 10
    assert sandbox.state.request_count(429) == 2
    assert sandbox.state.request_count(200) == 20
    assert sandbox.state.stats()["by_status"] == {"200": 20, "429": 2}


def test_refused_requests_do_not_count_toward_the_window(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    sandbox = sandbox_factory(clock=fake_clock, rate_limit=3)
    with sandbox.client() as client:
        assert statuses(client, 3) == [200] * 3
        fake_clock.advance(1.0)
        assert statuses(client, 20) == [429] * 20  # hammering during the window...
        fake_clock.advance(1.0)
        assert statuses(client, 3) == [200] * 3  # ...does not push the next chance out


def test_every_api_path_counts_and_sandbox_paths_do_not(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    sandbox = sandbox_factory(clock=fake_clock, rate_limit=4)
    with sandbox.client() as client:
        assert client.get("/api/unknown").status_code == 404
        assert client.post("/api/send", json={}).status_code == 400
        assert client.get("/api/info", headers={"Authorization": "x"}).status_code == 401
        assert client.get("/api/send").status_code == 405
        for _ in range(20):
            assert client.get("/_sandbox/stats").status_code == 200
        assert client.get("/api/info").status_code == 429
    assert sandbox.state.request_count() == 5


def test_the_limit_is_per_client_address(fake_clock: FakeClock) -> None:
    from batch.sandbox import in_process_sandbox

    config = SandboxConfig(token="t", clock=fake_clock, rate_limit=2)
    with in_process_sandbox(config) as sandbox:
        headers = sandbox.headers
        one = httpx.Client(base_url=sandbox.base_url, headers=headers, transport=sandbox.transport)
        other = httpx.Client(
            base_url=sandbox.base_url,
            headers=headers,
            transport=InProcessTransport(sandbox.app, client=("10.0.0.2", 40000)),
        )
        with one, other:
            assert statuses(one, 3) == [200, 200, 429]
            assert statuses(other, 3) == [200, 200, 429]


def test_real_time_window_frees_up_without_a_fake_clock(sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(rate_limit=5, rate_window=0.5)
    with sandbox.client() as client:
        started = time.monotonic()
        codes = statuses(client, 6)
        if time.monotonic() - started < 0.5:  # on a very slow machine the window may slide early
            assert codes == [200] * 5 + [429]
        deadline = time.monotonic() + 5
        while client.get("/api/info").status_code == 429:
            assert time.monotonic() < deadline, "the window never freed up"
            time.sleep(0.02)


# --- credits and recipients ----------------------------------------------------------------------


def test_credits_are_charged_and_a_request_needing_more_is_refused_whole(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = sandbox_factory(credits=3, rate_limit=100)
    pdf = "JVBERi0xLjQK"  # "%PDF-1.4\n"
    with sandbox.client() as client:
        three = {**MAIL, "to": "a@example.com, b@example.com, c@example.com, d@example.com"}
        refused = client.post("/api/send", json=three)
        assert refused.status_code == 403
        assert refused.json()["success"] is False
        assert "credits" in refused.json()["message"].lower()
        assert sandbox.state.log() == [] and sandbox.state.credits == 3

        assert (
            client.post("/api/send", json={**MAIL, "to": "a@x.com, fail@x.com"}).status_code == 200
        )
        assert client.get("/api/info").json()["user"]["remaining_emails"] == 2
        sms = client.post("/api/sms/send", json={"phone": "+34600123456", "message": "x"})
        assert sms.status_code == 200 and sandbox.state.credits == 1
        signature = {
            "signer_name": "A",
            "signer_email": "a@example.com",
            "document": pdf,
            "document_name": "C.pdf",
        }
        assert client.post("/api/signature/send", json=signature).status_code == 200
        assert sandbox.state.credits == 0
        assert client.post("/api/send", json=MAIL).status_code == 403
        assert (
            client.post("/api/sms/send", json={"phone": "+34600123456", "message": "x"}).status_code
            == 403
        )
        assert client.post("/api/signature/send", json=signature).status_code == 403
        assert client.get("/api/info").json()["user"]["remaining_emails"] == 0
    assert len(sandbox.state.log()) == 4  # a@x.com, fail@x.com (rejected), the SMS, the signer


def test_set_credits_from_a_test(in_process_sandbox: SandboxFactory) -> None:
    sandbox = in_process_sandbox()
    sandbox.state.set_credits(0)
    with sandbox.client() as client:
        assert client.post("/api/send", json=MAIL).status_code == 403


@pytest.mark.parametrize(("limit", "count", "status"), [(3, 3, 200), (3, 4, 400), (25, 25, 200)])
def test_the_recipient_limit_is_configurable(
    in_process_sandbox: SandboxFactory, limit: int, count: int, status: int
) -> None:
    sandbox = in_process_sandbox(max_recipients=limit)
    recipients = ", ".join(f"r{i}@example.com" for i in range(count))
    with sandbox.client() as client:
        assert client.post("/api/send", json={**MAIL, "to": recipients}).status_code == status
