"""Every error lmbatch raises on purpose, and the exit code each maps to.

    BatchError                        exit 1: anything lmbatch reports itself
    ├── InputError                    exit 2: the job cannot run as written
    │   ├── JobFileError              job file: YAML, unknown keys, bad values (file:line key.path)
    │   ├── DatasetError              dataset: missing file, unreadable, no such key column
    │   │   └── DatasetProblems       broken records, duplicate or empty keys, with the row
    │   │                             errors of every other record (batch.dataset.problems)
    │   └── RowErrors                 rows that fail to render or validate (all of them at once)
    │       └── RowProblems           a row re-rendered at send time fails now (batch.render)
    ├── ApiError                      the LegallyMail API said no or could not be reached
    │   ├── NotProcessed              surely not processed: safe to retry as is
    │   │   ├── RateLimited           429
    │   │   └── Unreachable           connection refused, connect timeout, pool timeout
    │   ├── MaybeProcessed            read timeout, connection dropped after the request, 5xx:
    │   │                             the send may exist; reconcile before any retry
    │   ├── PermanentApiError         400, other 4xx: this request is wrong, retrying cannot help
    │   ├── ConfigurationError        a send answered 3xx, 404 or 405: the base URL is wrong
    │   │                             (exit 1; the rows stay pending)
    │   └── StopRun                   the run must stop, the ledger stays resumable (exit 3)
    │       ├── AuthError             401: token missing or refused (exit 1)
    │       └── CreditsExhausted      403 / not enough remaining credits (exit 3)
    ├── LedgerError                   the ledger or journal cannot be read or written
    ├── LockHeld                      another run holds the campaign's lock (exit 4)
    └── WorkPending                   stopped with work left: interrupted, outside window (exit 3)
        └── NothingSent               status/track/certificates/report before the first send

A run that finished with nothing left to send but with rows failed, bounced or skipped exits
5 (EXIT_PROBLEMS): done, and not a success to file away; no exception carries it.

Third-party errors are converted where they enter (`raise … from err`) and carry their place:
`jobs/rent.yaml:12 message.subject: …`, `row 41 (key C-1009): …`. No message ever holds the
API token.

Messages stay readable: a cell, a key or a server answer can be megabytes long, so a
RowError quotes at most `MAX_FIELD_CHARS` of its key and message, and any BatchError's
message is cut to `MAX_MESSAGE_CHARS` (`shorten` says how much was left out).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_PENDING = 3
EXIT_LOCKED = 4
EXIT_PROBLEMS = 5  # done, but rows failed, bounced or were skipped: look at them

MAX_MESSAGE_CHARS = 20_000  # a page of problems; more is never read, and can be gigabytes
MAX_FIELD_CHARS = 300  # one key or one row's message within a list of problems


def shorten(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


class BatchError(Exception):
    """Root of every error lmbatch reports; `hint` says what to do next."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = shorten(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else shorten(hint, MAX_FIELD_CHARS * 4)

    def __str__(self) -> str:
        return self.message


class InputError(BatchError):
    """The job cannot run as written; nothing was sent."""

    exit_code = EXIT_INVALID


