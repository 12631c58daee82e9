"""Small, valid, deterministic PDF documents: certificates and signature records.

Deterministic because the API reports `file_hash` before anyone downloads the file: the hash
of the bytes built for the listing must equal the hash of the bytes built for the download.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


def _pdf_text(line: str) -> str:
    # Base-14 Helvetica speaks Latin-1 at best; keep it ASCII so every viewer agrees.
    ascii_line = line.encode("ascii", "replace").decode("ascii")
    return ascii_line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


@lru_cache(maxsize=4096)
def render_pdf(title: str, lines: tuple[str, ...]) -> bytes:
    """Build a one-page PDF with a title and lines of text."""
    ops = ["BT", "/F1 16 Tf", "50 790 Td", f"({_pdf_text(title)}) Tj", "/F1 10 Tf"]
    for line in lines:
        ops += ["0 -18 Td", f"({_pdf_text(line[:110])}) Tj"]
    ops.append("ET")
    stream = "\n".join(ops).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes, the form the API uses for file and document hashes."""
    return hashlib.sha256(data).hexdigest()
