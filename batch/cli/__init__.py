"""The `lmbatch` command line: parse options, call one core function, map errors to exit codes.

Exit codes, shared by every command:
  0  done
  1  error (API refused the token, ledger unwritable, unexpected failure)
  2  the job or its input is invalid, or a deliberate flag is needed (nothing was sent)
  3  stopped with work pending (credits exhausted, interrupted, in doubt, outside the window,
     nothing sent yet)
  4  another run holds the campaign's lock
  5  done with problems: nothing left to send, but rows failed, bounced or were skipped
"""

from __future__ import annotations

from batch.cli import follow, send
from batch.cli.common import STOP_GRACE_SECONDS, WORKFLOW, console, main

# The commands register themselves on `main`; these names are what callers import.
run = send.run
__all__ = ["STOP_GRACE_SECONDS", "WORKFLOW", "console", "follow", "main", "run", "send"]
