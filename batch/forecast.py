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

from dataclasses import dataclass, field

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


def forecast(
    ledger: pl.DataFrame,
    ok: pl.DataFrame,
    dataset_keys: pl.Series,
    flags: RunFlags,
) -> Forecast:
    """What a run does, from the ledger (`COLUMNS`), the scan's valid rows and every key the
    dataset holds now (valid or not)."""
    led = _conform(ledger)
    present = pl.DataFrame({"key": dataset_keys.cast(pl.String)}).unique()
    cand = ok.select("key", "address", "content_hash").with_columns(pl.col("key").cast(pl.String))
    joined = cand.join(led, on="key", how="left", suffix="_led")
    status = pl.col("status")

    requeue = joined.filter(
        (status == SKIPPED)
        | ((status == WITHDRAWN) & pl.col("tracking_id").is_null())
        | ((status == FAILED) & pl.lit(flags.retry_failed))
    )["key"].to_list()

    bounced_retry: dict[str, str] = {}
    bounced_unchanged: list[str] = []
    blocked: list[str] = []
    # Only bounced rows, and pending rows that bounced before: never a loop over every row.
    looked_at = (status == BOUNCED) | (
        (status == PENDING) & pl.col("bounced_addresses").is_not_null()
    )
    for key, address, st, old, cell in (
        joined.filter(looked_at & pl.col("address_led").is_not_null())
        .select("key", "address", "status", "address_led", "bounced_addresses")
        .iter_rows()
    ):
        before = _addresses(cell)
        if st == PENDING:
            if address in before:
                blocked.append(key)
            continue
        if not flags.retry_failed:
            continue
        if address == old or address in before:
            bounced_unchanged.append(key)
        else:
            bounced_retry[key] = address

    after = pl.DataFrame(
        {"key": requeue + list(bounced_retry)}, schema={"key": pl.String()}
    ).with_columns(__now=pl.lit(PENDING))
    now_status = (
        joined.join(after, on="key", how="left")
        .with_columns(status=pl.coalesce("__now", "status"))
        .drop("__now")
    )
    sendable = status.is_null() | (status == PENDING)
    to_send_keys = now_status.filter(sendable & ~pl.col("key").is_in(blocked))
    to_send = ok.join(to_send_keys.select("key"), on="key", how="semi", maintain_order="left")

    sent_like = ~status.is_in([*UNSENT, IN_DOUBT]) & status.is_not_null()
    changed_sent = now_status.filter(
        sent_like
        & pl.col("content_hash_led").is_not_null()
        & (pl.col("content_hash_led") != "")  # a row recorded without its content
        & (
            (pl.col("content_hash") != pl.col("content_hash_led"))
            | (pl.col("address") != pl.col("address_led"))
        ).fill_null(False)
    ).height

    gone = led.join(present, on="key", how="anti")
    withdraw = gone.filter(status == PENDING)["key"].to_list()
    back = set(requeue)
    withdrawn = sum(1 for k in led.filter(status == WITHDRAWN)["key"] if k not in back)
    return Forecast(
        to_send=to_send,
        in_doubt=led.filter(status == IN_DOUBT).height,
        requeue=requeue,
        bounced_retry=bounced_retry,
        bounced_unchanged=bounced_unchanged,
        blocked=blocked,
        withdraw=withdraw,
        withdrawn=withdrawn + len(withdraw),
        changed_sent=changed_sent,
        key_problem=_key_problem(led, gone, present, to_send),
    )


def _key_problem(
    led: pl.DataFrame, gone: pl.DataFrame, present: pl.DataFrame, to_send: pl.DataFrame
) -> str | None:
    """Why the keys look changed, with examples; None when they do not."""
    sent_like = ~pl.col("status").is_in([*UNSENT, IN_DOUBT]) & pl.col("status").is_not_null()
    orphans = gone.filter(sent_like & pl.col("address").is_not_null()).select(
        "address", old_key="key"
    )
    reused = to_send.select("key", "address").join(orphans, on="address", how="inner")
    if reused.height:
        examples = ", ".join(
            f"{a} (sent as {o}, now {k})" for k, a, o in reused.head(EXAMPLES).iter_rows()
        )
        return (
            f"{reused.height} address(es) to send were already sent under another key: {examples}"
        )
    counted = led.filter(pl.col("status") != WITHDRAWN)
    if counted.is_empty():
        return None
    missing = gone.filter(pl.col("status") != WITHDRAWN)
    new = present.join(led.select("key"), on="key", how="anti")
    if new.height and missing.height / counted.height >= KEY_CHANGE_SHARE:
        return (
            f"{missing.height} of the ledger's {counted.height} keys are not in the dataset "
            f"(e.g. {_sample(missing['key'].to_list())}) and {new.height} new keys appeared "
            f"(e.g. {_sample(new['key'].to_list())})"
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
