"""The outbox half of the Store contract, on both backends: written with decisions, purged with a withdrawal
in the same transaction, claimed under leases, finished with payloads cleared, and the latest-consent view."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

from gateway.model import ConsentChoice
from gateway.store import outbox
from gateway.store.base import Store
from gateway.store.outbox import Attempted, Finished, Lease, OutboxItem, OwedErasure, Purge, SealedPart
from tests.store.test_contract import decision
from tests.strategies import consent_record

FAR = 10_000_000_000.0


def item(key: str, *people: str, meeting: str = "m1", destination: str = "summariser") -> OutboxItem:
    parts = tuple(
        SealedPart(
            p,
            f"{key}-{p}",
            hashlib.sha256(p.encode("utf-8", "surrogatepass")).hexdigest(),
            f"s:{key}".encode(),
        )
        for p in people
    )
    kind = "segment" if len(parts) == 1 else "transcript"
    return OutboxItem(key, meeting, destination, kind, ("summary",), 100.0, FAR, parts)


async def test_items_written_with_decisions_are_claimed_once_their_lease_runs_out(store: Store) -> None:
    """The writer holds the lease; nobody claims before it ends; afterwards one claimant gets each item."""
    await store.append_decisions([decision(1)], [item("k1", "p1"), item("k2", "p1", "p2")], Lease("a", 50.0))
    assert await store.claim_outbox(Lease("b", 200.0), now=40.0, limit=10) == []
    claimed = await store.claim_outbox(Lease("b", 200.0), now=60.0, limit=10)
    assert [c.key for c in claimed] == ["k1", "k2"]  # oldest first
    assert claimed[1].parts == item("k2", "p1", "p2").parts  # sealed bytes back as written
    assert claimed[1].purposes == ("summary",)
    assert await store.claim_outbox(Lease("c", 300.0), now=60.0, limit=10) == []  # b holds them now


async def test_renew_keeps_and_release_frees_an_owners_items(store: Store) -> None:
    await store.append_decisions([], [item("k1", "p1")], Lease("a", 50.0))
    await store.renew_outbox(Lease("a", 500.0))
    assert await store.claim_outbox(Lease("b", 600.0), now=100.0, limit=10) == []
    await store.release_outbox("a")
    assert [c.key for c in await store.claim_outbox(Lease("b", 600.0), now=100.0, limit=10)] == ["k1"]


async def test_withdrawal_purges_queued_parts_in_its_own_transaction(store: Store) -> None:
    """The participant's queued parts go (payload NULL, state withdrawn) with the ledger record; an item left
    with nothing is dropped; other people's parts and other destinations stay."""
    items = [item("k1", "p1"), item("k2", "p1", "p2"), item("k3", "p1", destination="archive")]
    await store.append_decisions([], items, Lease("a", 0.0))
    withdrawal = consent_record(record_id="w", subject="p1", choice=ConsentChoice.WITHDRAWN)
    await store.append_consent(withdrawal, Purge("m1", "p1", ("summariser",)))
    report = {row["key"]: row for row in await store.outbox_report(meeting_id="m1")}
    assert (report["k1"]["status"], report["k1"]["reason"]) == ("dropped", "withdrawn")
    assert (report["k2"]["status"], report["k2"]["sealed_parts"]) == ("pending", 1)
    assert (report["k3"]["status"], report["k3"]["sealed_parts"]) == ("pending", 1)
    claimed = {c.key: c for c in await store.claim_outbox(Lease("b", 1.0), now=FAR, limit=10)}
    assert set(claimed) == {"k2", "k3"}
    assert [p.participant_id for p in claimed["k2"].parts] == ["p2"]
    states = {
        (r["key"], r["state"], r["sealed"])
        for r in await store.outbox_parts(meeting_id="m1", participant_id="p1")
    }
    assert ("k1", "withdrawn", False) in states and ("k2", "withdrawn", False) in states
    assert ("k3", "queued", True) in states


async def test_finish_records_the_outcome_and_clears_payloads(store: Store) -> None:
    await store.append_decisions([], [item("k1", "p1", "p2"), item("k2", "p1")], Lease("a", 0.0))
    await store.finish_outbox(
        [
            Finished("k1", outbox.DELIVERED, None, 2, 200, ("k1-p1",), 5.0),
            Finished("k2", outbox.DROPPED, "expired", 9, 503, (), 6.0),
        ]
    )
    report = {row["key"]: row for row in await store.outbox_report()}
    assert (report["k1"]["status"], report["k1"]["attempts"], report["k1"]["http_status"]) == (
        "delivered",
        2,
        200,
    )
    assert (report["k2"]["status"], report["k2"]["reason"]) == ("dropped", "expired")
    assert report["k1"]["sealed_parts"] == report["k2"]["sealed_parts"] == 0
    p1 = {(r["key"], r["state"]) for r in await store.outbox_parts(meeting_id="m1", participant_id="p1")}
    assert p1 == {("k1", "sent"), ("k2", "expired")}
    p2 = await store.outbox_parts(meeting_id="m1", participant_id="p2")
    assert [r["state"] for r in p2] == ["withdrawn"]  # not in the request that was delivered
    assert await store.claim_outbox(Lease("b", 1.0), now=FAR, limit=10) == []


