"""WebSocket streaming destination: one long-lived connection per destination, acknowledged frame by frame.

Where it sits: the dispatcher asks ``Transports.send`` for one attempt; for a ``websocket`` destination an
attempt is one JSON text frame on the destination's shared connection, and its outcome is the destination's
answer to that frame. The wire protocol (docs/destinations.md):

- handshake: ``GET url`` with Standard Webhooks headers (``webhook-id`` a fresh connection id) signing the
  configured URL as the payload, so the destination authenticates the gateway before accepting, and a
  handshake signed for one destination cannot be replayed to another that shares the secret;
- gateway to destination: ``{"idempotency_key": key, "body": <the body an http destination gets>}``;
- destination to gateway: ``{"ack": key}``, or ``{"nack": key, "retry": true|false, "retry_after": s}``.

Why a link never resends on its own: the dispatcher asks the consent ledger immediately before each attempt.
A resend after a reconnect done here would skip that check and could deliver a withdrawn participant's words,
so a dropped connection fails every unacknowledged attempt and the dispatcher's retry resends, under the same
idempotency key, which the destination uses to deduplicate.

Memory: at most ``window`` frames await an answer; a further send waits for a slot (bounded by the attempt's
``total_timeout``, then ``WindowFull``). Written frames belong to the socket, bounded by the library's write
limit. Nothing is queued here: waiting senders hold their own items.

Reconnects happen on demand: the first send after a drop dials again, and failed dials are spaced by
exponential backoff with full jitter (``retry.backoff``); an idle destination is not redialled. Logs carry
the destination id, counts and error class names, never frames.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from gateway import signing
from gateway.delivery.http import CONSENT_CHANGED, Attempt, Still, always
from gateway.delivery.items import DestinationConfig
from gateway.delivery.retry import backoff

REPLY_LIMIT = 64 * 1024
"""Largest frame accepted from a destination: answers are tiny, so anything bigger is a broken peer."""
NACK_RETRY = 503
"""The HTTP-like status of ``{"nack": key, "retry": true}``: the dispatcher tries again."""
NACK_FINAL = 422
"""The HTTP-like status of a final nack: the destination will never take this frame."""

log = structlog.get_logger(__name__)


def frame(key: str, body: bytes) -> str:
    """The text frame for one attempt; ``body`` is already JSON, so it is embedded without re-encoding."""
    return '{"idempotency_key":' + json.dumps(key) + ',"body":' + body.decode() + "}"


def parse_reply(message: str | bytes) -> tuple[str, Attempt] | None:
    """The key a destination's frame answers and what it means; None for anything else."""
    try:
        doc = json.loads(message)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("ack"), str):
        return doc["ack"], Attempt(status=200)
    key = doc.get("nack")
    if not isinstance(key, str):
        return None
    if doc.get("retry") is not True:
        return key, Attempt(status=NACK_FINAL)
    after = doc.get("retry_after")
    valid = isinstance(after, int) and not isinstance(after, bool) and after >= 0
    return key, Attempt(status=NACK_RETRY, retry_after=str(after) if valid else None)


@dataclass(eq=False)
class _Connection:
    """One dialled connection and the attempts awaiting its answers, by idempotency key."""

    ws: ClientConnection
    waiting: dict[str, list[asyncio.Future[Attempt]]] = field(default_factory=dict)
    closed: bool = False


