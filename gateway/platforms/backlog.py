"""Backlog: what a platform's stream delivered while storage was down, applied in order once it is back.

A webhook that fails with storage down is answered 503 and the platform sends it again. A message on a
stream (Recall's WebSocket, a Zoom RTMS connection) is not: the platform has sent it and will not send it
again. Dropped, it would lose a consenting person's words, or, worse, a withdrawal typed in the chat, after
which that person's words would be forwarded again once storage is back. So a message that meets a
``StorageError`` waits here, and so does everything after it on the same stream, until it can be applied;
then they are applied in the order they came. While nothing waits, a message is applied at once, as if
there were no backlog.

Bounded: at most ``limit`` messages wait (the next ``put`` waits for room, so the stream is read no
faster than storage takes it), and after ``give_up_seconds`` of storage refusing the oldest one, the words
waiting are dropped and logged (counts only), as the platform's own buffer would have dropped them. What
``keep`` says must never be dropped (who joined, left or was renamed, whose names are scrubbed from later
words; a chat message that may be a withdrawal) keeps waiting, and is applied once storage is back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from gateway.store.base import StorageError

log = structlog.get_logger(__name__)

T = TypeVar("T")

LIMIT = 5_000
"""Messages that may wait behind one storage could not take."""
GIVE_UP_SECONDS = 600.0
"""How long storage may refuse the oldest waiting message before the backlog is dropped."""
FIRST_DELAY = 0.25
MAX_DELAY = 5.0


class Backlog(Generic[T]):
    def __init__(
        self,
        apply: Callable[[T], Awaitable[object]],
        *,
        name: str,
        limit: int = LIMIT,
        give_up_seconds: float = GIVE_UP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        delays: tuple[float, float] = (FIRST_DELAY, MAX_DELAY),
        keep: Callable[[T], bool] = lambda message: False,
    ) -> None:
        """``apply``: applies one message, raising StorageError when storage cannot take it; ``name``: the
        stream's kind, for logs; ``keep``: messages never given up on."""
        self._apply = apply
        self._name = name
        self._limit = limit
        self._give_up = give_up_seconds
        self._clock = clock
        self._first_delay, self._max_delay = delays
        self._keep = keep
        self._waiting: deque[T] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def put(self, message: T) -> None:
        """Apply ``message`` now, or, behind messages storage could not take yet, once they are applied."""
        if not self._waiting:
            try:
                await self._apply(message)
                return
            except StorageError:
                log.error("stream.storage_unavailable", stream=self._name, waiting=1)
                self._waiting.append(message)
                self._start()
                return
        while len(self._waiting) >= self._limit:
            self._room.clear()
            await self._room.wait()
            if not self._waiting:  # given up or drained meanwhile: keep the order of what comes now
                await self.put(message)
                return
        self._waiting.append(message)

    async def drain(self) -> None:
        """Wait until nothing waits (applied, or given up): the stream ended, its messages still count."""
        while self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker])

    async def close(self) -> None:
        """Stop retrying (shutdown); what still waits is logged as dropped."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._drop("closed")

    def _start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay, since = self._first_delay, self._clock()
        while self._waiting:
            await asyncio.sleep(delay)
            try:
                await self._apply(self._waiting[0])
            except StorageError:
                if self._clock() - since > self._give_up:
                    self._drop("storage_unavailable", keeping=True)
                    since = self._clock()
                delay = min(max(delay * 2, self._first_delay), self._max_delay)
                continue
            except Exception as exc:  # ``apply`` handles its own bad input; never wedge the stream on one
                log.error("stream.backlog_message_failed", stream=self._name, error=type(exc).__name__)
            self._waiting.popleft()
            self._room.set()
            delay, since = 0.0, self._clock()
        log.info("stream.backlog_applied", stream=self._name)

    def _drop(self, reason: str, *, keeping: bool = False) -> None:
        """Drop what waits; ``keeping``: except what ``keep`` says must wait on."""
        kept = deque(m for m in self._waiting if keeping and self._keep(m))
        dropped = len(self._waiting) - len(kept)
        if dropped:
            log.error(
                "stream.backlog_dropped", stream=self._name, messages=dropped, kept=len(kept), reason=reason
            )
        self._waiting = kept
        self._room.set()
