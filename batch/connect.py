"""Connecting a job to the API: where the token may go, and the paced client built from the
settings the CLI read once (batch.settings). The HTTP client itself is batch.client."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from batch.client import CONNECT_TIMEOUT, LegallyMailClient, RequestEvent
from batch.errors import InputError
from batch.guard import check_base_url
from batch.jobmodel import Job
from batch.pacing import HostLimiter, RateLimiter, StopClock
from batch.settings import Settings


def base_url(settings: Settings, job: Job) -> str:
    """The API's base URL: the settings' override (LEGALLYMAIL_BASE_URL) beats the job file.

    Both are checked by batch.guard (the job file's at load time, again here): an override that
    is not https (or http on loopback) is an InputError, exit 2, before any request.
    """
    if settings.base_url:
        try:
            return check_base_url(settings.base_url, from_environment=True)
        except ValueError as err:
            raise InputError(
                str(err), hint="fix or unset LEGALLYMAIL_BASE_URL in the environment"
            ) from None
    try:
        return check_base_url(job.spec.api.base_url, from_environment=False)
    except ValueError as err:  # a Job built without load_job (library callers)
        raise InputError(str(err), hint="fix api.base_url in the job file") from None


def build_client(
    settings: Settings,
    job: Job,
    *,
    stop: threading.Event,
    window_seconds: float | None = None,
    on_request: Callable[[RequestEvent], None] | None = None,
) -> LegallyMailClient:
    """A client for the job's API, paced by the host-wide limiter; its waits end on `stop`.

    `window_seconds` overrides the job's rate window (the demo scales it down).
    """
    token = settings.require_token()
    url = base_url(settings, job)
    limits = job.spec.limits
    clock = StopClock(stop)
    limiter: RateLimiter = HostLimiter(
        limits.requests_per_window,
        window_seconds or limits.window_seconds,
        key=_limiter_key(url),
        state_dir=settings.state_dir,
        clock=clock,
        # A request's worst case (connect, write, read) before a hung process stops counting.
        request_timeout=CONNECT_TIMEOUT + 2 * job.spec.api.timeout_seconds,
    )
    return LegallyMailClient(
        url,
        token,
        limiter=limiter,
        timeout=job.spec.api.timeout_seconds,
        connect_timeout=CONNECT_TIMEOUT,
        attempts=job.spec.retry.attempts,
        max_backoff=job.spec.retry.max_backoff_seconds,
        sleep=clock.sleep,
        on_request=on_request,
    )


def build_client_from_env(job: Job, *, stop: threading.Event, **options: Any) -> LegallyMailClient:
    """`build_client` with settings read from the process's environment now.

    For library callers handed neither a client nor settings (and the tests that point lmbatch
    at a sandbox through the environment); the CLI reads the environment once and passes both.
    """
    return build_client(Settings.from_env(job.spec.api.token_env), job, stop=stop, **options)


def _limiter_key(url: str) -> str:
    """The limiter's state-file name: host and port only (the guard refused user-info, and
    this never takes more than the host and port, so no credential can reach a file name)."""
    parts = urlsplit(url)
    host = (parts.hostname or "api").lower().replace(":", "_")
    return f"{host}_{parts.port}" if parts.port else host
