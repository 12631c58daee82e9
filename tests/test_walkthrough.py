"""The README's walkthrough, run as written: every `lmbatch` command in it, in its order,
against a loopback sandbox, from a fresh folder (the README's companion to test_cli.py's
"every command is documented")."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from batch.cli import main
from batch.sandbox import RunningSandbox

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Where the walkthrough stops with work left on purpose.
EXPECTED_EXIT = {"--limit": 3}
ORDER = [
    "init", "validate", "preview", "rehearse", "send-test", "run", "run", "status", "track",
    "certificates", "report",
]  # fmt: skip


def walkthrough() -> list[list[str]]:
    """The walkthrough block's lmbatch commands, comments dropped, split as a shell would."""
    section = README[README.index("## Walkthrough, in the order you work") :]
    block = section[section.index("```sh") + 5 : section.index("```", section.index("```sh") + 5)]
    commands = []
    for line in block.splitlines():
        code = re.sub(r"\s+#.*$", "", line).strip()
        if code.startswith("lmbatch "):
            commands.append(shlex.split(code)[1:])
    return commands


def test_the_walkthrough_follows_the_order_a_new_user_works_in() -> None:
    assert [args[0] for args in walkthrough()] == ORDER


@pytest.mark.slow  # a rehearsal and a campaign against a loopback sandbox
def test_every_walkthrough_command_runs(
    sandbox: RunningSandbox,
    use_sandbox: Callable[[RunningSandbox], RunningSandbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_sandbox(sandbox)
    monkeypatch.chdir(tmp_path)
    for args in walkthrough():
        result = CliRunner().invoke(main, args, input="", catch_exceptions=False)
        expected = next((code for flag, code in EXPECTED_EXIT.items() if flag in args), 0)
        assert result.exit_code == expected, f"lmbatch {shlex.join(args)}:\n{result.output}"
    cancel = CliRunner().invoke(
        main, ["cancel", "my-campaign/job.yaml", "--note", "settled out of court"]
    )
    assert cancel.exit_code == 0, cancel.output
    sent = [e["recipient"] for e in sandbox.state.log()]
    assert sent[0] == "you@example.org" and len(sent) == 6  # the test, then each row once
    assert list((tmp_path / "my-campaign" / "output").glob("*/report.html"))
