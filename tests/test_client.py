"""The client: every call paced, every failure mapped, sends never blindly retried, no leaks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from batch.client import LegallyMailClient, RequestEvent
from batch.errors import (
    ApiError,
    AuthError,
    ConfigurationError,
    CreditsExhausted,
    MaybeProcessed,
    NotProcessed,
    PermanentApiError,
    RateLimited,
    Unreachable,
)
from batch.pacing import SlidingWindowLimiter
from batch.sandbox import FakeClock, RunningSandbox

SandboxFactory = Callable[..., RunningSandbox]

TOKEN = "tok-5ecret-XYZ"
BASE = "https://api.test"
Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Api:
    """A scripted API: answers from `replies` in turn (the last one repeats), records requests."""

    replies: list[Handler | httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)


@dataclass
class Rig:
    """A client wired to a scripted API, a fake clock and recorders for every wait."""

    api: Api
    client: LegallyMailClient
    clock: FakeClock
    limiter: SlidingWindowLimiter
    backoffs: list[float]
    events: list[RequestEvent]


@pytest.fixture
def rig() -> Callable[..., Rig]:
    def make(*replies: Handler | httpx.Response | Exception, **kw: Any) -> Rig:
        api = Api(list(replies))
        clock = FakeClock()
        limiter = SlidingWindowLimiter(10, 60.0, clock)
        backoffs: list[float] = []
        events: list[RequestEvent] = []
        client = LegallyMailClient(
            BASE,
            TOKEN,
            limiter=limiter,
            transport=httpx.MockTransport(api),
            sleep=backoffs.append,
            on_request=events.append,
            **kw,
        )
        return Rig(api, client, clock, limiter, backoffs, events)

    return make


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def status(code: int, message: str = "nope") -> httpx.Response:
    return httpx.Response(code, json={"success": False, "message": message})


SEND_OK = ok({"success": True, "data": {"tracking_id": "T1", "recipients": []}})


# --- endpoints --------------------------------------------------------------------------------

ENDPOINTS = [
    # call, method, path, query, reply body, expected result
    (
        lambda c: c.send_email({"recipient": "a@x.test"}),
        "POST",
        "/api/send",
        {},
        {"success": True, "data": {"tracking_id": "T"}},
        {"tracking_id": "T"},
    ),
    (
        lambda c: c.send_sms({"phone": "+34600000000", "message": "hi"}),
        "POST",
        "/api/sms/send",
        {},
        {"success": True, "uuid": "U", "status": "sent", "credits_deducted": 1},
        {"success": True, "uuid": "U", "status": "sent", "credits_deducted": 1},
    ),
    (
        lambda c: c.send_signature({"signer_name": "A"}),
        "POST",
        "/api/signature/send",
        {},
        {"data": {"uuid": "S", "status": "pending"}},
        {"uuid": "S", "status": "pending"},
    ),
    (
        lambda c: c.info(),
        "GET",
        "/api/info",
        {},
        {"name": "x", "user": {}},
        {"name": "x", "user": {}},
    ),
    (
        lambda c: c.list_emails(5),
        "GET",
        "/api/emails",
        {"limit": "5"},
        {"emails": [{"id": 1}]},
        [{"id": 1}],
    ),
    (
        lambda c: c.email("T 1"),
        "GET",
        "/api/email",
        {"tracking_id": "T 1"},
        {"email": {"tracking_id": "T 1"}},
        {"tracking_id": "T 1"},
    ),
    (lambda c: c.sms("U"), "GET", "/api/sms", {"uuid": "U"}, {"data": {"s": 1}}, {"s": 1}),
    (
        lambda c: c.signatures(),
        "GET",
        "/api/signatures",
        {"limit": "25"},
        {"data": [{"uuid": "S"}]},
        [{"uuid": "S"}],
    ),
    (
        lambda c: c.signature("S"),
        "GET",
        "/api/signature",
        {"uuid": "S"},
        {"data": {"u": 1}},
        {"u": 1},
    ),
]


@pytest.mark.parametrize(("call", "method", "path", "query", "body", "expected"), ENDPOINTS)
def test_each_endpoint_sends_the_documented_request_and_returns_its_part(
    rig: Callable[..., Rig],
    call: Callable[[LegallyMailClient], Any],
    method: str,
    path: str,
    query: dict[str, str],
    body: dict[str, Any],
    expected: Any,
) -> None:
    r = rig(ok(body))
    assert call(r.client) == expected
    [request] = r.api.requests
    assert (request.method, request.url.path, dict(request.url.params)) == (method, path, query)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert r.limiter.requests == 1  # through the limiter


def test_a_send_posts_the_payload_as_json(rig: Callable[..., Rig]) -> None:
    r = rig(SEND_OK)
    payload = {"recipient": "a@x.test,b@x.test", "subject": "S", "message": "<p>hi</p>"}
    r.client.send_email(payload)
    assert json.loads(r.api.requests[0].content) == payload
    assert r.api.requests[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize("limit", [0, 26])
def test_list_limits_outside_the_api_range_are_refused(rig: Callable[..., Rig], limit: int) -> None:
    r = rig(ok({}))
    with pytest.raises(ValueError):
        r.client.list_emails(limit)
    with pytest.raises(ValueError):
        r.client.signatures(limit)
    assert r.api.requests == []


def test_download_carries_the_token_only_to_the_api(rig: Callable[..., Rig]) -> None:
    pdf = httpx.Response(200, content=b"%PDF-1.4", headers={"content-type": "application/pdf"})
    r = rig(pdf)
    assert r.client.download(f"{BASE}/certificates/1.pdf?sig=abc") == b"%PDF-1.4"
    assert r.client.download("/certificates/2.pdf") == b"%PDF-1.4"
    assert r.client.download("https://cdn.other.test/3.pdf") == b"%PDF-1.4"
    auth = [req.headers.get("authorization") for req in r.api.requests]
    assert auth == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", None]
    assert str(r.api.requests[1].url) == f"{BASE}/certificates/2.pdf"
    assert r.limiter.requests == 3
    assert r.events[0].path == "/certificates/1.pdf"  # a signed query stays out of events


def test_every_call_is_paced_by_the_limiter(rig: Callable[..., Rig]) -> None:
    r = rig(SEND_OK)
    for _ in range(12):
        r.client.send_email({})
    assert r.clock.sleeps == [60.0]  # the 11th waited for the window; no blind sleeps
    assert r.backoffs == []


# --- error mapping ----------------------------------------------------------------------------

STATUS_TABLE = [
    # status, error, tries for a GET, tries for a POST (attempts=3)
    (400, PermanentApiError, 1, 1),
    (404, PermanentApiError, 1, 1),
    (405, PermanentApiError, 1, 1),
    (409, PermanentApiError, 1, 1),
    (302, ConfigurationError, 1, 1),  # a redirect: the base URL is wrong, whatever the method
    (401, AuthError, 1, 1),
    (403, CreditsExhausted, 1, 1),
    (429, RateLimited, 3, 3),
    (500, MaybeProcessed, 3, 1),
    (502, MaybeProcessed, 3, 1),
    (503, MaybeProcessed, 3, 1),
]
# A send endpoint that does not exist (or refuses the method) is a wrong base URL, not a
# wrong request: the run stops with the rows pending (issue 12 item 10). On a look-up, 404
# keeps meaning "unknown id".
ON_SEND = {404: ConfigurationError, 405: ConfigurationError}


@pytest.mark.parametrize(("code", "error", "get_tries", "post_tries"), STATUS_TABLE)
def test_status_codes_map_to_errors_and_retries(
    rig: Callable[..., Rig], code: int, error: type[ApiError], get_tries: int, post_tries: int
) -> None:
    r = rig(status(code, "the API's own words"), attempts=3)
    with pytest.raises(error) as get_err:
        r.client.info()
    assert len(r.api.requests) == get_tries
    assert get_err.value.status == code
    assert get_err.value.endpoint == "GET /api/info"
    assert "the API's own words" in str(get_err.value)

    r = rig(status(code), attempts=3)
    with pytest.raises(ON_SEND.get(code, error)) as post_err:
        r.client.send_email({})
    assert len(r.api.requests) == post_tries
    assert post_err.value.endpoint == "POST /api/send"


TRANSPORT_TABLE = [
    # what httpx raises, our error, the event's error kind
    (httpx.ConnectError("refused"), Unreachable, "connect_error"),
    (httpx.ConnectTimeout("slow"), Unreachable, "connect_timeout"),
    (httpx.PoolTimeout("busy"), Unreachable, "pool_timeout"),
    (httpx.ReadTimeout("late"), MaybeProcessed, "read_timeout"),
    (httpx.WriteTimeout("late"), MaybeProcessed, "write_timeout"),
    (httpx.WriteError("broken pipe"), MaybeProcessed, "write_error"),
    (httpx.ReadError("reset"), MaybeProcessed, "read_error"),
    (
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        MaybeProcessed,
        "remote_protocol_error",
    ),
]


@pytest.mark.parametrize(("failure", "error", "kind"), TRANSPORT_TABLE)
def test_transport_failures_map_to_errors(
    rig: Callable[..., Rig], failure: Exception, error: type[ApiError], kind: str
) -> None:
    r = rig(failure, attempts=4)
    with pytest.raises(error) as err:
        r.client.info()
    assert len(r.api.requests) == 4  # look-ups are idempotent: retried either way
    assert err.value.status is None
    assert err.value.__cause__ is failure
    assert [(e.status, e.error) for e in r.events] == [(None, kind)] * 4

    r = rig(failure, attempts=4)
    with pytest.raises(error):
        r.client.send_email({})
    # A send that surely never arrived is retried; one that may have arrived never is.
    assert len(r.api.requests) == (4 if issubclass(error, NotProcessed) else 1)


def test_a_bad_base_url_is_permanent(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."))
    with pytest.raises(PermanentApiError, match="unsupported protocol") as err:
        r.client.send_email({})
    assert err.value.hint and "base_url" in err.value.hint
    assert len(r.api.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>proxy login</html>", headers={"content-type": "text/html"}),
        ok({"success": True}),  # no data
        httpx.Response(200, json=["a list"]),
    ],
)
def test_a_200_without_the_documented_body_is_in_doubt_for_a_send(
    rig: Callable[..., Rig], reply: httpx.Response
) -> None:
    r = rig(reply)
    with pytest.raises(MaybeProcessed) as err:
        r.client.send_email({})
    assert err.value.status == 200
    assert len(r.api.requests) == 1


def test_an_sms_answer_without_uuid_is_in_doubt(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"success": True}))
    with pytest.raises(MaybeProcessed):
        r.client.send_sms({})


@pytest.mark.parametrize(
    ("reply", "call"),
    [
        (httpx.Response(200, text="not json"), lambda c: c.info()),
        (ok({"emails": "nope"}), lambda c: c.list_emails()),
        (ok({"emails": [1, 2]}), lambda c: c.list_emails()),
        (ok({"data": None}), lambda c: c.signature("S")),
    ],
)
def test_a_200_without_the_documented_body_is_an_error_for_a_read(
    rig: Callable[..., Rig], reply: httpx.Response, call: Callable[[LegallyMailClient], Any]
) -> None:
    r = rig(reply)
    with pytest.raises(ApiError) as err:
        call(r.client)
    assert type(err.value) is ApiError
    assert err.value.status == 200 and err.value.endpoint.startswith("GET /api/")


def test_a_message_that_is_not_json_is_quoted_short(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.Response(400, text="x" * 5000))
    with pytest.raises(PermanentApiError) as err:
        r.client.info()
    assert len(str(err.value)) < 300


def test_hints_say_what_to_do(rig: Callable[..., Rig]) -> None:
    r = rig(status(401))
    with pytest.raises(AuthError) as auth:
        r.client.info()
    assert auth.value.hint and "LEGALLYMAIL_TOKEN" in auth.value.hint
    r = rig(status(403))
    with pytest.raises(CreditsExhausted) as credits:
        r.client.send_email({})
    assert credits.value.hint and "credits" in credits.value.hint


# --- retries ----------------------------------------------------------------------------------


def test_a_429_penalizes_the_limiter_instead_of_sleeping(rig: Callable[..., Rig]) -> None:
    r = rig(status(429), SEND_OK)
    assert r.client.send_email({}) == {"tracking_id": "T1", "recipients": []}
    assert len(r.api.requests) == 2
    assert r.clock.sleeps == [60.0]  # the limiter held the retry back one whole window
    assert all(b == 0 for b in r.backoffs)
    assert [(e.status, e.attempt) for e in r.events] == [(429, 1), (200, 2)]


def test_a_send_in_doubt_is_raised_at_once(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.ReadTimeout("late"), SEND_OK)
    with pytest.raises(MaybeProcessed):
        r.client.send_email({})
    assert len(r.api.requests) == 1
    assert r.backoffs == []


def test_an_unreachable_send_is_retried_with_backoff(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.ConnectError("refused"), httpx.ConnectError("refused"), SEND_OK)
    assert r.client.send_email({})["tracking_id"] == "T1"
    assert len(r.api.requests) == 3
    assert [e.error for e in r.events] == ["connect_error", "connect_error", None]
    assert 1.0 <= r.backoffs[0] <= 2.0 and 2.0 <= r.backoffs[1] <= 3.0  # exponential, jittered


def test_backoff_is_capped(rig: Callable[..., Rig]) -> None:
    r = rig(status(503), attempts=8, max_backoff=5.0)
    with pytest.raises(MaybeProcessed):
        r.client.info()
    assert len(r.backoffs) == 7
    assert max(r.backoffs) <= 5.0 and r.backoffs[-1] == 5.0


def test_a_lookup_recovers_from_a_5xx(rig: Callable[..., Rig]) -> None:
    r = rig(status(502), ok({"name": "LegallyMail"}))
    assert r.client.info() == {"name": "LegallyMail"}
    assert [(e.method, e.path, e.status, e.attempt) for e in r.events] == [
        ("GET", "/api/info", 502, 1),
        ("GET", "/api/info", 200, 2),
    ]


def test_a_single_attempt_means_no_retry(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.ConnectError("refused"), attempts=1)
    with pytest.raises(Unreachable):
        r.client.info()
    assert len(r.api.requests) == 1


def test_redirects_are_not_followed(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.Response(301, headers={"location": "https://elsewhere.test/api/send"}))
    with pytest.raises(ConfigurationError) as err:
        r.client.send_email({})
    assert len(r.api.requests) == 1
    assert err.value.hint and "base_url" in err.value.hint
    assert "elsewhere.test" in str(err.value)  # where the redirect pointed: the likely fix


# --- the token never leaks --------------------------------------------------------------------


def echo_token(request: httpx.Request) -> httpx.Response:
    """A server that quotes the request's authorization back in its error message."""
    return httpx.Response(400, json={"message": f"bad {request.headers['authorization']}"})


