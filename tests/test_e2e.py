"""Invariants 1, 4 and 5 end to end: a real gateway on loopback, real SQLite, fake AI services that verify
the gateway's signatures. What a destination received is read from the fake; what the gateway decided and
recorded is read from its store.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.model import Action, ConsentChoice, RecordOutcome
from gateway.store import open_store
from gateway.store.base import StorageError
from tests.conftest import sqlite_url
from tests.fakes.ai_service import FakeAIService, Received
from tests.web.harness import (
    PROBLEM_JSON,
    Dest,
    LiveGateway,
    chat,
    consent,
    event,
    joined,
    segment,
    serving,
    signed_headers,
    wait_for,
)

ADA, BRUNO, CY, WEN = "p-ada", "p-bruno", "p-cy", "p-wen"
NAMES = {ADA: "Ada Lovelace", BRUNO: "Bruno Díaz", CY: "Cy Twombly", WEN: "Wen Li"}


def payloads(fake: FakeAIService, received: list[Received] | None = None) -> list[dict[str, Any]]:
    """Segment payloads of the given (default: all) 2xx requests, each idempotency key once."""
    chosen = fake.accepted() if received is None else [r for r in received if r.ok]
    return [p for r in chosen for p in r.segment_payloads()]


def assert_signed_and_keyed(fake: FakeAIService) -> None:
    """Every request verified (the fake answers 401 otherwise) and carries an idempotency key."""
    assert fake.received, "nothing arrived"
    for request in fake.received:
        assert request.status != 401, "a request failed Standard Webhooks verification"
        assert request.key
        assert request.headers["idempotency-key"] == request.headers["webhook-id"]


async def assert_consent_preceded_every_forward(
    gw: LiveGateway, purposes: dict[str, tuple[str, ...]]
) -> None:
    """Invariant 1: each received segment's decision cites durable "given" records of its speaker that
    cover every purpose of the destination and that were recorded no later than the decision."""
    by_id = {d.decision_id: d for d in await gw.decisions()}
    ledger = {e.record.record_id: e for e in await gw.ledger()}
    for dest, fake in gw.fakes.items():
        for payload in payloads(fake):
            decision = by_id[payload["decision_id"]]
            assert decision.action in (Action.FORWARD, Action.REDACT)
            assert (decision.destination, decision.participant_id) == (dest, payload["participant_id"])
            covered: set[str] = set()
            for record_id in decision.consent_record_ids:
                entry = ledger[record_id]  # durably written: the read connection sees only commits
                record = entry.record
                assert entry.seq >= 1
                assert record.subject == payload["participant_id"]
                assert (record.choice, record.outcome) == (ConsentChoice.GIVEN, RecordOutcome.ACCEPTED)
                assert record.at <= decision.at
                covered.update(record.purposes)
            assert covered >= set(purposes[dest]), (payload["segment_id"], covered)
            assert not _restricted_between(ledger.values(), payload["participant_id"], decision.at)


def _restricted_between(entries: Any, pid: str, until: Any) -> bool:
    """Whether the participant's latest accepted record up to ``until`` is anything but "given"."""
    mine = [e for e in entries if e.record.subject == pid and e.record.outcome is RecordOutcome.ACCEPTED
            and e.record.at <= until]  # fmt: skip
    return bool(mine) and max(mine, key=lambda e: e.seq).record.choice is not ConsentChoice.GIVEN


async def dropped_as(gw: LiveGateway, segment_id: str, reason: str) -> bool:
    return any(d.segment_id == segment_id and reason in d.reasons for d in await gw.decisions())


# --- invariant 1 and per-speaker forwarding ------------------------------------------------------------


async def test_only_the_consenting_speaker_reaches_the_destination(tmp_path: Path) -> None:
    """Of a consenting speaker, a decliner and a silent participant, only the first's words arrive, signed,
    keyed, with the others' names scrubbed; the silent one's held words are dropped when the window ends."""
    async with serving(tmp_path, window=1.0) as gw:
        await gw.send(*(joined(pid, NAMES[pid]) for pid in (ADA, BRUNO, CY)))
        await gw.send(consent(ADA, "given"), consent(BRUNO, "refused"))
        await gw.send(
            segment("s1", ADA, "Morning. Bruno sent the numbers, thanks Bruno Díaz."),
            segment("s2", BRUNO, "Churn is at four percent, keep it between us."),
            segment("s3", CY, "I am only listening today."),
            chat("c1", ADA, "Cy, can you and Bruno review the deck?"),
            chat("c2", BRUNO, "Sure, sending my draft."),
            segment("s4", ADA, "Let's wrap up."),
        )
        await wait_for(
            lambda: dropped_as(gw, "s3", "pending_expired"), "the silent participant's hold to end"
        )
        await gw.settle()
        got = payloads(gw.fake)
        assert [p["segment_id"] for p in got] == ["s1", "c1", "s4"]
        assert {p["participant_id"] for p in got} == {ADA}
        assert got[0]["text"] == "Morning. [participant 2] sent the numbers, thanks [participant 2]."
        assert got[1]["text"] == "[participant 3], can you and [participant 2] review the deck?"
        assert got[1]["kind"] == "chat"
        raw = b"".join(r.raw for r in gw.fake.received).decode()
        for word in ("Bruno", "Díaz", "Cy", "Twombly", "Churn", "listening", "draft"):
            assert word not in raw
        assert_signed_and_keyed(gw.fake)
        await assert_consent_preceded_every_forward(gw, {"summariser": ("summary",)})


