"""Replays: the ids of accepted signed deliveries, remembered in this process and claimed in the store.

A delivery id accepted once is refused again for ``window`` seconds: by this process from memory, and by
every replica sharing the store (and this process after a restart) from its claim there
(``gateway.store.deliveries``). The memory answers first, so a replay to the same process costs no write.

A claim is made before the delivery is applied, for ``TENTATIVE_SECONDS`` only; once the delivery has been
applied it is kept for the whole window (``confirm``). A delivery that was not accepted after all (a bad
body, storage down) is released, so the sender's retry of it is applied; if that release does not reach
the store (storage still down, a crash), the claim lapses by itself well before any platform retries (Zoom
after 5 minutes, Svix after 5 seconds then 5 minutes), so no retry of an unapplied delivery, a withdrawal
say, is taken for a duplicate. A release the store did not take is also remembered here, so this process's
next claim of the id succeeds at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from gateway.store.deliveries import key_of

log = structlog.get_logger("gateway.replays")
TENTATIVE_SECONDS = 60.0
"""How long a claim lives before its delivery is confirmed applied."""


class DeliveryClaims(Protocol):
    """What a store offers for this (``gateway.store.batching.GroupCommit``)."""

    async def claim_delivery(self, key: str, now: float, until: float) -> bool: ...

    async def release_delivery(self, key: str) -> None: ...

    async def extend_delivery(self, key: str, until: float) -> None: ...


class Replays:
    def __init__(
        self,
        scope: str,
        window: float,
        store: DeliveryClaims | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``scope``: the endpoint and its senders (ids of different senders never collide); ``store``:
        None keeps ids in memory only (tests, embeddings without a store)."""
        self._scope = scope
        self._window = window
        self._store = store
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._unreleased: dict[str, float] = {}
        """Ids released here whose claim the store may still hold (its release failed), with when: such a
        claim lapses by itself ``TENTATIVE_SECONDS`` after it was made, and the id is forgotten then, so
        that a long storage outage does not grow this without bound."""
        self._confirming: set[asyncio.Task[None]] = set()
        self._releasing: dict[str, asyncio.Task[None]] = {}
        """Releases under way, by id: a retry of the delivery waits for its release before claiming."""

    async def claim(self, delivery_id: str) -> bool:
        """True: the delivery is new, and now claimed. False: accepted before within the window (here,
        by another replica, or before a restart). Raises StorageError when the store cannot answer: the
        delivery is then neither accepted nor claimed here."""
        pending = self._releasing.get(delivery_id)
        if pending is not None:
            await asyncio.wait([pending])  # the sender's retry of a delivery given up a moment ago
        now = self._clock()
        self._forget_old(now)
        if delivery_id in self._seen:
            return False
        self._seen[delivery_id] = now  # before the await: a concurrent copy is refused from memory
        if self._store is None or self._unreleased.pop(delivery_id, None) is not None:
            return True
        key = key_of(self._scope, delivery_id)
        try:
            return await self._store.claim_delivery(key, now, now + min(TENTATIVE_SECONDS, self._window))
        except BaseException:
            self._seen.pop(delivery_id, None)
            raise

    def confirm(self, delivery_id: str) -> None:
        """The delivery was applied: its claim is kept for the whole window (in the background; should that
        write fail, the claim lapses after ``TENTATIVE_SECONDS``, and only a replay after that, which this
        process still refuses from memory, could be taken by another replica)."""
        if self._store is None or self._window <= TENTATIVE_SECONDS:
            return
        until = self._clock() + self._window
        task = asyncio.get_running_loop().create_task(self._extend(delivery_id, until))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _extend(self, delivery_id: str, until: float) -> None:
        assert self._store is not None
        try:
            await self._store.extend_delivery(key_of(self._scope, delivery_id), until)
        except Exception as exc:
            log.warning("replays.confirm_failed", scope=self._scope, error=type(exc).__name__)

    def release(self, delivery_id: str) -> None:
        """Give a claim up: the delivery was not accepted."""
        self._seen.pop(delivery_id, None)
        if self._store is not None and delivery_id not in self._releasing:
            task = asyncio.get_running_loop().create_task(self._release(delivery_id))
            self._releasing[delivery_id] = task
            task.add_done_callback(lambda _: self._releasing.pop(delivery_id, None))

    async def _release(self, delivery_id: str) -> None:
        assert self._store is not None
        try:
            await self._store.release_delivery(key_of(self._scope, delivery_id))
        except Exception as exc:
            self._unreleased[delivery_id] = self._clock()
            log.warning("replays.release_failed", scope=self._scope, error=type(exc).__name__)

    async def settle(self) -> None:
        """Wait for releases and confirmations under way (tests, shutdown)."""
        while self._releasing or self._confirming:
            await asyncio.gather(*self._releasing.values(), *self._confirming, return_exceptions=True)

    def _forget_old(self, now: float) -> None:
        while self._unreleased:
            delivery_id, failed = next(iter(self._unreleased.items()))
            if now - failed <= TENTATIVE_SECONDS:
                break
            del self._unreleased[delivery_id]
        # ids older than the window are forgotten, so memory stays bounded; dicts keep insertion order, so
        # the oldest are at the front and the loop stops at the first young one
        while self._seen:
            delivery_id, seen = next(iter(self._seen.items()))
            if now - seen <= self._window:
                return
            del self._seen[delivery_id]
