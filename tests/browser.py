"""Headless Chromium driven over the DevTools protocol on a pipe (no port, no extra package).

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write answers to fd 4,
each a JSON object ended by a NUL byte. That is enough to lay a page out at a given width,
measure it (what a page's own script could tell, without the page having any: DevTools
evaluation is not the page's script and its Content-Security-Policy does not apply),
screenshot it whole and print it to PDF as "Save as PDF" would.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The browser, or a skip when it is missing and cannot be installed here."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0:  # CI runs as root: `make browser` installs it, so missing is a bug
        pytest.fail("chromium is missing: run `make browser` (.ci/install-chromium)")
    pytest.skip("chromium is not installed and installing it needs root (make browser)")


class Browser:
    """One headless Chromium; `open(page, width)` gives a session on a fresh tab."""

    def __init__(self, profile: Path, timeout: float = 60.0) -> None:
        self._timeout = timeout
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def fds() -> None:  # in the child: the protocol's fixed descriptors
            high_in, high_out = os.dup(to_child), os.dup(from_child)  # may be 3 or 4 now
            os.dup2(high_in, 3)  # dup2 makes them inheritable: they survive the exec
            os.dup2(high_out, 4)

        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._send("Browser.close", {})
            self._proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired, TimeoutError):
            self._proc.kill()
            self._proc.wait()
        os.close(self._write)
        os.close(self._read)

    def _send(self, method: str, params: dict[str, Any], session: str | None = None) -> int:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next

    def call(self, method: str, params: dict[str, Any], session: str | None = None) -> Any:
        """Send one command and wait for its answer (events in between are dropped)."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self._timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._read], [], [], max(0.0, left))
                if not ready:
                    raise TimeoutError(f"chromium did not answer {method}")
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            message = json.loads(raw)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, page: Path, width: int, height: int = 900) -> Tab:
        """`page` in a new tab laid out `width` px wide, loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        tab = Tab(self, session, width)
        tab.resize(height)
        self.call("Page.navigate", {"url": page.as_uri()}, session)
        deadline = time.monotonic() + self._timeout
        while tab.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{page} did not load")
            time.sleep(0.05)  # polling the browser's state, not standing in for a sync
        return tab


class Tab:
    """A page in the browser."""

    def __init__(self, browser: Browser, session: str, width: int) -> None:
        self._browser, self._session, self.width = browser, session, width

    def resize(self, height: int) -> None:
        """Lay the page out in a `width` x `height` viewport."""
        metrics = {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self._browser.call("Emulation.setDeviceMetricsOverride", metrics, self._session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self._browser.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, self._session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        """The whole page as PNG, `width` px wide."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.resize(height)
        shot = self._browser.call("Page.captureScreenshot", {"format": "png"}, self._session)
        return base64.b64decode(shot["data"])

    def pdf(self) -> bytes:
        """The page printed as the browser's "Save as PDF" does (print stylesheet, @page)."""
        printed = self._browser.call(
            "Page.printToPDF", {"preferCSSPageSize": True, "printBackground": False}, self._session
        )
        return base64.b64decode(printed["data"])


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit PNG: enough to look at colours."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                corner = previous[i - channels] if i >= channels else 0
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [r if channels == 3 else _rgb(r) for r in rows]


def _rgb(row: bytes) -> bytes:
    return bytes(b for i, b in enumerate(row) if i % 4 != 3)


def count_colour(rows: list[bytes], hex_colour: str) -> int:
    """How many pixels have exactly this colour."""
    target = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(1 for row in rows for x in range(0, len(row), 3) if row[x : x + 3] == target)
