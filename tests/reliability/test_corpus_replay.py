"""Replay of real meetings from ../shared/corpus through the live gateway with seeded decliners.

One gateway on loopback (real store, one ``delivery: stream`` destination served by a ``FakeAIService``)
receives the meetings as a platform would send them, many meetings at once, each meeting's events in order.
About one speaker in four refuses, the rest consent to ``summary``, and a few of those withdraw partway. The
verdict (tests/reliability/corpus_driver.py): no segment of a decliner, of an unattributed turn or said after
a withdrawal reached the destination (leaked), every segment of a speaker who consented and never withdrew
reached it exactly once after de-duplication by idempotency key (lost, duplicated), and how many decliner
names survived scrubbing in what consenting speakers said (a figure, not an assertion: see docs/scrubbing.md).

Default size: the shortest meeting of each corpus source. ``RELIABILITY_FULL=1``: every meeting.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.engine import STALE, STALE_HOLD_LIMIT
from gateway.web.keys import GATEWAY
from tests.conftest import ON_POSTGRES, shared_dir
from tests.fakes.ai_service import Received
from tests.reliability.corpus_driver import NAMED_SOURCES, Script, Verdict, load, script, verdict
from tests.reliability.figures import record, scale
from tests.test_replicas import replicas
from tests.web.harness import MEETING, Dest, LiveGateway, consent, joined, segment, serving, wait_for

SECTION = "corpus replay"
SECTION_REPLICAS = "corpus replay, two replicas"
STALE_LIMIT = STALE_HOLD_LIMIT.total_seconds() + 60
pytestmark = pytest.mark.reliability


async def replay_one(gw: LiveGateway, plan: Script, gate: asyncio.Semaphore) -> int:
    """Post one meeting's batches in order; returns how many events were not accepted."""
    refused = 0
    async with gate:
        for batch in plan.batches:
            reply = await gw.post_raw(_body(batch))
            assert reply.status == 200, (plan.meeting_id, reply.status)
            refused += sum(1 for r in reply.doc["results"] if r["status"] != "accepted")
    return refused


def _body(batch: Sequence[object]) -> bytes:
    return json.dumps({"events": list(batch)}).encode()


