"""Clean text: what a subject, a name or an SMS may contain once the row's data is in it.

A certified message is evidence, so text that would not show as the sheet shows it is refused
rather than silently changed. The rule for one-line fields (subject, recipient and sender
names, reply-to name) and SMS text:

- Ordinary whitespace is folded: a line break (LF or CRLF) or a tab becomes one space, with
  the spaces around it, and the ends are trimmed. SMS text (`multiline=True`) keeps its line
  breaks, as LF; tabs still become spaces.
- Every other control character is an error naming it and its position: NUL and the other C0
  controls (VT, FF, ESC…), a bare CR (an old-Mac line ending the sheet never showed), DEL,
  the C1 controls (NEL U+0085 and the invisible characters a cp1252 file read as latin-1
  leaves behind), the Unicode line and paragraph separators (U+2028, U+2029), and unpaired
  surrogates (bytes that did not decode).

A body (HTML) may hold any text its template makes, but not NUL: `check_body`.
"""

from __future__ import annotations

import re

_NAMES = {
    0x00: "NUL",
    0x09: "tab",
    0x0B: "vertical tab",
    0x0C: "form feed",
    0x0D: "bare carriage return (CR without LF)",
    0x1B: "escape",
    0x7F: "delete",
    0x85: "next line (NEL)",
    0x2028: "line separator",
    0x2029: "paragraph separator",
}
# A control character other than tab and LF, or a CR not starting a CRLF.
_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|\r(?!\n)")
_BAD_IN_BODY = re.compile(r"[\x00\ud800-\udfff]")
_FOLD_LINE = re.compile(r"[ \t]*(?:\r\n|[\n\t])[ \t\r\n]*")
_FOLD_MULTILINE = re.compile(r"\r\n|\t")
_CONTEXT = 20  # characters shown before the offending one


def check_plain_text(field: str, text: str, *, multiline: bool = False) -> str:
    """The text with ordinary whitespace folded (see the module rule); ValueError otherwise."""
    if text.isprintable():  # the usual text, checked in C: no control, no separator but space
        return text.strip()
    bad = _BAD.search(text)
    if bad is not None:
        raise ValueError(_describe(field, text, bad.start()))
    if multiline:
        if "\r" in text or "\t" in text:
            text = _FOLD_MULTILINE.sub(lambda m: "\n" if m.group(0) == "\r\n" else " ", text)
        return text.strip()
    if "\n" in text or "\t" in text:
        text = _FOLD_LINE.sub(" ", text)
    return text.strip()


def check_body(text: str) -> str:
    """The body unchanged; ValueError if it holds NUL (or bytes that did not decode)."""
    if "\x00" not in text and text.isascii():  # the usual body, checked in C
        return text
    bad = _BAD_IN_BODY.search(text)
    if bad is not None:
        raise ValueError(_describe("message body", text, bad.start()))
    return text


def _describe(field: str, text: str, at: int) -> str:
    code = ord(text[at])
    if 0xD800 <= code <= 0xDFFF:
        name = "an unpaired surrogate (bytes that did not decode)"
    else:
        name = _NAMES.get(code, "control character")
    before = text[max(0, at - _CONTEXT) : at]
    where = f" after {before!r}" if before else " at the start"
    return (
        f"{field} contains U+{code:04X} {name} at position {at + 1}{where}: "
        "control characters are not allowed here; remove it from the data"
    )
