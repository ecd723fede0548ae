"""The websocket destination against a real WebSocket server on loopback: signed handshake, acks, nacks,
reconnects with backoff, resends deduplicated by key, a bounded window, and no content in logs."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.delivery.http import Attempt
from gateway.delivery.items import DestinationConfig, Item, Part, body
from gateway.delivery.retry import Verdict, classify
from gateway.delivery.transports import Transports
from gateway.delivery.websocket import frame, parse_reply
from tests.fakes.ws_destination import FakeWSDestination
from tests.web.harness import (
    consent,
    event,
    joined,
    segment,
    serving_policy,
    wait_for,
)

SECRET = "whsec_" + base64.b64encode(b"websocket destination secret, 32").decode()
TEXT = "the secret words of alice"


class Ceilings(random.Random):
    """Jitter at its ceiling, remembering each ceiling: the backoff schedule becomes observable."""

    def __init__(self) -> None:
        super().__init__(7)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return b


def config(url: str, secret: str = SECRET, **settings: Any) -> DestinationConfig:
    values: dict[str, Any] = {"backoff_base": 0.001, "backoff_max": 0.05, "total_timeout": 5.0, **settings}
    return DestinationConfig("stream", url, secret, kind="websocket", **values)


def segment_body(key: str, text: str = TEXT) -> bytes:
    payload = {"participant_id": "alice", "segment_id": f"s-{key}", "text": text}
    item = Item("stream", key, "m1", "segment", (Part("m1", "alice", f"s-{key}", payload),))
    return body(item, item.parts)


def _now() -> int:
    return int(time.time())


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        # Polling on purpose: the conditions are about what the server recorded, which signals nothing.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


@pytest.fixture
async def destination() -> AsyncIterator[FakeWSDestination]:
    async with FakeWSDestination(SECRET) as fake:
        yield fake


@pytest.fixture
async def transports() -> AsyncIterator[Transports]:
    async with aiohttp.ClientSession() as session:
        owned = Transports(session, rng=random.Random(7))
        try:
            yield owned
        finally:
            await owned.close()


async def send(transports: Transports, cfg: DestinationConfig, key: str, text: str = TEXT) -> Attempt:
    return await transports.send(cfg, key, segment_body(key, text), _now())


async def test_a_frame_is_signed_sent_and_acknowledged(transports, destination) -> None:
    """The handshake verifies with the reference Standard Webhooks library; an ack is a 200."""
    cfg = config(destination.url)
    attempt = await transports.send(cfg, "k1", segment_body("k1"), _now())
    assert attempt == Attempt(status=200)
    assert destination.handshakes == [101]
    (received,) = destination.frames
    assert received.key == "k1"
    assert received.body == json.loads(segment_body("k1"))


async def test_many_sends_share_one_connection(transports, destination) -> None:
    """Concurrent lanes use the destination's one connection; each gets its own answer."""
    cfg = config(destination.url)
    attempts = await asyncio.gather(*(send(transports, cfg, f"k{i}") for i in range(20)))
    assert all(a.status == 200 for a in attempts)
    assert destination.connections == 1
    assert sorted(destination.stored) == sorted(f"k{i}" for i in range(20))


async def test_answers_are_matched_by_key_not_by_order(transports, destination) -> None:
    """A destination may answer out of order; each attempt waits for the answer to its own key."""
    cfg = config(destination.url)
    destination.hold = True
    sends = [asyncio.create_task(transports.send(cfg, k, segment_body(k), _now())) for k in ("a", "b", "c")]
    await until(lambda: len(destination.frames) == 3)
    await destination.release(["c"])
    assert (await sends[2]).status == 200
    assert not sends[0].done() and not sends[1].done()
    await destination.release(["a", "b"])
    assert [(await s).status for s in sends] == [200, 200, 200]


