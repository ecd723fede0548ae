"""Backlog (``gateway.platforms.backlog``): a stream's messages storage could not take, applied in order."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.platforms.backlog import Backlog
from gateway.store.base import StorageError


class Storage:
    """Takes a message, or refuses it (StorageError) as the drawn outages say, attempt by attempt."""

    def __init__(self, refusals: list[bool]) -> None:
        self.refusals = list(refusals)
        self.applied: list[int] = []

    async def apply(self, message: int) -> None:
        await asyncio.sleep(0)  # a real write yields to the loop
        if self.refusals and self.refusals.pop(0):
            raise StorageError("storage unavailable")
        self.applied.append(message)


@settings(max_examples=60, deadline=None)
@given(
    messages=st.integers(1, 30),
    refusals=st.lists(st.booleans(), max_size=60),
    limit=st.integers(1, 8),
    drained_between=st.booleans(),
)
def test_every_message_is_applied_once_in_the_order_it_came(
    messages: int, refusals: list[bool], limit: int, drained_between: bool
) -> None:
    """Whatever storage refuses and when (as long as it comes back), every message of the stream is
    applied exactly once, in the order the stream delivered them: a withdrawal typed before a sentence is
    applied before it."""

    async def run() -> list[int]:
        storage = Storage(refusals)
        backlog: Backlog[int] = Backlog(storage.apply, name="test", limit=limit, delays=(0.0, 0.001))
        for n in range(messages):
            await backlog.put(n)
            if drained_between and n % 7 == 3:
                await backlog.drain()
        await backlog.drain()
        await backlog.close()
        return storage.applied

    assert asyncio.run(run()) == list(range(messages))


def test_storage_refusing_past_the_limit_drops_the_backlog_and_says_so() -> None:
    """After ``give_up_seconds`` of refusals the waiting messages are dropped (counted in the log), and
    the stream goes on: what comes next is applied."""

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            self.now += 1.0
            return self.now

    async def run() -> tuple[list[int], int]:
        storage = Storage([True] * 50)
        backlog: Backlog[int] = Backlog(storage.apply, name="test", give_up_seconds=10, clock=Clock(),
                                        delays=(0.0, 0.0))  # fmt: skip
        await backlog.put(1)
        await backlog.put(2)
        await backlog.drain()
        waiting = backlog.waiting
        storage.refusals = []
        await backlog.put(3)
        return storage.applied, waiting

    assert asyncio.run(run()) == ([3], 0)


def test_what_must_not_be_given_up_waits_through_a_long_outage() -> None:
    """Words (odd numbers here) may be given up after ``give_up_seconds``; what ``keep`` says (a join,
    a rename, a chat message that may be a withdrawal: even numbers here) waits on and is applied, in
    order, once storage is back."""

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            self.now += 1.0
            return self.now

    async def run() -> list[int]:
        storage = Storage([True] * 40)
        backlog: Backlog[int] = Backlog(storage.apply, name="test", give_up_seconds=10, clock=Clock(),
                                        delays=(0.0, 0.0), keep=lambda n: n % 2 == 0)  # fmt: skip
        for n in range(1, 7):
            await backlog.put(n)
        await backlog.drain()
        return storage.applied

    assert asyncio.run(run()) == [2, 4, 6]