class JobFileError(InputError):
    """A problem in the job file, located as `path:line key.path: message`."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path, self.line, self.key = path, line, key
        place = path or ""
        if path and line:
            place = f"{path}:{line}"
        prefix = " ".join(p for p in (place, key) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint=hint)


class DatasetError(InputError):
    """A problem in the recipient dataset (missing file, malformed line, duplicate keys)."""


@dataclass(frozen=True)
class RowError:
    """One row that cannot be sent: its place and why."""

    row: int
    key: str
    field: str
    message: str

    def __str__(self) -> str:
        key, message = shorten(self.key, MAX_FIELD_CHARS), shorten(self.message, MAX_FIELD_CHARS)
        where = f"row {self.row} (key {key})" if self.key else f"row {self.row}"
        return f"{where} {self.field}: {message}" if self.field else f"{where}: {message}"


class RowErrors(InputError):
    """Rows that fail validation, all reported together before anything is sent.

    Each row is named once, with all its reasons. A reason shared word for word by several
    rows (a column no row has, a fixed attachment outside the folder) is a mistake in the job,
    not in the data: it is said once, with the number of rows it affects. `--skip-invalid` is
    suggested only when some row would still be sent (`valid_rows` > 0, when known).
    """

    def __init__(
        self,
        errors: list[RowError],
        *,
        source: str = "",
        limit: int = 50,
        valid_rows: int | None = None,
    ) -> None:
        self.errors = errors
        self.valid_rows = valid_rows
        if valid_rows == 0:
            hint = "no row is valid: fix the job file or the data, then validate again"
        else:
            hint = "fix the rows, or pass --skip-invalid to record them as skipped"
        super().__init__(format_row_errors(errors, source=source, limit=limit), hint=hint)


def format_row_errors(errors: list[RowError], *, source: str = "", limit: int = 50) -> str:
    """`N row error(s) on M row(s):`, shared reasons once with their row count, then each row
    once with all its reasons."""
    prefix = f"{source}: " if source else ""
    by_reason: dict[tuple[str, str], list[int]] = {}
    for e in errors:
        by_reason.setdefault((e.field, shorten(e.message, MAX_FIELD_CHARS)), []).append(e.row)
    shared = {reason for reason, rows in by_reason.items() if len(rows) > 1}
    lines = []
    for (field, message), rows in by_reason.items():
        if (field, message) in shared:
            listed = ", ".join(str(r) for r in rows[:10]) + (", …" if len(rows) > 10 else "")
            place = f"{field}: " if field else ""
            lines.append(f"{prefix}{place}{message} (on {len(rows)} rows: {listed})")
    per_row: dict[int, list[RowError]] = {}
    for e in errors:
        if (e.field, shorten(e.message, MAX_FIELD_CHARS)) not in shared:
            per_row.setdefault(e.row, []).append(e)
    for row_errors in per_row.values():
        first = row_errors[0]
        key = shorten(first.key, MAX_FIELD_CHARS)
        where = f"row {first.row} (key {key})" if first.key else f"row {first.row}"
        reasons = "; ".join(
            f"{e.field}: {shorten(e.message, MAX_FIELD_CHARS)}"
            if e.field
            else shorten(e.message, MAX_FIELD_CHARS)
            for e in row_errors
        )
        lines.append(f"{prefix}{where} {reasons}")
    shown = "\n".join(f"  {line}" for line in lines[:limit])
    more = f"\n  … and {len(lines) - limit} more" if len(lines) > limit else ""
    count = len({e.row for e in errors})
    return f"{len(errors)} row error(s) on {count} row(s):\n{shown}{more}"


class ApiError(BatchError):
    """The LegallyMail API refused a request or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.endpoint = endpoint
        super().__init__(message, hint=hint)


class NotProcessed(ApiError):
    """The request surely did not take effect: retrying it cannot duplicate anything."""


class RateLimited(NotProcessed):
    """429: the request was refused by the rate limit."""


class Unreachable(NotProcessed):
    """The connection was never made (refused, connect timeout, no free connection)."""


class MaybeProcessed(ApiError):
    """The request may have taken effect (lost response, 5xx): reconcile before retrying."""


class PermanentApiError(ApiError):
    """400 and other 4xx: the request is wrong and retrying cannot help."""


class ConfigurationError(ApiError):
    """A send endpoint answered 3xx, 404 or 405: lmbatch is not talking to the API's send.

    A wrong `api.base_url` path or a proxy answers every request the same way: marking each
    recipient failed would burn the whole campaign on one setting. The run stops (exit 1)
    and the rows stay pending. (A 404 on a look-up, `GET /api/email?tracking_id=…`, means
    an unknown id and stays a PermanentApiError.)
    """


class StopRun(ApiError):
    """The run cannot go on; what is not sent stays pending and resumable."""

    exit_code = EXIT_PENDING


class AuthError(StopRun):
    """401: the token is missing or refused."""

    exit_code = EXIT_ERROR


class CreditsExhausted(StopRun):
    """403 or a credit check: the account cannot pay for what remains."""


class LedgerError(BatchError):
    """The ledger or its journal cannot be read or written."""


class LockHeld(BatchError):
    """Another process is running this campaign."""

    exit_code = EXIT_LOCKED


class WorkPending(BatchError):
    """The run stopped on purpose with work left (interrupted, outside the send window)."""

    exit_code = EXIT_PENDING


class NothingSent(WorkPending):
    """A command that reads the ledger found none: the campaign has not started (exit 3).

    `status`, `report`, `track` and `certificates` say the same thing then, with one code:
    the whole campaign is work left, not an error.
    """

    def __init__(self, folder: object, job: object) -> None:
        super().__init__(
            f"nothing sent yet: no ledger in {folder}",
            hint=f"validate and send with `lmbatch run {job}` first",
        )
