"""Addresses as the API wants them: e-mail (email-validator, no DNS), E.164 phones, signers."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT

MAX_SIGNERS = 5  # per signature request


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The normalized domain if email-validator accepts it (cached: rows share domains)."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def normalize_email(raw: str) -> str:
    """The normalized address, or ValueError with email-validator's reason."""
    text = raw.strip()
    local, at, domain = text.rpartition("@")
    # Fast path for plain ASCII addresses (the vast majority): the local part is a dot-atom
    # and the domain was already validated; it yields the same result as validate_email.
    if (
        at
        and len(text) <= 254
        and DOT_ATOM_TEXT.fullmatch(local)
        and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES
    ):
        normalized = _domain(domain)
        if normalized is not None:
            return f"{local}@{normalized}"
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as err:
        raise ValueError(f"invalid e-mail address {text!r}: {err}") from err


def normalize_phone(raw: str, region: str | None) -> str:
    """The E.164 form of a phone number, or ValueError saying why not."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as err:
        raise ValueError(f"invalid phone number {text!r}: {err}") from err
    if not phonenumbers.is_valid_number(number):
        hint = "" if region or text.startswith("+") else " (add +country code or default_region)"
        raise ValueError(f"invalid phone number {text!r}{hint}")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


_SIGNER_ENTRY = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<email>[^<>]*)>\s*(?P<phone>[^<>]*)")


def parse_signers(text: str) -> list[tuple[str, str, str]]:
    """The (name, e-mail, phone) of each signer a `signer_list` rendered to; ValueError if bad.

    Two forms: a JSON list of objects with `name`, `email` and an optional `phone` (what
    `|tojson` writes), or entries `Name <email> [phone]` separated by `;` or new lines.
    """
    text = text.strip()
    found: list[tuple[str, str, str]] = []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as err:
            raise ValueError(f"signer_list is not valid JSON: {err}") from err
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                raise ValueError(f"signer {i + 1}: needs an object with name, email (and phone)")
            name, phone = item.get("name"), item.get("phone")
            found.append(
                (
                    "" if name is None else str(name).strip(),
                    item["email"].strip(),
                    "" if phone is None else str(phone).strip(),
                )
            )
    else:
        for entry in (e.strip() for e in re.split(r"[;\n]", text)):
            match = _SIGNER_ENTRY.fullmatch(entry)
            if entry and match is None:
                raise ValueError(f"{entry!r} is not `Name <email> [phone]`")
            if match is not None:
                found.append((match["name"], match["email"].strip(), match["phone"].strip()))
    if not 1 <= len(found) <= MAX_SIGNERS:
        raise ValueError(f"{len(found)} signer(s); the API takes 1 to {MAX_SIGNERS}")
    return found
