"""Run the sandbox on a real socket: in a background thread (tests, demo) or in the foreground.

Both bind the socket themselves before uvicorn starts, so port 0 yields a known free port and
the base URL is final before the first request.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import httpx
import uvicorn
from starlette.applications import Starlette

from batch.sandbox.app import create_app
from batch.sandbox.config import SandboxConfig
from batch.sandbox.faults import LostResponse
from batch.sandbox.state import SandboxState

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclass
class RunningSandbox:
    """A started sandbox: where it listens, its token, and its state for inspection."""

    base_url: str
    token: str
    state: SandboxState
    config: SandboxConfig
    app: Starlette
    # Set for an in-process sandbox: hand it to httpx.Client(transport=...); None on a socket.
    transport: httpx.BaseTransport | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header a client needs."""
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **options: Any) -> httpx.Client:
        """An httpx client pointed at this sandbox with the token set; the caller closes it."""
        options.setdefault("transport", self.transport)
        return httpx.Client(base_url=self.base_url, headers=self.headers, **options)


class InProcessTransport(httpx.BaseTransport):
    """A synchronous httpx transport that calls an ASGI app directly, without a socket.

    httpx.ASGITransport is async-only; this runs it in an anyio portal so a plain
    httpx.Client works. App exceptions reach the caller (LostResponse included).
    """

    def __init__(self, app: Starlette, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self._inner = httpx.ASGITransport(app=app, client=client)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Run one request through the app and return the fully read response."""

        async def call() -> httpx.Response:
            response = await self._inner.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                content=content,
                extensions=response.extensions,
            )

        with anyio.from_thread.start_blocking_portal() as portal:
            return portal.call(call)


class _HideLostResponses(logging.Filter):
    # A lost response is a fault we inject on purpose, not an application error worth a trace.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], LostResponse))


_HIDE_LOST = _HideLostResponses()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections; without it
    # uvicorn's separate header and body writes meet delayed ACKs: 40 ms per keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now lets early connections wait in the backlog instead of being refused.
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Starlette, *, quiet: bool) -> uvicorn.Server:
    settings = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="off",
        # In tests, leave the process's logging alone and keep uvicorn's chatter out of output.
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_HIDE_LOST)
    return uvicorn.Server(settings)


@contextmanager
def running_sandbox(config: SandboxConfig | None = None) -> Iterator[RunningSandbox]:
    """Start a real uvicorn sandbox in a thread, yield it once it accepts requests, then stop it."""
    config = config if config is not None else SandboxConfig()
    state = SandboxState(config)
    try:
        app = create_app(config, state)
        sock = _bind(config.host, config.port)
        server = _server(app, quiet=True)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="lmbatch-sandbox", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("the sandbox server stopped while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the sandbox did not start within {START_TIMEOUT:g} s")
                time.sleep(0.002)
            yield RunningSandbox(_base_url(config.host, sock), state.token, state, config, app)
        finally:
            server.should_exit = True
            thread.join(STOP_TIMEOUT)
            sock.close()
    finally:
        state.close()


@contextmanager
def in_process_sandbox(config: SandboxConfig | None = None) -> Iterator[RunningSandbox]:
    """A sandbox without a socket: `client()` and `transport` call the app directly."""
    config = config if config is not None else SandboxConfig()
    state = SandboxState(config)
    try:
        app = create_app(config, state)
        transport = InProcessTransport(app)
        yield RunningSandbox("http://sandbox.test", state.token, state, config, app, transport)
    finally:
        state.close()


def serve(config: SandboxConfig, *, ready: Callable[[RunningSandbox], None] | None = None) -> None:
    """Run the sandbox in the foreground; return on Ctrl-C. `ready` gets its URL and token."""
    state = SandboxState(config)
    try:
        app = create_app(config, state)
        with _bind(config.host, config.port) as sock:
            running = RunningSandbox(_base_url(config.host, sock), state.token, state, config, app)
            if ready is not None:
                ready(running)
            else:
                print(
                    f"LegallyMail sandbox on {running.base_url}  token: {running.token}", flush=True
                )
            # uvicorn re-raises the Ctrl-C it already handled; stopping is the normal end.
            with contextlib.suppress(KeyboardInterrupt):
                _server(app, quiet=False).run(sockets=[sock])
    finally:
        state.close()
