"""Replication piece by piece: the core's hold on a stale consent view, the ledger follower on a real
PostgreSQL database, and ``Gateway.apply_remote`` keeping the ledger's order.

The two-app end-to-end tests are in ``tests/test_replicas.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import asyncpg
import pytest
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import engine
from gateway.engine import Emit
from gateway.events import (
    ConsentSubmitted,
    MeetingEnded,
    ParticipantJoined,
    ParticipantRenamed,
    SegmentReceived,
)
from gateway.model import Action, ConsentChoice, ConsentRecord, Segment
from gateway.replication import Replication
from gateway.roster_log import RosterChange, SharedRoster
from gateway.runtime import ConsentViewStale, Gateway, PolicySet
from gateway.sealing import Keyring
from gateway.sinks import CollectSink, to_item
from gateway.store import open_store
from gateway.store.base import LedgerEntry, StorageError
from gateway.store.pg_listen import LedgerListener, RosterListener
from gateway.store.postgres import PostgresStore
from tests.conftest import database_for, postgres_database
from tests.strategies import consent_record
from tests.test_engine import Meeting, at, policy
from tests.web.harness import wait_for

# --- the core: a stale view holds ----------------------------------------------------------------------


def _say(m: Meeting, sid: str, pid: str, t: float, *, fresh: bool) -> None:
    segment = Segment("m1", sid, pid, f"words {sid}", at(t))
    m._take(engine.on_segment(m.state, segment, m.policy, at(t), view_fresh=fresh))


def _tick(m: Meeting, t: float, *, fresh: bool) -> None:
    m._take(engine.tick(m.state, m.policy, at(t), view_fresh=fresh))


def test_a_stale_view_holds_what_would_leave_and_releases_it_once_fresh() -> None:
    """Consented words decided on an unconfirmed view are held, not sent; a fresh tick sends them."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.consent("a", ("summary",))
    _say(m, "s1", "a", 1, fresh=False)
    assert m.last("s1").action is Action.HOLD and m.last("s1").reasons == (engine.STALE,)
    assert m.sent("live") == []
    _tick(m, 2, fresh=False)
    assert m.sent("live") == []
    _tick(m, 3, fresh=True)
    assert m.last("s1").action is Action.FORWARD and [sid for sid, _ in m.sent("live")] == ["s1"]


def test_a_withdrawal_seen_while_stale_drops_what_was_held() -> None:
    """A segment held on a stale view and then withdrawn is dropped, never sent."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.consent("a", ("summary",))
    _say(m, "s1", "a", 1, fresh=False)
    m.consent("a", ("summary",), "withdrawn", t=2)
    _tick(m, 3, fresh=True)
    assert m.last("s1").action is Action.DROP and m.sent("live") == []


def test_a_stale_hold_outlives_the_pending_window_and_then_expires_with_a_reason() -> None:
    """A stale hold waits STALE_HOLD_LIMIT (not the pending window), then is dropped and logged."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.consent("a", ("summary",))
    _say(m, "s1", "a", 1, fresh=False)
    _tick(m, 31, fresh=False)  # past the policy's 30 s window: still held
    assert [h.segment.segment_id for h in m.state.held] == ["s1"]
    _tick(m, 1 + engine.STALE_HOLD_LIMIT.total_seconds(), fresh=False)
    assert m.last("s1").action is Action.DROP and m.last("s1").reasons == ("consent_view_stale_expired",)