async def test_consent_within_the_window_releases_held_words_in_order(tmp_path: Path) -> None:
    """Words said before consenting are held and arrive, in order, once the speaker opts in in time."""
    async with serving(tmp_path, window=30.0) as gw:
        await gw.send(joined(ADA, NAMES[ADA]))
        await gw.send(segment("s1", ADA, "Before I clicked yes."), segment("s2", ADA, "Still waiting."))
        await gw.settle()
        assert gw.fake.received == []
        await gw.send(consent(ADA, "given"), segment("s3", ADA, "After yes."))
        await gw.settle()
        assert [p["segment_id"] for p in payloads(gw.fake)] == ["s1", "s2", "s3"]
        await assert_consent_preceded_every_forward(gw, {"summariser": ("summary",)})


async def test_consent_for_one_purpose_does_not_reach_a_destination_of_two(tmp_path: Path) -> None:
    """A destination serving summary and training receives nothing of a speaker who agreed to summary only."""
    dests = (Dest("summariser"), Dest("trainer", ("summary", "training")))
    async with serving(tmp_path, dests) as gw:
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]))
        await gw.send(consent(ADA, "given", ("summary",)), consent(WEN, "given", ("summary", "training")))
        await gw.send(segment("s1", ADA, "Summary only for me."), segment("s2", WEN, "Both for me, Ada."))
        await gw.settle()
        assert [p["segment_id"] for p in payloads(gw.fakes["summariser"])] == ["s1", "s2"]
        (trained,) = payloads(gw.fakes["trainer"])
        assert (trained["segment_id"], trained["text"]) == ("s2", "Both for me, [participant 1].")
        await assert_consent_preceded_every_forward(
            gw, {"summariser": ("summary",), "trainer": ("summary", "training")}
        )


# --- invariant 4: withdrawal --------------------------------------------------------------------------


async def test_withdrawal_stops_queued_content_while_the_destination_is_down(tmp_path: Path) -> None:
    """While the destination answers 503, a withdrawer's queued segments are purged: none arrives after the
    withdrawal was acknowledged, nor in the meeting-end transcript; others' queued segments still arrive."""
    dests = (Dest("summariser"), Dest("archive", delivery="meeting_end"))
    async with serving(tmp_path, dests) as gw:
        live = gw.fakes["summariser"]
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]))
        await gw.send(consent(ADA, "given"), consent(WEN, "given"))
        live.fail_next(1, 503, retry_after=1)  # the first request fails; its retry waits a second
        await gw.send(segment("s1", ADA, "First, from Ada."))
        await wait_for(_async(lambda: len(live.received) == 1), "the failed first attempt")
        assert live.received[0].status == 503
        await gw.send(
            segment("s2", WEN, "Wen's first queued words."),
            segment("s3", WEN, "Wen's second queued words."),
            segment("s4", ADA, "Ada again, after Wen."),
        )
        assert gw.dispatcher.depth() == 4  # s1 in backoff, s2..s4 queued behind it
        await gw.send(consent(WEN, "withdrawn"))
        acknowledged = len(live.received)
        assert WEN not in {p["participant_id"] for p in payloads(live, live.received)}, "arrived too early"
        await gw.send(segment("s5", WEN, "After withdrawing."), segment("s6", ADA, "Wrapping up."))
        await gw.send(event("meeting.ended"))
        await gw.settle()
        after = live.received[acknowledged:]
        assert all(p["participant_id"] != WEN for p in payloads(live, after))
        assert [p["segment_id"] for p in payloads(live)] == ["s1", "s4", "s6"]
        (transcript,) = gw.fakes["archive"].accepted()
        assert [p["segment_id"] for p in transcript.segment_payloads()] == ["s1", "s4", "s6"]
        everything = b"".join(r.raw for f in gw.fakes.values() for r in f.received).decode()
        assert "Wen's" not in everything
        assert "After withdrawing" not in everything
        assert_signed_and_keyed(live)


