"""The sandbox's Starlette app: the documented endpoints, certificate downloads, /_sandbox/*.

Order of checks for a request under /api (everything else skips the first four):
    1. a running 429 burst for this client      -> 429 (faults)
    2. the sliding-window rate limit            -> 429
    3. a fault drawn for an eligible path       -> 500 / 429 burst / slow / lost answer
    4. routing                                  -> 404 unknown path, 405 wrong method
    5. token                                    -> 401
    6. body and field checks                    -> 400
    7. credits                                  -> 403 (nothing of the request is sent)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batch.sandbox.config import SandboxConfig
from batch.sandbox.faults import LostResponse
from batch.sandbox.records import email_progress, signature_progress, sms_progress
from batch.sandbox.state import LOST, SandboxState
from batch.sandbox.validate import (
    ApiProblem,
    parse_email_request,
    parse_limit,
    parse_signature_request,
    parse_sms_request,
)
from batch.sandbox.views import (
    certificate_times,
    email_certificate,
    email_detail,
    email_summary,
    send_response,
    signature_acta,
    signature_detail,
    signature_summary,
    sms_certificate,
    sms_detail,
)

Body = dict[str, Any]
Handler = Callable[[Request, Body], Awaitable[Body]]
REASONS = {
    400: "Bad Request",
    401: "Invalid or missing token",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    429: "Too many requests: rate limit exceeded",
    500: "Internal server error",
}


def error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """The API's JSON error body: {"success": false, "message": ...}."""
    body = {"success": False, "message": message or REASONS.get(status, "Error")}
    return JSONResponse(body, status_code=status, headers=headers)


def is_api(path: str) -> bool:
    """Whether a path belongs to the rate-limited, authenticated API."""
    return path == "/api" or path.startswith("/api/")


class ApiGate:
    """ASGI middleware for /api: burst and rate limit, faults, and counting what clients got."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, refuse or sabotage one request, then count the status the client saw."""
        if scope["type"] != "http" or not is_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = self.state
        path, method = scope["path"], scope["method"]
        client = scope["client"][0] if scope.get("client") else "unknown"

        def count(status: int, fault: str | None = None) -> None:
            state.record_request(method, path, client, status, fault)

        # A refused request is never admitted to the window: a client that waits gets through.
        if state.faults.take_burst(client):
            count(429, "burst_429")
            await error(429)(scope, receive, send)
            return
        stamp = state.limiter.acquire(client)
        if stamp is None:
            count(429)
            await error(429)(scope, receive, send)
            return
        fault = state.faults.draw() if state.faults.applies_to(path) else None
        if fault == "burst_429":
            state.limiter.release(client, stamp)
            state.faults.start_burst(client)
            count(429, fault)
            await error(429)(scope, receive, send)
            return
        if fault == "error_500":
            count(500, fault)
            await error(500)(scope, receive, send)
            return
        lost = fault == "lost_response"
        delay = state.config.slow_seconds if fault == "slow" else 0.0

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The handler has finished (and recorded) by the time its answer starts.
                if delay:
                    await asyncio.sleep(delay)
                count(LOST if lost else message["status"], fault)
                await send(message)
            elif not lost:
                await send(message)

        await self.app(scope, receive, watch)
        if lost:
            raise LostResponse(f"sandbox fault lost_response: {method} {path} was processed")


