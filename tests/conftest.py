"""Shared fixtures: LegallyMail sandboxes on loopback (real uvicorn) and in-process.

sandbox               a running sandbox: token "test-token", 10 requests per 2 s, delivered
                      after 0.2 s, read after 0.5 s, no faults
sandbox_factory       start more, e.g. `sandbox_factory(clock=fake_clock, rate_limit=100)`
                      or `sandbox_factory(SandboxConfig(...))`; all stop at test end
in_process_sandbox    the same app without a socket (`sb.client()`, `sb.transport`)
fake_clock            a FakeClock to pass as `clock=`; `fake_clock.advance(seconds)`
use_sandbox           `use_sandbox(sb)` points lmbatch (URL, token, limiter state) at `sb`

Shared helpers that are not fixtures live in tests/helpers.py. End-to-end suites carry
`@pytest.mark.slow`; `make test-fast` deselects them, `make test` (CI) runs everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from batch.sandbox import FakeClock, RunningSandbox, SandboxConfig, running_sandbox
from batch.sandbox import in_process_sandbox as start_in_process

# CI replays the same examples every run: a red run must come from a change, not a new draw
# (developers' runs keep exploring). No per-example deadline: this is a loaded 2-core box.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TEST_TOKEN = "test-token"

# Slow end-to-end tests in modules that do not (yet) carry the marker themselves; each should
# move into its module as `@pytest.mark.slow` (or `pytestmark`) when that module is next edited.
_SLOW_ELSEWHERE = (  # whole campaigns end to end, a browser, a subprocess demo: `make test` runs
    "test_exactly_once.py::",  # fault runs against a sandbox over loopback, whole module
    "test_channels_sms.py::test_sms_campaign_runs_tracks_and_reports",
    "test_channels_signature.py::test_signature_campaign_runs_tracks_and_downloads",
    "test_channels_signature.py::test_a_late_request_that_never_took_effect_is_proven_absent",
    "test_track.py::test_listing_spares_detail_calls",
    "test_track.py::test_tracking_while_the_campaign_is_still_sending",
    "test_report.py::test_report_reads_at_800_and_1280_px",
    "test_progress.py::test_the_demo_under_a_pipe_ends_every_line_with_a_newline",
    "test_init.py::test_the_scaffold_rehearses_as_is",
    "test_rehearse.py::test_rehearse_prints_where_the_report_is",
    "test_settings.py::test_the_demo_points_its_settings_at_the_sandbox",
    "test_runner.py::test_personal_campaign_is_sent_once_and_recorded",
    "test_runner.py::test_resume_after_stop_sends_nothing_twice",
    "test_ledger.py::test_any_history_survives_reopening",
    "test_scheduled_runs.py::test_three_years_of_firings_send_every_month_once_inside_its_window",
    "test_report.py::test_report_renders_in_chromium",
    "test_channels_signature.py::test_signers_from_a_list_template",
    "test_documents_e2e.py::test_an_email_campaign_sends_each_row_its_own_generated_letter",
    "test_documents.py::test_two_processes_render_byte_identical_pdfs",
    "test_sandbox_api.py::test_concurrent_sends_and_log_reads_stay_consistent",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow end-to-end tests listed in _SLOW_ELSEWHERE."""
    for item in items:
        if item.nodeid.removeprefix("tests/").startswith(_SLOW_ELSEWHERE):
            item.add_marker(pytest.mark.slow)


SandboxFactory = Callable[..., RunningSandbox]
UseSandbox = Callable[[RunningSandbox], RunningSandbox]


def fast_config(**overrides: Any) -> SandboxConfig:
    """A sandbox config scaled for tests: a 2 s window and sub-second status progression."""
    base = SandboxConfig(
        token=TEST_TOKEN,
        rate_limit=10,
        rate_window=2.0,
        delivered_after=0.2,
        read_after=0.5,
        slow_seconds=0.5,
    )
    return replace(base, **overrides)


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def sandbox_factory() -> Iterator[SandboxFactory]:
    """Start real sandboxes with `fast_config` plus overrides; each stops when the test ends."""
    with ExitStack() as stack:

        def start(config: SandboxConfig | None = None, **overrides: Any) -> RunningSandbox:
            chosen = (
                replace(config, **overrides) if config is not None else fast_config(**overrides)
            )
            return stack.enter_context(running_sandbox(chosen))

        yield start


@pytest.fixture
def use_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> UseSandbox:
    """Point lmbatch at a sandbox: its URL, its token, and a limiter state of the test's own."""

    def point(sandbox: RunningSandbox) -> RunningSandbox:
        monkeypatch.setenv("LEGALLYMAIL_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("LEGALLYMAIL_TOKEN", sandbox.token)
        monkeypatch.setenv("LMBATCH_STATE_DIR", str(tmp_path / "state"))
        return sandbox

    return point


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> RunningSandbox:
    """A real sandbox on 127.0.0.1 with the fast test config."""
    return sandbox_factory()


@pytest.fixture
def in_process_sandbox() -> Iterator[SandboxFactory]:
    """Build socket-less sandboxes (same config rules as `sandbox_factory`)."""
    with ExitStack() as stack:

        def start(config: SandboxConfig | None = None, **overrides: Any) -> RunningSandbox:
            chosen = (
                replace(config, **overrides) if config is not None else fast_config(**overrides)
            )
            return stack.enter_context(start_in_process(chosen))

        yield start
