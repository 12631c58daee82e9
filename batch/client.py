"""The LegallyMail HTTP client: one paced request per call, errors mapped to errors.py.

Error mapping (what it means for a retry):

    connect error, connect/pool timeout, proxy error   Unreachable       not processed
    429                                                RateLimited       not processed (penalize)
    read/write timeout, read/write error, dropped      MaybeProcessed    in doubt
    connection, other transport error, 5xx
    200 whose body is not the documented JSON          MaybeProcessed    (sends); ApiError (reads)
    3xx (any request); 404, 405 on a send              ConfigurationError (exit 1, nothing sent)
    400, other 4xx (404: an unknown id on a look-up)   PermanentApiError
    bad URL                                            PermanentApiError
    401                                                AuthError
    403                                                CreditsExhausted

Retry policy: look-ups and downloads are idempotent and retry on NotProcessed and
MaybeProcessed; sends retry only on NotProcessed, because a send in doubt may exist and
only the runner can reconcile it. A 429 penalizes the limiter, whose next slot() does the
waiting; other retries back off exponentially with jitter, capped at `max_backoff`.

The token goes out only as `Authorization: Bearer …`, and only to the API's own origin, which
batch.guard has checked (`base_url`: the job file may only name LegallyMail; the environment's
LEGALLYMAIL_BASE_URL any https host, or http on loopback). Every text a server sends back
(error messages, and every string of a JSON body, which reaches the ledger, status and the
report) passes through the guard's `Scrubber`: the token in any spelling a server might echo
is gone before anything is written or printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from batch import __version__
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
from batch.guard import Scrubber
from batch.limits import LISTING_LIMIT
from batch.pacing import RateLimiter

__all__ = [
    "CONNECT_TIMEOUT",
    "LegallyMailClient",
    "RequestEvent",
]

CONNECT_TIMEOUT = 10.0
_SNIPPET = 200  # characters of an unexpected body quoted in an error


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP attempt, for the progress display: counts requests, 429s and retries."""

    method: str
    path: str  # without query string: look-up ids and signed download URLs stay out of logs
    status: int | None  # HTTP status, or None when no response came back
    error: str | None  # transport failure kind ("connect_error", "read_timeout", …) or None
    elapsed: float  # seconds on the wire, limiter wait excluded
    attempt: int  # 1 for the first try


