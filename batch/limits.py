"""The LegallyMail API's limits, named once (see /work/shared/legallymail-api.md).

The job file may ask for less (e.g. fewer recipients per request); never for more. The sandbox
enforces the same figures by default, so a campaign rehearsed there fails the way the API would.
"""

from __future__ import annotations

__all__ = [
    "DOCUMENT_MAX_BYTES",
    "LISTING_LIMIT",
    "MAX_RECIPIENTS_PER_REQUEST",
    "MAX_SIGNERS",
    "REQUESTS_PER_WINDOW",
    "SMS_MAX_CHARS",
    "WINDOW_SECONDS",
]

LISTING_LIMIT = 25  # the most items /api/emails and /api/signatures return (their max_limit)
MAX_SIGNERS = 5  # signers per signature request
MAX_RECIPIENTS_PER_REQUEST = 10  # recipients per /api/send
DOCUMENT_MAX_BYTES = 10 * 1024 * 1024  # a signature request's document
SMS_MAX_CHARS = 300  # one certified SMS (one credit)
REQUESTS_PER_WINDOW = 10  # the documented rate limit: 10 requests …
WINDOW_SECONDS = 60.0  # … per 60 seconds, per client IP