async def test_an_items_first_outcome_in_a_commit_is_the_one_recorded(store: Store) -> None:
    """Outcomes sharing a commit count as if run in order (PostgreSQL runs them as one statement): an
    item's first outcome is the one recorded, and its payloads are gone either way."""
    await store.append_decisions([], [item("k1", "p1", "p2"), item("k2", "p1")], Lease("a", 0.0))
    await store.finish_outbox(
        [
            Finished("k1", outbox.DELIVERED, None, 1, 200, ("k1-p1",), 5.0),
            Finished("k2", outbox.FAILED, "rejected_400", 1, 400, (), 5.0),
            Finished("k1", outbox.DROPPED, "expired", 3, 503, (), 6.0),
            Finished("k2", outbox.DELIVERED, None, 2, 200, ("k2-p1",), 6.0),
        ]
    )
    report = {row["key"]: row for row in await store.outbox_report()}
    assert (report["k1"]["status"], report["k1"]["attempts"]) == ("delivered", 1)
    assert (report["k2"]["status"], report["k2"]["reason"]) == ("failed", "rejected_400")
    assert report["k1"]["sealed_parts"] == report["k2"]["sealed_parts"] == 0
    p1 = {(r["key"], r["state"]) for r in await store.outbox_parts(meeting_id="m1", participant_id="p1")}
    # parts a delivered request carried are marked sent before anything is cleared (finish_statements'
    # order), so k2's part is "sent" although the item's recorded outcome is its first, "failed"
    assert p1 == {("k1", "sent"), ("k2", "sent")}
    p2 = await store.outbox_parts(meeting_id="m1", participant_id="p2")
    assert [r["state"] for r in p2] == ["withdrawn"]


async def test_writing_the_same_item_twice_changes_nothing(store: Store) -> None:
    """A redelivered event yields the same idempotency key: the second write is ignored, not an error."""
    await store.append_decisions([decision(1)], [item("k1", "p1")], Lease("a", 0.0))
    await store.append_decisions([decision(1)], [item("k1", "p1")], Lease("a", 0.0))
    assert [row["key"] for row in await store.outbox_report()] == ["k1"]


async def test_blocked_follows_the_latest_accepted_choice_per_purpose(store: Store) -> None:
    given = consent_record(record_id="g1", subject="p1", purposes=("summary", "training"))
    await store.append_consent(given)
    assert await store.blocked("m1", ["p1", "p2"], ["summary"]) == set()
    await store.append_consent(
        consent_record(record_id="w1", subject="p1", purposes=("training",), choice=ConsentChoice.WITHDRAWN)
    )
    assert await store.blocked("m1", ["p1"], ["summary"]) == set()
    assert await store.blocked("m1", ["p1"], ["summary", "training"]) == {"p1"}
    await store.append_consent(consent_record(record_id="g2", subject="p1", purposes=("training",)))
    assert await store.blocked("m1", ["p1"], ["training"]) == set()
    assert await store.blocked("other-meeting", ["p1"], ["training"]) == set()


async def test_ids_with_awkward_characters_round_trip(store: Store) -> None:
    """Platform ids are opaque text: NUL, backslashes and lone surrogates must not break the outbox."""
    odd_meeting, odd_person = "m\x00\\1", "p\ud800\\"
    await store.append_decisions([], [item("k1", odd_person, meeting=odd_meeting)], Lease("a", 0.0))
    refusal = consent_record(
        record_id="r", meeting_id=odd_meeting, subject=odd_person, choice=ConsentChoice.REFUSED
    )
    await store.append_consent(refusal, Purge(odd_meeting, odd_person, ("summariser",)))
    assert await store.blocked(odd_meeting, [odd_person], ["summary"]) == {odd_person}
    assert [
        r["state"] for r in await store.outbox_parts(meeting_id=odd_meeting, participant_id=odd_person)
    ] == ["withdrawn"]


async def test_blocked_pairs_answers_many_meetings_at_once(store: Store) -> None:
    """The batched form agrees with ``blocked`` per pair, across meetings and odd ids."""
    odd = "m\x00\\2"
    await store.append_consent(consent_record(record_id="a", meeting_id="m1", subject="p1"))
    await store.append_consent(
        consent_record(record_id="b", meeting_id="m1", subject="p2", choice=ConsentChoice.WITHDRAWN)
    )
    await store.append_consent(
        consent_record(record_id="c", meeting_id=odd, subject="p1", choice=ConsentChoice.REFUSED)
    )
    pairs = [("m1", "p1"), ("m1", "p2"), (odd, "p1"), (odd, "p9"), ("m2", "p2")]
    assert await store.blocked_pairs(pairs, ["summary"]) == {("m1", "p2"), (odd, "p1")}
    assert await store.blocked_pairs(pairs, ["training"]) == set()
    many = [(f"m{n}", "p") for n in range(1000)] + [("m1", "p2")]  # more than one query's worth
    assert await store.blocked_pairs(many, ["summary"]) == {("m1", "p2")}


