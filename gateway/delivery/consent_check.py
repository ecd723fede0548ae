"""The store's consent answer for delivery, with the checks of one event-loop iteration in one query.

On a shared store (PostgreSQL replicas) every attempt asks the store whether its participants' latest consent
still covers the destination (``Store.blocked``), right before sending. Under load many lanes ask at once; a
query each would cost a database round trip per segment. Here the requests that arrive before the loop comes
round are answered by one query per purpose set (``Store.blocked_pairs``), and while a query is in flight the
requests arriving meanwhile wait for the next one (never for an answer read before they asked): the check
still happens after the request was made and before its send, which is what the guarantee needs. An idle
server's request is asked at once; under load a query serves whatever arrived during the previous one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.store.base import StorageError, Store

_Request = tuple[str, tuple[str, ...], asyncio.Future[set[str]]]


class BatchedConsentCheck:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[tuple[str, ...], list[_Request]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._busy = False
        """A query is in flight: requests arriving now are taken by the next round of ``_drain``."""

    async def __call__(
        self, meeting_id: str, participants: Sequence[str], purposes: Sequence[str]
    ) -> set[str]:
        """Who of ``participants`` the store's latest consent in the meeting refuses for ``purposes``."""
        if not participants or not purposes:
            return set()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[set[str]] = loop.create_future()
        if not self._waiting and not self._busy:
            loop.call_soon(self._start)
        self._waiting.setdefault(tuple(sorted(purposes)), []).append(
            (meeting_id, tuple(participants), future)
        )
        return await future

    def _start(self) -> None:
        if self._busy or not self._waiting:
            return
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._drain())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _drain(self) -> None:
        waiting: dict[tuple[str, ...], list[_Request]] = {}
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, {}
                await self._answer(waiting)
        finally:
            self._busy = False
            # cancelled mid-way (shutdown): nobody is left waiting, and nobody is told "not blocked"
            for batch in (waiting, self._waiting):
                for requests in batch.values():
                    for _, _, future in requests:
                        if not future.done():
                            future.set_exception(StorageError("consent check stopped"))
            self._waiting = {}

    async def _answer(self, waiting: dict[tuple[str, ...], list[_Request]]) -> None:
        for purposes, requests in waiting.items():
            pairs = sorted({(meeting, who) for meeting, people, _ in requests for who in people})
            try:
                blocked = await self._store.blocked_pairs(pairs, purposes)
            except Exception as exc:  # every asker fails closed with the store's error
                for _, _, future in requests:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for meeting, people, future in requests:
                if not future.done():
                    future.set_result({who for who in people if (meeting, who) in blocked})