LEAK_CASES: list[Handler | httpx.Response | Exception] = [
    echo_token,
    httpx.Response(500, text=f"crash dump: Authorization: Bearer {TOKEN}"),
    httpx.Response(200, text=f"<html>{TOKEN}</html>"),
    *[failure for failure, *_ in TRANSPORT_TABLE],
    *[status(code) for code, *_ in STATUS_TABLE],
]


def strings_of(err: BaseException) -> list[str]:
    out: list[str] = []
    seen: BaseException | None = err
    while seen is not None:
        out += [str(seen), repr(seen), str(getattr(seen, "hint", "")), str(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return out


@pytest.mark.parametrize("reply", LEAK_CASES)
def test_the_token_never_appears_in_errors_or_events(
    rig: Callable[..., Rig], reply: Handler | httpx.Response | Exception
) -> None:
    r = rig(reply, attempts=2)
    texts = [repr(r.client), str(r.client)]
    calls: list[Callable[[], object]] = [lambda: r.client.send_email({}), r.client.info]
    for call in calls:
        with pytest.raises(ApiError) as err:
            call()
        texts += strings_of(err.value)
    texts += [repr(e) for e in r.events]
    assert not [t for t in texts if TOKEN in t]


@pytest.mark.parametrize("bad", ["", "   ", "tok en", "tök", "to\nk"])
def test_an_unusable_token_is_refused_without_quoting_it(bad: str) -> None:
    limiter = SlidingWindowLimiter(1, 1.0, FakeClock())
    with pytest.raises(AuthError) as err:
        LegallyMailClient(BASE, bad, limiter=limiter)
    assert err.value.hint and "LEGALLYMAIL_TOKEN" in err.value.hint
    if bad.strip():
        assert bad.strip() not in str(err.value)


def test_the_client_closes_as_a_context_manager(rig: Callable[..., Rig]) -> None:
    r = rig(SEND_OK)
    with r.client as client:
        client.send_email({})
    with pytest.raises(RuntimeError):
        r.client.send_email({})


# --- against the sandbox, over a real socket on 127.0.0.1 -------------------------------------


def sandbox_client(
    sb: RunningSandbox, limit: int, window: float, **kw: Any
) -> tuple[LegallyMailClient, list[RequestEvent]]:
    events: list[RequestEvent] = []
    limiter = SlidingWindowLimiter(limit, window)
    client = LegallyMailClient(
        sb.base_url, sb.token, limiter=limiter, on_request=events.append, **kw
    )
    return client, events


def test_sandbox_a_paced_stream_gets_no_429(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(rate_limit=5, rate_window=0.5)
    client, events = sandbox_client(sb, 5, 0.5)
    with client:
        sent = [client.send_email(email_payload(i)) for i in range(12)]
        detail = client.email(sent[0]["tracking_id"])
    assert [e.status for e in events] == [200] * 13
    assert detail["tracking_id"] == sent[0]["tracking_id"]
    assert sb.state.request_count(429) == 0


def test_sandbox_a_lost_response_is_in_doubt_and_not_resent(sandbox: RunningSandbox) -> None:
    client, events = sandbox_client(sandbox, 10, 2.0)
    sandbox.state.faults.force("lost_response")
    with client, pytest.raises(MaybeProcessed) as err:
        client.send_email(email_payload(1))
    assert isinstance(err.value.__cause__, httpx.RemoteProtocolError)
    assert [e.error for e in events] == ["remote_protocol_error"]
    assert sandbox.state.stats()["emails"] == 1  # it did happen: the runner must reconcile


def test_sandbox_a_slow_answer_is_in_doubt(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(slow_seconds=0.5)
    client, events = sandbox_client(sb, 10, 2.0, timeout=0.1)
    sb.state.faults.force("slow")
    with client, pytest.raises(MaybeProcessed):
        client.send_email(email_payload(1))
    assert [e.error for e in events] == ["read_timeout"]


def test_sandbox_a_wrong_token_is_an_auth_error(sandbox: RunningSandbox) -> None:
    limiter = SlidingWindowLimiter(10, 2.0)
    client = LegallyMailClient(sandbox.base_url, "wrong", limiter=limiter)
    with client, pytest.raises(AuthError) as err:
        client.info()
    assert err.value.status == 401 and err.value.endpoint == "GET /api/info"


def email_payload(i: int) -> dict[str, Any]:
    return {"recipient": f"r{i}@example.com", "subject": f"S{i}", "message": "<p>hi</p>"}
