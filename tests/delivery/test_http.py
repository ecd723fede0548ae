"""One HTTP attempt's consent gate: ``Still`` is asked right before the body's first byte, after the wait
for a connection and the loop turn aiohttp writes the body in, and a no sends nothing of the request."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.delivery import DestinationConfig, Dispatcher, Item, Part, Result, Status
from gateway.delivery.http import CONSENT_CHANGED, post
from tests.delivery.test_dispatcher import DEST, SECRET, transcript, until
from tests.fakes.ai_service import FakeAIService


class Listener:
    """A TCP listener on loopback that records every byte each connection sends, and answers a complete
    request with 200 (keeping the connection open for the next)."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/segments"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.connections.append(got)
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                got += head
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                got += await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def config(url: str) -> DestinationConfig:
    return DestinationConfig(DEST, url, SECRET, backoff_base=0.001, backoff_max=0.05)


async def test_a_no_at_the_first_byte_sends_nothing_of_the_request(session, listener) -> None:
    attempt = await post(session, config(listener.url), "k1", b'{"text": "words"}', 1, lambda: False)
    assert attempt.error == CONSENT_CHANGED
    await asyncio.sleep(0.05)  # anything written would have arrived by now
    assert [bytes(c) for c in listener.connections] in ([], [b""])  # not even the request line


async def test_the_gate_is_asked_once_connected_on_a_new_and_a_pooled_connection(session, listener) -> None:
    connected_when_asked: list[int] = []

    def still() -> bool:
        connected_when_asked.append(len(listener.connections))
        return True

    for key in ("k1", "k2"):
        attempt = await post(session, config(listener.url), key, b'{"text": "words"}', 1, still)
        assert attempt.status == 200
    assert connected_when_asked == [1, 1]  # asked after the connect; the second request reused it
    assert listener.connections[0].count(b'{"text": "words"}') == 2


async def test_a_no_on_a_pooled_connection_leaves_it_unused(session, listener) -> None:
    assert (await post(session, config(listener.url), "k1", b'{"n": 1}', 1)).status == 200
    assert (await post(session, config(listener.url), "k2", b'{"n": 2}', 1, lambda: False)).error == (
        CONSENT_CHANGED
    )
    assert (await post(session, config(listener.url), "k3", b'{"n": 3}', 1)).status == 200
    await asyncio.sleep(0.05)
    sent = b"".join(listener.connections)
    assert b'{"n": 1}' in sent and b'{"n": 3}' in sent
    assert b'{"n": 2}' not in sent and b"k2" not in sent  # neither its body nor its headers


async def test_a_withdrawal_while_the_connection_is_made_leaves_only_what_is_still_allowed() -> None:
    """The dispatcher's check passes, then a withdrawal lands while aiohttp makes (or takes) the connection:
    the body built before it never leaves; the parts still allowed go in a new body at once."""
    withdrawn: set[str] = set()

    async def withdraw_alice(*_: object) -> None:
        withdrawn.add("alice")

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(withdraw_alice)
    trace.on_connection_reuseconn.append(withdraw_alice)

    def allowed(dest: str, part: Part) -> bool:
        return part.participant_id not in withdrawn

    results: list[tuple[Item, Result]] = []
    async with (
        FakeAIService(SECRET) as service,
        aiohttp.ClientSession(trace_configs=[trace]) as session,
    ):
        dispatcher = Dispatcher(
            session,
            {DEST: config(service.url)},
            allowed=allowed,
            on_result=lambda item, result: results.append((item, result)),
            rng=random.Random(7),
        )
        await dispatcher.start()
        try:
            dispatcher.submit(transcript("t1", "alice", "bob"))
            await until(lambda: bool(results))
        finally:
            await dispatcher.close()
    bodies = [r.body for r in service.received]
    assert [[s["participant_id"] for s in b["segments"]] for b in bodies] == [["bob"]]
    ((_, result),) = results
    assert result.status is Status.DELIVERED and result.parts_removed == 1
