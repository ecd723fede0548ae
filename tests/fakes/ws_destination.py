"""A fake WebSocket destination: the receiving end of the ``websocket`` delivery protocol, on 127.0.0.1.

A real ``websockets`` server. It checks the handshake's Standard Webhooks signature (over the URL it is
reached at) with the ``standardwebhooks`` reference package, records every frame, keeps the first body per
idempotency key (what a destination that deduplicates would store) and answers ``{"ack": key}``. It can be
told to hold its answers, nack, or drop the connection after a frame without answering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

PATH = "/stream"


@dataclass(frozen=True)
class Frame:
    """One frame as it arrived; ``connection`` numbers the connections from 1."""

    key: str
    body: Any
    connection: int


@dataclass(frozen=True)
class _Nack:
    retry: bool
    retry_after: int | None


@dataclass
class FakeWSDestination:
    secret: str
    frames: list[Frame] = field(default_factory=list)
    handshakes: list[int] = field(default_factory=list)
    """The status answered to each handshake (101 accepted, 401 bad signature, 404 wrong path)."""
    stored: dict[str, Any] = field(default_factory=dict)
    """First body per idempotency key: what the destination keeps after deduplicating."""
    duplicates: int = 0
    hold: bool = False
    """When set, frames are recorded but not answered until ``release()``."""
    max_unanswered: int = 0
    """The most frames ever waiting for this fake's answer at once."""
    handshake_seconds: float = 0.0
    """How long each opening handshake takes before it is answered (a slow TLS terminator or cold start)."""
    handshakes_begun: int = 0
    _held: list[tuple[ServerConnection, str, Any]] = field(default_factory=list)
    _nacks: deque[_Nack] = field(default_factory=deque)
    _drops: int = 0
    _server: Server | None = None
    _port: int = 0
    _open: set[ServerConnection] = field(default_factory=set)

    async def __aenter__(self) -> Self:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{PATH}"

    @property
    def connections(self) -> int:
        return sum(1 for status in self.handshakes if status == 101)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- programming behaviour --------------------------------------------------------------------------

    def nack_next(self, n: int, *, retry: bool, retry_after: int | None = None) -> None:
        self._nacks.extend(_Nack(retry, retry_after) for _ in range(n))

    def drop_after_next(self, n: int = 1) -> None:
        """Store the next ``n`` frames but cut the connection (no close frame) instead of acking each."""
        self._drops += n

    async def release(self, keys: list[str] | None = None) -> None:
        """Answer held frames (those of ``keys``, in that order, or all in arrival order) and stop holding."""
        held = {key: (ws, body) for ws, key, body in self._held}
        order = keys if keys is not None else [key for _, key, _ in self._held]
        self._held = [entry for entry in self._held if entry[1] not in order]
        if keys is None:
            self.hold = False
        for key in order:
            ws, body = held[key]
            await self._ack(ws, key, body)

    async def drop(self) -> None:
        """Cut every open connection abruptly, as a network failure would."""
        for ws in list(self._open):
            ws.transport.abort()

    # -- the endpoint ---------------------------------------------------------------------------------

    async def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes_begun += 1
        await asyncio.sleep(self.handshake_seconds)
        if request.path != PATH:
            self.handshakes.append(404)
            return connection.respond(404, "not here\n")
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        try:
            Webhook(self.secret).verify(self.url, headers, json_parse=False)
        except (WebhookVerificationError, ValueError):
            self.handshakes.append(401)
            return connection.respond(401, "bad signature\n")
        self.handshakes.append(101)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        number = self.connections
        self._open.add(ws)
        try:
            async for message in ws:
                doc = json.loads(message)
                key, body = doc["idempotency_key"], doc["body"]
                self.frames.append(Frame(key, body, number))
                await self._answer(ws, key, body)
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(ws)

    async def _answer(self, ws: ServerConnection, key: str, body: Any) -> None:
        if self._drops:
            self._drops -= 1
            self._store(key, body)  # stored, but the ack is lost with the connection
            ws.transport.abort()
            return
        if self._nacks:
            nack = self._nacks.popleft()
            await ws.send(json.dumps({"nack": key, "retry": nack.retry, "retry_after": nack.retry_after}))
            return
        if self.hold:
            self._held.append((ws, key, body))
            self.max_unanswered = max(self.max_unanswered, len(self._held))
            return
        await self._ack(ws, key, body)

    async def _ack(self, ws: ServerConnection, key: str, body: Any) -> None:
        self._store(key, body)
        with contextlib.suppress(ConnectionClosed):  # the gateway went away: its retry will come back
            await ws.send(json.dumps({"ack": key}))

    def _store(self, key: str, body: Any) -> None:
        if key in self.stored:
            self.duplicates += 1
        else:
            self.stored[key] = body
