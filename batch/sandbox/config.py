"""The sandbox's settings, and parsers for the CLI's `--rate` and `--faults` strings."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FAULT_KINDS: tuple[str, ...] = ("error_500", "lost_response", "slow", "burst_429")
"""Fault kinds in the order the seeded draw checks them (the order keeps a seed repeatable)."""

SEND_ENDPOINTS: tuple[str, ...] = ("/api/send", "/api/sms/send", "/api/signature/send")
"""Paths faults apply to by default: the ones where a lost answer leaves the client in doubt."""


@dataclass
class SandboxConfig:
    """Everything a sandbox needs to start; every field has a usable default."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    rate_limit: int = 10
    rate_window: float = 60.0
    max_recipients: int = 10
    credits: int = 1_000_000
    faults: dict[str, float] = field(default_factory=dict)
    fault_seed: int = 0
    slow_seconds: float = 2.0
    burst_length: int = 3
    delivered_after: float = 2.0
    read_after: float = 5.0
    db: Path | None = None
    clock: Callable[[], float] = time.time
    # Paths (exact, e.g. "/api/send") that faults may hit; "*" means every /api path.
    fault_endpoints: tuple[str, ...] = SEND_ENDPOINTS
    max_signers: int = 5
    max_document_bytes: int = 10 * 1024 * 1024
    # Bodies above this are refused with 400 before parsing, so a huge upload cannot eat memory.
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.rate_limit < 1:
            raise ValueError(f"rate_limit must be at least 1, got {self.rate_limit}")
        if not (math.isfinite(self.rate_window) and self.rate_window > 0):
            raise ValueError(
                f"rate_window must be a positive number of seconds, got {self.rate_window}"
            )
        if self.max_recipients < 1:
            raise ValueError(f"max_recipients must be at least 1, got {self.max_recipients}")
        if self.credits < 0:
            raise ValueError(f"credits cannot be negative, got {self.credits}")
        if self.slow_seconds < 0 or self.burst_length < 0:
            raise ValueError("slow_seconds and burst_length cannot be negative")
        if not 0 <= self.delivered_after <= self.read_after:
            raise ValueError(
                f"need 0 <= delivered_after <= read_after, got {self.delivered_after} "
                f"and {self.read_after}"
            )
        if self.token is not None and not self.token.strip():
            raise ValueError("token cannot be blank")
        validate_faults(self.faults)


def validate_faults(faults: dict[str, float]) -> None:
    """Raise ValueError unless every kind is known, every rate in 0..1 and their sum at most 1."""
    for kind, rate in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known faults: {', '.join(FAULT_KINDS)}")
        if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
            raise ValueError(f"fault {kind} rate must be between 0 and 1, got {rate!r}")
    # One uniform draw picks at most one fault, so the rates share the unit interval.
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {sum(faults.values()):g}; they must be at most 1")


def parse_rate(text: str) -> tuple[int, float]:
    """Parse "N/SECONDS" (e.g. "10/60", "10/0.5") into (requests, window seconds)."""
    count_text, sep, window_text = text.strip().partition("/")
    if not sep:
        raise ValueError(f"rate {text!r} must look like REQUESTS/SECONDS, e.g. 10/60")
    try:
        count = int(count_text.strip())
        window = float(window_text.strip())
    except ValueError:
        raise ValueError(f"rate {text!r} must look like REQUESTS/SECONDS, e.g. 10/60") from None
    if count < 1:
        raise ValueError(f"rate {text!r}: at least 1 request per window")
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"rate {text!r}: the window must be a positive number of seconds")
    return count, window


def parse_faults(text: str) -> dict[str, float]:
    """Parse "lost_response=0.1,error_500=0.05" into {kind: rate}; "" gives no faults."""
    faults: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        kind, sep, rate_text = item.partition("=")
        kind = kind.strip()
        if not sep:
            raise ValueError(f"fault {item.strip()!r} must look like KIND=RATE, e.g. error_500=0.1")
        try:
            rate = float(rate_text.strip())
        except ValueError:
            raise ValueError(f"fault {kind}: rate {rate_text.strip()!r} is not a number") from None
        if kind in faults:
            raise ValueError(f"fault {kind} is given twice")
        faults[kind] = rate
    validate_faults(faults)
    return faults
