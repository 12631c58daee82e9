"""Starting and stopping the sandbox: in a thread, in the foreground, and without a socket."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest

from batch.sandbox import SandboxConfig, in_process_sandbox, running_sandbox


def test_running_sandbox_listens_on_a_free_loopback_port_and_stops_cleanly() -> None:
    with running_sandbox() as first, running_sandbox() as second:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first.base_url)
        assert first.base_url != second.base_url
        assert first.token != second.token and len(first.token) >= 20
        with first.client() as client:
            assert client.get("/api/info").status_code == 200
        url = first.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/info", timeout=2)


def test_in_process_sandbox_needs_no_socket() -> None:
    with in_process_sandbox(SandboxConfig(token="t", delivered_after=0)) as sandbox:
        assert sandbox.transport is not None
        with sandbox.client() as client:
            sent = client.post("/api/send", json={"to": "a@b.co", "subject": "s", "message": "m"})
            tracking_id = sent.json()["data"]["tracking_id"]
            email = client.get("/api/email", params={"tracking_id": tracking_id}).json()["email"]
            url = email["recipients"][0]["certificates"][0]["pdf_download_url"]
            assert url.startswith("http://sandbox.test/emails/download-certificate?")
            assert client.get(url).content.startswith(b"%PDF-")


def test_serve_runs_in_the_foreground_until_interrupted() -> None:
    code = textwrap.dedent(
        """
        from batch.sandbox import SandboxConfig, serve
        serve(SandboxConfig(token="fg-token", port=0))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)\s+token: (\S+)", banner)
        assert found, banner
        base_url, token = found.groups()
        assert token == "fg-token"
        headers = {"Authorization": token}
        # The socket listens before the banner is printed, so the first request may go at once.
        assert httpx.get(base_url + "/api/info", headers=headers, timeout=5).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
