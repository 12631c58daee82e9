"""What a run will do, decided once: the same rules for `validate`, `run --dry-run` and `run`.

A prediction that differs from the run is a promise broken in the costly direction, so the
send plan is one pure function of (the ledger, the dataset as it is now, the run's flags).
`forecast` computes it; the dry run reports it; the real run refuses what it refuses, applies
its transitions to the ledger (`apply`) and then plans exactly the rows it named.

Besides the rows still pending (or never queued), a run sends:
- rows skipped as invalid earlier that validate now (the user fixed them);
- with `--retry-failed`: rows the API refused, and bounced rows whose address was corrected
  in the dataset (never to an address the row bounced at: a bounced row whose address is
  unchanged is left as it is and named);
- rows withdrawn earlier whose key is back in the dataset.

It refuses to start (exit 2, nothing sent) when:
- the dataset's identity changed (issue: a key column removed, `007` read back as `7`): a
  planned address is already sent under a key the dataset no longer has, or most of the
  ledger's keys are gone while new keys appeared. `--accept-key-change` proceeds;
- rows were sent with different content (or to another address) than the current render
  gives them, and rows remain to send: the campaign would go out in two versions.
  `--accept-new-version` proceeds.

Pending rows whose key left the dataset (deleted, filtered out by `where`) are recorded
`withdrawn`, so the campaign can end with exit 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from batch import errors
from batch.ledger import (
    BOUNCED,
    FAILED,
    IN_DOUBT,
    PENDING,
    SKIPPED,
    UNSENT,
    WITHDRAWN,
    Ledger,
    decode_json_cell,
    retry_bounced,
    withdraw,
)

# Ledger columns the forecast reads.
COLUMNS = ("status", "address", "content_hash", "tracking_id", "bounced_addresses")
# A share of the ledger's keys gone from the dataset, with new keys in their place, above
# which the keys are taken to have changed meaning rather than rows to have been removed.
KEY_CHANGE_SHARE = 0.5
EXAMPLES = 5
WITHDRAWN_REASON = "withdrawn: the key is no longer in the dataset"
BOUNCED_BEFORE = "the dataset's address is one this row bounced at; correct it to send again"

_LEDGER_SCHEMA = {"key": pl.String(), **{c: pl.String() for c in COLUMNS}}


@dataclass(frozen=True)
class RunFlags:
    """The run options that change what is sent."""

    retry_failed: bool = False
    accept_key_change: bool = False
    accept_new_version: bool = False


@dataclass
class Forecast:
    """What a run with these flags will do to this ledger and dataset."""

    to_send: pl.DataFrame  # the scan's rows the run sends (key, address, content_hash, …)
    in_doubt: int = 0  # looked up first; each proven absent is sent as well
    requeue: list[str] = field(default_factory=list)  # skipped/failed/withdrawn → pending
    bounced_retry: dict[str, str] = field(default_factory=dict)  # key → corrected address
    bounced_unchanged: list[str] = field(default_factory=list)  # bounced, same address
    blocked: list[str] = field(default_factory=list)  # pending at an address that bounced
    withdraw: list[str] = field(default_factory=list)  # pending, key left the dataset
    withdrawn: int = 0  # rows already withdrawn (and not back)
    changed_sent: int = 0  # rows sent with other content than the current render
    key_problem: str | None = None  # why the dataset's keys look changed

    @property
    def versions_note(self) -> str | None:
        """ "12 sent with the earlier version; 30 pending get the new one", when it applies."""
        if not self.changed_sent:
            return None
        return (
            f"{self.changed_sent} sent with an earlier version of the message (template, cells "
            f"or address changed since); {self.to_send.height} still to send get the new one"
        )

    def notes(self) -> list[str]:
        """What the operator should know before (or while) this run sends."""
        out = []
        if self.versions_note:
            out.append(self.versions_note)
        if self.withdraw:
            out.append(
                f"{len(self.withdraw)} pending row(s) are no longer in the dataset and are "
                f"recorded withdrawn by the next run: {_sample(self.withdraw)}"
            )
        if self.bounced_retry:
            out.append(
                f"{len(self.bounced_retry)} bounced row(s) go to their corrected address: "
                f"{_sample(list(self.bounced_retry))}"
            )
        if self.bounced_unchanged:
            out.append(
                f"{len(self.bounced_unchanged)} bounced row(s) still have the address they "
                f"bounced at and are not sent: {_sample(self.bounced_unchanged)}"
            )
        if self.blocked:
            out.append(
                f"{len(self.blocked)} row(s) not sent: {BOUNCED_BEFORE}: {_sample(self.blocked)}"
            )
        if self.in_doubt:
            out.append(
                f"{self.in_doubt} row(s) in doubt are looked up first; any proven not sent "
                "is sent as well"
            )
        return out

    def check(self, flags: RunFlags) -> None:
        """Refuse (exit 2) what needs a deliberate flag; nothing has been sent yet."""
        if self.key_problem and not flags.accept_key_change:
            raise errors.InputError(
                f"the dataset's keys changed: {self.key_problem}; sending now would send "
                "again to recipients the ledger holds under their old keys",
                hint="restore the key column (`dataset.key`, text cells such as 007 kept as "
                "text), or, if the new keys are right and those recipients must get a second "
                "message, run with --accept-key-change",
            )
        if self.changed_sent and self.to_send.height and not flags.accept_new_version:
            raise errors.InputError(
                f"two versions: {self.versions_note}",
                hint="restore the template and dataset the campaign was sent with, or send "
                "the new version to the rest deliberately with --accept-new-version",
            )

    def apply(self, ledger: Ledger) -> None:
        """Record this forecast's transitions, so that `ledger.plan` gives `to_send`."""
        ledger.requeue(self.requeue)
        retry_bounced(ledger, self.bounced_retry)
        if self.withdraw:
            withdraw(ledger, self.withdraw, WITHDRAWN_REASON)
        if self.blocked:
            ledger.fail(self.blocked, BOUNCED_BEFORE)


