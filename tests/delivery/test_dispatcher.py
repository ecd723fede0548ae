"""The dispatcher against a fake AI service on loopback: signing, retries, order, purge and withdrawal."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.delivery import DestinationConfig, Dispatcher, Item, Part, Result, Status
from gateway.signing import verify
from tests.fakes.ai_service import FakeAIService

SECRET = "whsec_" + base64.b64encode(b"fake ai service secret, 32 bytes").decode()
DEST = "ai"


class TopJitter(random.Random):
    """Backoff always at its ceiling, so a test can rely on a long pause."""

    def uniform(self, a: float, b: float) -> float:
        return b


def part(participant: str, segment: str, meeting: str = "m1") -> Part:
    payload = {
        "participant_id": participant,
        "segment_id": segment,
        "text": f"words of {participant} {segment}",
    }
    return Part(meeting, participant, segment, payload)


def segment(key: str, participant: str = "alice", meeting: str = "m1") -> Item:
    return Item(DEST, key, meeting, "segment", (part(participant, f"s-{key}", meeting),))


def transcript(key: str, *participants: str, meeting: str = "m1") -> Item:
    parts = tuple(part(p, f"s-{key}-{i}", meeting) for i, p in enumerate(participants))
    return Item(DEST, key, meeting, "transcript", parts)


@dataclass
class Harness:
    dispatcher: Dispatcher
    results: list[tuple[Item, Result]] = field(default_factory=list)

    def result(self, key: str) -> Result:
        (found,) = [result for item, result in self.results if item.idempotency_key == key]
        return found


@pytest.fixture
async def service() -> AsyncIterator[FakeAIService]:
    async with FakeAIService(SECRET) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@contextlib.asynccontextmanager
async def running(
    session: aiohttp.ClientSession,
    url: str,
    *,
    allowed: Callable[[str, Part], bool] = lambda dest, part: True,
    rng: random.Random | None = None,
    secret: str = SECRET,
    **settings: float,
) -> AsyncIterator[Harness]:
    config = replace(DestinationConfig(DEST, url, secret, backoff_base=0.001, backoff_max=0.05), **settings)
    results: list[tuple[Item, Result]] = []
    on_result = lambda item, result: results.append((item, result))  # noqa: E731
    dispatcher = Dispatcher(
        session, {DEST: config}, allowed=allowed, on_result=on_result, rng=rng or random.Random(7)
    )
    harness = Harness(dispatcher, results)
    await harness.dispatcher.start()
    try:
        yield harness
    finally:
        await harness.dispatcher.close()


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        # Polling on purpose: the conditions are about what the server recorded, which signals nothing.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


async def test_delivers_a_signed_segment_with_its_idempotency_key(session, service) -> None:
    """A segment arrives once, signed, with webhook-id == Idempotency-Key == the item's key."""
    async with running(session, service.url) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    (request,) = service.received
    assert request.status == 200
    assert request.headers["webhook-id"] == request.headers["idempotency-key"] == "k1"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"type": "segment", **part("alice", "s-k1").payload}
    result = h.result("k1")
    assert (result.status, result.attempts, result.http_status, result.idempotency_key) == (
        Status.DELIVERED,
        1,
        200,
        "k1",
    )


async def test_signature_verifies_with_our_own_verifier_too(session, service) -> None:
    """The headers the dispatcher sends pass gateway.signing.verify on the body as sent."""
    async with running(session, service.url) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    (request,) = service.received
    assert verify([SECRET], request.headers, request.raw, now=int(time.time())).ok


async def test_transcript_body_lists_segments_in_order(session, service) -> None:
    """A transcript item is one request carrying its parts' payloads in order."""
    async with running(session, service.url) as h:
        h.dispatcher.submit(transcript("t1", "alice", "bob", "alice"))
        assert await h.dispatcher.drain(5)
    (request,) = service.received
    assert request.body["type"] == "transcript"
    assert request.body["meeting_id"] == "m1"
    assert [s["segment_id"] for s in request.body["segments"]] == ["s-t1-0", "s-t1-1", "s-t1-2"]
    assert service.texts_by_participant() == {
        "alice": ["words of alice s-t1-0", "words of alice s-t1-2"],
        "bob": ["words of bob s-t1-1"],
    }