async def test_a_handshake_with_the_wrong_secret_is_refused(transports, destination) -> None:
    """A wrongly signed handshake is refused: nothing is sent and the attempt says why."""
    other = "whsec_" + base64.b64encode(b"not the destination's secret 32b").decode()
    attempt = await send(transports, config(destination.url, other), "k1")
    assert attempt == Attempt(error="InvalidStatus")
    assert destination.handshakes == [401]
    assert destination.frames == []


async def test_nacks_map_to_a_retry_or_a_final_refusal(transports, destination) -> None:
    """``retry: true`` is retried (honouring retry_after); ``retry: false`` is final."""
    cfg = config(destination.url)
    destination.nack_next(1, retry=True, retry_after=3)
    retried = await send(transports, cfg, "k1")
    assert retried == Attempt(status=503, retry_after="3")
    assert classify(503) is Verdict.RETRY
    destination.nack_next(1, retry=False)
    refused = await send(transports, cfg, "k2")
    assert refused.status is not None and classify(refused.status) is Verdict.REJECTED
    assert destination.stored == {}


async def test_a_lost_ack_fails_the_attempt_and_the_resend_is_deduplicated(transports, destination) -> None:
    """The destination stored the frame but the ack was lost with the connection: the attempt fails, the
    retry reconnects and resends under the same key, and the destination keeps one copy."""
    cfg = config(destination.url)
    assert (await send(transports, cfg, "k0")).status == 200
    destination.drop_after_next(1)
    failed = await send(transports, cfg, "k1")
    assert failed.status is None and failed.error is not None
    retried = await send(transports, cfg, "k1")
    assert retried == Attempt(status=200)
    assert [(f.key, f.connection) for f in destination.frames] == [("k0", 1), ("k1", 1), ("k1", 2)]
    assert list(destination.stored) == ["k0", "k1"]
    assert destination.duplicates == 1


async def test_a_drop_fails_every_waiting_attempt_rather_than_resending_them(transports, destination) -> None:
    """Unanswered frames are not resent by the link (the dispatcher's retry re-checks consent first)."""
    cfg = config(destination.url)
    destination.hold = True
    sends = [asyncio.create_task(send(transports, cfg, k)) for k in ("a", "b")]
    await until(lambda: len(destination.frames) == 2)
    await destination.drop()
    results = [await s for s in sends]
    assert all(r.status is None and r.error for r in results)
    assert len(destination.frames) == 2  # nothing was resent behind the dispatcher's back


async def test_failed_dials_back_off_exponentially_with_jitter(destination) -> None:
    """Each failed dial doubles the backoff ceiling (full jitter below it), up to backoff_max."""
    rng = Ceilings()
    async with aiohttp.ClientSession() as session:
        transports = Transports(session, rng=rng)
        cfg = config(destination.url.replace("/stream", "/elsewhere"), backoff_base=0.001, backoff_max=0.004)
        try:
            attempts = [await send(transports, cfg, f"k{i}") for i in range(4)]
        finally:
            await transports.close()
    assert all(a.error == "InvalidStatus" for a in attempts)
    assert rng.ceilings == [0.001, 0.002, 0.004, 0.004]
    assert destination.handshakes == [404, 404, 404, 404]


async def test_the_window_bounds_unanswered_frames(transports, destination) -> None:
    """With the window full, further sends wait without writing a frame; they proceed as answers come."""
    cfg = config(destination.url, window=2)
    link = transports.link(cfg)
    destination.hold = True
    sends = [asyncio.create_task(send(transports, cfg, f"k{i}")) for i in range(6)]
    await until(lambda: len(destination.frames) == 2 and link.queued == 4)
    assert link.in_flight == 2
    await destination.release()  # answers the two, and every later frame at once
    assert [(await s).status for s in sends] == [200] * 6
    assert destination.max_unanswered == 2
    assert len(destination.stored) == 6


async def test_an_unanswered_frame_times_out_as_a_retryable_error(transports, destination) -> None:
    """A destination that never answers costs one timeout, reported as an error the dispatcher retries."""
    destination.hold = True
    attempt = await send(transports, config(destination.url, total_timeout=0.2), "k1")
    assert attempt == Attempt(error="AckTimeout")