class LedgerView(Protocol):
    """What the forecast reads of a ledger: the open `Ledger`, or a frame (`FrameView`)."""

    def frame(self, *columns: str) -> pl.DataFrame:
        """Key and `columns`, sorted by key (hot columns from memory, for a Ledger)."""
        ...

    def status_of(self, keys: pl.Series) -> pl.Series:
        """Per key: its status, null where the ledger does not hold it."""
        ...

    def query(
        self, columns: list[str], then: Callable[[pl.LazyFrame], pl.LazyFrame]
    ) -> pl.DataFrame:
        """`columns` of every row, `then` applied lazily, computed."""
        ...


class FrameView:
    """A ledger already read into a frame (`read_ledger`: dry runs, `status`)."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame = _conform(frame)

    def frame(self, *columns: str) -> pl.DataFrame:
        return self._frame.select("key", *columns)

    def status_of(self, keys: pl.Series) -> pl.Series:
        asked = pl.DataFrame({"key": keys.cast(pl.String)})
        found = asked.join(self._frame.select("key", "status"), on="key", how="left")
        return found.select(pl.col("status")).to_series()

    def query(
        self, columns: list[str], then: Callable[[pl.LazyFrame], pl.LazyFrame]
    ) -> pl.DataFrame:
        return then(self._frame.lazy().select(columns)).collect()


def forecast(
    ledger: LedgerView | pl.DataFrame,
    ok: pl.DataFrame,
    dataset_keys: pl.Series,
    flags: RunFlags,
    *,
    versions: bool = True,
) -> Forecast:
    """What a run does, from the ledger, the scan's valid rows and every key the dataset
    holds now (valid or not). `versions=False` counts rows sent with other content only when
    there is something to send (the run: the count decides a refusal, nothing else).

    Reads little of a large ledger: its hot columns (key, status) from memory, full rows only
    of the few rows in a status a rule acts on, and one lazy pass for the versions.
    """
    view = FrameView(ledger) if isinstance(ledger, pl.DataFrame) else ledger
    status = pl.col("status")
    hot = view.frame("status")
    ok_keys = ok["key"].cast(pl.String)
    cand = ok.select(pl.col("key").cast(pl.String), "address")

    acted_on = [SKIPPED, WITHDRAWN, BOUNCED] + ([FAILED] if flags.retry_failed else [])
    keys = hot.filter(status.is_in(acted_on))["key"]
    bounced_before = view.query(
        ["key", "bounced_addresses"],
        lambda f: f.filter(pl.col("bounced_addresses").is_not_null()).select("key"),
    )["key"]
    keys = pl.concat([keys, bounced_before]).unique()
    special = (
        view.query(
            ["key", "status", "address", "tracking_id", "bounced_addresses"],
            lambda f: f.filter(pl.col("key").is_in(keys.implode())),
        )
        if keys.len()
        else pl.DataFrame(schema=_LEDGER_SCHEMA)
    )
    # The few rows a rule acts on, found among the dataset's (not a join of every key).
    cand = cand.filter(pl.col("key").is_in(special["key"].implode()))
    joined = cand.join(special, on="key", how="inner", suffix="_led")

    requeue = joined.filter(
        (status == SKIPPED)
        | ((status == WITHDRAWN) & pl.col("tracking_id").is_null())
        | (status == FAILED)
    )["key"].to_list()
    bounced_retry: dict[str, str] = {}
    bounced_unchanged: list[str] = []
    blocked: list[str] = []
    for key, address, st, old, cell in (
        joined.filter(status.is_in([BOUNCED, PENDING]))
        .select("key", "address", "status", "address_led", "bounced_addresses")
        .iter_rows()
    ):
        before = _addresses(cell)
        if st == PENDING:
            if address in before:
                blocked.append(key)
        elif flags.retry_failed and (address == old or address in before):
            bounced_unchanged.append(key)
        elif flags.retry_failed:
            bounced_retry[key] = address

    extra = set(requeue) | set(bounced_retry)
    # One binary search per row in the ledger's index (as `Ledger.plan`): no hash table; a
    # slice of the keys at a time, so only one slice's statuses are ever held.
    sendable, found = _sendable(view, ok_keys)
    if extra:
        sendable |= ok_keys.is_in(pl.Series(list(extra), dtype=pl.String()).implode())
    if blocked:
        sendable &= ~ok_keys.is_in(pl.Series(blocked, dtype=pl.String()).implode())
    to_send = ok.filter(sendable)
    del sendable
    # Keys are unique on both sides: what the dataset holds of the ledger is a count (`found`),
    # and the ledger's keys it lacks need a join only when there are some.

    changed_sent = 0
    if versions or to_send.height:
        changed_sent = _changed_sent(view, ok, hot["key"], exclude=extra)

    all_keys = dataset_keys.cast(pl.String)
    if all_keys.len() > ok.height:  # invalid rows: keys too
        invalid = all_keys.filter(~all_keys.is_in(ok_keys.implode()))
        found += int(view.status_of(invalid).is_not_null().sum())
    present = pl.DataFrame({"key": all_keys})
    gone = hot.join(present, on="key", how="anti") if hot.height > found else hot.clear()
    withdraw = gone.filter(status == PENDING)["key"].to_list()
    coming_back = set(special.filter(status == WITHDRAWN)["key"]) & set(requeue)
    withdrawn = hot.filter(status == WITHDRAWN).height - len(coming_back)
    return Forecast(
        to_send=to_send,
        in_doubt=hot.filter(status == IN_DOUBT).height,
        requeue=requeue,
        bounced_retry=bounced_retry,
        bounced_unchanged=bounced_unchanged,
        blocked=blocked,
        withdraw=withdraw,
        withdrawn=withdrawn + len(withdraw),
        changed_sent=changed_sent,
        key_problem=_key_problem(view, hot, gone, present, to_send, new=all_keys.len() - found),
    )


def _sendable(view: LedgerView, keys: pl.Series) -> tuple[pl.Series, int]:
    """Per key: whether the ledger lacks it or holds it pending; and how many it holds."""
    parts, found = [], 0
    for start in range(0, keys.len(), _SLICE):
        held = view.status_of(keys.slice(start, _SLICE))
        parts.append(held.is_null() | (held == PENDING))
        found += int(held.is_not_null().sum())
    if not parts:
        return pl.Series(values=[], dtype=pl.Boolean()), 0
    return pl.concat(parts), found


_SLICE = 131_072  # dataset keys looked up at once


def _changed_sent(
    view: LedgerView, ok: pl.DataFrame, ledger_keys: pl.Series, *, exclude: set[str]
) -> int:
    """Rows sent (and not about to be sent again) whose content or address the current render
    changes; rows recorded without their content are not counted.

    Each side is reduced to key + one 64-bit digest of (content hash, address) before the join,
    a key range at a time: the checkpoint is sorted by key, so each range decodes only its own
    row groups, and a 900k-row ledger is compared without holding its text columns at once.
    The ranges are cut at every n-th of `ledger_keys` (the ledger's keys, sorted).
    """
    status = pl.col("status")
    digest = pl.struct("content_hash", "address").hash(seed=0)
    keys = ok["key"].cast(pl.String)
    if exclude:
        keep = ~keys.is_in(pl.Series(list(exclude), dtype=pl.String()).implode())
        ok, keys = ok.filter(keep), keys.filter(keep)
    if not keys.len() or not ledger_keys.len():
        return 0
    if not ledger_keys.is_sorted():  # a frame handed in by a caller (FrameView)
        ledger_keys = ledger_keys.sort()
    # A dataset key below the ledger's first is in no range, and in no ledger row either.
    step = max(1, -(-ledger_keys.len() // _RANGES))
    bounds = [ledger_keys[i] for i in range(0, ledger_keys.len(), step)]
    total = 0
    for i, low in enumerate(bounds):
        high = bounds[i + 1] if i + 1 < len(bounds) else None
        key = pl.col("key")
        in_range = (
            key >= pl.lit(low) if high is None else (key >= pl.lit(low)) & (key < pl.lit(high))
        )
        now = ok.lazy().select(key.cast(pl.String), __now=digest).filter(in_range)

        def changed(
            frame: pl.LazyFrame, now: pl.LazyFrame = now, in_range: pl.Expr = in_range
        ) -> pl.LazyFrame:
            return (
                frame.filter(in_range)
                .filter(
                    ~status.is_in([*UNSENT, IN_DOUBT])
                    & status.is_not_null()
                    & pl.col("content_hash").is_not_null()
                    & (pl.col("content_hash") != "")
                )
                .select("key", __then=digest)
                .join(now, on="key", how="inner")
                .filter(pl.col("__then") != pl.col("__now"))
                .select(pl.len())
            )

        counted = view.query(["key", "status", "content_hash", "address"], changed)
        total += int(counted.item())
    return total


_RANGES = 16  # key ranges the versions check is done in (memory: a sixteenth at a time)


def _key_problem(
    view: LedgerView,
    hot: pl.DataFrame,
    gone: pl.DataFrame,
    present: pl.DataFrame,
    to_send: pl.DataFrame,
    *,
    new: int,
) -> str | None:
    """Why the keys look changed, with examples; None when they do not."""
    sent_like = ~pl.col("status").is_in([*UNSENT, IN_DOUBT]) & pl.col("status").is_not_null()
    orphan_keys = gone.filter(sent_like)["key"]
    if orphan_keys.len() and to_send.height:
        orphans = view.query(
            ["key", "address"],
            lambda f: f.filter(pl.col("key").is_in(orphan_keys.implode())),
        ).select("address", old_key="key")
        reused = to_send.select("key", "address").join(
            orphans.filter(pl.col("address").is_not_null()), on="address", how="inner"
        )
        if reused.height:
            examples = ", ".join(
                f"{a} (sent as {o}, now {k})" for k, a, o in reused.head(EXAMPLES).iter_rows()
            )
            return (
                f"{reused.height} address(es) to send were already sent under another key: "
                f"{examples}"
            )
    counted = hot.filter(pl.col("status") != WITHDRAWN).height
    missing = gone.filter(pl.col("status") != WITHDRAWN)
    if counted and new > 0 and missing.height / counted >= KEY_CHANGE_SHARE:
        new_keys = present.join(hot.select("key"), on="key", how="anti")["key"].to_list()
        return (
            f"{missing.height} of the ledger's {counted} keys are not in the dataset "
            f"(e.g. {_sample(missing['key'].to_list())}) and {new} new keys appeared "
            f"(e.g. {_sample(new_keys)})"
        )
    return None


def _conform(ledger: pl.DataFrame) -> pl.DataFrame:
    if "key" not in ledger.columns:
        return pl.DataFrame(schema=_LEDGER_SCHEMA)
    return ledger.select(
        pl.col(c).cast(pl.String) if c in ledger.columns else pl.lit(None, pl.String).alias(c)
        for c in _LEDGER_SCHEMA
    )


def _addresses(cell: object) -> list[str]:
    value = decode_json_cell(cell)
    return [str(a) for a in value] if isinstance(value, list) else []


def _sample(keys: list[str]) -> str:
    more = f" and {len(keys) - EXAMPLES} more" if len(keys) > EXAMPLES else ""
    return ", ".join(keys[:EXAMPLES]) + more
