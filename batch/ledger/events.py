"""The ledger's transitions: what each event of a send sets on its rows (batch.ledger.core
keeps them durable). Conditional transitions are resolved here, when the event is recorded,
so the journal holds absolute values and replays idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from batch.errors import LedgerError
from batch.ledger.schema import (
    FAILED,
    IN_DOUBT,
    PENDING,
    SKIPPED,
    UNSENT,
    WITHDRAWN,
    Entry,
    Outcome,
    Row,
    normalise,
    to_utc,
)


class LedgerEvents:
    """The events a send goes through; `Ledger` supplies the reading and the recording."""

    def _now(self) -> datetime:
        raise NotImplementedError

    def _current(self, key: str, pending: dict[str, Row]) -> Row | None:
        raise NotImplementedError

    def _expect_in_doubt(self, key: str, request_id: str, pending: dict[str, Row]) -> None:
        raise NotImplementedError

    def _checked(self, column: str, value: Any) -> Any:
        raise NotImplementedError

    def _record(self, kind: str, rows: dict[str, Row], **payload: Any) -> None:
        raise NotImplementedError

    def intent(
        self, request_id: str, entries: Sequence[Entry], probe: dict[str, Any] | None = None
    ) -> None:
        """Record, durably, that `entries` are about to be sent under `request_id`.

        `probe` (what a look-up of this send needs, batch.reconcile) is kept with each row.
        """
        now = self._now()
        rows: dict[str, Row] = {}
        for entry in entries:
            current = self._current(entry.key, rows)
            status = current["status"] if current else None
            if status not in (None, PENDING):
                raise LedgerError(
                    f"key {entry.key}: status is {status}; refusing a new send intent",
                    hint="in_doubt rows must be reconciled (not_sent) before a resend",
                )
            fields: Row = {
                "address": entry.address,
                "name": entry.name,
                "content_hash": entry.content_hash,
                "status": IN_DOUBT,
                "attempts": (current["attempts"] or 0) + 1 if current else 1,
                "request_id": request_id,
                "error_details": None,
                "probe": normalise("probe", probe),
                "updated_at": now,
            }
            if current is None:
                fields["queued_at"] = now
            rows[entry.key] = fields
        self._record("intent", rows, request_id=request_id)

    def sent(
        self,
        request_id: str,
        *,
        parent_tracking_id: str | None,
        outcomes: Sequence[Outcome],
        sent_at: datetime | None,
    ) -> None:
        """Record what the API answered for the send `request_id`."""
        now = self._now()
        when = to_utc(sent_at) if sent_at is not None else now
        rows: dict[str, Row] = {}
        for outcome in outcomes:
            self._expect_in_doubt(outcome.key, request_id, rows)
            if outcome.status == PENDING:
                # That would make a processed send look unsent: plan() resends pending rows.
                # (in_doubt is a valid outcome: the answer did not name the recipient.)
                raise LedgerError(
                    f"key {outcome.key}: outcome status {outcome.status} is not an outcome",
                    hint="use not_sent() for a send that surely did not happen",
                )
            fields: Row = {
                "status": outcome.status,
                "tracking_id": outcome.tracking_id,
                "parent_tracking_id": parent_tracking_id,
                "error_details": outcome.error_details,
                "updated_at": now,
            }
            if outcome.status not in (FAILED, IN_DOUBT):
                fields["sent_at"] = when
            rows[outcome.key] = fields
        self._record("sent", rows, request_id=request_id)

    def not_sent(self, request_id: str, keys: Sequence[str], reason: str) -> None:
        """Record that the send `request_id` surely did not happen: back to pending."""
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            self._expect_in_doubt(key, request_id, rows)
            rows[key] = {"status": PENDING, "error_details": reason, "updated_at": now}
        self._record("not_sent", rows, request_id=request_id, reason=reason)

    def fail(self, keys: Sequence[str], reason: str) -> None:
        """Record a permanent failure (the API refused the request) for `keys`."""
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            current = self._current(key, rows)
            status = current["status"] if current else None
            if status not in (None, IN_DOUBT, *UNSENT):
                # Marking a sent row failed would let --retry-failed send it twice.
                raise LedgerError(f"key {key}: status is {status}; refusing to mark it failed")
            rows[key] = {"status": FAILED, "error_details": reason, "updated_at": now}
            if current is None:
                rows[key] |= {"queued_at": now, "attempts": 0}
        self._record("fail", rows, reason=reason)

    def skip(self, entries: Sequence[Entry], reason: str) -> None:
        """Record invalid rows as skipped; rows that may have been sent stay as they are."""
        now = self._now()
        rows: dict[str, Row] = {}
        for entry in entries:
            current = self._current(entry.key, rows)
            if current is not None and current["status"] not in UNSENT:
                continue
            known = {
                "address": entry.address,
                "name": entry.name,
                "content_hash": entry.content_hash,
            }
            # An invalid row may lack them: blanks must not erase what the ledger holds.
            rows[entry.key] = {c: v for c, v in known.items() if v} | {
                "status": SKIPPED,
                "error_details": reason,
                "updated_at": now,
            }
            if current is None:
                rows[entry.key] |= {"queued_at": now, "attempts": 0}
        self._record("skip", rows, reason=reason)

    def update(self, key: str, **fields: Any) -> None:
        """Set tracking fields of `key` (known columns or new ones); dicts/lists become JSON."""
        if self._current(key, {}) is None:
            raise LedgerError(f"update(): key {key} is not in the ledger")
        if "key" in fields:
            raise LedgerError("update(): the key of a row cannot change")
        if fields.get("status") in (PENDING, IN_DOUBT):
            # Those transitions decide whether a row is (re)sent: only the runner's events
            # (not_sent, requeue, intent) may make them.
            raise LedgerError(f"update(): status {fields['status']} is set by the runner only")
        values = {column: self._checked(column, value) for column, value in fields.items()}
        values.setdefault("updated_at", self._now())
        self._record("update", {key: values})

    def requeue(self, keys: Sequence[str]) -> None:
        """Put failed, skipped or withdrawn `keys` back to pending; other keys stay as they are.

        (A withdrawn row is requeued when its key is back in the dataset; the caller checks
        it was never sent: see batch.forecast.)
        """
        now = self._now()
        rows: dict[str, Row] = {}
        for key in keys:
            current = self._current(key, rows)
            if current is not None and current["status"] in (FAILED, SKIPPED, WITHDRAWN):
                rows[key] = {"status": PENDING, "updated_at": now}
        self._record("requeue", rows)
