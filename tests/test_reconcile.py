"""The look-up rules for a send whose answer was lost, against recorded API answers.

Each test scripts the API's answers (shaped as in the API documentation) behind an
httpx.MockTransport, so the real client parses them; nothing is sent anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from helpers import Unlimited

from batch.client import LegallyMailClient
from batch.errors import InputError
from batch.ledger import FAILED, IN_DOUBT, PENDING, SENT, Entry, Ledger, read_ledger
from batch.reconcile import (
    LISTING_LIMIT,
    Ownership,
    Probe,
    Verdict,
    newer_than_anchor,
    probe_from,
    probe_record,
    reconcile_email,
    reconcile_in_send,
    reconcile_signature,
    settle_by_hand,
    window_of,
)
from batch.registry import TrackingRegistry
from batch.server_clock import ServerClock

BASE = "https://legallymail.test"
SUBJECT = "Notice C-1001"


class Api:
    """Recorded answers by path (and tracking id / uuid); every request is kept."""

    def __init__(self) -> None:
        self.emails: list[dict[str, Any]] = []
        self.details: dict[str, dict[str, Any]] = {}
        self.signatures: list[dict[str, Any]] = []
        self.failing: set[str] = set()  # paths answered with a 500
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in self.failing:
            return httpx.Response(500, json={"success": False, "message": "server error"})
        if path == "/api/emails":
            limit = int(request.url.params["limit"])
            body = {"success": True, "count": len(self.emails[:limit]), "limit": limit}
            return httpx.Response(200, json=body | {"max_limit": 25, "emails": self.emails[:limit]})
        if path == "/api/email":
            found = self.details.get(request.url.params["tracking_id"])
            if found is None:
                return httpx.Response(404, json={"success": False, "message": "not found"})
            return httpx.Response(200, json={"success": True, "email": found})
        if path == "/api/signatures":
            limit = int(request.url.params["limit"])
            return httpx.Response(200, json={"success": True, "data": self.signatures[:limit]})
        return httpx.Response(404, json={"success": False, "message": f"no route {path}"})

    def calls(self, path: str) -> int:
        return sum(r.url.path == path for r in self.requests)


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[LegallyMailClient]:
    with LegallyMailClient(
        BASE,
        "token-123",
        limiter=Unlimited(),
        transport=httpx.MockTransport(api),
        attempts=1,
        sleep=lambda _: None,
    ) as built:
        yield built


def listed(n: int, tracking_id: str, **fields: Any) -> dict[str, Any]:
    """One `GET /api/emails` entry."""
    return {
        "id": n,
        "tracking_id": tracking_id,
        "recipient": "someone@example.com",
        "subject": "another campaign",
        "status": "sent",
        "sent_at": "2026-11-21 10:00:00",
        "is_multi_recipient": False,
        "recipient_count": 1,
    } | fields


def detail(tracking_id: str, *recipients: tuple[str, str, str]) -> dict[str, Any]:
    """One `GET /api/email` answer: (address, status, recipient tracking id) per recipient."""
    return {
        "tracking_id": tracking_id,
        "subject": SUBJECT,
        "recipients": [
            {"email": a, "status": s, "tracking_id": t, "error_details": None}
            for a, s, t in recipients
        ],
    }


def probe(*addresses: str, anchor: str | None = "T-ANCHOR", document: str = "") -> Probe:
    keys = tuple(f"K{i}" for i in range(1, len(addresses) + 1))
    return Probe(
        addresses=addresses, keys=keys, subject=SUBJECT, anchor=anchor, document_name=document
    )


# -- which listed sends count: the anchor ----------------------------------------------------


def test_only_sends_newer_than_the_anchor_are_candidates() -> None:
    listing = [listed(12, "T-12"), listed(11, "T-ANCHOR"), listed(10, "T-10")]
    newer, complete = newer_than_anchor(listing, "T-ANCHOR")
    assert [i["tracking_id"] for i in newer] == ["T-12"] and complete


def test_without_numeric_ids_the_documented_order_decides() -> None:
    listing = [{"tracking_id": "B"}, {"tracking_id": "ANCHOR"}, {"tracking_id": "A"}]
    newer, complete = newer_than_anchor(listing, "ANCHOR")
    assert newer == [{"tracking_id": "B"}] and complete


@pytest.mark.parametrize(("size", "complete"), [(3, True), (LISTING_LIMIT, False)])
def test_without_the_anchor_only_a_short_listing_is_the_whole_history(
    size: int, complete: bool
) -> None:
    listing = [listed(i, f"T-{i}") for i in range(size, 0, -1)]
    newer, whole = newer_than_anchor(listing, "T-GONE")
    assert len(newer) == size and whole is complete


# -- e-mail ---------------------------------------------------------------------------------


def test_a_lost_single_send_is_found_and_its_recipient_id_recorded(
    api: Api, client: LegallyMailClient
) -> None:
    api.emails = [
        listed(12, "T-NEW", recipient="ann@example.com", subject=SUBJECT),
        listed(11, "T-ANCHOR"),
    ]
    api.details["T-NEW"] = detail("T-NEW", ("ann@example.com", "sent", "R-1"))
    found = reconcile_email(client, probe("Ann@Example.com"), known_tracking_ids=set())
    assert found.verdict is Verdict.FOUND and found.parent_tracking_id == "T-NEW"
    assert [(o.key, o.status, o.tracking_id) for o in found.outcomes] == [("K1", SENT, "R-1")]


def test_a_lost_group_send_is_found_by_its_recipient_list(
    api: Api, client: LegallyMailClient
) -> None:
    group = {"recipient": "Multiple Recipients", "is_multi_recipient": True, "recipient_count": 2}
    api.emails = [listed(12, "T-GROUP", subject=SUBJECT, **group), listed(11, "T-ANCHOR")]
    api.details["T-GROUP"] = detail(
        "T-GROUP", ("ann@example.com", "sent", "R-1"), ("bob@example.com", "failed", "R-2")
    )
    found = reconcile_email(
        client, probe("ann@example.com", "bob@example.com"), known_tracking_ids=set()
    )
    assert found.verdict is Verdict.FOUND
    assert [(o.key, o.status) for o in found.outcomes] == [("K1", SENT), ("K2", FAILED)]


def test_a_group_with_other_recipients_is_not_ours(api: Api, client: LegallyMailClient) -> None:
    group = {"recipient": "Multiple Recipients", "is_multi_recipient": True, "recipient_count": 2}
    api.emails = [listed(12, "T-GROUP", subject=SUBJECT, **group), listed(11, "T-ANCHOR")]
    api.details["T-GROUP"] = detail(
        "T-GROUP", ("ann@example.com", "sent", "R-1"), ("eve@example.com", "sent", "R-3")
    )
    found = reconcile_email(
        client, probe("ann@example.com", "bob@example.com"), known_tracking_ids=set()
    )
    assert found.verdict is Verdict.ABSENT


@pytest.mark.parametrize(
    "newer",
    [
        listed(12, "T-NEW", recipient="ann@example.com", subject="another subject"),
        listed(12, "T-NEW", recipient="bob@example.com", subject=SUBJECT),
        listed(12, "T-KNOWN", recipient="ann@example.com", subject=SUBJECT),
    ],
    ids=["other subject", "other recipient", "already recorded"],
)
def test_with_the_anchor_in_view_and_no_match_the_send_is_proven_absent(
    api: Api, client: LegallyMailClient, newer: dict[str, Any]
) -> None:
    api.emails = [newer, listed(11, "T-ANCHOR")]
    found = reconcile_email(client, probe("ann@example.com"), known_tracking_ids={"T-KNOWN"})
    assert found.verdict is Verdict.ABSENT
    assert api.calls("/api/email") == 0


def test_a_match_older_than_the_anchor_is_not_ours(api: Api, client: LegallyMailClient) -> None:
    api.emails = [
        listed(12, "T-ANCHOR"),
        listed(11, "T-OLD", recipient="ann@example.com", subject=SUBJECT),
    ]
    found = reconcile_email(client, probe("ann@example.com"), known_tracking_ids=set())
    assert found.verdict is Verdict.ABSENT and api.calls("/api/email") == 0


def test_a_full_listing_without_the_anchor_leaves_the_send_in_doubt(
    api: Api, client: LegallyMailClient
) -> None:
    api.emails = [listed(i, f"T-{i}") for i in range(40, 40 - LISTING_LIMIT, -1)]
    found = reconcile_email(client, probe("ann@example.com"), known_tracking_ids=set())
    assert found.verdict is Verdict.UNKNOWN and not found.lookup_failed
    assert "more than 25" in found.reason


def test_a_short_listing_without_the_anchor_is_the_whole_history(
    api: Api, client: LegallyMailClient
) -> None:
    api.emails = [listed(2, "T-2"), listed(1, "T-1")]
    found = reconcile_email(client, probe("ann@example.com", anchor=None), known_tracking_ids=())
    assert found.verdict is Verdict.ABSENT


@pytest.mark.parametrize("failing", ["/api/emails", "/api/email"])
def test_a_failed_look_up_proves_nothing_and_says_so(
    api: Api, client: LegallyMailClient, failing: str
) -> None:
    api.emails = [
        listed(12, "T-NEW", recipient="ann@example.com", subject=SUBJECT),
        listed(11, "T-ANCHOR"),
    ]
    api.details["T-NEW"] = detail("T-NEW", ("ann@example.com", "sent", "R-1"))
    api.failing.add(failing)
    found = reconcile_email(client, probe("ann@example.com"), known_tracking_ids=set())
    assert found.verdict is Verdict.UNKNOWN and found.lookup_failed


# -- recipients an accepted answer did not name ----------------------------------------------


def test_recipients_missing_from_an_answer_are_found_in_that_send(
    api: Api, client: LegallyMailClient
) -> None:
    api.details["T-PARENT"] = detail(
        "T-PARENT", ("ann@example.com", "sent", "R-1"), ("bob@example.com", "sent", "R-2")
    )
    found = reconcile_in_send(client, probe("bob@example.com"), tracking_id="T-PARENT")
    assert (
        found.verdict is Verdict.FOUND and found.reason == "found among the recipients of T-PARENT"
    )
    assert [(o.key, o.tracking_id) for o in found.outcomes] == [("K1", "R-2")]
    assert api.calls("/api/emails") == 0  # the listing could not tell: the id is ours already


def test_recipients_not_in_that_send_are_absent(api: Api, client: LegallyMailClient) -> None:
    api.details["T-PARENT"] = detail("T-PARENT", ("ann@example.com", "sent", "R-1"))
    found = reconcile_in_send(client, probe("bob@example.com"), tracking_id="T-PARENT")
    assert found.verdict is Verdict.ABSENT


def test_a_failed_detail_look_up_leaves_them_in_doubt(api: Api, client: LegallyMailClient) -> None:
    api.failing.add("/api/email")
    found = reconcile_in_send(client, probe("bob@example.com"), tracking_id="T-PARENT")
    assert found.verdict is Verdict.UNKNOWN and found.lookup_failed


# -- signatures -----------------------------------------------------------------------------


def signature(uuid: str, email: str, document: str) -> dict[str, Any]:
    """One `GET /api/signatures` entry."""
    return {
        "uuid": uuid,
        "signer_name": "Ann",
        "signer_email": email,
        "document_name": document,
        "status": "pending",
        "created_at": "2026-11-21 10:00:00",
    }


@pytest.mark.parametrize(
    ("newer", "verdict"),
    [
        (signature("S-NEW", "ann@example.com", "Contract 1.pdf"), Verdict.FOUND),
        (signature("S-NEW", "ann@example.com", "Contract 2.pdf"), Verdict.ABSENT),
        (signature("S-NEW", "bob@example.com", "Contract 1.pdf"), Verdict.ABSENT),
        (signature("S-KNOWN", "ann@example.com", "Contract 1.pdf"), Verdict.ABSENT),
    ],
    ids=["ours", "other document", "other signer", "already recorded"],
)
def test_a_signature_request_is_found_by_signer_and_document(
    api: Api, client: LegallyMailClient, newer: dict[str, Any], verdict: Verdict
) -> None:
    api.signatures = [newer, signature("S-ANCHOR", "x@example.com", "Other.pdf")]
    found = reconcile_signature(
        client,
        probe("Ann@example.com", anchor="S-ANCHOR", document="Contract 1.pdf"),
        known_tracking_ids={"S-KNOWN"},
    )
    assert found.verdict is verdict
    if verdict is Verdict.FOUND:
        assert found.parent_tracking_id == "S-NEW"
        assert [(o.key, o.tracking_id) for o in found.outcomes] == [("K1", "S-NEW")]


def test_a_signature_request_beyond_the_listing_stays_in_doubt(
    api: Api, client: LegallyMailClient
) -> None:
    api.signatures = [signature(f"S-{i}", "x@example.com", "x.pdf") for i in range(LISTING_LIMIT)]
    found = reconcile_signature(
        client, probe("ann@example.com", document="c.pdf"), known_tracking_ids=()
    )
    assert found.verdict is Verdict.UNKNOWN and not found.lookup_failed


def test_a_failed_signature_listing_is_a_failed_look_up(
    api: Api, client: LegallyMailClient
) -> None:
    api.failing.add("/api/signatures")
    found = reconcile_signature(
        client, probe("ann@example.com", document="c.pdf"), known_tracking_ids=()
    )
    assert found.verdict is Verdict.UNKNOWN and found.lookup_failed


# -- settled by hand -------------------------------------------------------------------------


@pytest.fixture
def in_doubt(tmp_path: Path) -> Callable[[], Ledger]:
    def make() -> Ledger:
        ledger = Ledger.open(tmp_path)
        entries = [Entry(k, f"{k.lower()}@example.com", "", "h") for k in ("A", "B")]
        ledger.queue(pl.DataFrame([e._asdict() for e in entries]))
        ledger.intent("req-1", entries)  # in doubt until an outcome is recorded
        return ledger

    return make


def test_settled_by_hand_as_sent_or_not_sent(
    in_doubt: Callable[[], Ledger], tmp_path: Path
) -> None:
    with in_doubt() as ledger:
        assert set(ledger.keys_with_status(IN_DOUBT)["key"]) == {"A", "B"}
        settle_by_hand(ledger, ["A", "B"], sent=True, tracking_id="T-1")
    rows = {r["key"]: r for r in read_ledger(tmp_path).iter_rows(named=True)}
    assert {k: (r["status"], r["tracking_id"]) for k, r in rows.items()} == {
        "A": (SENT, "T-1"),
        "B": (SENT, "T-1"),
    }


def test_settled_by_hand_as_not_sent_goes_back_to_the_queue(
    in_doubt: Callable[[], Ledger], tmp_path: Path
) -> None:
    with in_doubt() as ledger:
        settle_by_hand(ledger, ["A", "B"], sent=False)
    assert set(read_ledger(tmp_path)["status"]) == {PENDING}


def test_only_rows_in_doubt_can_be_settled_by_hand(in_doubt: Callable[[], Ledger]) -> None:
    # C is no row of this ledger: a verdict on it is a mistake about which row was checked.
    with in_doubt() as ledger, pytest.raises(InputError, match="not in the ledger: C"):
        settle_by_hand(ledger, ["A", "C"], sent=True)


# -- what the intent recorded, and whether a match is ours (issue 12 items 1 and 2) ---------

AT = datetime(2026, 11, 21, 9, 0, 0, tzinfo=UTC)  # our clock at the intent
SPAN = 100.0  # seconds the request could take


def learned(tmp_path: Path, ahead: float = 3600.0) -> ServerClock:
    """A server clock that runs `ahead` seconds ahead of UTC, learned from one answer."""
    clock = ServerClock(tmp_path)
    server = (AT + timedelta(seconds=ahead)).strftime("%Y-%m-%d %H:%M:%S")
    clock.learn(server, AT, AT + timedelta(seconds=1))
    return clock


def ownership(
    clock: ServerClock | None,
    registry: TrackingRegistry | None = None,
    *,
    prompt: bool = False,
) -> Ownership:
    return Ownership(
        at=AT, until=AT + timedelta(seconds=SPAN), clock=clock, registry=registry, prompt=prompt
    )


def server_time(after_intent: float, ahead: float = 3600.0) -> str:
    """The server's zone-less time of a send made `after_intent` seconds after our intent."""
    moment = AT + timedelta(seconds=after_intent + ahead)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def test_the_server_clock_offset_is_learned_from_answers_and_kept(tmp_path: Path) -> None:
    clock = learned(tmp_path)
    assert clock.bounds is not None and 3598 <= clock.bounds[0] <= clock.bounds[1] <= 3601
    again = ServerClock(tmp_path)  # the next run reads what this one learned
    assert again.bounds == clock.bounds
    earliest, latest = again.to_ours(server_time(30)) or (None, None)
    assert earliest is not None and latest is not None
    assert earliest <= AT + timedelta(seconds=30) <= latest
    assert (latest - earliest).total_seconds() <= 4


