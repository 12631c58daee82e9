"""Bytes to text for CSV datasets: byte-order marks honoured, implausible decodes refused.

A wrong encoding rarely fails loudly: a UTF-8 file read as cp1252 gives `JosÃ©`, a cp1252 file
read as latin-1 turns `’` and `€` into invisible C1 controls. Both would go out in certified
notices, so they are refused with the line where they first show. The hint names `cp1252`,
which is what Excel on Windows writes for "CSV", never `latin-1`, which corrupts those files.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from batch.errors import DatasetError

_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_UTF8 = {"utf-8", "utf8", "utf-8-sig", "u8"}
_C1 = re.compile("[\x80-\x9f]")
# UTF-8 bytes of common accented letters and punctuation read one byte at a time.
_MOJIBAKE = re.compile("[ÃÂ][\u0080-\u00bf]|â€[\u0080-\u00bf\u2018-\u2122™œ\u0152\u0161]")
_HINT = (
    "set dataset.encoding in the job file: Excel on Windows saves CSV as cp1252, "
    "LibreOffice and Excel's 'CSV UTF-8' as utf-8"
)


@dataclass(frozen=True)
class Decoded:
    """The text of the file without its BOM, and what was used to decode it."""

    text: str
    codec: str  # Python codec name actually used
    bom: str | None  # "UTF-8", "UTF-16 LE", … when a byte-order mark decided the encoding
    utf8_bytes: bytes | None  # the raw bytes when they already are the text as UTF-8


def line_of(text: str, index: int) -> int:
    """The 1-based line holding `text[index]`, counting LF, CRLF and lone CR as line ends."""
    head = text[:index]
    return head.count("\n") + head.count("\r") - head.count("\r\n") + 1


def decode(raw: bytes, encoding: str, shown: str) -> Decoded:
    """Decode `raw` as the job says, unless a BOM says otherwise; refuse implausible text."""
    for bom, codec, name in _BOMS:
        if raw.startswith(bom):
            text = _strict(raw[len(bom) :], codec, shown, name)
            utf8 = raw[len(bom) :] if codec == "utf-8" else None
            _check_plausible(text, shown, codec)
            return Decoded(text, codec, name, utf8)
    codec = encoding.lower().replace("_", "-")
    try:
        codecs.lookup(codec)
    except LookupError as err:
        raise DatasetError(f"{shown}: unknown encoding {encoding!r}", hint=_HINT) from err
    if codec in _UTF8:
        codec = "utf-8"
    if codec == "utf-8" and _looks_utf16(raw):
        raise DatasetError(
            f"{shown}: the file looks like UTF-16 without a byte-order mark",
            hint="set dataset.encoding: utf-16-le (Excel's 'Unicode Text' writes it with a BOM)",
        )
    text = _strict(raw, codec, shown, encoding)
    if _single_byte(codec) and not text.isascii():
        _check_not_utf8(raw, text, shown, encoding)
    _check_plausible(text, shown, encoding)
    return Decoded(text, codec, None, raw if codec == "utf-8" else None)


def _single_byte(codec: str) -> bool:
    """cp1252, latin-1, iso8859-15 … : every byte is a character, so nothing fails to decode."""
    name = codecs.lookup(codec).name
    return not name.startswith(("utf", "shift", "euc", "gb", "big5", "iso2022", "cp9", "hz"))


def _looks_utf16(raw: bytes) -> bool:
    head = raw[:200]
    return len(head) >= 4 and head.count(0) * 3 >= len(head)


def _strict(raw: bytes, codec: str, shown: str, name: str) -> str:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as err:
        line = line_of(raw[: err.start].decode(codec, errors="replace"), err.start)
        bad = raw[err.start : err.start + 1].hex()
        hint = _HINT
        if codec == "utf-8" and not _looks_utf16(raw):
            hint = (
                "the file is not UTF-8; if Excel on Windows saved it, set dataset.encoding: cp1252"
            )
        raise DatasetError(
            f"{shown}:{line}: not valid {name}: byte 0x{bad} ({err.reason})", hint=hint
        ) from err


def _check_not_utf8(raw: bytes, text: str, shown: str, encoding: str) -> None:
    """A single-byte decode of bytes that are valid UTF-8 (and not ASCII) is mojibake."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    first = next(i for i, ch in enumerate(text) if ord(ch) > 127)
    raise DatasetError(
        f"{shown}:{line_of(text, first)}: the file is UTF-8 but dataset.encoding is "
        f"{encoding!r}: it would read {_around(text, first)!r}",
        hint="set dataset.encoding: utf-8 (or remove it)",
    )


def _check_plausible(text: str, shown: str, encoding: str) -> None:
    if text.isascii():
        return
    control = _C1.search(text)
    if control:
        code = f"U+{ord(control.group()):04X}"
        raise DatasetError(
            f"{shown}:{line_of(text, control.start())}: decoding as {encoding} gives the "
            f"invisible control character {code}: the file is in another encoding",
            hint="Excel on Windows writes cp1252: set dataset.encoding: cp1252",
        )
    garbled = _MOJIBAKE.search(text)
    if garbled:
        raise DatasetError(
            f"{shown}:{line_of(text, garbled.start())}: {_around(text, garbled.start())!r} "
            "looks like UTF-8 text decoded as single bytes (mojibake)",
            hint="the file was saved with a wrong encoding: re-export it as UTF-8, or set "
            "dataset.encoding to what it really is",
        )


def _around(text: str, index: int) -> str:
    start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index), index - 20, -1) + 1
    end = min(x for x in (text.find("\n", index), text.find("\r", index), index + 20) if x >= 0)
    return text[start:end]