def test_consent_given_on_a_stale_view_does_not_release_held_segments() -> None:
    """Segments held for unknown consent stay held when consent arrives while the view is stale."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.say("s1", "a", "before consent", t=1)
    assert m.last("s1").action is Action.HOLD
    event = ConsentSubmitted("generic", "m1", "a", ("summary",), ConsentChoice.GIVEN, "a", "api", at(2))
    record = engine.evaluate_consent(m.state, event, m.policy, "r-given")
    m._take(engine.on_record(m.state, record, m.policy, at(2), view_fresh=False))
    assert m.sent("live") == [] and m.state.held[0].stale
    _tick(m, 3, fresh=True)
    assert [sid for sid, _ in m.sent("live")] == ["s1"]


@settings(max_examples=60, deadline=None)
@given(
    consented=st.sets(st.sampled_from(["a", "b", "c"])),
    said=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=12),
)
def test_nothing_is_emitted_while_the_view_is_stale(
    consented: set[str], said: list[tuple[str, bool]]
) -> None:
    """Whatever the consents, segments and consent changes, a stale view emits nothing."""
    m = Meeting()
    for pid in ("a", "b", "c"):
        m.join(pid, f"Person {pid.upper()}")
    for pid in sorted(consented):
        event = ConsentSubmitted("generic", "m1", pid, ("summary",), ConsentChoice.GIVEN, pid, "api", at(0))
        record = engine.evaluate_consent(m.state, event, m.policy, f"r-{pid}")
        m._take(engine.on_record(m.state, record, m.policy, at(0), view_fresh=False))
    for n, (pid, tick) in enumerate(said, start=1):
        _say(m, f"s{n}", pid, n, fresh=False)
        if tick:
            _tick(m, n, fresh=False)
    assert m.emits == []


# --- the follower on PostgreSQL ------------------------------------------------------------------------


@asynccontextmanager
async def _ledger() -> AsyncIterator[tuple[PostgresStore, str]]:
    async with postgres_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            yield store, url
        finally:
            await store.close()


def _record(n: int, subject: str = "p1", choice: ConsentChoice = ConsentChoice.GIVEN) -> ConsentRecord:
    return consent_record(
        record_id=f"r{n:03d}", meeting_id="m1", subject=subject, indicated_by=subject, choice=choice
    )


async def test_the_follower_hands_over_every_record_in_ledger_order_across_a_lost_connection() -> None:
    """Records committed while the listener was gone arrive after it reconnects, in order, none twice."""
    async with _ledger() as (store, url):
        await store.append_consent(_record(0))  # before the follower started: not replayed
        seen: list[str] = []

        async def apply(entry: LedgerEntry) -> None:
            seen.append(entry.record.record_id)

        follower = Replication(LedgerListener(url), apply, max_age=2.0)
        await follower.start()
        try:
            for n in range(1, 4):
                await store.append_consent(_record(n))
            await wait_for(_true(lambda: len(seen) == 3), "three records")
            admin = await asyncpg.connect(url)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", follower.feed.backend_pid())
                await wait_for(_true(lambda: not follower.fresh()), "the follower to notice")
                for n in range(4, 8):
                    await store.append_consent(_record(n))
            finally:
                await admin.close()
            await wait_for(_true(lambda: len(seen) == 7 and follower.fresh()), "catching up")
            assert seen == [f"r{n:03d}" for n in range(1, 8)]
            assert follower.connections == 2
        finally:
            await follower.stop()


async def test_polling_catches_up_when_no_notification_comes() -> None:
    """With the notifying trigger disabled, the periodic read still brings the record in."""
    async with _ledger() as (store, url):
        seen: list[str] = []

        async def apply(entry: LedgerEntry) -> None:
            seen.append(entry.record.record_id)

        follower = Replication(LedgerListener(url), apply, max_age=0.4)
        await follower.start()
        try:
            admin = await asyncpg.connect(url)
            try:
                await admin.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_notify")
                await store.append_consent(_record(1))
            finally:
                await admin.close()
            await wait_for(_true(lambda: seen == ["r001"]), "the poll to find the record")
            assert follower.fresh()
        finally:
            await follower.stop()


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return check()

    return condition


# --- the gateway folds in others' records in ledger order ----------------------------------------------


async def test_an_older_record_from_elsewhere_does_not_undo_a_newer_one_written_here() -> None:
    """Replica B withdraws, then A (not yet told) records a new consent: when B's older withdrawal reaches
    A, A keeps the ledger's latest word (given), and A's own record is not folded in twice."""
    async with _ledger() as (store, _):
        pol = policy()
        a = Gateway(PolicySet([pol]), store, CollectSink())
        b = Gateway(PolicySet([pol]), store, CollectSink())
        now = datetime.now(UTC)
        for gw in (a, b):
            await gw.handle("generic", ParticipantJoined("generic", "m1", "p1", "Ann Example", now))
        withdrawal = ConsentSubmitted(
            "generic", "m1", "p1", ("summary",), ConsentChoice.WITHDRAWN, "p1", "api", now
        )
        given_again = ConsentSubmitted(
            "generic", "m1", "p1", ("summary",), ConsentChoice.GIVEN, "p1", "api", now
        )
        await b.handle("generic", withdrawal)
        await a.handle("generic", given_again)
        entries = await store.ledger_entries()
        assert [e.record.choice for e in entries] == [ConsentChoice.WITHDRAWN, ConsentChoice.GIVEN]
        for entry in entries:
            await a.apply_remote(entry.record)
        assert a.still_allowed("m1", "live", "p1")
        await b.apply_remote(entries[1].record)
        assert b.still_allowed("m1", "live", "p1")


async def test_a_stale_gateway_never_says_yes() -> None:
    """While the view is not fresh, a 'yes' becomes ConsentViewStale; a 'no' stays a no."""
    async with _ledger() as (store, _):
        gw = Gateway(PolicySet([policy()]), store, CollectSink())
        now = datetime.now(UTC)
        await gw.handle("generic", ParticipantJoined("generic", "m1", "p1", "Ann Example", now))
        given_ = ConsentSubmitted("generic", "m1", "p1", ("summary",), ConsentChoice.GIVEN, "p1", "api", now)
        await gw.handle("generic", given_)
        gw.fresh = lambda: False
        assert not gw.still_allowed("m1", "live", "p2")
        try:
            gw.still_allowed("m1", "live", "p1")
        except ConsentViewStale:
            pass
        else:
            raise AssertionError("a stale view answered yes")


# --- the shared roster --------------------------------------------------------------------------------


def _roster_gateway(store: PostgresStore, keyring: Keyring) -> Gateway:
    gw = Gateway(PolicySet([policy()]), store, CollectSink())
    gw.roster = SharedRoster(store, keyring)
    return gw


def _joined(pid: str, name: str, email: str | None = None) -> ParticipantJoined:
    return ParticipantJoined("generic", "m1", pid, name, datetime.now(UTC), email)


async def test_the_shared_roster_holds_names_sealed_and_forgets_them_with_the_meeting() -> None:
    async with _ledger() as (store, url):
        keyring = Keyring.generate()
        gw = _roster_gateway(store, keyring)
        await gw.handle("generic", _joined("p1", "Zanzibar Quixote", "zq@example.org"))
        # the key stays needed (``outbox keys``) while the roster holds anything under it
        assert await store.sealed_key_ids(keyring.key_id_of) == {keyring.active_id: 1}
        admin = await asyncpg.connect(url)
        try:
            [row] = await admin.fetch("SELECT * FROM roster_log")
            assert b"Zanzibar" not in row["sealed"] and b"zq@example" not in row["sealed"]
            assert (row["participant_id"], row["ordinal"]) == ("p1", 1)
            ended = datetime.now(UTC)
            await gw.handle("generic", MeetingEnded("generic", "m1", ended))
            await gw.tick(ended + timedelta(minutes=5))
            # joined and ended; the meeting is not forgotten yet
            assert await admin.fetchval("SELECT count(*) FROM roster_log") == 2
            await gw.tick(ended + timedelta(minutes=11))
            assert await admin.fetchval("SELECT count(*) FROM roster_log") == 0
            assert await store.sealed_key_ids(keyring.key_id_of) == {}
            assert gw.meeting("generic", "m1") is None
        finally:
            await admin.close()


async def test_replicas_give_a_participant_one_placeholder_whatever_order_they_learn_of_joins() -> None:
    """B holds the meeting; A and B each take a join before hearing of the other's: the shared roster numbers
    both, so once each has folded in the other's change, both call everyone the same."""
    async with _ledger() as (store, _):
        keyring = Keyring.generate()
        a, b = _roster_gateway(store, keyring), _roster_gateway(store, keyring)
        await b.handle("generic", _joined("p-rae", "Rae Ito"))
        await a.handle("generic", _joined("p-ana", "Ana Silva"))  # A reads Rae from the shared roster
        await b.handle("generic", _joined("p-bo", "Bo Chen"))  # B has not heard of Ana yet
        await a.handle("generic", ParticipantRenamed("generic", "m1", "p-ana", "Ana S.", datetime.now(UTC)))
        changes = await SharedRoster(store, keyring).load("generic", "m1")
        with structlog.testing.capture_logs() as logs:
            for gw in (a, b):
                for change in changes:
                    await gw.apply_roster(change)
        assert [e["event"] for e in logs] == ["roster.replicated"] * 3  # Ana and her rename to B, Bo to A
        assert not any(name in str(logs) for name in ("Ana", "Bo Chen", "Rae"))  # ids, never names
        views = []
        for gw in (a, b):
            state = gw.meeting("generic", "m1")
            assert state is not None
            views.append({pid: (p.ordinal, p.name, p.present) for pid, p in state.participants.items()})
        assert (
            views[0]
            == views[1]
            == {
                "p-rae": (1, "Rae Ito", True),
                "p-ana": (2, "Ana S.", True),
                "p-bo": (3, "Bo Chen", True),
            }
        )