def test_answers_narrow_the_offset_and_a_zone_change_replaces_it(tmp_path: Path) -> None:
    clock = ServerClock(tmp_path)
    clock.learn(server_time(0), AT - timedelta(seconds=5), AT + timedelta(seconds=5))
    wide = clock.bounds
    clock.learn(server_time(60), AT + timedelta(seconds=59), AT + timedelta(seconds=61))
    assert clock.bounds is not None and wide is not None
    assert clock.bounds[1] - clock.bounds[0] < wide[1] - wide[0]
    # Summer time ends: the server's wall clock falls back an hour. The latest answer wins.
    clock.learn(server_time(120, ahead=0), AT + timedelta(seconds=120), AT + timedelta(seconds=121))
    assert clock.bounds is not None and -2 <= clock.bounds[0] <= clock.bounds[1] <= 1


@pytest.mark.parametrize("content", ["", "{not json", '{"offset_low": 5, "offset_high": 1}'])
def test_an_unreadable_offset_file_means_unknown(tmp_path: Path, content: str) -> None:
    (tmp_path / "server-clock.json").write_text(content)
    assert not ServerClock(tmp_path).known


def test_the_probe_round_trips_through_the_ledger_cell() -> None:
    record = probe_record({"subject": SUBJECT}, ["ann@example.com", "bob@example.com"], AT, SPAN)
    assert json.loads(json.dumps(record)) == record
    probe_ = probe_from(record, ["K2"], ["bob@example.com"], "T-ANCHOR")
    assert probe_.subject == SUBJECT and probe_.count == 2 and probe_.keys == ("K2",)
    assert probe_.sent_to == ("ann@example.com", "bob@example.com")
    assert window_of(record) == (AT, AT + timedelta(seconds=SPAN))


