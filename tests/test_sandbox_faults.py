"""Fault injection: what each fault does to the state, and which httpx error a client sees."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx
import pytest

from batch.sandbox import (
    FAULT_KINDS,
    FakeClock,
    Faults,
    LostResponse,
    RunningSandbox,
    SandboxConfig,
    in_process_sandbox,
    parse_faults,
)

SandboxFactory = Callable[..., RunningSandbox]
MAIL = {"to": "ana@example.com", "subject": "s", "message": "m"}
SMS = {"phone": "+34600123456", "message": "x"}


def test_error_500_answers_before_anything_is_recorded(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.force("error_500")
    with sandbox.client() as client:
        response = client.post("/api/send", json=MAIL)
        assert response.status_code == 500
        assert response.json() == {"success": False, "message": "Internal server error"}
        assert sandbox.state.log() == []
        assert client.post("/api/send", json=MAIL).status_code == 200
    assert sandbox.state.request_count(500) == 1
    assert sandbox.state.stats()["faults"] == {"error_500": 1}


def test_lost_response_over_a_socket_is_a_remote_protocol_error_after_recording(
    sandbox: RunningSandbox,
) -> None:
    credits = sandbox.state.credits
    sandbox.state.faults.force("lost_response")
    with sandbox.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/api/send", json=MAIL)
        # The send happened: it is in the log and in /api/emails, and it was charged.
        assert [e["recipient"] for e in sandbox.state.log()] == ["ana@example.com"]
        assert sandbox.state.credits == credits - 1
        assert client.get("/api/emails", params={"limit": 1}).json()["count"] == 1
    assert sandbox.state.request_count(0) == 1
    assert sandbox.state.stats()["lost_responses"] == 1


def test_lost_response_in_process_raises_the_same_exception_class() -> None:
    config = SandboxConfig(token="t")
    with in_process_sandbox(config) as sandbox, sandbox.client() as client:
        sandbox.state.faults.force("lost_response")
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            client.post("/api/sms/send", json=SMS)
        assert isinstance(caught.value, LostResponse)
        assert [e["channel"] for e in sandbox.state.log()] == ["sms"]


def test_slow_answer_times_out_a_short_read_timeout_but_is_recorded_first(
    sandbox: RunningSandbox,
) -> None:
    sandbox.state.faults.force("slow")  # slow_seconds = 0.5 in the test config
    timeout = httpx.Timeout(5.0, read=0.1)
    with sandbox.client(timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/api/send", json=MAIL)
        assert len(sandbox.state.log()) == 1
    sandbox.state.faults.force("slow")
    with sandbox.client(timeout=5.0) as client:
        started = time.monotonic()
        assert client.post("/api/sms/send", json=SMS).status_code == 200
        assert time.monotonic() - started >= 0.45
    assert sandbox.state.stats()["faults"] == {"slow": 2}


def test_burst_429_refuses_this_and_the_next_requests_without_using_the_window(
    sandbox_factory: SandboxFactory, fake_clock: FakeClock
) -> None:
    sandbox = sandbox_factory(clock=fake_clock, rate_limit=3, burst_length=2)
    sandbox.state.faults.force("burst_429")
    with sandbox.client() as client:
        assert client.post("/api/send", json=MAIL).status_code == 429
        assert client.get("/api/info").status_code == 429  # not a send path: the burst still holds
        assert client.post("/api/send", json=MAIL).status_code == 429
        # No time passed, yet the full limit of 3 is available: burst refusals never counted.
        assert [client.get("/api/info").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert sandbox.state.log() == []
    assert sandbox.state.request_count(429) == 4


def test_faults_hit_only_the_configured_endpoints(sandbox_factory: SandboxFactory) -> None:
    sends_only = sandbox_factory(faults={"error_500": 1.0})
    with sends_only.client() as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/emails", params={"limit": 1}).status_code == 200
        for path, body in [("/api/send", MAIL), ("/api/sms/send", SMS)]:
            assert client.post(path, json=body).status_code == 500
        assert client.post("/api/signature/send", json={}).status_code == 500
    everywhere = sandbox_factory(faults={"error_500": 1.0}, fault_endpoints=("*",))
    with everywhere.client() as client:
        assert client.get("/api/info").status_code == 500
        assert client.get("/_sandbox/stats").status_code == 200  # outside the API


def test_seeded_faults_repeat_exactly() -> None:
    def outcomes(seed: int) -> list[int | str]:
        config = SandboxConfig(
            token="t",
            rate_limit=1000,
            faults=parse_faults("error_500=0.3,lost_response=0.2,burst_429=0.1"),
            burst_length=1,
            fault_seed=seed,
        )
        seen: list[int | str] = []
        with in_process_sandbox(config) as sandbox, sandbox.client() as client:
            for _ in range(40):
                try:
                    seen.append(client.post("/api/send", json=MAIL).status_code)
                except LostResponse:
                    seen.append("lost")
        return seen

    first = outcomes(seed=7)
    assert first == outcomes(seed=7)
    assert first != outcomes(seed=8)
    assert {200, 500, 429, "lost"} <= set(first)


def test_set_with_a_seed_restarts_the_draw() -> None:
    faults = Faults({}, seed=0, endpoints=("*",), burst_length=3)
    faults.set({"error_500": 0.5}, seed=11)
    first = [faults.draw() for _ in range(30)]
    faults.draw()
    faults.set(error_500=0.5, seed=11)
    assert [faults.draw() for _ in range(30)] == first


def test_fault_rates_are_honoured_roughly() -> None:
    faults = Faults({"error_500": 0.25, "slow": 0.25}, seed=1, endpoints=("*",), burst_length=3)
    draws = [faults.draw() for _ in range(4000)]
    assert 800 < draws.count("error_500") < 1200
    assert 800 < draws.count("slow") < 1200
    assert faults.counts == {"error_500": draws.count("error_500"), "slow": draws.count("slow")}


def test_faults_can_be_changed_at_run_time_from_python_and_http(sandbox: RunningSandbox) -> None:
    sandbox.state.faults.set(error_500=1.0)
    with sandbox.client() as client:
        assert client.post("/api/send", json=MAIL).status_code == 500
        sandbox.state.faults.set()
        assert client.post("/api/send", json=MAIL).status_code == 200
        changed = client.post("/_sandbox/faults", json={"error_500": 1.0})
        assert changed.json() == {"success": True, "faults": {"error_500": 1.0}}
        assert client.post("/api/send", json=MAIL).status_code == 500
        bad = client.post("/_sandbox/faults", json={"meteor": 0.5})
        assert bad.status_code == 400
        assert client.get("/_sandbox/faults").json()["faults"] == {"error_500": 1.0}
        anonymous = httpx.post(sandbox.base_url + "/_sandbox/faults", json={"slow": 1.0})
        assert anonymous.status_code == 401
        assert sandbox.state.faults.rates == {"error_500": 1.0}
        sandbox.state.faults.clear()
        assert client.post("/api/send", json=MAIL).status_code == 200


@pytest.mark.parametrize("kind", ["teleport", "Error_500"])
def test_unknown_fault_kinds_are_refused(sandbox: RunningSandbox, kind: str) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.state.faults.set({kind: 0.1})
    with pytest.raises(ValueError, match="unknown fault"):
        sandbox.state.faults.force(kind)
    assert "error_500" in FAULT_KINDS


def test_the_server_keeps_serving_after_every_kind_of_fault(sandbox: RunningSandbox) -> None:
    timeout = httpx.Timeout(5.0, read=0.1)
    with sandbox.client(timeout=timeout) as client:
        for kind in FAULT_KINDS:
            sandbox.state.faults.force(kind)
            with contextlib.suppress(httpx.TransportError):
                client.post("/api/send", json=MAIL)
        sandbox.state.faults.clear()
        deadline = time.monotonic() + 5
        # The slow answer and the burst may still be in the way; poll instead of sleeping.
        while (status := client.get("/api/info").status_code) != 200:
            assert status == 429 and time.monotonic() < deadline
    assert sandbox.state.stats()["faults"] == {kind: 1 for kind in FAULT_KINDS}
