"""Hardening (issue 14): hostile job files, files, servers and terminals.

Each test reproduces one attack or careless mistake from the issue: the token sent where a job
file says, alias bombs, FIFOs and /dev/zero as the job file, huge attachments and cells,
unbounded numbers, signals during the parallel scan, markup in data, a log file that breaks.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from click.testing import CliRunner
from helpers import recipients_accepted, wait_for

from batch.cli import STOP_GRACE_SECONDS, main
from batch.client import LegallyMailClient
from batch.connect import _limiter_key
from batch.errors import MAX_MESSAGE_CHARS, BatchError, JobFileError, RowError, RowErrors
from batch.jobfile import _check_duplicate_keys, load_job
from batch.ledger import read_ledger
from batch.pacing import SlidingWindowLimiter
from batch.sandbox import FakeClock

REPO = Path(__file__).resolve().parent.parent
TOKEN = "tok-Hard3ned-secret"


def write_job(
    folder: Path, extra: str = "", rows: int = 2, body: str = "<p>{{ name }}</p>"
) -> Path:
    """A small e-mail job: `rows` recipients, `extra` YAML appended."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,email,name"] + [f"K{i},p{i}@example.com,Person {i}" for i in range(rows)]
    (folder / "people.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "body.html").write_text(body, encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        "campaign: hard\n"
        "dataset: {path: people.csv, key: id}\n"
        'message: {subject: "Hello {{ name }}", html: body.html}\n'
        "output: out\n" + extra,
        encoding="utf-8",
    )
    return job


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A token, no base-URL override and a limiter state of the test's own."""
    monkeypatch.delenv("LEGALLYMAIL_BASE_URL", raising=False)
    monkeypatch.setenv("LEGALLYMAIL_TOKEN", TOKEN)
    monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "state"))
    return dict(os.environ)