def test_a_group_partly_settled_by_hand_is_found_by_every_address_it_was_sent_to(
    api: Api, client: LegallyMailClient
) -> None:
    # Bob was resolved by hand; Ann is still in doubt. The send had both: matching on Ann
    # alone would "prove" it absent and send Ann a second notice.
    group = {"recipient": "Multiple Recipients", "is_multi_recipient": True, "recipient_count": 2}
    api.emails = [listed(12, "T-GROUP", subject=SUBJECT, **group), listed(11, "T-ANCHOR")]
    api.details["T-GROUP"] = detail(
        "T-GROUP", ("ann@example.com", "sent", "R-1"), ("bob@example.com", "sent", "R-2")
    )
    record = probe_record({"subject": SUBJECT}, ["ann@example.com", "bob@example.com"], AT, SPAN)
    probe_ = probe_from(record, ["K1"], ["ann@example.com"], "T-ANCHOR")
    found = reconcile_email(client, probe_, known_tracking_ids=set())
    assert found.verdict is Verdict.FOUND
    assert [(o.key, o.tracking_id) for o in found.outcomes] == [("K1", "R-1")]


def test_a_listed_send_with_another_recipient_count_is_not_ours(
    api: Api, client: LegallyMailClient
) -> None:
    group = {"recipient": "Multiple Recipients", "is_multi_recipient": True, "recipient_count": 3}
    api.emails = [listed(12, "T-GROUP", subject=SUBJECT, **group), listed(11, "T-ANCHOR")]
    record = probe_record({"subject": SUBJECT}, ["ann@example.com", "bob@example.com"], AT, SPAN)
    found = reconcile_email(
        client,
        probe_from(record, ["K1", "K2"], list(record["addresses"]), "T-ANCHOR"),
        known_tracking_ids=set(),
    )
    assert found.verdict is Verdict.ABSENT and api.calls("/api/email") == 0