async def test_503_is_retried_with_the_same_key(session, service) -> None:
    """Server errors are retried until success, every attempt under the same key."""
    service.fail_next(2, status=503)
    async with running(session, service.url) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert [(r.status, r.key) for r in service.received] == [(503, "k1"), (503, "k1"), (200, "k1")]
    assert (h.result("k1").status, h.result("k1").attempts) == (Status.DELIVERED, 3)


async def test_retry_after_takes_precedence_over_backoff(session, service) -> None:
    """A 429 with Retry-After: 0 is retried at once although the backoff would wait 30 s."""
    service.fail_next(1, status=429, retry_after=0)
    async with running(session, service.url, rng=TopJitter(), backoff_base=30, backoff_max=30) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert [r.status for r in service.received] == [429, 200]


async def test_retry_after_seconds_are_waited(session, service) -> None:
    """A 429 with Retry-After: 1 delays the retry by about a second, not the tiny backoff."""
    service.fail_next(1, status=429, retry_after=1)
    async with running(session, service.url, backoff_max=5) as h:
        started = time.monotonic()
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(10)
        elapsed = time.monotonic() - started
    assert [r.status for r in service.received] == [429, 200]
    assert 0.9 <= elapsed < 8


async def test_retry_after_is_capped_by_backoff_max(session, service) -> None:
    """An hour-long Retry-After (as an HTTP date too) is capped at backoff_max."""
    service.fail_next(1, status=503, retry_after=3600)
    service.fail_next(
        1, status=503, retry_after=format_datetime(datetime.now(UTC).replace(year=2999), usegmt=True)
    )
    async with running(session, service.url, backoff_max=0.05) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert [r.status for r in service.received] == [503, 503, 200]


async def test_400_is_final(session, service) -> None:
    """A client error other than 408/429 ends delivery after one attempt."""
    service.reject_next(1, status=400)
    async with running(session, service.url) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert len(service.received) == 1
    result = h.result("k1")
    assert (result.status, result.reason, result.attempts) == (Status.FAILED, "rejected_400", 1)


async def test_wrong_secret_is_refused_by_the_destination(session, service) -> None:
    """Signed with another secret, the request gets 401, which is final."""
    other = "whsec_" + base64.b64encode(b"not the secret the service holds").decode()
    async with running(session, service.url, secret=other) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert h.result("k1").reason == "rejected_401"


async def test_hanging_destination_hits_the_total_timeout_and_is_retried(session, service) -> None:
    """A request that gets no answer times out and is retried under the same key."""
    service.hang_next(1, seconds=30)
    async with running(session, service.url, total_timeout=0.3) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(10)
    assert [(r.status, r.key) for r in service.received] == [(None, "k1"), (200, "k1")]
    assert (h.result("k1").status, h.result("k1").attempts) == (Status.DELIVERED, 2)


async def test_unreachable_destination_is_exhausted(session) -> None:
    """Connection errors are retried up to max_attempts, then reported as exhausted."""
    with closed_port() as port:
        async with running(session, f"http://127.0.0.1:{port}/x", max_attempts=3, connect_timeout=0.5) as h:
            h.dispatcher.submit(segment("k1"))
            assert await h.dispatcher.drain(10)
    result = h.result("k1")
    assert (result.status, result.reason, result.attempts, result.http_status) == (
        Status.FAILED,
        "exhausted",
        3,
        None,
    )


async def test_order_per_meeting_is_preserved_under_retries(session, service) -> None:
    """A later item of the same meeting waits while an earlier one retries."""
    service.fail_next(3)
    async with running(session, service.url) as h:
        for n in range(5):
            h.dispatcher.submit(segment(f"k{n}"))
        assert await h.dispatcher.drain(5)
    keys = [r.key for r in service.received]
    assert keys == ["k0"] * 4 + ["k1", "k2", "k3", "k4"]
    assert [r.key for r in service.accepted()] == ["k0", "k1", "k2", "k3", "k4"]