class WebSocketLink:
    """The connection to one websocket destination, shared by all of its lanes."""

    def __init__(self, config: DestinationConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._window = asyncio.Semaphore(config.window)
        self._dialing = asyncio.Lock()
        self._connection: _Connection | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        self.in_flight = 0
        """Frames sent and not yet answered (or given up on)."""
        self.queued = 0
        """Sends waiting for a free slot in the window."""
        self.dials = 0
        """Connections opened so far."""

    async def send(self, key: str, body: bytes, timestamp: int, still: Still = always) -> Attempt:
        """One attempt: a frame and its answer; never raises for network trouble (cancellation propagates).

        ``timestamp`` signs the handshake if this attempt has to dial. ``still`` is asked once a window slot
        and the connection are ours, right before the frame is written: a withdrawal recorded while this
        attempt waited for either stops it (``CONSENT_CHANGED``, nothing sent)."""
        phase = "WindowFull"
        try:
            async with asyncio.timeout(self.config.total_timeout):
                self.queued += 1
                try:
                    await self._window.acquire()
                finally:
                    self.queued -= 1
                try:
                    phase = "ConnectTimeout"
                    connection = await self._connect(timestamp)
                    if isinstance(connection, str):
                        return Attempt(error=connection)
                    phase = "AckTimeout"
                    return await self._exchange(connection, key, body, still)
                finally:
                    self._window.release()
        except TimeoutError:
            return Attempt(error=phase)

    async def close(self) -> None:
        """Close the connection; attempts still waiting fail with ``Closed``."""
        self._closed = True
        connection = self._connection
        if connection is not None:
            await connection.ws.close(code=1001, reason="gateway shutting down")
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _connect(self, timestamp: int) -> _Connection | str:
        """The open connection, dialling if there is none; the error class name if dialling failed."""
        async with self._dialing:
            if self._closed:
                return "Closed"
            if self._connection is not None:
                return self._connection
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            try:
                ws = await connect(
                    self.config.url,
                    additional_headers=self._handshake(timestamp),
                    open_timeout=self.config.connect_timeout,
                    max_size=REPLY_LIMIT,
                    # Like the HTTP client: content goes where the policy says, never via a proxy from env.
                    proxy=None,
                )
            except (OSError, TimeoutError, WebSocketException) as exc:
                return self._dial_failed(exc)
            self._failures = 0
            self.dials += 1
            connection = self._connection = _Connection(ws)
            reader = asyncio.get_running_loop().create_task(
                self._read(connection), name=f"websocket:{self.config.id}"
            )
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            log.info("delivery.websocket_connected", destination=self.config.id, dials=self.dials)
            return connection

    def _handshake(self, timestamp: int) -> dict[str, str]:
        """Standard Webhooks headers signing the configured URL under a fresh connection id."""
        connection_id = f"conn_{secrets.token_hex(12)}"
        return signing.headers(self.config.secret, connection_id, timestamp, self.config.url.encode())

    def _dial_failed(self, exc: BaseException) -> str:
        self._failures += 1
        delay = backoff(self._failures, self.config.backoff_base, self.config.backoff_max, self._rng)
        self._retry_at = time.monotonic() + delay
        # Only the type: a message may carry the URL, which can embed credentials.
        error = type(exc).__name__
        log.warning(
            "delivery.websocket_dial_failed", destination=self.config.id, failures=self._failures, error=error
        )
        return error

    async def _exchange(self, connection: _Connection, key: str, body: bytes, still: Still) -> Attempt:
        if connection.closed:
            return Attempt(error="ConnectionClosed")
        if not still():  # no await from here to the frame's write
            return Attempt(error=CONSENT_CHANGED)
        answer: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        connection.waiting.setdefault(key, []).append(answer)
        self.in_flight += 1
        try:
            await connection.ws.send(frame(key, body))
            return await answer
        except ConnectionClosed as exc:
            return Attempt(error=type(exc).__name__)
        finally:
            self.in_flight -= 1
            _forget(connection, key, answer)

    async def _read(self, connection: _Connection) -> None:
        """Match answers to waiting attempts until the connection ends, then fail those still waiting."""
        try:
            async for message in connection.ws:
                reply = parse_reply(message)
                if reply is None:
                    log.warning("delivery.websocket_bad_reply", destination=self.config.id)
                    continue
                key, attempt = reply
                for answer in connection.waiting.pop(key, []):
                    if not answer.done():
                        answer.set_result(attempt)
        except ConnectionClosed:
            pass  # an abnormal close; the normal one just ends the loop
        finally:
            self._ended(connection)

    def _ended(self, connection: _Connection) -> None:
        # No await here: a send that found this connection open registered before this point and is failed
        # now; one arriving later sees ``closed`` or dials a new connection.
        connection.closed = True
        if self._connection is connection:
            self._connection = None
        waiting = [answer for answers in connection.waiting.values() for answer in answers]
        connection.waiting.clear()
        for answer in waiting:
            if not answer.done():
                answer.set_result(Attempt(error="ConnectionClosed"))
        log.info(
            "delivery.websocket_closed",
            destination=self.config.id,
            code=connection.ws.close_code,
            unanswered=len(waiting),
        )


def _forget(connection: _Connection, key: str, answer: asyncio.Future[Attempt]) -> None:
    answers = connection.waiting.get(key)
    if answers is None:
        return
    if answer in answers:
        answers.remove(answer)
    if not answers:
        del connection.waiting[key]
