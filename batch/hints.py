"""The commands lmbatch prints for the operator to type: they must work as printed.

A resume hint that drops a flag changes what the next run sends (without `--skip-invalid`
it exits 2; without `--campaign` a dated campaign name finds a new, empty ledger), so the
hint is built from the options the run was given, quoted for a POSIX shell.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any


def resume_command(job: Path, period: str | None, options: Any, loaded: Any) -> str:
    """The command that resumes this run: every flag that changes what is sent, repeated.

    An unscheduled job whose campaign name is a template is pinned with `--campaign`, so the
    command still finds its ledger when the name would render differently tomorrow.
    """
    words = ["lmbatch", "run", str(job)]
    if period:
        words += ["--period", period]
    spec = getattr(loaded, "spec", None)
    if spec is not None and spec.schedule is None and ("{" in spec.campaign):
        words += ["--campaign", loaded.campaign]
    if options is not None:
        for flag, on in (
            ("--skip-invalid", options.skip_invalid),
            ("--retry-failed", options.retry_failed),
            ("--allow-partial", options.allow_partial),
            ("--accept-key-change", options.accept_key_change),
            ("--accept-new-version", options.accept_new_version),
            ("--exit-outside-window", options.exit_outside_window),
        ):
            if on:
                words.append(flag)
    return shlex.join(words)