# Transport failures: which ones prove the request never reached the server.
_UNREACHABLE: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)
_NOT_SENT_BAD_REQUEST: tuple[type[Exception], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def _error_kind(err: Exception) -> str:
    """ReadTimeout -> read_timeout."""
    name = type(err).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class _BackoffUnlessRateLimited:
    """Exponential backoff with jitter; no sleep after a 429, the limiter's penalty waits."""

    def __init__(self, max_backoff: float) -> None:
        self._backoff = wait_exponential_jitter(initial=1.0, max=max_backoff, jitter=1.0)
        self._max = max_backoff

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and isinstance(outcome.exception(), RateLimited):
            return 0.0
        return min(self._max, float(self._backoff(state)))


class LegallyMailClient:
    """Paced, retrying access to the LegallyMail REST API."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        limiter: RateLimiter,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        attempts: int = 5,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        on_request: Callable[[RequestEvent], None] | None = None,
    ) -> None:
        token = token.strip()
        if not token:
            raise AuthError("no API token given", hint="set LEGALLYMAIL_TOKEN to your API token")
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            # httpx would quote the bad header value in its error: refuse it here, unquoted.
            raise AuthError(
                "the API token holds characters an HTTP header cannot carry",
                hint="check LEGALLYMAIL_TOKEN: copy the token again, without spaces or quotes",
            )
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self._token = token
        self._scrubber = Scrubber(token)
        self._limiter = limiter
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._on_request = on_request
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            follow_redirects=False,  # a redirect would replay a send: never follow one
            headers={"Accept": "application/json", "User-Agent": f"lmbatch/{__version__}"},
        )

    def __repr__(self) -> str:
        return f"LegallyMailClient(base_url={self.base_url!r})"

    def __enter__(self) -> LegallyMailClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def limiter(self) -> RateLimiter:
        """The limiter every call of this client waits on."""
        return self._limiter

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- endpoints ----------------------------------------------------------------------

    def send_email(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/send: one certified e-mail to ≤ N recipients; returns the `data` object."""
        return _object(self._call("POST", "/api/send", json=payload), "data", send=True)

    def send_sms(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/sms/send: one certified SMS; returns the whole body (uuid, status, …)."""
        body = self._call("POST", "/api/sms/send", json=payload)
        if not isinstance(body.get("uuid"), str):
            _bad_body(body.endpoint, "no `uuid` in the body", send=True)
        return dict(body)

    def send_signature(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST /api/signature/send: one e-signature request; returns the `data` object."""
        return _object(self._call("POST", "/api/signature/send", json=payload), "data", send=True)

    def info(self) -> dict[str, Any]:
        """GET /api/info: account, plan and remaining credits."""
        return dict(self._call("GET", "/api/info"))

    def list_emails(self, limit: int = LISTING_LIMIT) -> list[dict[str, Any]]:
        """GET /api/emails: the last `limit` (1..25) e-mails sent."""
        params = {"limit": _check_list_limit(limit)}
        return _objects(self._call("GET", "/api/emails", params=params), "emails")

    def email(self, tracking_id: str) -> dict[str, Any]:
        """GET /api/email: one e-mail with its recipients and certificates."""
        return _object(
            self._call("GET", "/api/email", params={"tracking_id": tracking_id}), "email"
        )

    def sms(self, uuid: str) -> dict[str, Any]:
        """GET /api/sms: one SMS's status."""
        return _object(self._call("GET", "/api/sms", params={"uuid": uuid}), "data")

    def signatures(self, limit: int = LISTING_LIMIT) -> list[dict[str, Any]]:
        """GET /api/signatures: the last `limit` (1..25) signature requests."""
        params = {"limit": _check_list_limit(limit)}
        return _objects(self._call("GET", "/api/signatures", params=params), "data")

    def signature(self, uuid: str) -> dict[str, Any]:
        """GET /api/signature: one signature request with its signers and documents."""
        return _object(self._call("GET", "/api/signature", params={"uuid": uuid}), "data")

    def download(self, url: str) -> bytes:
        """GET a certificate or acta PDF by its absolute URL; the token goes only to the API."""
        absolute = httpx.URL(self.base_url).join(url)
        response = self._request("GET", absolute, expect_json=False)
        return response.content

    # --- machinery ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
    ) -> _Body:
        """The JSON object the endpoint answers, with the endpoint for later shape checks."""
        url = httpx.URL(self.base_url + path, params=params)
        body = self._scrub_json(self._request(method, url, json=json, expect_json=True).json())
        endpoint = f"{method} {path}"
        if not isinstance(body, dict):
            _bad_body(endpoint, "the body is not a JSON object", send=method == "POST")
        return _Body(body, endpoint)

    def _request(
        self,
        method: str,
        url: httpx.URL,
        *,
        json: dict[str, Any] | None = None,
        expect_json: bool,
    ) -> httpx.Response:
        # Sends are not idempotent: only a request that surely did not arrive is retried.
        retryable = (NotProcessed,) if method == "POST" else (NotProcessed, MaybeProcessed)
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=_BackoffUnlessRateLimited(self._max_backoff),
            retry=retry_if_exception_type(retryable),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                return self._attempt(method, url, json, expect_json, number)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _attempt(
        self,
        method: str,
        url: httpx.URL,
        payload: dict[str, Any] | None,
        expect_json: bool,
        attempt: int,
    ) -> httpx.Response:
        endpoint = f"{method} {url.path}"
        headers = {}
        if _origin(str(url)) == self._origin:
            headers["Authorization"] = f"Bearer {self._token}"
        with self._limiter.slot():
            started = time.perf_counter()
            try:
                response = self._http.request(method, url, json=payload, headers=headers)
            except httpx.RequestError as err:
                self._emit(method, url, None, _error_kind(err), started, attempt)
                raise self._convert(err, endpoint) from err
            self._emit(method, url, response.status_code, None, started, attempt)
            if response.status_code == 429:
                self._limiter.penalize()
        self._raise_for_status(response, endpoint)
        if expect_json:
            try:
                response.json()
            except ValueError:
                ctype = response.headers.get("content-type", "no content type")
                what = f"the body is not JSON ({ctype}): {self._snippet(response.text)!r}"
                _bad_body(endpoint, what, send=method == "POST")
        return response

    def _emit(
        self,
        method: str,
        url: httpx.URL,
        status: int | None,
        error: str | None,
        started: float,
        attempt: int,
    ) -> None:
        if self._on_request is not None:
            elapsed = time.perf_counter() - started
            self._on_request(RequestEvent(method, url.path, status, error, elapsed, attempt))

    def _convert(self, err: httpx.RequestError, endpoint: str) -> ApiError:
        """A transport failure as an ApiError; str(err) never holds headers, we scrub anyway."""
        detail = self._scrub(str(err)) or type(err).__name__
        if isinstance(err, _UNREACHABLE):
            return Unreachable(
                f"{endpoint}: cannot reach the API ({type(err).__name__}: {detail})",
                endpoint=endpoint,
                hint="check the network and api.base_url, then run again",
            )
        if isinstance(err, _NOT_SENT_BAD_REQUEST):
            return PermanentApiError(
                f"{endpoint}: the request cannot be made ({type(err).__name__}: {detail})",
                endpoint=endpoint,
                hint="check api.base_url",
            )
        return MaybeProcessed(
            f"{endpoint}: no complete response ({type(err).__name__}: {detail})",
            endpoint=endpoint,
            hint=_in_doubt_hint(endpoint),
        )

    def _raise_for_status(self, response: httpx.Response, endpoint: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = f"{endpoint}: HTTP {status}: {self._api_message(response)}"
        if status == 429:
            raise RateLimited(
                message,
                status=status,
                endpoint=endpoint,
                hint="another client on this IP may be using the API; lower limits or wait",
            )
        if status == 401:
            raise AuthError(
                message,
                status=status,
                endpoint=endpoint,
                hint="check LEGALLYMAIL_TOKEN (or the job's api.token_env): it was refused",
            )
        if status == 403:
            raise CreditsExhausted(
                message,
                status=status,
                endpoint=endpoint,
                hint="no credits left (see `remaining_emails` in GET /api/info); "
                "add credits, then run again to resume",
            )
        if status >= 500:
            raise MaybeProcessed(
                message, status=status, endpoint=endpoint, hint=_in_doubt_hint(endpoint)
            )
        # Redirects are never followed (a send replayed elsewhere could be a second one), and
        # a send endpoint that does not exist is a setting, not a recipient's fault.
        if 300 <= status < 400 or (endpoint.startswith("POST") and status in (404, 405)):
            where = response.headers.get("location")
            raise ConfigurationError(
                message + (f" (redirect to {self._scrub(where)})" if where else ""),
                status=status,
                endpoint=endpoint,
                hint="check api.base_url (or LEGALLYMAIL_BASE_URL): it must be the API's own "
                "address, e.g. https://legallymail.com, with no path and no redirect; nothing "
                "was sent and the rows stay pending",
            )
        raise PermanentApiError(message, status=status, endpoint=endpoint)

    def _api_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "error"):
                if isinstance(body.get(key), str) and body[key]:
                    return self._scrub(body[key])
        return self._snippet(response.text) or response.reason_phrase or "no message"

    def _snippet(self, text: str) -> str:
        text = " ".join(text.split())
        return self._scrub(text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else ""))

    def _scrub(self, text: str) -> str:
        # A server or library echoing the token (in any spelling) must not leak it anywhere.
        return self._scrubber.scrub(text)

    def _scrub_json(self, value: Any) -> Any:
        """Every string of a decoded body (keys too) scrubbed: bodies reach the ledger."""
        if isinstance(value, str):
            return self._scrubber.scrub(value)
        if isinstance(value, dict):
            return {self._scrubber.scrub(k): self._scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_json(v) for v in value]
        return value