def single_match(api: Api, sent_at: str) -> None:
    api.emails = [
        listed(12, "T-NEW", recipient="ann@example.com", subject=SUBJECT, sent_at=sent_at),
        listed(11, "T-ANCHOR"),
    ]
    api.details["T-NEW"] = detail("T-NEW", ("ann@example.com", "sent", "R-1"))


@pytest.mark.parametrize(
    ("after_intent", "verdict"),
    [
        (2, Verdict.FOUND),
        (SPAN + 30, Verdict.FOUND),
        (-3600 * 2, Verdict.UNKNOWN),
        (SPAN + 600, Verdict.UNKNOWN),
    ],
    ids=["right after", "late in the span", "hours before", "long after"],
)
def test_a_match_counts_as_ours_only_inside_the_intents_window(
    api: Api, client: LegallyMailClient, tmp_path: Path, after_intent: float, verdict: Verdict
) -> None:
    single_match(api, server_time(after_intent))
    found = reconcile_email(
        client,
        probe("ann@example.com"),
        known_tracking_ids=set(),
        ownership=ownership(learned(tmp_path)),
    )
    assert found.verdict is verdict
    if verdict is Verdict.UNKNOWN:  # never "absent": something like it is there
        assert "cannot be shown to be ours" in found.reason and not found.lookup_failed
        assert "outside this send's window" in found.reason