async def read_json(request: Request, limit: int) -> tuple[Any, bool]:
    """Read the body up to `limit` bytes: (parsed JSON or None, whether it was too large)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None, True
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None, True
    if not chunks.strip():
        return {}, False
    try:
        return json.loads(chunks), False
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
        return None, False


def token_of(request: Request, body: Any) -> str | None:
    """The token from `Authorization: Bearer T`, a bare `Authorization: T`, or body `token`."""
    header = request.headers.get("authorization", "").strip()
    if header:
        scheme, _, rest = header.partition(" ")
        return rest.strip() if scheme.lower() == "bearer" else header
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        return str(body["token"])
    return None


class Api:
    """The documented endpoints, bound to one sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config = state.config

    def endpoint(
        self, handler: Handler, *, needs_body: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with body reading, authentication and ApiProblem -> JSON errors."""

        async def run(request: Request) -> Response:
            body, too_large = await read_json(request, self.config.max_body_bytes)
            if too_large:
                return error(
                    400, f"Request body too large (max {self.config.max_body_bytes} bytes)"
                )
            token = token_of(request, body)
            if token is None or not _same(token, self.state.token):
                return error(401)
            if needs_body and not isinstance(body, dict):
                return error(400, "Request body must be a JSON object")
            try:
                return JSONResponse(await handler(request, body if isinstance(body, dict) else {}))
            except ApiProblem as problem:
                return error(problem.status, problem.message)

        return run

    def now(self) -> float:
        """The sandbox clock's current time."""
        return self.state.clock()

    async def send(self, request: Request, body: Body) -> Body:
        """POST /api/send."""
        checked = parse_email_request(body, self.config.max_recipients)
        return send_response(self.state.send_email(checked))

    async def info(self, request: Request, body: Body) -> Body:
        """GET /api/info."""
        return {
            "success": True,
            "name": "LegallyMail API",
            "version": "1.0.0",
            "user": {
                "email": "sandbox@legallymail.test",
                "name": "Sandbox User",
                "plan": "sandbox",
                "plan_name": "Sandbox",
                "plan_limit": self.config.credits,
                "extra_emails": 0,
                "remaining_emails": self.state.credits,
            },
        }

    async def emails(self, request: Request, body: Body) -> Body:
        """GET /api/emails?limit=N."""
        limit = parse_limit(request.query_params.get("limit"))
        now, timing = self.now(), self.state.timing
        found = [email_summary(r, now, timing) for r in self.state.emails(limit)]
        return {
            "success": True,
            "count": len(found),
            "limit": limit,
            "max_limit": 25,
            "emails": found,
        }

    async def email(self, request: Request, body: Body) -> Body:
        """GET /api/email?tracking_id=T (a parent or a recipient tracking_id)."""
        tracking_id = _query(request, "tracking_id")
        record = self.state.email(tracking_id)
        if record is None:
            raise ApiProblem(404, f"Email not found: {tracking_id[:80]}")
        base = str(request.base_url)
        return {"success": True, "email": email_detail(record, self.now(), self.state.timing, base)}

    async def sms_send(self, request: Request, body: Body) -> Body:
        """POST /api/sms/send."""
        record = self.state.send_sms(parse_sms_request(body))
        return {
            "success": True,
            "uuid": record.uuid,
            "status": "sent",
            "credits_deducted": record.credits,
            "message": "Certified SMS sent successfully",
        }

    async def sms(self, request: Request, body: Body) -> Body:
        """GET /api/sms?uuid=U (alias id)."""
        sms_uuid = _query(request, "uuid", "id")
        record = self.state.sms(sms_uuid)
        if record is None:
            raise ApiProblem(404, f"SMS not found: {sms_uuid[:80]}")
        base = str(request.base_url)
        return {"success": True, "data": sms_detail(record, self.now(), self.state.timing, base)}

    async def signature_send(self, request: Request, body: Body) -> Body:
        """POST /api/signature/send."""
        checked = parse_signature_request(
            body, self.config.max_signers, self.config.max_document_bytes
        )
        record = self.state.send_signature(checked)
        data = signature_summary(record, self.now(), self.state.timing)
        del data["signed_at"]
        data["status"] = "pending"
        return {"success": True, "message": "Signature request sent successfully", "data": data}

    async def signatures(self, request: Request, body: Body) -> Body:
        """GET /api/signatures?limit=N."""
        limit = parse_limit(request.query_params.get("limit"))
        now, timing = self.now(), self.state.timing
        return {
            "success": True,
            "data": [signature_summary(r, now, timing) for r in self.state.signatures(limit)],
        }

    async def signature(self, request: Request, body: Body) -> Body:
        """GET /api/signature?uuid=U."""
        sig_uuid = _query(request, "uuid")
        record = self.state.signature(sig_uuid)
        if record is None:
            raise ApiProblem(404, f"Signature request not found: {sig_uuid[:80]}")
        base = str(request.base_url)
        return {
            "success": True,
            "data": signature_detail(record, self.now(), self.state.timing, base),
        }


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def _query(request: Request, *names: str) -> str:
    for name in names:
        value = request.query_params.get(name, "").strip()
        if value:
            return value
    raise ApiProblem(400, f"Missing required parameter: {' / '.join(names)}")


def pdf(content: bytes, filename: str) -> Response:
    """A PDF download answer."""
    disposition = f'attachment; filename="{filename}"'
    return Response(
        content, media_type="application/pdf", headers={"Content-Disposition": disposition}
    )


class Downloads:
    """The certificate and document links the API hands out (no token, no rate limit)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def email_certificate(self, request: Request) -> Response:
        """GET /emails/download-certificate?id=T&status=delivered|read."""
        tracking_id = request.query_params.get("id", "")
        kind = request.query_params.get("status", "")
        record = self.state.email(tracking_id)
        found = [r for r in record.recipients if r.tracking_id == tracking_id] if record else []
        if record is not None and found:
            now, timing = self.state.clock(), self.state.timing
            progress = email_progress(found[0], record.sent_at, now, timing)
            confirmed = certificate_times(progress).get(kind)
            if confirmed is not None:
                content = email_certificate(record, found[0], kind, confirmed)
                return pdf(content, f"certificate-{tracking_id}-{kind}.pdf")
        return error(404, "Certificate not found")

    async def sms_certificate(self, request: Request) -> Response:
        """GET /dashboard/certified-sms/download-certificate/{uuid}."""
        record = self.state.sms(request.path_params["uuid"])
        if record is not None:
            progress = sms_progress(record, self.state.clock(), self.state.timing)
            if progress.delivered_at is not None:
                return pdf(sms_certificate(record, progress.delivered_at), f"sms-{record.uuid}.pdf")
        return error(404, "Certificate not found")

    async def original(self, request: Request) -> Response:
        """GET /dashboard/electronic-signature/download-original/{uuid}."""
        record = self.state.signature(request.path_params["uuid"])
        document = self.state.document(request.path_params["uuid"])
        if record is None or document is None:
            return error(404, "Document not found")
        return pdf(document, record.document_name)

    async def acta(self, request: Request) -> Response:
        """GET /dashboard/electronic-signature/download-acta/{uuid} (once signed)."""
        record = self.state.signature(request.path_params["uuid"])
        now, timing = self.state.clock(), self.state.timing
        if record is None or signature_progress(record, now, timing).status != "signed":
            return error(404, "Signature record not available")
        return pdf(signature_acta(record, now, timing), f"acta-{record.uuid}.pdf")


class Inspect:
    """/_sandbox/*: what tests and curious users look at; outside the API's limits and faults.

    Every endpoint here needs the sandbox's token as `Authorization: Bearer <token>` (header
    only, never a query or body field): the log holds every body and recipient, and the fault
    control can make a rehearsal lie, so nothing else on the machine may read or steer them.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _refused(self, request: Request) -> Response | None:
        """401 unless the request carries `Authorization: Bearer <the sandbox's token>`."""
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.state.token):
            return None
        return error(401, "Invalid or missing token (send Authorization: Bearer <token>)")

    async def log(self, request: Request) -> Response:
        """GET /_sandbox/log: every accepted recipient, SMS and signer."""
        return self._refused(request) or JSONResponse(self.state.log())

    async def stats(self, request: Request) -> Response:
        """GET /_sandbox/stats: requests by status, faults fired, credits."""
        return self._refused(request) or JSONResponse(self.state.stats())

    async def requests(self, request: Request) -> Response:
        """GET /_sandbox/requests: the recent /api requests with time, status and fault."""
        return self._refused(request) or JSONResponse(self.state.requests())

    async def faults(self, request: Request) -> Response:
        """GET shows the fault rates; POST {"kind": rate, ...} replaces them."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        if request.method == "POST":
            body, _ = await read_json(request, 64 * 1024)
            if not isinstance(body, dict):
                return error(400, "Body must be a JSON object of fault rates")
            try:
                self.state.faults.set(body)
            except (TypeError, ValueError) as err:
                return error(400, str(err))
        return JSONResponse({"success": True, "faults": self.state.faults.rates})


async def http_error(request: Request, exc: Exception) -> Response:
    """404 / 405 from routing, in the API's JSON error shape."""
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, None, dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    """An unexpected exception still answers in the API's JSON shape."""
    return error(500)


def create_app(config: SandboxConfig, state: SandboxState | None = None) -> Starlette:
    """Build the sandbox ASGI app; pass `state` to share it with the caller."""
    state = state if state is not None else SandboxState(config)
    api, downloads, inspect = Api(state), Downloads(state), Inspect(state)
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/api/send", api.endpoint(api.send, needs_body=True), methods=post),
        Route("/api/info", api.endpoint(api.info, needs_body=False), methods=get),
        Route("/api/emails", api.endpoint(api.emails, needs_body=False), methods=get),
        Route("/api/email", api.endpoint(api.email, needs_body=False), methods=get),
        Route("/api/sms/send", api.endpoint(api.sms_send, needs_body=True), methods=post),
        Route("/api/sms", api.endpoint(api.sms, needs_body=False), methods=get),
        Route(
            "/api/signature/send",
            api.endpoint(api.signature_send, needs_body=True),
            methods=post,
        ),
        Route("/api/signatures", api.endpoint(api.signatures, needs_body=False), methods=get),
        Route("/api/signature", api.endpoint(api.signature, needs_body=False), methods=get),
        Route("/emails/download-certificate", downloads.email_certificate, methods=get),
        Route(
            "/dashboard/certified-sms/download-certificate/{uuid}",
            downloads.sms_certificate,
            methods=get,
        ),
        Route(
            "/dashboard/electronic-signature/download-original/{uuid}",
            downloads.original,
            methods=get,
        ),
        Route("/dashboard/electronic-signature/download-acta/{uuid}", downloads.acta, methods=get),
        Route("/_sandbox/log", inspect.log, methods=get),
        Route("/_sandbox/stats", inspect.stats, methods=get),
        Route("/_sandbox/requests", inspect.requests, methods=get),
        Route("/_sandbox/faults", inspect.faults, methods=["GET", "POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ApiGate, state=state)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.sandbox = state
    return app