async def test_other_meetings_are_not_held_up(session, service) -> None:
    """While one meeting's item hangs, another meeting's item is delivered."""
    service.hang_next(1, seconds=30)
    async with running(session, service.url, total_timeout=2) as h:
        h.dispatcher.submit(segment("slow", meeting="m1"))
        await until(lambda: len(service.received) == 1)
        h.dispatcher.submit(segment("fast", meeting="m2"))
        assert await h.dispatcher.drain(10)
    assert [item.idempotency_key for item, _ in h.results] == ["fast", "slow"]


async def test_purge_during_backoff_removes_only_that_participant(session, service) -> None:
    """Purged while in backoff, a batch is retried without the participant and with a key of its own."""
    service.fail_next(1)
    async with running(session, service.url, rng=TopJitter(), backoff_base=0.3, backoff_max=0.3) as h:
        h.dispatcher.submit(transcript("t1", "alice", "bob", "alice", "carol"))
        await until(lambda: len(service.received) == 1)
        assert h.dispatcher.purge("m1", "alice") == 2
        assert await h.dispatcher.drain(5)
    first, retry = service.received
    assert retry.status == 200
    assert [s["participant_id"] for s in retry.body["segments"]] == ["bob", "carol"]
    assert retry.key != first.key
    assert retry.key.startswith("t1.")
    assert "alice" not in service.texts_by_participant()
    result = h.result("t1")
    assert (result.status, result.parts_removed, result.idempotency_key) == (Status.DELIVERED, 2, retry.key)


async def test_purge_that_empties_an_item_in_backoff_drops_it_at_once(session, service) -> None:
    """An item with only the purged participant's parts ends as withdrawn without waiting out its backoff."""
    service.fail_next(1)
    async with running(session, service.url, rng=TopJitter(), backoff_base=60, backoff_max=60) as h:
        h.dispatcher.submit(segment("k1"))
        await until(lambda: len(service.received) == 1)
        await asyncio.sleep(0.05)  # let the worker read the 503 and enter its minute-long backoff
        h.dispatcher.purge("m1", "alice")
        assert await h.dispatcher.drain(5)
    assert len(service.received) == 1
    assert (h.result("k1").status, h.result("k1").reason) == (Status.DROPPED, "withdrawn")


async def test_purge_removes_queued_items_behind_a_retrying_one(session, service) -> None:
    """Queued items of the purged participant never leave; other queued items still do."""
    service.fail_next(2)
    async with running(session, service.url, rng=TopJitter(), backoff_base=0.2, backoff_max=0.2) as h:
        h.dispatcher.submit(segment("k0", "bob"))
        h.dispatcher.submit(segment("k1", "alice"))
        h.dispatcher.submit(transcript("t2", "alice", "bob"))
        await until(lambda: len(service.received) == 1)
        assert h.dispatcher.purge("m1", "alice") == 2
        assert h.result("k1").reason == "withdrawn"  # reported at once
        assert await h.dispatcher.drain(5)
    assert service.texts_by_participant() == {"bob": ["words of bob s-k0", "words of bob s-t2-1"]}
    assert all("alice" not in str(r.body) for r in service.received)


async def test_purge_is_scoped_to_the_meeting(session, service) -> None:
    """The same participant id in another meeting is untouched."""
    service.fail_next(2)
    async with running(session, service.url, rng=TopJitter(), backoff_base=0.2, backoff_max=0.2) as h:
        h.dispatcher.submit(segment("a", "alice", meeting="m1"))
        h.dispatcher.submit(segment("b", "alice", meeting="m2"))
        await until(lambda: len(service.received) == 2)
        h.dispatcher.purge("m1", "alice")
        assert await h.dispatcher.drain(5)
    assert [r.key for r in service.accepted()] == ["b"]


