"""guard: where the token may go (check_base_url) and its removal from echoed text (Scrubber)."""

from __future__ import annotations

import base64
import html
import json
import time
from urllib.parse import quote

import pytest

from batch.guard import OFFICIAL_BASE_URL, Scrubber, check_base_url

# --- check_base_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://legallymail.com", OFFICIAL_BASE_URL),
        ("https://legallymail.com/", OFFICIAL_BASE_URL),
        ("  HTTPS://LegallyMail.com  ", OFFICIAL_BASE_URL),
        ("https://legallymail.com:443", OFFICIAL_BASE_URL),
        ("https://www.legallymail.com", OFFICIAL_BASE_URL),  # the same service, documented name
    ],
)
def test_a_job_file_may_name_legallymail(url: str, expected: str) -> None:
    assert check_base_url(url, from_environment=False) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example",
        "https://legallymail.com.evil.example",
        "https://evil-legallymail.com",
        "https://legallymail.com:8443",
        "http://legallymail.com",  # clear text, even to the right host
        "http://127.0.0.1:8025",  # the sandbox is for the environment to choose
        "http://localhost:8025",
    ],
)
def test_a_job_file_cannot_point_the_token_elsewhere(url: str) -> None:
    with pytest.raises(ValueError) as err:
        check_base_url(url, from_environment=False)
    message = str(err.value)
    assert "api.base_url" in message
    if url.startswith("https://"):
        assert "LEGALLYMAIL_BASE_URL=http://127.0.0.1:8025" in message
        assert "https://legallymail.com" in message


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:8025", "http://127.0.0.1:8025"),
        ("http://127.0.0.1:8025/", "http://127.0.0.1:8025"),
        ("http://127.8.9.10:1", "http://127.8.9.10:1"),
        ("http://[::1]:8025", "http://[::1]:8025"),
        ("http://[::ffff:127.0.0.1]:8025", "http://[::ffff:127.0.0.1]:8025"),
        ("http://LOCALHOST:8025/", "http://localhost:8025"),
        ("https://staging.legallymail.com/", "https://staging.legallymail.com"),
        ("https://proxy.internal:8443/lm", "https://proxy.internal:8443/lm"),
    ],
)
def test_the_environment_may_choose_any_https_host_or_loopback(url: str, expected: str) -> None:
    assert check_base_url(url, from_environment=True) == expected


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://legallymail.com", "unencrypted"),
        ("http://10.0.0.5:8025", "unencrypted"),
        ("http://192.168.1.2", "unencrypted"),
        ("http://localhost.evil.example", "unencrypted"),
        ("http://127.0.0.1.nip.io", "unencrypted"),
        ("http://[::ffff:10.0.0.1]", "unencrypted"),
        ("http://0.0.0.0:8025", "unencrypted"),
        ("https://user:pass@legallymail.com", "user name or password"),
        ("https://token@legallymail.com", "user name or password"),
        ("http://user:pass@127.0.0.1:8025", "user name or password"),
        ("https://legallymail.com:99999", "not a valid URL"),
        ("https://legallymail.com:http", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("http://127.0.0.1:0", "port 0"),
        ("ftp://legallymail.com", "must start with https://"),
        ("legallymail.com", "must start with https://"),
        ("https://", "no host"),
        ("", "empty"),
        ("https://legallymail.com\\@evil.example", "`\\`"),
        ("https://legallymail.com /x", "spaces"),
        ("https://legallymail.com\n", None),  # stripped: fine
        ("https://legallymail.com?x=1", "query"),
        ("https://münchen.example", "xn--"),
        ("https://legallymail.com#frag", "query or fragment"),
    ],
)
def test_bad_base_urls_are_refused_with_a_reason(url: str, words: str | None) -> None:
    for from_environment in (True, False):
        if words is None:
            check_base_url(url, from_environment=from_environment)
            continue
        with pytest.raises(ValueError, match=r"base_url|BASE_URL") as err:
            check_base_url(url, from_environment=from_environment)
        if from_environment:  # the job-file check may name its own rule first
            assert words in str(err.value)


def test_the_message_names_where_the_url_came_from() -> None:
    with pytest.raises(ValueError, match=r"^LEGALLYMAIL_BASE_URL 'http://10\.0\.0\.1'"):
        check_base_url("http://10.0.0.1", from_environment=True)
    with pytest.raises(ValueError, match=r"^api\.base_url 'http://10\.0\.0\.1'"):
        check_base_url("http://10.0.0.1", from_environment=False)


# --- Scrubber ------------------------------------------------------------------------------------

TOKEN = "lm_Tok3n-with.odd/chars+42~xyz"


def b64(text: str, *, urlsafe: bool = False, pad: bool = True) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    out = encode(text.encode()).decode()
    return out if pad else out.rstrip("=")


ECHOES = {
    "as is": TOKEN,
    "upper": TOKEN.upper(),
    "lower": TOKEN.lower(),
    "url-encoded": quote(TOKEN, safe=""),
    "url-encoded lower hex": quote(TOKEN, safe="").lower(),
    "json-escaped": json.dumps(TOKEN)[1:-1].replace("/", "\\/"),
    "html-escaped": html.escape(TOKEN),
    **{
        f"base64 {label} {'urlsafe' if urlsafe else 'std'} {'pad' if pad else 'nopad'}": b64(
            text, urlsafe=urlsafe, pad=pad
        )
        for label, text in [
            ("token", TOKEN),
            ("bearer", f"Bearer {TOKEN}"),
            ("basic", f":{TOKEN}"),
            ("basic user", f"{TOKEN}:"),
            ("json", json.dumps({"token": TOKEN})),
        ]
        for urlsafe in (False, True)
        for pad in (False, True)
    },
}


@pytest.mark.parametrize("form", list(ECHOES.values()), ids=list(ECHOES))
def test_every_echoed_form_of_the_token_is_removed(form: str) -> None:
    text = f"401: invalid credentials <{form}> (request id 7)"
    scrubbed = Scrubber(TOKEN).scrub(text)
    assert scrubbed.startswith("401: invalid credentials <")
    assert scrubbed.endswith("> (request id 7)")
    # Nothing of the token's spelling, nor of its base64 core, is left.
    for leak in ECHOES.values():
        core = leak[2:-3]
        assert core.lower() not in scrubbed.lower(), (form, leak)


def test_text_without_the_token_is_unchanged() -> None:
    text = "Bearer abc; " + b64("Bearer another-token-entirely") + " ñ € \u2028 " * 3
    assert Scrubber(TOKEN).scrub(text) == text


def test_an_empty_token_scrubs_nothing() -> None:
    assert Scrubber("").scrub("anything") == "anything"


def test_the_scrubber_does_not_show_its_token() -> None:
    assert TOKEN not in repr(Scrubber(TOKEN))


def test_scrubbing_a_long_text_is_cheap() -> None:
    scrubber = Scrubber(TOKEN)
    clean = "x" * 5_000_000
    dirty = clean + b64(f"Bearer {TOKEN}")
    started = time.perf_counter()
    assert scrubber.scrub(clean) == clean
    assert TOKEN not in scrubber.scrub(dirty)
    assert time.perf_counter() - started < 1.0