async def test_a_roster_change_no_configured_key_opens_keeps_the_view_unconfirmed() -> None:
    """Replicas must share the outbox keys: one that cannot read a roster change cannot know a name it must
    scrub, so it never calls its view fresh (and holds instead of forwarding) until it can."""
    async with _ledger() as (store, url):
        seen: list[int] = []

        async def apply(change: RosterChange) -> None:
            seen.append(change.seq)

        follower = Replication(RosterListener(url, Keyring.generate()), apply, max_age=0.4)
        await follower.start()
        try:
            await wait_for(_true(follower.fresh), "the follower to confirm an empty roster")
            await SharedRoster(store, Keyring.generate()).write("c1", _joined("p1", "Ann Example"))
            await wait_for(_true(lambda: not follower.fresh()), "the follower to stop calling its view fresh")
            await asyncio.sleep(0.5)  # polls and retries since: still unconfirmed, nothing applied
            assert not follower.fresh() and seen == []
        finally:
            await follower.stop()


async def test_a_meeting_ended_through_one_replica_is_forgotten_by_the_others_too() -> None:
    """Only A receives meeting.ended; B, which took part of the meeting, forgets it in time as well (else each
    replica that ever saw a meeting would keep it for good)."""
    async with _ledger() as (store, _):
        keyring = Keyring.generate()
        a, b = _roster_gateway(store, keyring), _roster_gateway(store, keyring)
        for gw in (a, b):
            await gw.handle("generic", _joined("p1", "Ann Example"))
        ended = datetime.now(UTC)
        await a.handle("generic", MeetingEnded("generic", "m1", ended))
        for change in await SharedRoster(store, keyring).load("generic", "m1"):
            await b.apply_roster(change)
        await b.tick(ended + timedelta(minutes=5))
        assert b.meeting("generic", "m1") is not None
        await b.tick(ended + timedelta(minutes=11))
        assert b.meeting("generic", "m1") is None