@pytest.mark.parametrize(("prompt", "verdict"), [(True, Verdict.FOUND), (False, Verdict.UNKNOWN)])
def test_without_a_learned_offset_only_a_prompt_look_up_takes_a_match(
    api: Api, client: LegallyMailClient, tmp_path: Path, prompt: bool, verdict: Verdict
) -> None:
    single_match(api, server_time(5))
    found = reconcile_email(
        client,
        probe("ann@example.com"),
        known_tracking_ids=set(),
        ownership=ownership(ServerClock(tmp_path), prompt=prompt),
    )
    assert found.verdict is verdict
    if not prompt:
        assert "offset is not known yet" in found.reason


def test_a_send_another_campaign_registered_is_proven_not_ours(
    api: Api, client: LegallyMailClient, tmp_path: Path
) -> None:
    single_match(api, server_time(5))
    TrackingRegistry(tmp_path / "out" / "other").record(["T-NEW", "R-1"])
    mine = TrackingRegistry(tmp_path / "out" / "mine")
    found = reconcile_email(
        client,
        probe("ann@example.com"),
        known_tracking_ids=set(),
        ownership=ownership(learned(tmp_path), mine),
    )
    assert found.verdict is Verdict.ABSENT  # the anchor is in view and nothing else matches
    assert api.calls("/api/email") == 0
    assert mine.other_owner("T-NEW") == "other"
    assert TrackingRegistry(tmp_path / "out" / "other").other_owner("T-NEW") is None