async def test_close_ends_the_connection_and_fails_waiting_sends(destination) -> None:
    """Shutdown does not hang on an unanswered frame; a send after close is refused as an error."""
    async with aiohttp.ClientSession() as session:
        transports = Transports(session)
        cfg = config(destination.url)
        destination.hold = True
        waiting = asyncio.create_task(send(transports, cfg, "k1"))
        await until(lambda: len(destination.frames) == 1)
        await transports.close()
        assert (await waiting).error is not None
        assert await send(transports, cfg, "k2") == Attempt(error="Closed")
    await until(lambda: destination.open_connections == 0)


async def test_no_frame_content_reaches_the_logs(transports, destination) -> None:
    """Connects, drops, nacks and reconnects log ids, counts and class names, never what was sent."""
    cfg = config(destination.url)
    with capture_logs() as logs:
        destination.drop_after_next(1)
        await send(transports, cfg, "k1")
        destination.nack_next(1, retry=True)
        await send(transports, cfg, "k1")
        await send(transports, cfg, "k1")
    assert logs, "the reconnect is logged"
    assert TEXT not in repr(logs)
    assert "secret words" not in repr(logs)


@given(key=st.text(min_size=1), value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
))  # fmt: skip
def test_a_frame_embeds_the_body_unchanged(key: str, value: Any) -> None:
    """Whatever the body, the frame is JSON whose ``body`` is exactly the body's JSON."""
    raw = json.dumps({"type": "segment", "value": value}, ensure_ascii=False).encode()
    assert json.loads(frame(key, raw)) == {"idempotency_key": key, "body": json.loads(raw)}


@given(st.text() | st.binary())
def test_any_reply_parses_to_a_value_or_none(message: str | bytes) -> None:
    """A destination's frame never raises while being read; only an ack or a nack is an answer."""
    reply = parse_reply(message)
    assert reply is None or isinstance(reply[1], Attempt)


def test_replies_parse_to_attempts() -> None:
    """ack is 200; nack with retry is 503 (with Retry-After); any other nack is final."""
    assert parse_reply('{"ack": "k"}') == ("k", Attempt(status=200))
    assert parse_reply('{"nack": "k", "retry": true, "retry_after": 2}') == ("k", Attempt(503, "2"))
    assert parse_reply('{"nack": "k", "retry": true, "retry_after": true}') == ("k", Attempt(503))
    assert parse_reply('{"nack": "k"}') == ("k", Attempt(status=422))
    assert parse_reply('{"ack": 1}') is None
    assert parse_reply("[]") is None


# --- through the real app ---------------------------------------------------------------------------------


def _policy(url: str) -> str:
    return "\n".join([
        "policy: ws",
        "purposes:",
        "  summary: {description: Summaries., notice: Sent to the summariser., notice_version: s-1}",
        "pending: {window_seconds: 0}",
        "destinations:",
        "  - id: stream",
        "    kind: websocket",
        f"    url: {url}",
        "    purposes: [summary]",
        "    secret_env: WS_DESTINATION_SECRET",
        "",
    ])  # fmt: skip


async def test_the_gateway_streams_consented_segments(tmp_path, destination, monkeypatch) -> None:
    """End to end: only the consenting speaker's segments arrive; a resend after a lost ack is stored once."""
    monkeypatch.setenv("WS_DESTINATION_SECRET", SECRET)
    async with serving_policy(tmp_path, _policy(destination.url)) as gw:
        await gw.send(joined("p-ada", "Ada"), joined("p-wen", "Wen"))
        await gw.send(consent("p-ada", "given"))
        await gw.send(segment("s1", "p-ada", "Ada speaks."), segment("s2", "p-wen", "Wen speaks."))
        destination.drop_after_next(1)  # the next frame's ack is lost: the dispatcher resends it
        await gw.send(segment("s3", "p-ada", "Ada again."))
        await gw.settle()
    sent = [f.body for f in destination.frames]
    assert {b["segment_id"] for b in sent} == {"s1", "s3"}
    assert [b["segment_id"] for b in destination.stored.values()] == ["s1", "s3"]
    assert destination.duplicates == 1
    assert all(b["participant_id"] == "p-ada" for b in sent)


