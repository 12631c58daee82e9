"""Where the API token may go, and how to keep it out of everything lmbatch writes or prints.

The token spends money and produces legal evidence, so two rules hold wherever it is used:

* `check_base_url`: requests carrying it go to `https://legallymail.com` unless the base URL
  came from the environment (`LEGALLYMAIL_BASE_URL`, set by whoever holds the token, e.g. to
  rehearse against the sandbox). A job file can be written by anyone, so its `api.base_url`
  may only name LegallyMail itself. Plain `http://` is accepted only for loopback, from either
  source; user-info (`user:pass@`) is refused everywhere, since httpx would replace the token
  with Basic auth and the password would travel and be stored in file names.
* `Scrubber`: a server (or a library) may echo the token back in an error message, in any
  spelling; every form it might take is removed before text reaches the ledger, a log, the
  terminal or a report.

Both are pure: the caller reads the environment and says where the URL came from.
"""

from __future__ import annotations

import base64
import html
import ipaddress
import json
import re
from urllib.parse import quote, quote_plus, urlsplit

import httpx

OFFICIAL_BASE_URL = "https://legallymail.com"
# The documented host; its www alias is the same service and is rewritten to the documented one.
_OFFICIAL_HOSTS = frozenset({"legallymail.com", "www.legallymail.com"})
_SANDBOX_HINT = (
    "to rehearse against the sandbox, start `lmbatch sandbox` and run with "
    "LEGALLYMAIL_BASE_URL=http://127.0.0.1:8025 and LEGALLYMAIL_TOKEN=<the sandbox's token> "
    "in the environment, leaving api.base_url unset"
)
# Characters that no URL needs and that parsers disagree about (`\` is `/` to browsers).
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


def check_base_url(url: str, *, from_environment: bool) -> str:
    """The base URL, normalised (lower-case scheme and host, no trailing `/`), or ValueError.

    `from_environment` is True only for `LEGALLYMAIL_BASE_URL`; a job file's `api.base_url` must
    name LegallyMail itself.
    """
    source = "LEGALLYMAIL_BASE_URL" if from_environment else "api.base_url"
    text = url.strip()
    if not text:
        raise ValueError(f"{source} is empty")
    if _UNSAFE.search(text):
        raise ValueError(f"{source} {url!r} contains spaces, control characters or `\\`")
    try:
        parts = urlsplit(text)
        port = parts.port
        # httpx parses the URL the requests will use: both parsers must name the same host.
        parsed_host = httpx.URL(text).host
    except (ValueError, httpx.InvalidURL) as err:
        raise ValueError(f"{source} {url!r} is not a valid URL: {err}") from err
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{source} {url!r} must start with https:// (or http:// on loopback)")
    if not host:
        raise ValueError(f"{source} {url!r} has no host")
    if not host.isascii():
        raise ValueError(f"{source} {url!r}: write the host in ASCII (its xn-- form)")
    if "@" in parts.netloc:
        raise ValueError(
            f"{source} {url!r} carries a user name or password; the API token is the only "
            "credential (set it in LEGALLYMAIL_TOKEN), remove the `user:pass@` part"
        )
    if parsed_host.lower() != host:
        raise ValueError(f"{source} {url!r} is ambiguous (host {host!r} or {parsed_host!r}?)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"{source} {url!r} must not have a query or fragment")
    if port == 0:
        raise ValueError(f"{source} {url!r}: port 0 is not a port to connect to")
    loopback = _is_loopback(host)
    if scheme == "http" and not loopback:
        raise ValueError(
            f"{source} {url!r} would send the API token unencrypted; use https:// "
            "(http:// is accepted only for 127.0.0.1, ::1 or localhost)"
        )
    if not from_environment:
        if host not in _OFFICIAL_HOSTS or scheme != "https" or port not in (None, 443):
            raise ValueError(
                f"api.base_url {url!r}: a job file may only point the token at "
                f"{OFFICIAL_BASE_URL}; {_SANDBOX_HINT}"
            )
        return OFFICIAL_BASE_URL + parts.path.rstrip("/")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or `localhost`; never a name that merely resolves so."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


REPLACEMENT = "***"
_MIN_BASE64_CORE = 6  # shorter cores would blank out innocent text


class Scrubber:
    """Removes one token, in every spelling a server might echo, from text.

    Matched case-insensitively: as is, upper/lower-cased, URL-encoded (`%2D` or `%2d`, `+` for
    space), JSON- and HTML-escaped, and base64 (standard and URL-safe alphabets, padded or not)
    of any text that contains it: `Bearer <token>`, `:<token>` (Basic auth), a JSON body.
    Base64 of a text containing the token holds, whatever surrounds it, one of three fixed
    substrings (one per alignment of the token within 3-byte groups); those are what is removed.
    One compiled regex: a scrub is a single pass over the text.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        variants = self._variants(token) if token else set()
        pattern = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        self._pattern = re.compile(pattern, re.IGNORECASE) if pattern else None
        # Every variant contains one of these (case-insensitively): a cheap pre-check.
        self._needles = {v[:_MIN_BASE64_CORE].lower() for v in variants}

    @staticmethod
    def _variants(token: str) -> set[str]:
        raw = token.encode()
        forms = {
            token,
            quote(token, safe=""),
            quote_plus(token, safe=""),
            json.dumps(token)[1:-1],
            json.dumps(token, ensure_ascii=False)[1:-1],
            json.dumps(token)[1:-1].replace("/", "\\/"),
            html.escape(token),
        }
        for shift in range(3):
            core = _base64_core(raw, shift)
            if len(core) >= _MIN_BASE64_CORE:
                forms.add(core)
                forms.add(core.translate(_URLSAFE))
        return {f for f in forms if f}

    def scrub(self, text: str) -> str:
        """`text` with every form of the token replaced by `***`."""
        if self._pattern is None or not text:
            return text
        folded = text.lower()
        if not any(needle in folded for needle in self._needles):
            return text
        return self._pattern.sub(REPLACEMENT, text)

    def __repr__(self) -> str:
        return "Scrubber(<token>)"  # never the token itself


_URLSAFE = str.maketrans("+/", "-_")


def _base64_core(raw: bytes, shift: int) -> str:
    """The base64 characters that depend only on `raw` when it starts `shift` bytes into a group.

    Output character i covers bits [6i, 6i+6); `raw` covers bits [8*shift, 8*(shift+len)).
    """
    encoded = base64.b64encode(b"\0" * shift + raw + b"\0\0").decode()
    first = -(-8 * shift // 6)  # ceil
    last = 8 * (shift + len(raw)) // 6  # exclusive
    return encoded[first:last]