async def replay(gw: LiveGateway, plans: Sequence[Script], concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    refused = await asyncio.gather(*(replay_one(gw, plan, gate) for plan in plans))
    await settle(gw)
    return sum(refused)


async def settle(gw: LiveGateway) -> None:
    """Wait until no meeting holds a segment and delivery is idle. On PostgreSQL a replica that cannot
    confirm its consent view is fresh (a busy event loop delays the confirmation) holds consented segments
    instead of forwarding them, and releases them at a tick once the view is fresh again: those are in no
    delivery queue yet, so draining the dispatcher alone would call them lost."""
    gateway = gw.app[GATEWAY]

    async def nothing_held() -> bool:
        return not any(state.held for state in gateway.meetings())

    while True:
        await wait_for(nothing_held, "held segments to be released or dropped", limit=STALE_LIMIT)
        assert await gw.dispatcher.drain(timeout=600.0), "delivery did not settle"
        if await nothing_held():
            return


def record_verdict(
    found: Verdict, seconds: float, backend: str, concurrency: int, stale: int, section: str = SECTION
) -> None:
    on = f"{backend}, {found.meetings} meetings, {concurrency} posted at a time"
    record(section, "meetings replayed", found.meetings, on)
    record(section, "segments posted", found.segments, on)
    record(section, "decliners (refused / withdrew midway)", f"{found.refusers} / {found.withdrawers}", on)
    record(
        section,
        "segments that must arrive / must not / either",
        f"{found.must} / {found.never} / {found.may}",
        "either: said before the speaker withdrew (delivered, or purged by the withdrawal)",
    )
    record(section, "leaked turns", found.leaked, "must be 0")
    record(section, "lost turns", found.lost, "must be 0")
    record(section, "duplicated turns (distinct idempotency keys)", found.duplicated, "must be 0")
    record(section, "decliner named in speaker metadata", found.speaker_leaks, "must be 0")
    record(section, "payloads of no scripted segment, or misattributed", found.unexpected, "must be 0")
    record(
        section,
        "segments held while the consent view was unconfirmed",
        stale,
        "PostgreSQL only: held, not forwarded, until the replica confirmed its view, then decided again",
    )
    record(section, "said before a withdrawal, delivered", f"{found.may_delivered} of {found.may}", "")
    record(section, "replay wall time (s)", round(seconds, 1), on)
    record(section, "segments/s end to end", round(found.segments / seconds), on)
    for source in NAMED_SOURCES:
        counts = found.names.get(source)
        if counts is None:
            continue
        for kind, label in (("full", "full names"), ("token", "first/last name tokens")):
            record(
                section,
                f"decliner {label} surviving, {source}",
                f"{counts[kind + '_after']} of {counts[kind + '_before']}",
                f"in {counts['turns']} delivered turns; of those left, {counts[kind + '_after_shared']} are "
                "also a name part of someone who did not refuse",
            )


@pytest.mark.corpus
async def test_corpus_meetings_replayed_leak_nothing_and_lose_nothing(tmp_path: Path) -> None:
    """Every replayed meeting: no decliner's or withdrawn turn arrives, every consented turn arrives once."""
    corpus = shared_dir() / "meetings.jsonl.gz"
    full = scale(0, 1) == 1
    plans = [script(raw) for raw in load(corpus, full)]
    concurrency = scale(4, 16)
    async with serving(tmp_path, (Dest("summariser", delivery="stream"),)) as gw:
        start = time.perf_counter()
        refused = await replay(gw, plans, concurrency)
        seconds = time.perf_counter() - start
        found = verdict(plans, gw.fake.received)
        stale = sum(1 for d in await gw.decisions() if d.reasons == (STALE,))
    record_verdict(found, seconds, "PostgreSQL" if ON_POSTGRES else "SQLite", concurrency, stale)
    assert refused == 0
    assert found.unexpected == 0
    assert found.leaked == 0
    assert found.speaker_leaks == 0
    assert found.lost == 0
    assert found.duplicated == 0


@pytest.mark.corpus
async def test_corpus_meetings_spread_over_two_replicas_leak_nothing_and_lose_nothing(tmp_path: Path) -> None:
    """The same replay against two replicas on one PostgreSQL database, each batch of a meeting posted to
    either (seeded), in order: any replica can take any event. Joins, consents and withdrawals recorded
    through one govern what the other forwards, and names scrubbed on one are scrubbed on the other."""
    corpus = shared_dir() / "meetings.jsonl.gz"
    plans = [script(raw) for raw in load(corpus, scale(0, 1) == 1)]
    concurrency = scale(4, 16)
    async with replicas(tmp_path) as (gateways, _):
        gate = asyncio.Semaphore(concurrency)
        start = time.perf_counter()
        refused = await asyncio.gather(*(spread_one(gateways, plan, gate) for plan in plans))
        for gw in gateways:
            await settle(gw)
        for gw in gateways:  # what one released while the other settled
            await settle(gw)
        seconds = time.perf_counter() - start
        found = verdict(plans, gateways[0].fake.received)
        stale = sum(1 for d in await gateways[0].decisions() if d.reasons == (STALE,))
    record_verdict(found, seconds, "PostgreSQL, two replicas", concurrency, stale, SECTION_REPLICAS)
    assert sum(refused) == 0
    assert found.unexpected == 0
    assert found.leaked == 0
    assert found.speaker_leaks == 0
    assert found.lost == 0
    assert found.duplicated == 0


async def spread_one(gateways: Sequence[LiveGateway], plan: Script, gate: asyncio.Semaphore) -> int:
    """Post one meeting's batches in order, each to a replica chosen by a seeded draw."""
    rng = random.Random(plan.meeting_id)
    refused = 0
    async with gate:
        for batch in plan.batches:
            reply = await rng.choice(gateways).post_raw(_body(batch))
            assert reply.status == 200, (plan.meeting_id, reply.status)
            refused += sum(1 for r in reply.doc["results"] if r["status"] != "accepted")
    return refused


def _received(seq: int, key: str, payloads: list[dict[str, object]], status: int = 200) -> Received:
    body = {"type": "transcript", "segments": payloads}
    return Received(key, body, b"", {}, status, seq)


def test_the_verdict_catches_leaks_losses_and_duplicates() -> None:
    """The replay's verifier itself: a decliner's segment that reached the destination (even answered 503)
    is a leak, a consented segment that never got a 2xx is lost, two keys for one segment a duplicate."""
    raw = {
        "meeting_id": "earnings21/synthetic",
        "meta": {"speaker_names": {"1": "Ada Lovelace", "2": "Dee Decliner"}},
        "turns": [
            {"speaker": s, "text": t, "start": None, "end": None}
            for s, t in (("1", "Hi Dee Decliner."), ("2", "No."), ("1", "Bye."), ("", "Who?"))
        ],
    }
    plan = script(raw)
    plan.refusers, plan.withdrawn_at = {"p2"}, {}
    plan.must, plan.never, plan.may = {"t0", "t2"}, {"t1", "t3"}, set()

    def seg(sid: str, pid: str, text: str = "x") -> dict[str, object]:
        return {"meeting_id": raw["meeting_id"], "segment_id": sid, "participant_id": pid, "text": text}

    received = [
        _received(0, "k0", [seg("t0", "p1", "Hi Dee Decliner.")]),
        _received(1, "k1", [seg("t1", "p2")], status=503),
        _received(2, "k2", [seg("t2", "p1")], status=503),
        _received(3, "k0b", [seg("t0", "p1")]),
    ]
    found = verdict([plan], received)
    assert (found.leaked, found.lost, found.duplicated, found.unexpected) == (1, 1, 1, 0)
    assert found.names["earnings21"]["full_after"] == 1
    assert verdict([plan], [received[0]]).leaked == 0


async def test_a_withdrawal_does_not_drop_another_speakers_segment_held_for_a_stale_view(
    tmp_path: Path,
) -> None:
    """Per-speaker mode: Ada's segment, held only because the replica could not confirm its consent view,
    is delivered once the view is fresh, even though Bob withdrew meanwhile (his withdrawal is his alone)."""
    async with serving(tmp_path) as gw:
        gateway = gw.app[GATEWAY]
        await gw.send(
            joined("p-ada", "Ada Lovelace"),
            joined("p-bob", "Bob Stone"),
            consent("p-ada", "given"),
            consent("p-bob", "given"),
        )
        fresh = True
        gateway.fresh = lambda: fresh  # what gateway.replication reports on PostgreSQL under load
        fresh = False
        await gw.send(segment("s1", "p-ada", "Held while the view is unconfirmed."))
        state = gateway.meeting("generic", MEETING)
        assert state is not None
        assert [h.segment.segment_id for h in state.held] == ["s1"]
        await gw.send(consent("p-bob", "withdrawn"))
        fresh = True
        await settle(gw)
        last = [d for d in await gw.decisions() if d.segment_id == "s1"][-1]
        record(
            "fixed defects",
            "another speaker's withdrawal while a consented segment is held (stale consent view)",
            "delivered" if gw.fake.segments() else f"{last.action}: {', '.join(last.reasons)}",
            "delivered once the view is fresh",
        )
        assert [p["segment_id"] for p in gw.fake.segments()] == ["s1"]