async def test_a_roster_change_that_cannot_be_shared_is_refused_and_changes_nothing() -> None:
    """Fail closed: a join the shared roster cannot record is not folded in here either (the platform gets
    an error and sends it again), so no replica scrubs or counts presence on a roster the others lack."""
    async with _ledger() as (store, url):
        gw = _roster_gateway(store, Keyring.generate())
        await gw.handle("generic", _joined("p1", "Ann Example"))
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("ALTER TABLE roster_log RENAME TO roster_log_gone")
            before = gw.meeting("generic", "m1")
            with pytest.raises(StorageError) as refused:
                await gw.handle("generic", _joined("p2", "Zanzibar Quixote"))
            assert "Zanzibar" not in str(refused.value)
            assert gw.meeting("generic", "m1") is before
        finally:
            await admin.close()


async def test_a_meeting_end_on_a_stale_view_decides_the_transcript_from_the_ledger(tmp_path: Path) -> None:
    """The end decides the transcript once and closes what it leaves out. A replica whose view is not
    confirmed fresh may lack a consent recorded on another (here: its memory has lost Ada's, as a lagging
    follower's would never have had it): it must read the ledger, not drop her words as lapsed."""
    store = open_store(await database_for(tmp_path))
    await store.open()
    try:
        sink = CollectSink()
        gw = Gateway(PolicySet([policy()]), store, sink)
        now = datetime.now(UTC)
        await gw.handle("generic", ParticipantJoined("generic", "m1", "p1", "Ann Example", now))
        given_ = ConsentSubmitted(
            "generic", "m1", "p1", ("summary", "training"), ConsentChoice.GIVEN, "p1", "api", now
        )
        await gw.handle("generic", given_)
        await gw.handle("generic", SegmentReceived("generic", Segment("m1", "s1", "p1", "Hello.", now)))
        live = gw.meeting("generic", "m1")
        assert live is not None
        stale = replace(live, consents=MappingProxyType({}), version=live.version + 1, cache={})
        gw._states[("generic", "m1")] = stale
        gw.fresh = lambda: False
        await gw.handle("generic", MeetingEnded("generic", "m1", now))
        transcripts = [i for i in sink.items if i.destination == "batch"]
        assert [[p.segment_id for p in i.parts] for i in transcripts] == [["s1"]]
        assert not [d for d in await store.decision_records() if d.reasons[0].startswith("consent_lapsed")]
    finally:
        await store.close()


