"""Batched delivery (``delivery: batched``): queued segments go several to a request, part by part as safe.

The dispatcher against a fake AI service on loopback. Each segment stays an item of its own (stored,
decided, purged and reported alone); what changes is that a lane's worker sends the segments queued at its
head in one signed request, once the oldest has waited ``batch_seconds`` or ``batch_max`` are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.delivery import DestinationConfig, Item, Part, Status
from tests.delivery.test_dispatcher import DEST, SECRET, Harness, TopJitter, running, until
from tests.fakes.ai_service import FakeAIService

LONG = 60.0
"""A batch window no test waits out: what goes, goes because of a full batch, a flush or a drain."""


def segment(n: int, participant: str = "alice", meeting: str = "m1") -> Item:
    key = f"k{n}"
    payload = {"participant_id": participant, "segment_id": f"s{n}", "text": f"words {n} of {participant}"}
    return Item(DEST, key, meeting, "segment", (Part(meeting, participant, f"s{n}", payload),))


@pytest.fixture
async def service() -> AsyncIterator[FakeAIService]:
    async with FakeAIService(SECRET) as fake:
        yield fake


@contextlib.asynccontextmanager
async def batching(
    url: str, *, batch_max: int = 50, batch_seconds: float = LONG, **settings: object
) -> AsyncIterator[Harness]:
    """The dispatcher test's harness, its destination batched."""
    async with (
        aiohttp.ClientSession() as session,
        running(session, url, batch_max=batch_max, batch_seconds=batch_seconds, **settings) as harness,
    ):
        yield harness


async def test_queued_segments_go_in_one_signed_request_each_part_keeping_its_key(service) -> None:
    async with batching(service.url, batch_max=4) as h:
        for n in range(4):
            h.dispatcher.submit(segment(n, participant=("alice", "bob")[n % 2]))
        await until(lambda: len(service.received) == 1)  # a full batch goes without waiting out the window
        await until(lambda: len(h.results) == 4)
    (request,) = service.received
    assert request.ok  # the fake verified the signature with the reference implementation
    assert request.body["type"] == "batch" and request.body["meeting_id"] == "m1"
    segments = request.body["segments"]
    assert [s["segment_id"] for s in segments] == ["s0", "s1", "s2", "s3"]  # in order
    assert [s["idempotency_key"] for s in segments] == ["k0", "k1", "k2", "k3"]
    key = request.headers["webhook-id"]
    assert key == request.headers["idempotency-key"] and key.startswith("b") and key not in {"k0", "k1"}
    assert {item.idempotency_key: r.status for item, r in h.results} == {
        f"k{n}": Status.DELIVERED for n in range(4)
    }


async def test_a_segment_waits_for_company_until_the_meeting_ends(service) -> None:
    async with batching(service.url) as h:
        h.dispatcher.submit(segment(1))
        h.dispatcher.submit(segment(2, meeting="m2"))
        await asyncio.sleep(0.2)
        assert service.received == []  # the window is a minute: nothing goes yet
        h.dispatcher.flush("m1")
        await until(lambda: len(service.received) == 1)
        await asyncio.sleep(0.1)
        assert [s["segment_id"] for s in service.segments()] == ["s1"]  # m2's lane still waits
        assert await h.dispatcher.drain(5)  # a drain sends what waits
    assert [s["segment_id"] for s in service.segments()] == ["s1", "s2"]


async def test_a_drain_that_gives_up_does_not_end_another_drain(service) -> None:
    service.hang_next(1, 0.3)
    async with batching(service.url) as h:
        h.dispatcher.submit(segment(1))
        patient = asyncio.create_task(h.dispatcher.drain(5))
        assert not await h.dispatcher.drain(0.05)  # gives up while s1's request hangs
        h.dispatcher.submit(segment(2))  # a drain is still under way: no waiting out the window
        assert await patient
    assert [s["segment_id"] for s in service.segments()] == ["s1", "s2"]


async def test_the_window_ends_the_wait(service) -> None:
    async with batching(service.url, batch_seconds=0.05) as h:
        started = time.monotonic()
        h.dispatcher.submit(segment(1))
        h.dispatcher.submit(segment(2))
        await until(lambda: len(service.received) == 1)
        waited = time.monotonic() - started
    assert waited >= 0.05
    assert [s["segment_id"] for s in service.received[0].body["segments"]] == ["s1", "s2"]