async def test_a_withdrawers_name_in_queued_words_of_others_is_scrubbed_at_send(tmp_path: Path) -> None:
    """Ada's words naming Wen were decided while Wen consented, so Wen's name stayed in them. They wait (a
    batch window; a destination answering 503) when Wen withdraws: what then leaves must not carry Wen's
    name (invariant 9), and each scrubbing at send is logged as a decision."""
    dests = (Dest("batches", delivery="batched", batch_seconds=600), Dest("summariser"))
    async with serving(tmp_path, dests) as gw:
        live = gw.fakes["summariser"]
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]))
        await gw.send(consent(ADA, "given"), consent(WEN, "given"))
        live.fail_next(1, 503, retry_after=1)
        await gw.send(segment("s1", ADA, "I went through the numbers with Wen Li yesterday."))
        await wait_for(_async(lambda: len(live.received) == 1), "the failed first attempt")
        await gw.send(consent(WEN, "withdrawn"))
        await gw.send(event("meeting.ended"))  # the batch goes now
        await gw.settle()

        async def logged() -> bool:
            found = [d for d in await gw.decisions() if d.reasons == ("names_scrubbed_at_send:1",)]
            return sorted(d.destination for d in found) == ["batches", "summariser"]

        await wait_for(logged, "a decision for each scrubbing at send")

        async def delivered() -> bool:  # the batch's outcome is its member's: sent, not withdrawn
            rows = await gw.store.outbox_report()
            return sorted((r["destination"], r["status"]) for r in rows) == [
                ("batches", "delivered"),
                ("summariser", "delivered"),
            ]

        await wait_for(delivered, "both items recorded as delivered")
    scrubbed = "I went through the numbers with [participant 2] yesterday."
    for fake in (live, gw.fakes["batches"]):
        assert [p["text"] for p in payloads(fake)] == [scrubbed]


async def test_a_speaker_label_naming_someone_who_does_not_consent_is_scrubbed(tmp_path: Path) -> None:
    """A shared room device is named for the people in the room. Its words are the consenting device's,
    but its label names Wen too: Wen's name leaves in no ``speaker`` label, whether Wen refused before
    the words were decided, or withdrew while they waited (a 503, the meeting-end transcript)."""
    room = "p-room"
    dests = (Dest("summariser"), Dest("archive", delivery="meeting_end"))
    async with serving(tmp_path, dests) as gw:
        live = gw.fakes["summariser"]
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]), joined(room, "Room 4 (Ada + Wen Li)"))
        await gw.send(consent(room, "given"), consent(ADA, "given"), consent(WEN, "refused"))
        await gw.send(segment("s1", room, "Decided while Wen refused."))
        await gw.send(consent(WEN, "given"))
        live.fail_next(1, 503, retry_after=1)
        await gw.send(segment("s2", room, "Waiting while Wen withdraws."))
        await wait_for(_async(lambda: len(live.received) == 2), "the failed attempt")
        await gw.send(consent(WEN, "withdrawn"), event("meeting.ended"))
        await gw.settle()
        await wait_for(_async(lambda: len(payloads(live)) == 2), "the retry")
        labels = [p["speaker"] for p in payloads(live)]
        (transcript,) = gw.fakes["archive"].accepted()
        labels += [p["speaker"] for p in transcript.segment_payloads()]
    assert labels == ["Room 4 (Ada + [participant 2])"] * 4