async def test_allowed_turning_false_mid_retry_sends_nothing_more(session, service) -> None:
    """allowed() is asked before every attempt; once it says no, nothing of that participant is sent."""
    withdrawn: set[str] = set()
    asked: list[str] = []

    def allowed(dest: str, part: Part) -> bool:
        asked.append(part.participant_id)
        return part.participant_id not in withdrawn

    service.fail_next(2)
    async with running(session, service.url, allowed=allowed, rng=TopJitter(), backoff_base=0.2) as h:
        h.dispatcher.submit(transcript("t1", "alice", "bob"))
        await until(lambda: len(service.received) == 2)
        withdrawn.add("alice")
        assert await h.dispatcher.drain(5)
    assert [r.status for r in service.received] == [503, 503, 200]
    assert [s["participant_id"] for s in service.received[2].body["segments"]] == ["bob"]
    # before each attempt, and again right before its body's first byte (``Still``) for the parts it holds
    assert asked == ["alice", "bob"] * 4 + ["alice", "bob", "bob"]
    assert h.result("t1").parts_removed == 1


async def test_allowed_turning_false_for_everyone_drops_the_item(session, service) -> None:
    """An item whose every part is refused before a retry is dropped as withdrawn."""
    withdrawn: set[str] = set()
    service.fail_next(1)
    async with running(
        session,
        service.url,
        allowed=lambda d, p: p.participant_id not in withdrawn,
        rng=TopJitter(),
        backoff_base=0.2,
    ) as h:
        h.dispatcher.submit(segment("k1"))
        await until(lambda: len(service.received) == 1)
        withdrawn.add("alice")
        assert await h.dispatcher.drain(5)
    assert len(service.received) == 1
    assert (h.result("k1").status, h.result("k1").reason, h.result("k1").attempts) == (
        Status.DROPPED,
        "withdrawn",
        2,
    )


async def test_allowed_raising_fails_closed_and_retries(session, service) -> None:
    """An error in the consent check sends nothing; the next attempt asks again."""
    calls = 0

    def flaky(dest: str, part: Part) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("ledger unavailable")
        return True

    async with running(session, service.url, allowed=flaky) as h:
        h.dispatcher.submit(segment("k1"))
        assert await h.dispatcher.drain(5)
    assert len(service.received) == 1
    assert (h.result("k1").status, h.result("k1").attempts) == (Status.DELIVERED, 2)


async def test_items_submitted_before_start_are_sent_after_it(session, service) -> None:
    """submit() only queues until start()."""
    config = DestinationConfig(DEST, service.url, SECRET, backoff_base=0.001)
    dispatcher = Dispatcher(session, {DEST: config}, allowed=lambda d, p: True)
    dispatcher.submit(segment("k1"))
    assert not await dispatcher.drain(0.05)
    assert dispatcher.depth() == 1
    await dispatcher.start()
    assert await dispatcher.drain(5)
    assert dispatcher.depth() == 0
    await dispatcher.close()
    assert [r.key for r in service.received] == ["k1"]


async def test_close_reports_unfinished_items_as_shutdown(session, service) -> None:
    """Closing with work in flight cancels cleanly and reports each unfinished item."""
    service.hang_next(1, seconds=30)
    async with running(session, service.url) as h:
        h.dispatcher.submit(segment("k1"))
        h.dispatcher.submit(segment("k2"))
        await until(lambda: len(service.received) == 1)
    assert [(i.idempotency_key, r.status, r.reason) for i, r in h.results] == [
        ("k1", Status.DROPPED, "shutdown"),
        ("k2", Status.DROPPED, "shutdown"),
    ]
    with pytest.raises(RuntimeError, match="closed"):
        h.dispatcher.submit(segment("k3"))


async def test_unknown_destination_is_refused(session, service) -> None:
    """An item for a destination that is not configured raises at submit."""
    async with running(session, service.url) as h:
        with pytest.raises(ValueError, match="unknown destination 'nope'"):
            h.dispatcher.submit(Item("nope", "k", "m1", "segment", (part("alice", "s"),)))


async def test_logs_and_results_carry_no_content(session, service) -> None:
    """Nothing of a payload appears in any log record or result."""
    service.fail_next(1)
    service.reject_next(1)
    with capture_logs() as logs:
        async with running(session, service.url) as h:
            h.dispatcher.submit(transcript("t1", "alice", "bob"))
            h.dispatcher.submit(segment("k2", "carol"))
            h.dispatcher.purge("m1", "bob")
            assert await h.dispatcher.drain(5)
    assert logs
    assert "words of" not in repr(logs)
    assert "words of" not in repr(h.results)
