"""Addresses as the API wants them, and the one identity a recipient has for duplicates.

E-mail (`normalize_email`): email-validator's rules, no DNS. The address sent to the API keeps
the local part as written and puts the domain in lower-case ASCII (IDNA A-labels), so
`user@münchen.de`, `user@MÜNCHEN.de` and `user@xn--mnchen-3ya.de` are all sent as
`user@xn--mnchen-3ya.de`: that is what every mail server and the API's validator accept
(the sandbox, like the API, refuses a non-ASCII domain). Mistakes that validation would let
through or explain badly are refused with the likely intended address: typographic
apostrophes, dashes and quotes from Word or Excel autocorrect (`o’neill@`), a display name
(`Ana López <ana@x.es>`), a `mailto:` link, several addresses in one cell.

Phone (`normalize_phone`): E.164. For SMS, and for signers (their signing code comes by SMS),
the number must be able to receive one: libphonenumber's MOBILE or FIXED_LINE_OR_MOBILE.
A national number that is a landline of the default region is told it may be a foreign mobile
written without its +country code. `612 345 678`, `+34 612 345 678` and `0034612345678`
(00 is Spain's international prefix) are one number: `+34612345678`.

Identity (each channel's `key_of`, batch.channels): what two rows must share to be the same
recipient. For e-mail, the
normalised address lower-cased (local parts are case-sensitive in theory, never in practice:
`Ana@x.es` and `ana@x.es` are one person, and two certified notices to one person are the
costly mistake); for SMS, the E.164 number.

The common case stays cheap, as cheap as before these checks: a plain ASCII e-mail costs a
regex match and a cached domain lookup; a phone, one parse and one type lookup (which also
answers whether it is valid). The explanations are computed only for refused addresses.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT
from phonenumbers import PhoneNumberType

MAX_SIGNERS = 5  # per signature request

# -- e-mail ---------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The domain in lower-case ASCII (IDNA) if email-validator accepts it (cached: rows share
    domains)."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return None


def normalize_email(raw: str) -> str:
    """The address to send: local part as written, domain lower-case ASCII; or ValueError."""
    text = raw.strip()
    local, at, domain = text.rpartition("@")
    # Fast path for plain ASCII local parts (the vast majority): a dot-atom cannot hold any of
    # the mistakes below, and the domain was already validated; same result as validate_email.
    if (
        at
        and DOT_ATOM_TEXT.fullmatch(local)
        and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES
    ):
        ascii_domain = _domain(domain)
        if ascii_domain is not None and len(local) + len(ascii_domain) < 254:
            return f"{local}@{ascii_domain}"
    _refuse_likely_mistakes(text)
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as err:
        raise ValueError(f"invalid e-mail address {text!r}: {err}") from err
    return f"{valid.local_part}@{valid.ascii_domain}"


# Word/Excel autocorrect and input methods turn ' - " @ . into these; quotes around a part are
# dropped (a quoted local part is not accepted anyway).
_TYPOGRAPHIC = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u02bc\u2032\u00b4", "'"),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d", "-"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033", ""),
    "\uff20": "@",
    "\uff0e": ".",
}
_TYPOGRAPHIC_TABLE = str.maketrans(_TYPOGRAPHIC)
_TYPOGRAPHIC_CHARS = re.compile("[" + "".join(_TYPOGRAPHIC) + "]")
_DISPLAY_NAME = re.compile(r"(?P<name>[^<>]*?)\s*<\s*(?P<address>[^<>\s]+@[^<>\s]+)\s*>")


def _refuse_likely_mistakes(text: str) -> None:
    """ValueError naming the mistake and the likely intended address, for what autocorrect,
    mail clients and copy-paste leave in a cell."""
    if not text:
        raise ValueError("the e-mail address is empty")
    shown = _DISPLAY_NAME.fullmatch(text)
    if shown is not None:
        name = shown["name"].strip().strip('"').strip()
        if not name:
            raise ValueError(f"e-mail address {text!r}: remove the <> ({shown['address']})")
        raise ValueError(
            f"e-mail address {text!r} holds a display name; write only the address "
            f"({shown['address']}) in this column and the name ({name}) in recipient.name"
        )
    if text[:7].lower() == "mailto:":
        raise ValueError(f"e-mail address {text!r}: remove `mailto:` ({text[7:]})")
    if text.count("@") > 1 and re.search(r"[,;\s]", text):
        raise ValueError(f"e-mail address {text!r} holds more than one address; one per row")
    found = _TYPOGRAPHIC_CHARS.findall(text)
    if found:
        names = ", ".join(f"{c} ({unicodedata.name(c, '?').lower()})" for c in dict.fromkeys(found))
        message = f"e-mail address {text!r} has typographic {names} in it (autocorrect?)"
        intended = text.translate(_TYPOGRAPHIC_TABLE)
        try:
            raise ValueError(f"{message}; did you mean {normalize_email(intended)}?")
        except ValueError as err:
            if "did you mean" in str(err):
                raise
            raise ValueError(f"{message}; retype it with plain ' - and no quotes") from None


# -- phone ----------------------------------------------------------------------------------------

_CAN_TEXT = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
_KIND = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.VOIP: "a VoIP number",
    PhoneNumberType.PERSONAL_NUMBER: "a personal (forwarding) number",
    PhoneNumberType.PAGER: "a pager",
    PhoneNumberType.UAN: "a company (UAN) number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
}


def normalize_phone(raw: str, region: str | None, *, mobile_only: bool = True) -> str:
    """The E.164 form of a phone number, or ValueError saying why not.

    `region` (ISO 3166, e.g. "ES") reads numbers written without +country code, including its
    international prefix (0034...). With `mobile_only` (the default: SMS recipients and signers)
    the number must be able to receive an SMS.
    """
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as err:
        hint = "" if region or text.startswith("+") else " (add +country code or default_region)"
        raise ValueError(f"invalid phone number {text!r}: {err}{hint}") from err
    if mobile_only:
        kind = phonenumbers.number_type(number)  # UNKNOWN for an invalid number
        if kind not in _CAN_TEXT:
            raise ValueError(_cannot_text(text, region, number, kind))
    elif not phonenumbers.is_valid_number(number):
        hint = "" if region or text.startswith("+") else " (add +country code or default_region)"
        raise ValueError(f"invalid phone number {text!r}{hint}")
    if number.italian_leading_zero:
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return f"+{number.country_code}{number.national_number}"


def _cannot_text(text: str, region: str | None, number: phonenumbers.PhoneNumber, kind: int) -> str:
    """Why a number cannot receive a certified SMS, and what the user probably meant."""
    national = region if region is not None and _written_nationally(text, region) else None
    if kind == PhoneNumberType.UNKNOWN:
        if national:
            return (
                f"invalid phone number {text!r} for region {national}; "
                "a foreign number needs its +country code"
            )
        return f"invalid phone number {text!r}"
    what = _KIND.get(kind, "a number of unknown type")
    why = f"{what} cannot receive a certified SMS"
    if national and kind == PhoneNumberType.FIXED_LINE:
        found = ", ".join(f"+{cc} ({where})" for cc, where in _mobile_elsewhere(number, national))
        seen = f"; it would be a mobile with {found}" if found else ""
        return (
            f"phone number {text!r} is a landline in {national}: {why}. "
            f"A foreign mobile needs its +country code{seen}"
        )
    return f"phone number {text!r} is {what}, and {why}"


def _written_nationally(text: str, region: str) -> bool:
    """Whether the number took its country code from the default region (no + nor 00...)."""
    try:
        number = phonenumbers.parse(text, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return False
    return bool(number.country_code_source == phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY)


@lru_cache(maxsize=256)
def _zone_codes(region: str) -> tuple[int, ...]:
    """Country codes in the default region's numbering zone (first digit: 3/4 Europe, ...)."""
    code = phonenumbers.country_code_for_region(region)
    zones = {"3": "34", "4": "34"}.get(str(code)[0], str(code)[0])
    return tuple(
        cc
        for cc in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
        if str(cc)[0] in zones and cc != code
    )


def _mobile_elsewhere(number: phonenumbers.PhoneNumber, region: str) -> list[tuple[int, str]]:
    """Up to three nearby countries where the same national digits are a mobile."""
    found: list[tuple[int, str]] = []
    for cc in _zone_codes(region):
        candidate = phonenumbers.PhoneNumber(
            country_code=cc, national_number=number.national_number
        )
        if phonenumbers.number_type(candidate) in _CAN_TEXT:
            found.append((cc, phonenumbers.region_code_for_number(candidate) or "?"))
            if len(found) == 3:
                break
    return found


# -- identity -------------------------------------------------------------------------------------


# -- signers --------------------------------------------------------------------------------------

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
