"""What lmbatch takes from its environment, read once at the edge and passed down.

The CLI builds one `Settings` per command (`Settings.from_env`) and hands it to whatever
builds an API client; nothing below reads `os.environ`, so a library caller, the demo or a
test states its configuration instead of mutating the process's environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batch.errors import AuthError

__all__ = ["DEFAULT_TOKEN_ENV", "Settings", "state_dir_from"]

DEFAULT_TOKEN_ENV = "LEGALLYMAIL_TOKEN"
BASE_URL_ENV = "LEGALLYMAIL_BASE_URL"


@dataclass(frozen=True)
class Settings:
    """The environment's part of a run's configuration (the job file holds the rest)."""

    token: str = ""  # the API token; "" when unset (building a client then fails, saying so)
    token_env: str = DEFAULT_TOKEN_ENV  # where the token came from, for error messages
    base_url: str | None = None  # overrides the job file's api.base_url (e.g. a sandbox)
    # The host-wide rate limiter's state: every lmbatch process of the host must agree on it.
    state_dir: Path = field(default_factory=lambda: state_dir_from({}))

    def __repr__(self) -> str:  # the token never appears in a log or a traceback
        shown = "set" if self.token else "unset"
        return (
            f"Settings(token=<{shown}>, token_env={self.token_env!r}, "
            f"base_url={self.base_url!r}, state_dir={self.state_dir!r})"
        )

    def require_token(self) -> str:
        """The token, or an AuthError naming the variable to set."""
        if not self.token:
            raise AuthError(
                f"no API token: the environment variable {self.token_env} is not set",
                hint=f"export {self.token_env}=... (the token from your LegallyMail panel)",
            )
        return self.token

    @classmethod
    def from_env(
        cls, token_env: str = DEFAULT_TOKEN_ENV, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read the token (from `token_env`, the job's api.token_env), LEGALLYMAIL_BASE_URL
        and the limiter's state folder from `environ` (default: the process's environment)."""
        env = os.environ if environ is None else environ
        return cls(
            token=env.get(token_env, "").strip(),
            token_env=token_env,
            base_url=env.get(BASE_URL_ENV) or None,
            state_dir=state_dir_from(env),
        )


def state_dir_from(env: Mapping[str, str]) -> Path:
    """$LMBATCH_STATE_DIR, else $XDG_STATE_HOME/lmbatch, else ~/.local/state/lmbatch."""
    if explicit := env.get("LMBATCH_STATE_DIR"):
        return Path(explicit)
    if xdg := env.get("XDG_STATE_HOME"):
        return Path(xdg) / "lmbatch"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "lmbatch"