async def test_no_yes_while_a_withdrawal_is_being_written(tmp_path: Path) -> None:
    """A withdrawal is durable (recorded) some loop turns before the coroutine that wrote it resumes to
    publish it. Meanwhile delivery's check must not answer yes for that participant (it is told to try
    again later, so nothing is lost if the write fails); others are unaffected."""
    store = open_store(await database_for(tmp_path))
    await store.open()
    try:
        gw = Gateway(PolicySet([policy()]), store, CollectSink())
        now = datetime.now(UTC)
        for pid in ("p1", "p2"):
            await gw.handle("generic", ParticipantJoined("generic", "m1", pid, f"Ann {pid}", now))
            given_ = ConsentSubmitted(
                "generic", "m1", pid, ("summary",), ConsentChoice.GIVEN, pid, "api", now
            )
            await gw.handle("generic", given_)
        real = store.append_consent
        written, resume = asyncio.Event(), asyncio.Event()

        async def slow(*args: object, **kwargs: object) -> LedgerEntry:
            entry = await real(*args, **kwargs)  # type: ignore[arg-type]
            written.set()
            await resume.wait()  # durable, and not yet seen by the view
            return entry

        store.append_consent = slow  # type: ignore[method-assign]
        withdrawal = ConsentSubmitted(
            "generic", "m1", "p1", ("summary",), ConsentChoice.WITHDRAWN, "p1", "api", now
        )
        task = asyncio.create_task(gw.handle("generic", withdrawal))
        await written.wait()
        with pytest.raises(ConsentViewStale):
            gw.still_allowed("m1", "live", "p1")
        assert gw.still_allowed("m1", "live", "p2")
        resume.set()
        await task
        assert not gw.still_allowed("m1", "live", "p1")
    finally:
        await store.close()


async def test_a_name_whose_consent_lapsed_after_the_decision_is_scrubbed_at_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ada's words naming Wen are decided a moment before Wen's consent lapses, so Wen's name stays in
    them. Sent after it lapsed, the name must go: the item carries the scrubber its text went through, and
    delivery skips scrubbing again only while that very scrubber is the meeting's."""
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    clock = [t0]
    monkeypatch.setattr("gateway.runtime.wall_clock", lambda: clock[0])
    store = open_store(await database_for(tmp_path))
    await store.open()
    try:
        sink = CollectSink()
        emits: list[Emit] = []
        sink.submit = emits.append  # type: ignore[method-assign]
        gw = Gateway(PolicySet([policy()]), store, sink)
        for pid, name in (("ada", "Ada Lovelace"), ("wen", "Wen Li")):
            await gw.handle("generic", ParticipantJoined("generic", "m1", pid, name, t0), now=t0)
        await gw.handle("generic", ConsentSubmitted(
            "generic", "m1", "ada", ("summary",), ConsentChoice.GIVEN, "ada", "api", t0), now=t0)  # fmt: skip
        await gw.handle("generic", ConsentSubmitted(
            "generic", "m1", "wen", ("summary",), ConsentChoice.GIVEN, "wen", "api", t0,
            expires_at=t0 + timedelta(seconds=10)), now=t0)  # fmt: skip
        decided = t0 + timedelta(seconds=9.999)
        segment = Segment("m1", "s1", "ada", "I checked it with Wen Li.", decided)
        await gw.handle("generic", SegmentReceived("generic", segment), now=decided)
        [emit] = [e for e in emits if e.destination == "live"]
        part = to_item(emit).parts[0]
        assert part.payload["text"] == "I checked it with Wen Li."
        clock[0] = decided
        assert gw.scrubbed_now("m1", "live", part, emit.scrubbed_with) is part  # nothing changed: no work
        clock[0] = t0 + timedelta(seconds=30)  # sent later: Wen's consent has lapsed
        sent = gw.scrubbed_now("m1", "live", part, emit.scrubbed_with)
        assert sent.payload["text"] == "I checked it with [participant 2]."
        await gw.settle()
    finally:
        await store.close()


async def test_a_failed_roster_read_is_not_remembered_as_a_miss(tmp_path: Path) -> None:
    """Delivery asks to hold a meeting known only from storage; the roster read fails once. The next
    attempt must read again and hold the meeting (a failure remembered as "not there" would leave its
    content unscrubbed for a while)."""
    store = open_store(await database_for(tmp_path))
    await store.open()
    try:
        writer = Gateway(PolicySet([policy()]), store, CollectSink())
        writer.roster = SharedRoster(store, keyring := Keyring.generate())
        now = datetime.now(UTC)
        await writer.handle("generic", ParticipantJoined("generic", "m1", "p1", "Ann Example", now))
        gw = Gateway(PolicySet([policy()]), store, CollectSink())
        gw.roster = SharedRoster(store, keyring)
        real, calls = gw.roster.meetings, 0

        async def flaky() -> list[tuple[str, str]]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise StorageError("storage read failed (OperationalError)")
            return await real()

        gw.roster.meetings = flaky  # type: ignore[method-assign]
        with pytest.raises(StorageError):
            await gw.hold_meeting("m1")
        await gw.hold_meeting("m1")
        assert gw.holds("m1") and calls == 2
    finally:
        await store.close()
