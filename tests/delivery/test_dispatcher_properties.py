"""Property: under interleaved submits, failures and purges, withdrawal holds and nothing consented is lost.

Each example runs a generated program against a real dispatcher and a fresh fake AI service on loopback.
To tell when an attempt *began* relative to a purge (a request begun before a purge may arrive after it), the
dispatcher's clock advances by one second at every purge: the signed ``webhook-timestamp`` of each request is
then the purge epoch in which that attempt started.

Destination ``ml`` may be ``batched`` (drawn per example): queued segments then go several to a request,
waiting a few milliseconds for company, and the same properties must hold part by part.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field, replace

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.delivery import DestinationConfig, Dispatcher, Item, Part, Result, Status
from tests.fakes.ai_service import FakeAIService

SECRET = "whsec_" + base64.b64encode(b"property test secret").decode()
MEETINGS = ("m1", "m2")
PEOPLE = ("p1", "p2", "p3")

submits = st.tuples(
    st.just("submit"),
    st.sampled_from(MEETINGS),
    st.sampled_from(["ai", "ml"]),
    st.sampled_from(["segment", "transcript"]),
    st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=4),
)
failures = st.tuples(st.just("fail"), st.integers(1, 3), st.sampled_from([500, 503, 429]))
purges = st.tuples(st.just("purge"), st.sampled_from(MEETINGS), st.sampled_from(PEOPLE))
pauses = st.tuples(st.just("pause"), st.sampled_from([0.0, 0.001, 0.004]))
flushes = st.tuples(st.just("flush"), st.sampled_from(MEETINGS))
bursts = st.tuples(
    st.just("burst"), st.sampled_from(MEETINGS), st.lists(st.sampled_from(PEOPLE), min_size=2, max_size=8)
)
"""Several segments submitted to ``ml`` in one go: what a batch is made of."""
programs = st.lists(
    st.one_of(submits, submits, failures, purges, pauses, flushes, bursts), min_size=1, max_size=25
)
batching = st.sampled_from([None, (1, 0.0), (3, 0.0), (3, 0.003), (50, 0.01)])
"""``ml``'s (batch_max, batch_seconds), or None: one request per item."""


@dataclass
class World:
    """What the program did: the purge epoch of each withdrawn (meeting, participant), and every part sent."""

    base: int
    epoch: int = 0
    purged: dict[tuple[str, str], int] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    def clock(self) -> float:
        return float(self.base + self.epoch)

    def allowed(self, dest: str, part: Part) -> bool:
        return (part.meeting_id, part.participant_id) not in self.purged


def _item(world: World, op: tuple[object, ...], number: int, consult_allowed: bool) -> Item | None:
    _, meeting, destination, kind, people = op
    assert isinstance(people, list)
    if not consult_allowed:
        # Without the allowed() safety net the pipeline would not produce a purged participant's parts.
        people = [p for p in people if (meeting, p) not in world.purged]
    if kind == "segment":
        people = people[:1]
    key = f"i{number}"
    parts = tuple(
        Part(
            str(meeting),
            p,
            f"{key}-{i}",
            {"meeting_id": meeting, "participant_id": p, "segment_id": f"{key}-{i}"},
        )
        for i, p in enumerate(people)
    )
    return Item(str(destination), key, str(meeting), kind, parts) if parts else None  # type: ignore[arg-type]


async def _run(
    program: list[tuple[object, ...]], consult_allowed: bool, batch: tuple[int, float] | None = None
) -> tuple[World, FakeAIService]:
    world = World(base=int(time.time()))
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        config = {
            name: DestinationConfig(
                # backoff and the circuit breaker's cooldown scaled down alike, so examples run in ms
                name,
                service.url,
                SECRET,
                max_attempts=200,
                backoff_base=0.001,
                backoff_max=0.004,
                breaker_cooldown=0.004,
            )
            for name in ("ai", "ml")
        }
        if batch is not None:
            config["ml"] = replace(config["ml"], batch_max=batch[0], batch_seconds=batch[1])
        dispatcher = Dispatcher(
            session,
            config,
            allowed=world.allowed if consult_allowed else (lambda dest, part: True),
            on_result=lambda item, result: world.results.append(result),
            clock=world.clock,
        )
        await dispatcher.start()
        for number, op in enumerate(program):
            await _step(world, dispatcher, service, op, number, consult_allowed)
        drained = await dispatcher.drain(10)
        await dispatcher.close()
        assert drained, "dispatcher did not drain"
    return world, service


async def _step(
    world: World,
    dispatcher: Dispatcher,
    service: FakeAIService,
    op: tuple[object, ...],
    number: int,
    consult: bool,
) -> None:
    match op:
        case ("submit", *_):
            item = _item(world, op, number, consult)
            if item is not None:
                world.parts.extend(item.parts)
                dispatcher.submit(item)
        case ("fail", int(n), int(status)):
            service.fail_next(n, status=status, retry_after=0 if status == 429 else None)
        case ("purge", str(meeting), str(person)) if (meeting, person) not in world.purged:
            world.epoch += 1
            world.purged[(meeting, person)] = world.epoch
            dispatcher.purge(meeting, person)
        case ("pause", float(seconds)):
            await asyncio.sleep(seconds)
        case ("flush", str(meeting)):
            dispatcher.flush(meeting)
        case ("burst", str(meeting), list(people)):
            for i, person in enumerate(people):
                op = ("submit", meeting, "ml", "segment", [person])
                item = _item(world, op, 1000 + number * 10 + i, consult)  # apart from single submits' keys
                if item is not None:
                    world.parts.extend(item.parts)
                    dispatcher.submit(item)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs, consult_allowed=st.booleans(), batch=batching)
async def test_withdrawal_holds_and_consented_parts_arrive(
    program: list[tuple[object, ...]], consult_allowed: bool, batch: tuple[int, float] | None
) -> None:
    """No attempt begun after a purge carries the purged participant; every other part is accepted; in a
    batch each part carries its own item's key, and a batch never exceeds its destination's limit."""
    world, service = await _run(program, consult_allowed, batch)

    for request in service.received:
        if isinstance(request.body, dict) and request.body.get("type") == "batch":
            assert batch is not None and len(request.body["segments"]) <= batch[0]
            for payload in request.body["segments"]:
                assert payload["idempotency_key"] == payload["segment_id"].split("-")[0]

    for request in service.received:
        started_in = int(request.headers["webhook-timestamp"]) - world.base
        for payload in request.segment_payloads():
            withdrawn_at = world.purged.get((payload["meeting_id"], payload["participant_id"]))
            assert withdrawn_at is None or started_in < withdrawn_at, "sent after its participant's purge"

    accepted = {payload["segment_id"] for payload in service.segments()}
    kept = {p.segment_id for p in world.parts if (p.meeting_id, p.participant_id) not in world.purged}
    assert kept <= accepted, "a consented part was never delivered"
    assert all(r.status is Status.DELIVERED or r.reason == "withdrawn" for r in world.results)