async def test_a_batched_websocket_destination_gets_one_frame(tmp_path, destination, monkeypatch) -> None:
    """``delivery: batched`` works over a WebSocket too: one frame, one acknowledgement, several segments."""
    monkeypatch.setenv("WS_DESTINATION_SECRET", SECRET)
    policy = _policy(destination.url) + "    delivery: batched\n    batch_seconds: 600\n"
    async with serving_policy(tmp_path, policy) as gw:
        await gw.send(joined("p-ada", "Ada"), consent("p-ada", "given"))
        await gw.send(segment("s1", "p-ada", "One."), segment("s2", "p-ada", "Two."))
        assert destination.frames == []  # waiting for company
        await gw.send(event("meeting.ended"))
        await until(lambda: len(destination.frames) == 1)
    [sent] = [f.body for f in destination.frames]
    assert sent["type"] == "batch" and [s["segment_id"] for s in sent["segments"]] == ["s1", "s2"]


async def test_a_withdrawal_while_the_link_dials_stops_the_frame(tmp_path, destination, monkeypatch) -> None:
    """Ada's segment passes the consent check, then waits while the link dials (a slow handshake); she
    withdraws meanwhile. The frame must not be written: the check that counts is the one right before it.
    Bo's segment, queued behind hers, still goes once the link is up."""
    monkeypatch.setenv("WS_DESTINATION_SECRET", SECRET)
    destination.handshake_seconds = 1.0
    async with serving_policy(tmp_path, _policy(destination.url)) as gw:
        await gw.send(joined("p-ada", "Ada"), joined("p-bo", "Bo"))
        await gw.send(consent("p-ada", "given"), consent("p-bo", "given"))
        await gw.send(segment("s1", "p-ada", "Ada's words."))
        await until(lambda: destination.handshakes_begun > 0)
        assert destination.handshakes == []  # still dialling
        await gw.send(consent("p-ada", "withdrawn"))
        await gw.send(segment("s2", "p-bo", "Bo's words."))
        await gw.settle()

        async def outcomes() -> list[tuple[str, str | None]]:
            return sorted((r["status"], r["reason"]) for r in await gw.store.outbox_report())

        expected = [("delivered", None), ("dropped", "withdrawn")]
        await wait_for(lambda: _equal(outcomes(), expected), "both outcomes to be recorded")
    assert [f.body["segment_id"] for f in destination.frames] == ["s2"]


async def test_a_name_in_a_frame_is_scrubbed_if_its_owner_withdraws_while_the_link_dials(
    tmp_path, destination, monkeypatch
) -> None:
    """Wen mentions Ada, who consents, so the frame is built naming her; it waits while the link dials and
    Ada withdraws meanwhile. Wen still consents, so the frame goes, but built again: without Ada's name."""
    monkeypatch.setenv("WS_DESTINATION_SECRET", SECRET)
    destination.handshake_seconds = 1.0
    async with serving_policy(tmp_path, _policy(destination.url)) as gw:
        await gw.send(joined("p-ada", "Ada Lovelace"), joined("p-wen", "Wen Zhou"))
        await gw.send(consent("p-ada", "given"), consent("p-wen", "given"))
        await gw.send(segment("s1", "p-wen", "Ada Lovelace has the numbers."))
        await until(lambda: destination.handshakes_begun > 0)
        await gw.send(consent("p-ada", "withdrawn"))
        await until(lambda: bool(destination.frames))
        await gw.settle()
    assert [f.body["text"] for f in destination.frames] == ["[participant 1] has the numbers."]


async def _equal(found: Awaitable[object], expected: object) -> bool:
    return await found == expected
