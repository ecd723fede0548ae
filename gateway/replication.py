"""Replication: keeps this replica's consent view in step with the logs that every replica writes.

Two logs are followed, each by its own ``Replication``: the consent ledger and the shared roster
(``gateway.roster_log``); the view is fresh only while both followers are (``Followers``). What follows is
said of the ledger and holds for the roster alike.

Several gateway processes share one PostgreSQL database. A commit to the ledger notifies every listening
replica (``pg_notify`` from a trigger, ``gateway.store.pg_listen``), but a notification only says "there is
more": the follower reads every row after the last sequence number it applied, in sequence order, and hands
each record to the gateway (``Gateway.apply_remote``, which skips the records this process wrote). Sequence
order is commit order, because the chain is extended under a lock, so a missed notification costs nothing:
the next read catches up. The same read, every quarter of ``max_age``, is the polling backstop and the proof
of freshness.

The view is *fresh* when the listening connection is up, no notification is waiting to be applied, and a read
that found nothing newer started less than ``max_age`` ago. While it is not, the gateway holds segments
instead of forwarding them and delivery checks raise ``ConsentViewStale`` (see ``gateway.runtime``), and
``/readyz`` reports the replica not ready. A lost connection is reopened with backoff and caught up from
where it stopped; nothing here ever forwards anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog
from aiohttp import web

from gateway.roster_log import RosterChange
from gateway.store.base import LedgerEntry

log = structlog.get_logger("gateway.replication")

OnNotify = Callable[[int | None], None]
"""Told of a commit: its sequence number (None if the payload was not one)."""
OnLost = Callable[[], None]
"""Told that the listening connection is gone."""


class Entry(Protocol):
    @property
    def seq(self) -> int: ...


E = TypeVar("E", bound=Entry)
E_co = TypeVar("E_co", bound=Entry, covariant=True)


class Feed(Protocol[E_co]):
    """A shared log as a follower sees it (``gateway.store.pg_listen``: the ledger, the roster)."""

    async def connect(self, on_notify: OnNotify, on_lost: OnLost) -> None:
        """Open the listening connection (closing any previous one); StorageError if it cannot."""

    async def head(self) -> int:
        """The highest sequence number committed (0 for an empty ledger)."""

    async def after(self, seq: int, limit: int) -> Sequence[E_co]:
        """Up to ``limit`` committed entries after ``seq``, in sequence order."""

    def backend_pid(self) -> int | None: ...

    async def close(self) -> None: ...


class Replication(Generic[E]):
    """Follows one log for one gateway; ``fresh()`` is what the gateway asks before forwarding."""

    def __init__(
        self,
        feed: Feed[E],
        apply: Callable[[E], Awaitable[None]],
        *,
        max_age: float = 2.0,
        batch: int = 500,
        retry_min: float = 0.05,
        retry_max: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_age``: seconds a confirmed view stays fresh; the ledger is read every quarter of it, so a
        slow read or two does not make a healthy replica flap."""
        self.feed = feed
        self._apply = apply
        self.max_age = max_age
        self._batch = batch
        self._retry = (retry_min, retry_max)
        self._clock = clock
        self._applied: int | None = None
        """Sequence number of the last entry handed over; None until the first connection reads the head."""
        self._notified = 0
        self._own: set[int] = set()
        """Sequence numbers this process wrote and the follower has not read back yet."""
        self._confirmed = float("-inf")
        self._connected = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections = 0
        """Listening connections opened so far (more than one: it reconnected)."""

    # --- what the gateway asks --------------------------------------------------------------------------

    def fresh(self) -> bool:
        """Connected, nothing notified left unapplied (but records this process wrote, which its view has
        had since their commit), and caught up by a read started within ``max_age``."""
        applied = self._applied
        if applied is None or not self._connected or self._clock() - self._confirmed >= self.max_age:
            return False
        unread = self._notified - applied
        return unread <= 0 or (
            unread <= _OWN_WINDOW and all(s in self._own for s in range(applied + 1, self._notified + 1))
        )

    def wrote(self, seq: int) -> None:
        """This process committed ledger entry ``seq`` (``Gateway.wrote``)."""
        if self._applied is None or seq > self._applied:
            self._own.add(seq)

    def applied(self) -> int | None:
        return self._applied

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and read the head now (StorageError if that fails), then follow in the background.

        Records committed before the head was read are not replayed: a meeting reads its ledger when this
        replica first sees it."""
        await self._connect()
        await self._catch_up()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replication")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected = False
        await self.feed.close()

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- following --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._retry[0]
        while True:
            try:
                if not self._connected:
                    await self._connect()
                    await self._catch_up()
                    log.info("replication.reconnected", applied=self._applied)
                delay = self._retry[0]
                await self._follow()
            except Exception as exc:
                # Fail closed: until a read succeeds again the view is not fresh and nothing is forwarded.
                self._connected = False
                log.warning("replication.interrupted", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])

    async def _follow(self) -> None:
        """Catch up whenever notified, and at least every quarter of ``max_age``; return when disconnected."""
        while self._connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.max_age / 4):
                    await self._wake.wait()
            self._wake.clear()
            if self._connected:
                await self._catch_up()
        raise ConnectionError("listener connection lost")

    async def _connect(self) -> None:
        self._on_lost()
        await self.feed.connect(self._on_notify, self._on_lost)
        if self._applied is None:
            # listening before reading the head: nothing committed in between goes unnoticed
            self._applied = await self.feed.head()
        self._connected = True
        self.connections += 1

    async def _catch_up(self) -> None:
        """Hand over every entry after the last applied one; a read that finds the end confirms freshness."""
        assert self._applied is not None
        started = self._clock()
        while True:
            entries = await self.feed.after(self._applied, self._batch)
            for entry in entries:
                await self._apply(entry)
                self._applied = entry.seq
                self._own.discard(entry.seq)
            if len(entries) < self._batch:
                break
        self._confirmed = started

    def _on_notify(self, seq: int | None) -> None:
        if seq is not None:
            self._notified = max(self._notified, seq)
        self._wake.set()

    def _on_lost(self) -> None:
        # what was committed while no one listened is unknown: only a read after reconnecting confirms again
        self._connected = False
        self._confirmed = float("-inf")
        self._wake.set()


_OWN_WINDOW = 256
"""Unread entries beyond this many count as not fresh even if all are ours (bounds the check's cost)."""


class Followers:
    """The followers of both shared logs, as one: fresh only while each is, started and stopped together."""

    def __init__(self, ledger: Replication[LedgerEntry], roster: Replication[RosterChange]) -> None:
        self.ledger = ledger
        self.roster = roster
        self.followers: tuple[Replication[Any], ...] = (ledger, roster)

    def fresh(self) -> bool:
        return all(f.fresh() for f in self.followers)

    async def start(self) -> None:
        for follower in self.followers:
            await follower.start()

    async def stop(self) -> None:
        for follower in self.followers:
            await follower.stop()


REPLICATION = web.AppKey("replication", Followers)