async def test_a_batch_holds_at_most_batch_max_and_the_rest_follow_in_order(service) -> None:
    async with batching(service.url, batch_max=3) as h:
        for n in range(7):
            h.dispatcher.submit(segment(n))
        assert await h.dispatcher.drain(5)
    sizes = [len(r.body["segments"]) for r in service.received]
    assert sizes == [3, 3, 1]
    assert [s["segment_id"] for s in service.segments()] == [f"s{n}" for n in range(7)]


async def test_a_withdrawal_while_segments_wait_keeps_theirs_out_and_sends_the_rest(service) -> None:
    async with batching(service.url) as h:
        h.dispatcher.submit(segment(1, "alice"))
        h.dispatcher.submit(segment(2, "bob"))
        h.dispatcher.submit(segment(3, "alice"))
        assert h.dispatcher.purge("m1", "bob") == 1
        assert await h.dispatcher.drain(5)
    assert [s["segment_id"] for s in service.segments()] == ["s1", "s3"]
    assert h.result("k2").status is Status.DROPPED and h.result("k2").reason == "withdrawn"
    assert h.result("k1").status is h.result("k3").status is Status.DELIVERED


async def test_a_withdrawal_during_a_batch_retry_shrinks_it_under_a_key_of_its_own(service) -> None:
    """A retry of the same batch goes under the same key; once a purge removed parts, under a derived one,
    and the withdrawn participant's part never goes again."""
    service.fail_next(2)
    async with batching(service.url, batch_max=3, rng=TopJitter(), backoff_base=0.2, backoff_max=0.3) as h:
        for n, who in enumerate(("alice", "bob", "alice")):
            h.dispatcher.submit(segment(n, who))
        await until(lambda: len(service.received) == 2)  # two failed attempts, the next in backoff
        h.dispatcher.purge("m1", "bob")
        await until(lambda: len(h.results) == 3)
    first, second, third = service.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert third.ok and third.headers["webhook-id"].startswith(first.headers["webhook-id"] + ".")
    assert [s["segment_id"] for s in third.body["segments"]] == ["s0", "s2"]
    assert h.result("k1").status is Status.DROPPED and h.result("k1").reason == "withdrawn"
    assert h.result("k0").status is h.result("k2").status is Status.DELIVERED
    assert h.result("k0").attempts == 3


async def test_a_part_no_longer_allowed_at_the_attempt_is_left_out(service) -> None:
    """``allowed`` is asked for every part just before every attempt, batch or not."""
    refused: set[str] = set()
    async with batching(service.url, allowed=lambda dest, part: part.participant_id not in refused) as h:
        h.dispatcher.submit(segment(1, "alice"))
        h.dispatcher.submit(segment(2, "bob"))
        refused.add("bob")  # withdrawn, and not (yet) purged
        assert await h.dispatcher.drain(5)
    assert [s["participant_id"] for s in service.segments()] == ["alice"]
    assert h.result("k2").reason == "withdrawn"


async def test_a_member_past_its_retention_expires_and_the_others_still_go(service) -> None:
    service.fail_next(3)
    async with batching(service.url, batch_max=2, rng=TopJitter(), backoff_base=0.1, backoff_max=0.1) as h:
        old = segment(1)
        h.dispatcher.submit(
            Item(
                old.destination, old.idempotency_key, old.meeting_id, "segment", old.parts, time.time() + 0.15
            )
        )
        h.dispatcher.submit(segment(2))
        await until(lambda: len(h.results) == 2)
    assert h.result("k1").status is Status.DROPPED and h.result("k1").reason == "expired"
    assert h.result("k2").status is Status.DELIVERED
    assert [s["segment_id"] for s in service.segments()] == ["s2"]


async def test_an_erasure_request_is_never_folded_into_a_batch(service) -> None:
    erasure = Part("m1", "bob", "s9", {"participant_id": "bob", "segment_ids": ["s9"]})
    async with batching(service.url, erasure_url=service.url) as h:
        h.dispatcher.submit(segment(1))
        h.dispatcher.submit(Item(DEST, "e1", "m1", "erasure", (erasure,)))
        h.dispatcher.submit(segment(2))
        assert await h.dispatcher.drain(5)
    assert [r.body["type"] for r in service.received] == ["batch", "erasure", "batch"]


def test_batch_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_max"):
        DestinationConfig(DEST, "http://127.0.0.1:1/", SECRET, batch_max=0)
    with pytest.raises(ValueError, match="batch_seconds"):
        DestinationConfig(DEST, "http://127.0.0.1:1/", SECRET, batch_max=5, batch_seconds=-1)