async def test_a_consent_stamped_in_the_future_is_refused_and_a_later_no_stands(tmp_path: Path) -> None:
    """A consent stamped an hour ahead is refused when it arrives (``future_time``), so when the
    participant then says no and the same consent is sent again, nothing of theirs is forwarded."""
    async with serving(tmp_path) as gw:
        ahead = {**consent(WEN, "given"), "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
        await gw.send(joined(WEN, NAMES[WEN]))
        assert (await gw.post(ahead)).doc["detail"] == "future_time"
        await gw.send(consent(WEN, "refused"))
        assert (await gw.post(ahead)).status == 403
        await gw.send(segment("s1", WEN, "Nobody may hear this."))
        await gw.settle()
        assert gw.fake.received == []
        ledger = [(e.record.choice, e.record.outcome, e.record.reason) for e in await gw.ledger()]
        assert ledger == [
            (ConsentChoice.GIVEN, RecordOutcome.REJECTED, "future_time"),
            (ConsentChoice.REFUSED, RecordOutcome.ACCEPTED, None),
            (ConsentChoice.GIVEN, RecordOutcome.REJECTED, "future_time"),
        ]


async def test_withdrawal_drops_the_withdrawers_own_segment_in_backoff(tmp_path: Path) -> None:
    """A withdrawer's segment whose first attempt failed and which waits to be retried is never sent again."""
    async with serving(tmp_path) as gw:
        await gw.send(joined(WEN, NAMES[WEN]), consent(WEN, "given"))
        gw.fake.fail_next(1, 503, retry_after=5)
        await gw.send(segment("s1", WEN, "Sent once, refused, then withdrawn."))
        await wait_for(_async(lambda: len(gw.fake.received) == 1), "the failed first attempt")
        await gw.send(consent(WEN, "withdrawn"))
        await gw.settle()  # the purge ends the 5 s backoff at once
        assert [r.status for r in gw.fake.received] == [503]
        assert payloads(gw.fake) == []


async def test_held_words_of_someone_who_withdraws_never_arrive(tmp_path: Path) -> None:
    """Segments held for a participant with unknown consent are purged by a withdrawal; a later consent
    forwards only what is said after it."""
    async with serving(tmp_path, window=30.0) as gw:
        await gw.send(joined(CY, NAMES[CY]))
        await gw.send(segment("s1", CY, "Held while I think."), segment("s2", CY, "Still held."))
        await gw.send(consent(CY, "withdrawn"))
        assert await dropped_as(gw, "s1", "purged_consent_changed")
        await gw.send(consent(CY, "given"), segment("s3", CY, "Now I agree."))
        await gw.settle()
        assert [p["segment_id"] for p in payloads(gw.fake)] == ["s3"]


async def test_all_party_held_words_of_a_withdrawer_are_not_released(tmp_path: Path) -> None:
    """In all-party mode a consenting speaker's words wait for the others; if that speaker withdraws
    meanwhile, the last missing consent releases none of them."""
    async with serving(tmp_path, window=30.0, mode="all_party") as gw:
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]))
        await gw.send(consent(ADA, "given"), segment("s1", ADA, "Waiting for Wen."))
        await gw.send(consent(ADA, "withdrawn"), consent(WEN, "given"), segment("s2", WEN, "Here now."))
        await gw.settle()
        assert payloads(gw.fake) == []  # Ada withdrew, so Wen's words cannot leave either (all parties)
        assert await dropped_as(gw, "s1", "purged_consent_changed")


# --- invariant 5: fail closed -------------------------------------------------------------------------


async def test_closed_storage_answers_503_and_forwards_nothing(tmp_path: Path) -> None:
    """With the store closed, segment and consent posts answer 503 problem+json and nothing is forwarded."""
    async with serving(tmp_path) as gw:
        await gw.send(joined(ADA, NAMES[ADA]), consent(ADA, "given"), segment("s1", ADA, "Before."))
        await gw.settle()
        await gw.store.close()
        for sent in (segment("s2", ADA, "During the outage."), consent(WEN, "given")):
            reply = await gw.post(sent)
            assert (reply.status, reply.content_type) == (503, PROBLEM_JSON)
            assert reply.doc["type"].endswith("/storage-unavailable")
        await gw.settle()
        assert [p["segment_id"] for p in payloads(gw.fake)] == ["s1"]
    reader = open_store(gw.database, read_only=True)
    await reader.open()
    try:
        assert {d.segment_id for d in await reader.decision_records()} == {"s1"}
        assert [e.record.subject for e in await reader.ledger_entries()] == [ADA]
    finally:
        await reader.close()


async def test_replaced_database_file_fails_closed(tmp_path: Path) -> None:
    """When the database file is moved away under the server, posts answer 503 and nothing more leaves;
    a signed delivery refused that way is not treated as a replay when the platform retries it."""
    async with serving(tmp_path, database=sqlite_url(tmp_path)) as gw:  # SQLite: moves the file away
        await gw.send(joined(ADA, NAMES[ADA]), consent(ADA, "given"))
        os.replace(gw.db_path, tmp_path / "moved.db")
        body = json.dumps(segment("s1", ADA, "Nobody may hear this.")).encode()
        headers = signed_headers(body, "msg-1")
        for _ in range(2):  # the platform's retry of a 503 gets 503 again, not 409
            reply = await gw.post_raw(body, headers, auth=False)
            assert (reply.status, reply.content_type) == (503, PROBLEM_JSON)
        await gw.settle()
        assert gw.fake.received == []
        try:
            decisions = await gw.decisions()
        except StorageError:
            decisions = []
        assert all(d.segment_id != "s1" for d in decisions)


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run