async def test_a_given_consent_whose_expiry_has_passed_blocks(store: Store) -> None:
    """Recovered content is checked against the store alone: an expired grant must not let it leave."""
    await store.append_consent(
        consent_record(record_id="old", subject="p1", expires_at=datetime(2020, 1, 1, tzinfo=UTC))
    )
    await store.append_consent(
        consent_record(record_id="new", subject="p2", expires_at=datetime(2999, 1, 1, tzinfo=UTC))
    )
    assert await store.blocked("m1", ["p1", "p2"], ["summary"]) == {"p1"}


# --- what deletion requests need --------------------------------------------------------------------------


async def test_a_withdrawal_records_the_deletion_requests_it_owes_until_they_are_staged(store: Store) -> None:
    """Written with the withdrawal, leased to its writer for a while, then anyone's, gone once done."""
    meeting, person = "m\\1", "p\x00\\"
    withdrawal = consent_record(
        record_id="w\\1", meeting_id=meeting, subject=person, choice=ConsentChoice.WITHDRAWN
    )
    await store.append_consent(withdrawal, Purge(meeting, person, ("summariser", "archive"), ("summariser",)))
    assert await store.claim_erasures(Lease("b", FAR), time.time(), 10) == []  # its writer's lease
    owed = OwedErasure("w\\1", "summariser", meeting, person)
    assert await store.claim_erasures(Lease("b", FAR), time.time() + 60, 10) == [owed]
    assert await store.claim_erasures(Lease("c", FAR), time.time() + 60, 10) == []  # b holds it now
    await store.erasure_done("w\\1", "summariser")
    assert await store.claim_erasures(Lease("c", FAR), float("inf"), 10) == []


async def test_an_attempted_part_stays_marked_through_its_withdrawal(store: Store) -> None:
    """The latest attempt's start and owner outlive the purge that clears the part's payload: a deletion
    request still lists it, once that attempt cannot be on the wire any more."""
    await store.append_decisions([], [item("k1", "p1", "p2")], Lease("a", 0.0))
    await store.attempt_outbox([Attempted("k1", "k1-p1", 5.0, "a")])
    await store.attempt_outbox([Attempted("k1", "k1-p1", 9.0, "b")])
    await store.append_consent(
        consent_record(record_id="w", subject="p1", choice=ConsentChoice.WITHDRAWN),
        Purge("m1", "p1", ("summariser",)),
    )
    [p1] = await store.outbox_parts(meeting_id="m1", participant_id="p1")
    assert (p1["state"], p1["sealed"], p1["attempted_at"], p1["attempted_by"]) == (
        "withdrawn",
        False,
        9.0,
        "b",
    )
    [p2] = await store.outbox_parts(meeting_id="m1", participant_id="p2")
    assert (p2["state"], p2["sealed"], p2["attempted_at"], p2["attempted_by"]) == ("queued", True, None, None)


async def test_one_process_at_a_time_holds_an_owed_deletion_request(store: Store) -> None:
    """The first to claim it holds it for its lease (again and again if it asks); nobody once it is done."""
    withdrawal = consent_record(record_id="w", subject="p1", choice=ConsentChoice.WITHDRAWN)
    await store.append_consent(withdrawal, Purge("m1", "p1", ("summariser",), ("summariser",)))
    now = time.time()
    assert await store.claim_erasure("w", "summariser", Lease("a", now + 15), now)
    assert not await store.claim_erasure("w", "summariser", Lease("b", now + 15), now)
    assert await store.claim_erasure("w", "summariser", Lease("a", now + 15), now)
    assert await store.claim_erasure("w", "summariser", Lease("b", now + 99), now + 20)  # a's lease ran out
    assert not await store.claim_erasure("w", "other", Lease("b", now + 99), now)  # never owed
    await store.erasure_done("w", "summariser")
    assert not await store.claim_erasure("w", "summariser", Lease("b", now + 99), now + 20)


async def test_parts_come_back_with_ids_as_given_and_every_part_written(store: Store) -> None:
    """Ids the store escapes come back as the platform sent them; a claimed item names its withdrawn parts."""
    odd = "rec\\2025\\"
    await store.append_decisions([], [item("k1", odd, "p2")], Lease("a", 0.0))
    assert [r["segment_id"] for r in await store.outbox_parts(meeting_id="m1", participant_id=odd)] == [
        f"k1-{odd}"
    ]
    withdrawal = consent_record(record_id="w", subject=odd, choice=ConsentChoice.WITHDRAWN)
    await store.append_consent(withdrawal, Purge("m1", odd, ("summariser",)))
    [claimed] = await store.claim_outbox(Lease("b", 1.0), now=FAR, limit=10)
    assert [(p.participant_id, p.segment_id) for p in claimed.parts] == [("p2", "k1-p2")]
    assert claimed.written == ((odd, f"k1-{odd}"), ("p2", "k1-p2"))
