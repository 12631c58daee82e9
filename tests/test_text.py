"""Clean text: ordinary whitespace folded, every other control character refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.text import check_body, check_plain_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rent for November", "Rent for November"),
        ("  Rent  ", "Rent"),
        ("Rent for\nNovember", "Rent for November"),
        ("Rent for \r\n November", "Rent for November"),
        ("Rent\tfor\t\tNovember", "Rent for November"),
        ("Rent for\n\n\nNovember\n", "Rent for November"),
        ("Two  spaces stay", "Two  spaces stay"),
        ("1.234,50\u00a0€", "1.234,50\u00a0€"),  # a no-break space is text, not a control
        ("José Ñúñez 東京 🙂", "José Ñúñez 東京 🙂"),
        ("", ""),
    ],
)
def test_one_line_text_is_folded(text: str, expected: str) -> None:
    assert check_plain_text("message.subject", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Line one\nLine two", "Line one\nLine two"),
        ("Line one\r\nLine two\r\n", "Line one\nLine two"),
        ("Tab\there", "Tab here"),
    ],
)
def test_sms_text_keeps_its_line_breaks(text: str, expected: str) -> None:
    assert check_plain_text("message.text", text, multiline=True) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Rent\x00 for", "U+0000 NUL at position 5 after 'Rent'"),
        ("Rent\rfor", "U+000D bare carriage return"),
        ("Rent\r", "U+000D bare carriage return"),
        ("Rent\x0bfor", "U+000B vertical tab"),
        ("Rent\x0cfor", "U+000C form feed"),
        ("\x1b[31mRed", "U+001B escape at position 1 at the start"),
        ("Rent\x85for", "U+0085 next line"),
        ("Rent\u2028for", "U+2028 line separator"),
        ("Rent\u2029for", "U+2029 paragraph separator"),
        ("Rent\x7f", "U+007F delete"),
        ("Caf\x92s", "U+0092 control character"),  # cp1252's ’ read as latin-1
        ("Rent\x01", "U+0001 control character"),
        ("Rent\udcff", "unpaired surrogate"),
    ],
)
def test_control_characters_are_refused_with_their_name_and_place(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        check_plain_text("message.subject", text)
    assert str(err.value).startswith("message.subject contains")


def test_sms_text_refuses_a_bare_cr_too() -> None:
    with pytest.raises(ValueError, match="bare carriage return"):
        check_plain_text("message.text", "one\rtwo", multiline=True)


def test_a_long_prefix_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"after 'x{20}'"):
        check_plain_text("recipient.name", "x" * 500 + "\x00")


def test_a_body_refuses_nul_only() -> None:
    body = "<p>Line\r\n\tindented\x0b</p>"
    assert check_body(body) == body
    with pytest.raises(
        ValueError, match=re.escape("message body contains U+0000 NUL at position 4")
    ):
        check_body("<p>\x00</p>")


_CONTROLS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029])


@given(st.text())
def test_folded_text_never_holds_a_control_character(text: str) -> None:
    try:
        folded = check_plain_text("message.subject", text)
    except ValueError:
        return
    assert not any(c in _CONTROLS for c in folded)
    assert folded == folded.strip()


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_text_without_controls_only_loses_its_outer_whitespace(text: str) -> None:
    assert check_plain_text("message.subject", text) == text.strip()
