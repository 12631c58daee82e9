"""A LegallyMail-compatible API server on loopback, for tests, the demo and trying a job.

Start it with `running_sandbox(config)` (a real uvicorn server in a thread), `serve(config)`
(foreground, `lmbatch sandbox`), or `in_process_sandbox(config)` (no socket: its
`transport` is an `InProcessTransport` for a plain httpx.Client; `create_app` also mounts in
httpx.ASGITransport or Starlette's TestClient). It serves every documented endpoint with the
documented aliases, shapes and error codes; `GET /_sandbox/log`, `/_sandbox/stats`,
`/_sandbox/requests` and `GET|POST /_sandbox/faults` sit outside the API (no limit, no faults)
but need the sandbox's token as `Authorization: Bearer <token>` (`RunningSandbox.client()` and
`.headers` carry it).
Certificate links (/emails/download-certificate, /dashboard/...) need no token either.

Rate limit: `rate_limit` requests per `rate_window` seconds per client IP, over every /api path,
in a SLIDING window read from `config.clock`. Requests answered 429 do not count (neither limit
nor burst refusals), so a client that waits for the window always gets through. Everything
else under /api counts: 401, 404, 500s, lost and slow answers included.

Faults hit the paths in `config.fault_endpoints` (default: the three POST send paths; "*" for
every /api path), drawn from a RNG seeded with `fault_seed`, after the rate limit admitted the
request and before routing and authentication. `state.faults.set(kind=rate)` replaces the
rates at run time; `state.faults.force(kind, times)` makes the next eligible requests fail.
    error_500      500 JSON error; nothing recorded. httpx: a Response with status 500.
    lost_response  the handler runs (the send IS recorded, credits charged), then the headers
                   go out and the connection closes before the body. Real socket: httpx raises
                   RemoteProtocolError. In-process: the app raises LostResponse, a subclass of
                   httpx.RemoteProtocolError, which ASGITransport and TestClient pass to the
                   caller (keep their default raise_app_exceptions=True).
    slow           the handler runs and records first, then the answer waits `slow_seconds`.
                   A client whose read timeout is shorter gets httpx.ReadTimeout (real socket
                   only: in-process transports have no timeouts, the call just takes longer).
    burst_429      429 for this request and the client's next `burst_length` /api requests,
                   whatever the limit says; none of them count toward the window.

Credits: one per accepted e-mail recipient, SMS or signature request. A request needing more
credits than remain gets 403 and nothing is sent. E-mail recipients rejected at send time are
not charged (the check still counts them: the client cannot know in advance). See `records`
for how each item's status moves (fail*, bounce*, SMS numbers ending 0000, decline*).

Tracking ids: every e-mail recipient gets its own tracking_id, distinct from the parent's even
in a single-recipient send (the docs leave this open; the stricter case keeps clients honest).
GET /api/emails lists parents; GET /api/email accepts a parent or a recipient tracking_id.
With `db`, sends, credits and a generated token survive a restart (the file outranks config).
"""

from batch.sandbox.app import create_app
from batch.sandbox.clock import FakeClock, ShiftedClock
from batch.sandbox.config import FAULT_KINDS, SandboxConfig, parse_faults, parse_rate
from batch.sandbox.faults import Faults, LostResponse
from batch.sandbox.server import (
    InProcessTransport,
    RunningSandbox,
    in_process_sandbox,
    running_sandbox,
    serve,
)
from batch.sandbox.state import SandboxState

__all__ = [
    "FAULT_KINDS",
    "FakeClock",
    "Faults",
    "InProcessTransport",
    "LostResponse",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxState",
    "ShiftedClock",
    "create_app",
    "in_process_sandbox",
    "parse_faults",
    "parse_rate",
    "running_sandbox",
    "serve",
]