def _in_doubt_hint(endpoint: str) -> str:
    if endpoint.startswith("POST"):
        return "the request may have been processed; lmbatch checks before any retry"
    return "the API did not answer properly; try again later"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default)


def _check_list_limit(limit: int) -> int:
    if not 1 <= limit <= LISTING_LIMIT:
        raise ValueError(f"limit must be within 1..{LISTING_LIMIT}, got {limit}")
    return limit


def _bad_body(endpoint: str, what: str, *, send: bool) -> NoReturn:
    """A 200 without the documented body: a send may have happened, a read just failed."""
    message = f"{endpoint}: unexpected response: {what}"
    if send:
        raise MaybeProcessed(
            message,
            status=200,
            endpoint=endpoint,
            hint="the request may have been processed; lmbatch checks before any retry",
        )
    raise ApiError(message, status=200, endpoint=endpoint)


class _Body(dict[str, Any]):
    """A decoded JSON object that remembers which endpoint answered it."""

    def __init__(self, body: dict[str, Any], endpoint: str) -> None:
        super().__init__(body)
        self.endpoint = endpoint


def _object(body: _Body, name: str, *, send: bool = False) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict):
        _bad_body(body.endpoint, f"no object `{name}` in the body", send=send)
    return value


def _objects(body: _Body, name: str) -> list[dict[str, Any]]:
    value = body.get(name)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        _bad_body(body.endpoint, f"no list of objects `{name}` in the body", send=False)
    return value
