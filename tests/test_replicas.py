"""Two gateway replicas on one PostgreSQL database: consent recorded through one governs the other at once.

Both are the real app (``create_app`` twice, each on its own loopback port) with the same fake AI service as
their destination; each test gets its own fresh database. Waiting is bounded polling on a condition.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from pydantic import SecretStr

from gateway import app as gateway_app
from gateway.app import create_app
from gateway.model import Action
from gateway.replication import REPLICATION
from gateway.runtime import ConsentViewStale
from gateway.sealing import new_key_spec
from gateway.settings import Settings
from gateway.web.keys import GATEWAY
from tests.conftest import postgres_database
from tests.fakes.ai_service import FakeAIService
from tests.test_transcript_batches import one_transcript
from tests.web.harness import (
    INGEST_TOKEN,
    MEETING,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Dest,
    LiveGateway,
    consent,
    event,
    joined,
    policy_yaml,
    segment,
    signed_headers,
    wait_for,
)

ADA = "p-ada"
DEST = "summariser"


_RUNNING: dict[web.Application, web.AppRunner] = {}


async def stop(gw: LiveGateway) -> None:
    """Stop one replica now, cleanly (it drains, and releases its leases), as a deploy or a scale-in does."""
    runner = _RUNNING.pop(gw.app, None)
    if runner is not None:
        await runner.cleanup()


@asynccontextmanager
async def replicas(
    tmp: Path,
    count: int = 2,
    mode: str = "per_speaker",
    delivery: str = "stream",
    erasure: bool = False,
    window: float = 0,
    setup: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[tuple[list[LiveGateway], str]]:
    """``count`` gateways serving on loopback, sharing one fresh PostgreSQL database, one policy, one outbox
    key and one fake AI service; ``setup`` adds to each app (platform routes) before it starts."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database())
        fake = await stack.enter_async_context(FakeAIService(SIGNING_SECRET))
        policy = tmp / "policy.yaml"
        dest = Dest(DEST, delivery=delivery, erasure=erasure)
        policy.write_text(policy_yaml({DEST: fake.url}, (dest,), mode=mode, window=window))
        config = Settings(
            port=0,
            database=url,
            policies=(policy,),
            ingest_token=SecretStr(INGEST_TOKEN),
            webhook_secrets=(SecretStr(WEBHOOK_SECRET),),
            signing_secret=SecretStr(SIGNING_SECRET),
            outbox_keys=(SecretStr(new_key_spec()),),
            tick_seconds=0.05,
            secrets_file=tmp / "secrets.json",
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        gateways = []
        for _ in range(count):
            app = create_app(config)
            if setup is not None:
                setup(app)
            runner = web.AppRunner(app)
            await runner.setup()
            _RUNNING[app] = runner
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            gateways.append(LiveGateway(app, f"http://127.0.0.1:{port}", http, {DEST: fake}, policy, tmp))
            stack.push_async_callback(stop, gateways[-1])
        yield gateways, url


def sent_ids(fake: FakeAIService) -> set[str]:
    """Segment ids of every request that reached the destination, answered or not."""
    return {str(p.get("segment_id")) for r in fake.received for p in r.segment_payloads()}


def refuses(gw: LiveGateway, participant_id: str) -> bool:
    """Whether the replica would not send the participant's content to the destination now."""
    try:
        return not gw.app[GATEWAY].still_allowed(MEETING, DEST, participant_id)
    except ConsentViewStale:
        return True


async def ready(gw: LiveGateway) -> tuple[int, dict[str, str]]:
    async with gw.http.get(f"{gw.url}/readyz") as resp:
        return resp.status, (await resp.json())["checks"]


async def test_a_withdrawal_through_one_replica_stops_the_other(tmp_path: Path) -> None:
    """Consent given through A lets B forward; after A acknowledges a withdrawal, nothing of that participant
    leaves B: neither segments posted to B afterwards nor those B had queued before."""
    async with replicas(tmp_path) as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"))
        await b.send(joined(ADA, "Ada Lovelace"), segment("b1", ADA, "Said on B."))

        async def b1_delivered() -> bool:
            return "b1" in {p["segment_id"] for p in fake.segments()}

        await wait_for(b1_delivered, "b1 forwarded by B on consent given through A")

        fake.fail_next(1, 503, retry_after=30)
        await b.send(segment("q1", ADA, "Queued first."), segment("q2", ADA, "Queued second."))

        async def q1_refused() -> bool:
            return any(r.status == 503 for r in fake.received)

        await wait_for(q1_refused, "B's first queued item to be in backoff")
        before = len(fake.received)

        [withdrawn] = await a.send(consent(ADA, "withdrawn"))
        assert withdrawn["status"] == "accepted"
        await b.send(*(segment(f"after{n}", ADA, f"After the withdrawal, {n}.") for n in range(5)))

        async def b_refuses() -> bool:
            return refuses(b, ADA)

        await wait_for(b_refuses, "B to refuse the participant's content")
        await b.settle()
        await a.settle()
        assert {p["segment_id"] for p in fake.segments()} == {"b1"}
        assert sent_ids(fake) == {"b1", "q1"}  # q1's only attempt was before the withdrawal
        assert len(fake.received) == before
        decisions = await b.decisions()
        for n in range(5):
            actions = {d.action for d in decisions if d.segment_id == f"after{n}"}
            assert Action.DROP in actions and not actions & {Action.FORWARD, Action.REDACT}, (n, actions)


async def test_a_delivery_one_replica_accepted_is_a_replay_on_the_other(tmp_path: Path) -> None:
    """Ada's signed consent (msg-1) and withdrawal go through A. A copy of msg-1 sent to B within its
    signature window is refused there too (409): B's memory never saw it, the store's claim did. Accepted,
    it would have undone her withdrawal."""
    async with replicas(tmp_path) as ([a, b], _):
        given = json.dumps({"events": [joined(ADA, "Ada Lovelace"), consent(ADA, "given")]}).encode()
        withdrawn = json.dumps(consent(ADA, "withdrawn")).encode()
        captured = signed_headers(given, "msg-1")
        assert (await a.post_raw(given, captured, auth=False)).status == 200
        assert (await a.post_raw(withdrawn, signed_headers(withdrawn, "msg-2"), auth=False)).status == 200
        reply = await b.post_raw(given, captured, auth=False)
        assert reply.status == 409 and reply.doc["type"].endswith("/replayed")
        await b.send(segment("b1", ADA, "After the withdrawal."))
        await b.settle()
        assert [e.record.choice.value for e in await b.ledger()] == ["given", "withdrawn"]
        assert a.fake.segments() == []


async def test_a_replica_that_cannot_confirm_its_view_holds_and_recovers(tmp_path: Path) -> None:
    """When B's ledger listener is killed and the ledger cannot be read, B holds instead of forwarding and
    reports not ready; once it can read again it reconnects by itself, and what it held goes out."""
    async with replicas(tmp_path) as ([a, b], url):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"))
        await b.send(joined(ADA, "Ada Lovelace"), segment("s1", ADA, "Before."))
        replication = b.app[REPLICATION].ledger
        killed = replication.feed.backend_pid()
        assert killed is not None and replication.fresh()

        admin = await asyncpg.connect(url)
        try:
            blocked = admin.transaction()
            await blocked.start()
            # nobody can read the ledger to its end now, so nobody can confirm a fresh view
            await admin.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
            await admin.execute("SELECT pg_terminate_backend($1)", killed)

            async def b_not_ready() -> bool:
                status, checks = await ready(b)
                return status == 503 and checks.get("consent_view") == "stale"

            await wait_for(b_not_ready, "B to report its consent view stale")
            assert not b.app[GATEWAY].fresh()
            await b.send(segment("s2", ADA, "While B cannot confirm."))
            held = [d for d in await b.decisions() if d.segment_id == "s2"]
            assert [(d.action, d.reasons) for d in held] == [(Action.HOLD, ("consent_view_stale",))]
            assert "s2" not in sent_ids(fake)
            await blocked.rollback()
        finally:
            await admin.close()

        async def b_ready() -> bool:
            status, checks = await ready(b)
            return status == 200 and checks.get("consent_view") == "ok"

        await wait_for(b_ready, "B to reconnect and confirm its view")
        assert replication.connections >= 2 and replication.feed.backend_pid() not in (None, killed)

        async def s2_delivered() -> bool:
            return "s2" in {p["segment_id"] for p in fake.segments()}

        await wait_for(s2_delivered, "the held segment to go out once the view is fresh")
        assert {p["segment_id"] for p in fake.segments()} == {"s1", "s2"}


BO, CARA = "p-bo", "p-cara"


def texts(fake: FakeAIService) -> dict[str, str]:
    return {str(p["segment_id"]): str(p["text"]) for p in fake.segments()}


async def delivered(fake: FakeAIService, segment_id: str) -> None:
    async def arrived() -> bool:
        return segment_id in texts(fake)

    await wait_for(arrived, f"{segment_id} to be delivered")


async def knows(gw: LiveGateway, participant_id: str, *, present: bool = True) -> None:
    """Wait until the replica's view of the meeting has the participant, present or not."""

    async def folded() -> bool:
        state = gw.app[GATEWAY].meeting("generic", MEETING)
        person = state.participants.get(participant_id) if state is not None else None
        return person is not None and person.present is present

    await wait_for(folded, f"{participant_id} to be in the replica's roster (present={present})")


async def test_any_replica_can_take_any_event_the_roster_is_shared(tmp_path: Path) -> None:
    """Everyone joins through A; the speech comes through B. B forwards a consenting speaker who joined
    through A, scrubs the name of a participant who joined through A and never consented (whether B first
    sees the meeting after the join, reading the shared roster, or already holds it and is notified), and
    calls everyone by the placeholder A calls them by."""
    async with replicas(tmp_path) as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"))
        await b.send(segment("b1", ADA, "Thanks Bo, over to you."))  # B's first event of the meeting
        await delivered(fake, "b1")

        await a.send(joined(CARA, "Cara Okafor"))
        await knows(b, CARA)
        await b.send(segment("b2", ADA, "Cara Okafor will follow up with Bo."))
        await a.send(segment("a1", ADA, "Cara and Bo agreed."))
        await b.send(segment("b3", BO, "I never agreed to any of this."))
        for sid in ("b2", "a1"):
            await delivered(fake, sid)

        said = texts(fake)
        assert said["b1"] == "Thanks [participant 2], over to you."
        assert said["b2"] == "[participant 3] will follow up with [participant 2]."
        assert said["a1"] == "[participant 3] and [participant 2] agreed."
        assert "b3" not in said
        [b3] = [d for d in await b.decisions() if d.segment_id == "b3"]
        assert b3.action is Action.DROP


async def test_presence_through_one_replica_gates_an_all_party_meeting_on_the_other(tmp_path: Path) -> None:
    """All-party mode: a participant who joined through A and has not consented keeps B from forwarding
    anyone's words; once they leave through A, B forwards again."""
    async with replicas(tmp_path, mode="all_party") as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"))
        await b.send(segment("b1", ADA, "Only Ada is here."))
        await delivered(fake, "b1")

        await a.send(joined(BO, "Bo Nakamura"))
        await knows(b, BO)
        await b.send(segment("b2", ADA, "Bo has joined, and has not said yes."))
        [b2] = [d for d in await b.decisions() if d.segment_id == "b2"]
        assert b2.action in (Action.DROP, Action.HOLD)

        await a.send(event("participant.left", participant_id=BO))
        await knows(b, BO, present=False)
        await b.send(segment("b3", ADA, "Bo has left."))
        await delivered(fake, "b3")
        assert "b2" not in texts(fake)


async def test_a_meeting_end_transcript_holds_what_every_replica_received(tmp_path: Path) -> None:
    """Speech of one meeting reaches both replicas; the end reaches A. The transcript A sends holds B's parts
    too (each is stored when decided), in the order they were decided, once."""
    async with replicas(tmp_path, delivery="meeting_end") as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"))
        await b.send(segment("b1", ADA, "First, on B."))
        await a.send(segment("a1", ADA, "Then on A, with Bo."))
        await b.send(segment("b2", ADA, "Last, on B."), segment("b3", BO, "Not consented."))
        await a.send(event("meeting.ended"))

        transcript = await one_transcript(fake)
        assert len(fake.accepted()) == 1  # the transcript, and nothing sent on its own
        assert [(p["segment_id"], p["text"]) for p in transcript] == [
            ("b1", "First, on B."),
            ("a1", "Then on A, with [participant 2]."),
            ("b2", "Last, on B."),
        ]


async def test_what_another_replica_had_on_the_wire_at_a_withdrawal_is_asked_to_be_erased(
    tmp_path: Path,
) -> None:
    """B's request with Ada's segment is on the wire when her withdrawal is recorded through A, and arrives
    after: A, listing what the destination has, cannot know of it. B, once its attempt has ended, asks the
    destination to erase it; a second withdrawal-time list with nothing new sends nothing more."""
    async with replicas(tmp_path, erasure=True) as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"))
        fake.delay_next(1, 1.0)
        await b.send(segment("s1", ADA, "On the wire at the withdrawal."))

        async def on_the_wire() -> bool:
            return fake.in_flight == 1

        await wait_for(on_the_wire, "B's request to be held by the destination")
        await a.send(consent(ADA, "withdrawn"))

        def erasures() -> list[dict[str, object]]:
            return [r.body for r in fake.received if r.ok and r.body.get("type") == "erasure"]

        async def asked() -> bool:
            return bool(erasures())

        await wait_for(asked, "a deletion request for the segment that arrived after the withdrawal")
        assert "s1" in sent_ids(fake)
        await asyncio.sleep(0.5)  # let any other request arrive
        [request] = erasures()
        assert request["segment_ids"] == ["s1"] and request["participant_id"] == ADA


async def test_a_replica_takes_over_the_holds_of_one_that_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holds Ada's segment while she has not decided, then stops. Her consent, recorded through B while
    nobody holds the segment, must still release it: B claims the hold once A's lease is gone, holds it
    again with its original time, and decides it at once."""
    monkeypatch.setattr(gateway_app, "HELD_RECOVERY_SECONDS", 0.1)
    async with replicas(tmp_path, window=60) as ([a, b], _):
        fake = a.fake
        await a.send(joined(ADA, "Ada Lovelace"), joined(BO, "Bo Nakamura"))
        await a.send(segment("a1", ADA, "Held on A, over to Bo."))
        assert [d.action for d in await a.decisions()] == [Action.HOLD]
        await stop(a)
        await b.send(consent(ADA, "given"))
        await delivered(fake, "a1")
        assert texts(fake) == {"a1": "Held on A, over to [participant 2]."}
        await b.settle()
        rows = [r for r in await b.store.outbox_report() if r["kind"] == "held"]
        assert [(r["status"], r["sealed_parts"]) for r in rows] == [("decided", 0)]
        assert len(fake.accepted()) == 1