# --- 1. the token goes only to LegallyMail ------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def _any(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = b'{"success": true, "data": {"tracking_id": "t"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server that answers everything and records the headers it got."""
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_job_file_cannot_point_the_token_at_its_own_host(
    tmp_path: Path, env: dict[str, str], recorder: tuple[str, list[dict[str, str]]], command: str
) -> None:
    url, seen = recorder
    job = write_job(tmp_path, f"api: {{base_url: {url}}}\n")
    result = CliRunner().invoke(main, [command, str(job)])
    assert result.exit_code == 2, result.output
    assert f"job.yaml:5 api.base_url: api.base_url '{url}'" in result.output
    assert "LEGALLYMAIL_BASE_URL=" in result.output  # how to rehearse against the sandbox
    assert seen == []  # not one request, so not one token
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "url, words",
    [
        ("https://evil.example", "may only point the token"),
        ("http://legallymail.com", "unencrypted"),
        ("https://user:pass@legallymail.com", "user name or password"),
        ("https://legallymail.com:99999", "not a valid URL"),
        ('"http://[::1"', "not a valid URL"),
    ],
)
def test_bad_job_file_base_urls_are_located_job_file_errors(
    tmp_path: Path, env: dict[str, str], url: str, words: str
) -> None:
    job = write_job(tmp_path, f"api: {{base_url: {url}}}\n")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2, result.output
    assert "job.yaml:5 api.base_url:" in result.output and words in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_job_file_pointing_elsewhere_is_refused_even_beside_a_loopback_sandbox(
    tmp_path: Path,
    env: dict[str, str],
    recorder: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = recorder
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", url)  # the environment's choice would be fine
    job = write_job(tmp_path, "api: {base_url: 'https://collector.example/api'}\n")
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2, result.output
    assert "a job file may only point the token at https://legallymail.com" in result.output
    assert seen == []


def test_the_environment_may_not_send_the_token_over_plain_http_off_loopback(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", "http://10.11.12.13:8025")
    job = write_job(tmp_path)
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2, result.output
    assert "LEGALLYMAIL_BASE_URL 'http://10.11.12.13:8025' would send the API token" in (
        result.output
    )
    assert not (tmp_path / "out" / "hard" / "ledger.parquet").exists()


def test_the_environment_may_point_the_token_at_a_loopback_sandbox(
    tmp_path: Path,
    env: dict[str, str],
    recorder: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = recorder
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", url)
    job = write_job(tmp_path, rows=1)
    CliRunner().invoke(main, ["run", str(job)])
    assert seen, "the run reached the loopback server"
    assert {h.get("Authorization") for h in seen} == {f"Bearer {TOKEN}"}


def test_the_limiter_state_file_name_holds_only_host_and_port() -> None:
    assert _limiter_key("http://127.0.0.1:8025") == "127.0.0.1_8025"
    assert _limiter_key("https://legallymail.com") == "legallymail.com"
    assert _limiter_key("https://u:secret@host.example:9/x") == "host.example_9"


def _client(reply: httpx.Response) -> LegallyMailClient:
    return LegallyMailClient(
        "https://legallymail.com",
        TOKEN,
        limiter=SlidingWindowLimiter(10, 60.0, FakeClock()),
        transport=httpx.MockTransport(lambda request: reply),
        attempts=1,
        sleep=lambda s: None,
    )


def test_an_echoed_token_in_any_spelling_never_reaches_an_error_or_a_body() -> None:
    echoed = base64.b64encode(f"Bearer {TOKEN}".encode()).decode()
    refused = httpx.Response(400, json={"message": f"bad auth {echoed} / {TOKEN.upper()}"})
    with pytest.raises(BatchError) as err:
        _client(refused).info()
    message = str(err.value)
    assert message.startswith("GET /api/info: HTTP 400: bad auth ") and message.endswith(" / ***")
    assert echoed[8:-4] not in message and TOKEN.upper() not in message
    body = {"name": TOKEN.lower(), "user": {"notes": [f"x {TOKEN}"]}}
    info = _client(httpx.Response(200, json=body)).info()
    assert json.dumps(info) == json.dumps({"name": "***", "user": {"notes": ["x ***"]}})


# --- 2. inputs bounded ------------------------------------------------------------------------


def alias_bomb(depth: int = 9) -> str:
    """Nested aliases: each level nine times the one before (the issue's 532-byte file)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "campaign: bomb\ndataset: {path: people.csv}\n" + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text.encode()) < 600
    job = tmp_path / "job.yaml"
    job.write_text(text, encoding="utf-8")
    with pytest.raises(JobFileError, match=r"job\.yaml:4: invalid YAML: aliases \(\*a0\) are not"):
        load_job(job)


def test_the_duplicate_key_walk_visits_each_node_once() -> None:
    # A loader that lets aliases through: the walk must still see each node only once.
    root = yaml.compose(alias_bomb(depth=10), Loader=yaml.SafeLoader)
    assert root is not None
    distinct = 1 + 2 * 2 + 11 * 2 + 9  # root, two mappings' keys/values, 11 lists, 9 scalars
    assert _check_duplicate_keys(root, "job.yaml") <= distinct


def test_a_fifo_as_the_job_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "job.yaml"
    os.mkfifo(fifo)
    # No writer ever opens it: a blocking open or read would hang the test (and the CLI).
    with pytest.raises(JobFileError, match="must be a regular file; this is not a regular file"):
        load_job(fifo)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_as_the_job_file_is_refused(device: str) -> None:
    with pytest.raises(JobFileError, match="must be a regular file"):
        load_job(Path(device))


def test_a_huge_job_file_is_refused_by_its_size(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    with open(job, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # sparse: refused before reading
    with pytest.raises(JobFileError, match="bytes; a job file holds at most"):
        load_job(job)


def test_a_2gb_sparse_attachment_is_refused_without_reading_it(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path)
    job.write_text(
        job.read_text().replace(
            "html: body.html}", "html: body.html, attachments: [{path: big.bin}]}"
        )
    )
    with open(tmp_path / "big.bin", "wb") as fh:
        fh.truncate(2 * 1024**3)
    reads: list[Path] = []
    real_open = open

    def spy_open(file: object, *args: object, **kwargs: object) -> object:
        if str(file).endswith("big.bin"):
            reads.append(Path(str(file)))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", spy_open)
    real_read_bytes = Path.read_bytes

    def spy_read_bytes(self: Path) -> bytes:
        if self.name == "big.bin":
            reads.append(self)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", spy_read_bytes)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2, result.output
    assert "message.attachments[0].path: 'big.bin' is 2,147,483,648 bytes" in result.output
    assert "limits.max_attachment_bytes" in result.output
    assert reads == []


def test_attachment_limits_come_from_the_job_file(tmp_path: Path, env: dict[str, str]) -> None:
    attach = "attachments: [{path: a.bin}, {path: b.bin}]"
    job = write_job(tmp_path)
    job.write_text(
        job.read_text().replace("html: body.html}", f"html: body.html, {attach}}}")
        + "limits: {max_attachment_bytes: 1000, max_message_attachment_bytes: 1500}\n"
    )
    (tmp_path / "a.bin").write_bytes(b"a" * 900)
    (tmp_path / "b.bin").write_bytes(b"b" * 900)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2, result.output
    assert "the limit per message is 1,500" in result.output
    (tmp_path / "b.bin").write_bytes(b"b" * 1001)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert "'b.bin' is 1,001 bytes; the limit per file is 1,000" in result.output


def test_a_huge_cell_gives_a_readable_error(tmp_path: Path, env: dict[str, str]) -> None:
    job = write_job(tmp_path)
    (tmp_path / "people.csv").write_text("id,email,name\nK1," + "x" * 3_000_000 + ",a\n")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert "row 2 (key K1) recipient.email" in result.output
    assert len(result.output) < 5_000


def test_error_messages_and_problem_lists_are_capped() -> None:
    assert len(BatchError("x" * 200_000_000).message) < MAX_MESSAGE_CHARS + 100
    many = RowErrors([RowError(i, "k" * 10_000, "f", "m" * 10_000) for i in range(1000)])
    assert len(str(many)) < MAX_MESSAGE_CHARS + 100
    assert "… (9,700 more characters)" in str(many)


# --- 3. numbers finite and bounded --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, key",
    [
        ("limits: {window_seconds: .inf}\n", "limits.window_seconds"),
        ("limits: {window_seconds: .nan}\n", "limits.window_seconds"),
        ("api: {timeout_seconds: .inf}\n", "api.timeout_seconds"),
        ("api: {timeout_seconds: 1e9}\n", "api.timeout_seconds"),
        ("retry: {max_backoff_seconds: .inf}\n", "retry.max_backoff_seconds"),
        ("retry: {attempts: 1000000000}\n", "retry.attempts"),
        ("limits: {requests_per_window: 1e12}\n", "limits.requests_per_window"),
        ("limits: {max_attachment_bytes: 1e15}\n", "limits.max_attachment_bytes"),
    ],
)
def test_unbounded_numbers_are_job_file_errors(
    tmp_path: Path, env: dict[str, str], extra: str, key: str
) -> None:
    job = write_job(tmp_path, extra)
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2, result.output
    assert f"job.yaml:5 {key}:" in result.output
    assert not (tmp_path / "out").exists()


# --- 4. stopping always works -------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the scan's workers), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2 or not Path("/proc/self/stat").exists(),
    reason="the parallel scan needs two CPUs; workers are found through /proc",
)
@pytest.mark.parametrize(
    "how, signals",
    [("term", 1), ("ctrl-c", 1), ("ctrl-c", 2), ("term", 2)],
)
def test_a_signal_ends_the_parallel_scan_of_5000_rows_at_once(
    tmp_path: Path, how: str, signals: int
) -> None:
    # Each row loops 300,000 times: the whole scan takes far longer than the hang guard.
    slow = "{% for i in range(300) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    job = write_job(tmp_path, rows=5_000, body=slow + "<p>{{ name }}</p>")
    env = dict(
        os.environ,
        LEGALLYMAIL_TOKEN=TOKEN,
        LEGALLYMAIL_BASE_URL="http://127.0.0.1:9",
        LMBATCH_STATE_DIR=str(tmp_path / "state"),
    )
    env.pop("PYTHONWARNINGS", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "batch", "run", str(job)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    try:
        deadline = time.monotonic() + 60
        while len(_children(child.pid)) < 2:  # the workers are up: the scan is running
            assert child.poll() is None, child.communicate()[0].decode()
            assert time.monotonic() < deadline, "the scan never started"
            time.sleep(0.01)
        for _ in range(signals):
            if how == "ctrl-c":  # the terminal signals the whole group, workers included
                os.killpg(child.pid, signal.SIGINT)
            else:  # cron, systemd, kill: the process itself
                child.send_signal(signal.SIGTERM)
        output = child.communicate(timeout=20)[0].decode()  # a hang guard, not a measure
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 3, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "interrupted while checking the rows; nothing was sent by this run" in output
    assert "hint: run the same command again to resume" in output
    # The ledger is as it was: the run never opened it.
    folder = tmp_path / "out" / "hard"
    assert not folder.exists() or not any(folder.iterdir())
    assert _children(child.pid) == []


@pytest.mark.slow
@pytest.mark.parametrize("signals", [1, 2])
def test_a_request_in_flight_is_cut_short_and_the_ledger_stays_consistent(
    tmp_path: Path, sandbox_factory: Any, signals: int
) -> None:
    # The sandbox records the send, then holds its answer far longer than the test may wait:
    # one signal cuts it after STOP_GRACE_SECONDS, a second one at once.
    sandbox = sandbox_factory(faults={"slow": 1.0}, slow_seconds=120.0)
    job = write_job(tmp_path, rows=1, extra="api: {timeout_seconds: 120}\n")
    env = dict(
        os.environ,
        LEGALLYMAIL_TOKEN=sandbox.token,
        LEGALLYMAIL_BASE_URL=sandbox.base_url,
        LMBATCH_STATE_DIR=str(tmp_path / "state"),
    )
    log = tmp_path / "run.out"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "batch", "run", str(job)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: bool(recipients_accepted(sandbox)), "the send to be in flight")
        child.send_signal(signal.SIGTERM)
        if signals == 2:  # signals do not queue: the second must follow the first's handling
            wait_for(lambda: "stopping after" in log.read_text(), "the first signal's note")
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=STOP_GRACE_SECONDS + 30)  # a hang guard, not a measure
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = log.read_text()
    assert child.returncode == 3, output
    assert "Traceback" not in output
    assert "interrupted: the ledger is consistent; run the same command again to resume" in output
    ledger = read_ledger(tmp_path / "out" / "hard")
    assert ledger.select("key", "status").rows() == [("K0", "in_doubt")]


# --- 6. nothing from data or a server is markup -------------------------------------------------


def test_markup_in_keys_and_cells_prints_literally(tmp_path: Path, env: dict[str, str]) -> None:
    job = write_job(tmp_path)
    (tmp_path / "people.csv").write_text(
        "id,email,name\n[/x],not-an-address [red]x,a\nK2,[bold]nope,b\n", encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2, result.output
    assert "row 2 (key [/x]) recipient.email" in result.output
    assert "[red]x" in result.output and "[bold]nope" in result.output
    assert "MarkupError" not in result.output


def test_markup_in_the_job_path_prints_literally(tmp_path: Path, env: dict[str, str]) -> None:
    job = write_job(tmp_path / "a[/x]b[red]")
    job.write_text("campaign: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2, result.output
    assert "a[/x]b[red]/job.yaml:2: invalid YAML" in result.output


class _Refuser(http.server.BaseHTTPRequestHandler):
    """An API that has credits and refuses every send with a message full of markup."""

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, {"user": {"remaining_emails": 1000, "plan": "x"}, "emails": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer(400, {"success": False, "message": "bad [/x] request [red]loud"})

    def log_message(self, *args: object) -> None:
        pass


def test_markup_in_server_messages_prints_literally(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("LEGALLYMAIL_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        job = write_job(tmp_path, rows=1)
        run = CliRunner().invoke(main, ["run", str(job)])
        assert ("MarkupError" not in run.output and run.exception is None) or isinstance(
            run.exception, SystemExit
        ), run.output
        for command in ("status", "report"):
            result = CliRunner().invoke(main, [command, str(job)], env={"COLUMNS": "250"})
            assert result.exit_code == 0, (command, result.output)
            assert "bad [/x] request [red]loud" in result.output, (command, result.output)
        assert (tmp_path / "out" / "hard" / "report.html").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_the_terminal_display_prints_notes_literally() -> None:
    import io

    from rich.console import Console

    from batch.progress import RichReporter

    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=200))
    reporter.note("K1 a@b.es: bad [/x] request [red]loud")
    assert "bad [/x] request [red]loud" in out.getvalue()


# --- 7. the log file --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, reason",
    [
        ("/nonexistent/x", "No such file or directory"),
        ("/dev/full", "not a file, a pipe or a terminal"),
        ("FIFO", "No such device or address"),  # a FIFO nobody reads: an error, not a hang
    ],
)
def test_an_unusable_log_file_is_a_clear_error_before_anything_is_sent(
    tmp_path: Path,
    env: dict[str, str],
    recorder: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    reason: str,
) -> None:
    url, seen = recorder
    monkeypatch.setenv("LEGALLYMAIL_BASE_URL", url)
    if target == "FIFO":
        target = str(tmp_path / "log.fifo")
        os.mkfifo(target)
    job = write_job(tmp_path)
    result = CliRunner().invoke(main, ["run", str(job), "--log-file", target])
    assert result.exit_code == 2, result.output
    assert f"--log-file {target}: cannot write the log there ({reason}); nothing was sent" in (
        result.output
    )
    assert seen == []


def test_a_log_write_failing_mid_run_is_said_on_stderr_and_the_lines_go_on() -> None:
    import io

    from batch.progress import LineReporter
    from batch.stats import RunStats

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away
    stderr = io.StringIO()
    with os.fdopen(write_end, "w") as broken:
        reporter = LineReporter(broken, fallback=stderr)
        reporter.start(RunStats(per_window=10, window=60.0))
        reporter.note("K1 sent")
        reporter.finish("done", 0, {"sent": 1})
        with pytest.raises(OSError):  # the buffered line cannot be flushed: said, then dropped
            broken.close()
    lines = stderr.getvalue().splitlines()
    assert lines[0] == (
        "lmbatch: cannot write the log (Broken pipe); the run goes on, its log lines follow here"
    )
    assert [line.split(" ")[1] for line in lines[1:]] == ["start", "note", "stop"]


def test_a_run_whose_log_reader_goes_away_keeps_sending(
    tmp_path: Path, sandbox: Any, use_sandbox: Any
) -> None:
    use_sandbox(sandbox)
    job = write_job(tmp_path, rows=3)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    first: list[str] = []

    def read_one_line_and_leave() -> None:
        with open(fifo, encoding="utf-8") as reader:
            first.append(reader.readline())

    reader = threading.Thread(target=read_one_line_and_leave)
    reader.start()
    wait_for(lambda: fifo.exists(), "the FIFO")
    # lmbatch refuses a FIFO nobody reads: wait (here only) until the reader thread is there.
    real_open_log = __import__("batch.progress", fromlist=["open_log"]).open_log

    def open_when_read(path: Path) -> Any:
        deadline = time.monotonic() + 10
        while True:
            try:
                return real_open_log(path)
            except BatchError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # the reader thread has not opened its end yet

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("batch.progress.open_log", open_when_read)
        result = CliRunner().invoke(main, ["run", str(job), "--log-file", str(fifo)])
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert first and " start " in first[0]
    assert "lmbatch: cannot write the log (Broken pipe); the run goes on" in result.output
    assert sorted(recipients_accepted(sandbox)) == [f"p{i}@example.com" for i in range(3)]


# --- 5. preview locked down ---------------------------------------------------------------------


def test_preview_pages_run_no_script(tmp_path: Path, env: dict[str, str]) -> None:
    job = write_job(tmp_path, rows=1, body="<p>hi</p><script>document.title='owned'</script>")
    result = CliRunner().invoke(main, ["preview", str(job)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "hard" / "preview"
    page = next(p for p in folder.glob("*.html") if p.name != "index.html").read_text()
    for shown in (page, (folder / "index.html").read_text()):
        assert (
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "script-src 'none';" in shown
        )
    assert '<iframe sandbox="" ' in page
    assert "&lt;script&gt;" in page  # the body stays inert text inside srcdoc
