"""addresses: one normalised form per recipient, refusals that say why and what was meant."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

import batch.addresses
from batch.addresses import normalize_email, normalize_phone
from batch.channels import channel_for


def identity_key(kind: str, address: str) -> str:
    return channel_for(kind).key_of(address)


def normalize_address(kind: str, raw: str, region: str | None = None) -> str:
    return channel_for(kind).normalize_address(raw, region)


# -- e-mail: one identity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spellings, sent",
    [
        (
            [
                "user@xn--mnchen-3ya.de",
                "user@münchen.de",
                "user@MÜNCHEN.DE",
                " user@XN--MNCHEN-3YA.de\u00a0",
                "user@mu\u0308nchen.de",  # decomposed ü (macOS file names, some exports)
            ],
            "user@xn--mnchen-3ya.de",
        ),
        (["ana@example.com", "ana@EXAMPLE.com", "\tana@example.COM\n"], "ana@example.com"),
        (["ana@bücher.example", "ana@xn--bcher-kva.example"], "ana@xn--bcher-kva.example"),
    ],
)
def test_idna_and_unicode_spellings_are_sent_as_one_ascii_address(
    spellings: list[str], sent: str
) -> None:
    assert {normalize_email(s) for s in spellings} == {sent}
    assert {identity_key("email", normalize_email(s)) for s in spellings} == {sent.lower()}


@pytest.mark.parametrize(
    "raw, sent",
    [
        ("Ana.Lopez@Example.es", "Ana.Lopez@example.es"),  # the local part is sent as written
        ("ñandú@example.es", "ñandú@example.es"),  # SMTPUTF8 local parts stay Unicode
        ("jose\u0301@x.es", "jos\u00e9@x.es"),  # ... in NFC
        ("Postmaster@X.ES", "postmaster@x.es"),  # role names are case-insensitive by RFC
        ("o'neill+tag@x.es", "o'neill+tag@x.es"),
    ],
)
def test_the_address_sent(raw: str, sent: str) -> None:
    assert normalize_email(raw) == sent


@pytest.mark.parametrize(
    "one, other",
    [
        ("Ana@Example.com", "ana@example.com"),
        ("ANA@münchen.de", "ana@xn--mnchen-3ya.de"),
        ("Ñandú@x.es", "ñandú@x.es"),
    ],
)
def test_addresses_differing_only_in_case_are_one_recipient(one: str, other: str) -> None:
    assert identity_key("email", normalize_email(one)) == identity_key(
        "signature", normalize_email(other)
    )


@pytest.mark.parametrize(
    "one, other",
    [("ana@x.es", "ana.@x.es"), ("ana+a@x.es", "ana@x.es"), ("a.na@x.es", "ana@x.es")],
)
def test_different_addresses_stay_different(one: str, other: str) -> None:
    try:
        second = normalize_email(other)
    except ValueError:
        return
    assert identity_key("email", normalize_email(one)) != identity_key("email", second)


# -- e-mail: mistakes, with the likely intended address -------------------------------------------


@pytest.mark.parametrize(
    "raw, intended, character",
    [
        ("o’neill@x.es", "o'neill@x.es", "right single quotation mark"),
        ("o‘neill@x.es", "o'neill@x.es", "left single quotation mark"),
        ("ana–lopez@x.es", "ana-lopez@x.es", "en dash"),
        ("ana—lopez@x.es", "ana-lopez@x.es", "em dash"),
        ("ana‐lopez@x.es", "ana-lopez@x.es", "hyphen"),
        ("“x”@x.es", "x@x.es", "left double quotation mark"),
        ("«x»@x.es", "x@x.es", "left-pointing double angle quotation mark"),
        ("ana@my–company.es", "ana@my-company.es", "en dash"),
        ("ana＠x.es", "ana@x.es", "fullwidth commercial at"),
        ("O’Neill@München.de", "O'Neill@xn--mnchen-3ya.de", "right single quotation mark"),
    ],
)
def test_typographic_punctuation_is_refused_with_the_intended_address(
    raw: str, intended: str, character: str
) -> None:
    with pytest.raises(ValueError) as err:
        normalize_email(raw)
    message = str(err.value)
    assert message.endswith(f"did you mean {intended}?"), message
    assert character in message and repr(raw) in message


def test_typographic_punctuation_without_a_valid_reading_says_to_retype() -> None:
    with pytest.raises(ValueError, match="retype it with plain"):
        normalize_email("o’’@@x")


@pytest.mark.parametrize(
    "raw, words",
    [
        ("Ana López <ana@x.es>", ["display name", "(ana@x.es)", "(Ana López) in recipient.name"]),
        ('"López, Ana" <ana@x.es>', ["display name", "(López, Ana) in recipient.name"]),
        ("Ana <ana@münchen.de>", ["display name", "(ana@münchen.de)"]),
        ("<ana@x.es>", ["remove the <> (ana@x.es)"]),
        ("mailto:ana@x.es", ["remove `mailto:` (ana@x.es)"]),
        ("MAILTO:ana@x.es", ["remove `mailto:`"]),
        ("ana@x.es; bo@y.es", ["more than one address"]),
        ("ana@x.es, bo@y.es", ["more than one address"]),
        ("ana@x.es bo@y.es", ["more than one address"]),
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("ana@", ["invalid e-mail address 'ana@'"]),
        ("ana@x", ["invalid e-mail address", "period"]),
        ("ana@x.es.", ["invalid e-mail address"]),
        ('"ana"@x.es', ["invalid e-mail address"]),
        ("ana lopez@x.es", ["invalid e-mail address"]),
    ],
)
def test_other_mistakes_are_explained(raw: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        normalize_email(raw)
    for word in words:
        assert word in str(err.value)


# -- e-mail: the fast path ------------------------------------------------------------------------


def _slow(raw: str) -> str | None:
    try:
        valid = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{valid.local_part}@{valid.ascii_domain}"


@settings(max_examples=300, deadline=None)
@given(
    st.emails() | st.from_regex(r"[A-Za-z0-9._%+'-]{1,20}@[A-Za-zÀ-ÿ0-9.-]{1,20}", fullmatch=True)
)
def test_the_fast_path_gives_what_email_validator_gives(raw: str) -> None:
    try:
        ours: str | None = normalize_email(raw)
    except ValueError:
        ours = None
    assert ours == _slow(raw)


def test_plain_addresses_validate_each_domain_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(address: str, **options: bool) -> object:
        calls.append(address)
        return validate_email(address, **options)

    monkeypatch.setattr(batch.addresses, "validate_email", counting)
    batch.addresses._domain.cache_clear()
    for i in range(1_000):
        normalize_email(f"user.{i}@Domain{i % 10}.example")
    assert len(calls) == 10


# -- phones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, region",
    [
        ("612 345 678", "ES"),
        ("612345678", "ES"),
        ("+34 612 345 678", "ES"),
        ("+34 612 345 678", None),
        ("+34612345678", "PT"),
        ("0034612345678", "ES"),  # 00: Spain's international prefix
        ("0034 612-345-678", "ES"),
        ("(+34) 612.345.678", "ES"),
        (" +34\u00a0612\u00a0345\u00a0678 ", "ES"),
    ],
)
def test_one_mobile_written_many_ways_is_one_identity(raw: str, region: str | None) -> None:
    assert normalize_phone(raw, region) == "+34612345678"
    assert identity_key("sms", normalize_address("sms", raw, region)) == "+34612345678"


@pytest.mark.parametrize(
    "raw, region, e164",
    [
        ("+351 912 345 678", "ES", "+351912345678"),  # a foreign mobile with its code
        ("00351912345678", "ES", "+351912345678"),
        ("07911 123456", "GB", "+447911123456"),
        ("+1 201 555 0123", None, "+12015550123"),  # FIXED_LINE_OR_MOBILE: may be a mobile
        ("0612345678", "FR", "+33612345678"),
        ("+39 312 345 6789", None, "+393123456789"),
        ("711 234 567", "ES", "+34711234567"),
    ],
)
def test_mobile_capable_numbers_are_accepted(raw: str, region: str | None, e164: str) -> None:
    assert normalize_phone(raw, region) == e164
    assert normalize_phone(raw, region, mobile_only=True) == e164


@pytest.mark.parametrize(
    "raw, region, words, not_words",
    [
        (
            "912345678",  # a Portuguese mobile without +351, read as a Madrid landline
            "ES",
            [
                "is a landline in ES",
                "a landline cannot receive a certified SMS",
                "a foreign mobile needs its +country code",
                "+351 (PT)",
            ],
            [],
        ),
        ("+34 912 345 678", "ES", ["a landline cannot receive a certified SMS"], ["foreign"]),
        ("0034912345678", "ES", ["a landline cannot receive"], ["foreign"]),
        ("030 123456", "DE", ["is a landline in DE", "foreign mobile"], []),
        ("+39 06 1234 5678", None, ["a landline cannot receive"], ["foreign"]),
        ("900 123 456", "ES", ["a toll-free number cannot receive a certified SMS"], []),
        ("803 123 456", "ES", ["a premium-rate number cannot receive a certified SMS"], []),
        ("+34 901 123 456", None, ["cannot receive a certified SMS"], []),
        ("612345678", None, ["add +country code or default_region"], []),
        ("12345", "ES", ["invalid phone number '12345' for region ES", "+country code"], []),
        ("+34 12345", None, ["invalid phone number"], ["foreign"]),
        ("abc", "ES", ["invalid phone number 'abc'"], []),
        ("", "ES", ["invalid phone number ''"], []),
    ],
)
def test_numbers_that_cannot_receive_an_sms_are_refused_saying_why(
    raw: str, region: str | None, words: list[str], not_words: list[str]
) -> None:
    with pytest.raises(ValueError) as err:
        normalize_phone(raw, region)
    message = str(err.value).lower()
    for word in words:
        assert word.lower() in message, message
    for word in not_words:
        assert word.lower() not in message, message


@pytest.mark.parametrize(
    "raw, region, e164",
    [("+34 912 345 678", None, "+34912345678"), ("900 123 456", "ES", "+34900123456")],
)
def test_any_valid_number_when_mobile_is_not_required(
    raw: str, region: str | None, e164: str
) -> None:
    assert normalize_phone(raw, region, mobile_only=False) == e164
    with pytest.raises(ValueError, match="invalid phone number"):
        normalize_phone("12345", region or "ES", mobile_only=False)


def test_italian_leading_zeros_are_kept_in_e164() -> None:
    assert normalize_phone("+39 06 1234 5678", None, mobile_only=False) == "+390612345678"


# -- identity -------------------------------------------------------------------------------------


def test_normalize_address_dispatches_on_the_channel() -> None:
    assert normalize_address("email", "A@München.de") == "A@xn--mnchen-3ya.de"
    assert normalize_address("signature", "a@x.es") == "a@x.es"
    assert normalize_address("sms", "612 345 678", "ES") == "+34612345678"
    with pytest.raises(ValueError, match="landline"):
        normalize_address("sms", "912 345 678", "ES")
    with pytest.raises(ValueError, match="unknown channel"):
        normalize_address("fax", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown channel"):
        identity_key("fax", "x")