def test_the_registry_reads_lines_appended_since_and_waits_for_a_torn_one(
    tmp_path: Path,
) -> None:
    mine = TrackingRegistry(tmp_path / "mine")
    assert mine.other_owner("T-1") is None  # no file yet
    TrackingRegistry(tmp_path / "other").record(["T-1"])
    with mine.path.open("a") as file:
        file.write("third\tT-2")  # a line still being written
    assert mine.other_owner("T-1") == "other" and mine.other_owner("T-2") is None
    with mine.path.open("a") as file:
        file.write("\n")
    assert mine.other_owner("T-2") == "third"


@pytest.mark.parametrize(
    ("created_after", "verdict"), [(3, Verdict.FOUND), (3600, Verdict.UNKNOWN)]
)
def test_a_signature_request_is_ours_only_inside_the_window(
    api: Api, client: LegallyMailClient, tmp_path: Path, created_after: float, verdict: Verdict
) -> None:
    newer = signature("S-NEW", "ann@example.com", "Contract 1.pdf")
    newer["created_at"] = server_time(created_after)
    api.signatures = [newer, signature("S-ANCHOR", "x@example.com", "Other.pdf")]
    found = reconcile_signature(
        client,
        probe("ann@example.com", anchor="S-ANCHOR", document="Contract 1.pdf"),
        known_tracking_ids=set(),
        ownership=ownership(learned(tmp_path)),
    )
    assert found.verdict is verdict
