"""BatchedConsentCheck: checks asked together share one query; none gets an answer read before it asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway.delivery.consent_check import BatchedConsentCheck
from gateway.model import ConsentChoice
from gateway.store import open_store
from gateway.store.base import StorageError, Store
from tests.conftest import database_for
from tests.strategies import consent_record

PURPOSES = ("summary",)


class Watched:
    """The real store, its ``blocked_pairs`` counted and, while ``gate`` is clear, held in flight."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.asked: list[list[tuple[str, str]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = asyncio.Event()

    async def blocked_pairs(
        self, pairs: Sequence[tuple[str, str]], purposes: Sequence[str]
    ) -> set[tuple[str, str]]:
        self.asked.append(list(pairs))
        self.in_flight.set()
        await self.gate.wait()
        return await self.store.blocked_pairs(pairs, purposes)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(await database_for(tmp_path))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_checks_asked_together_share_one_query(store: Store) -> None:
    await store.append_consent(consent_record(record_id="w", subject="p2", choice=ConsentChoice.WITHDRAWN))
    watched = Watched(store)
    check = BatchedConsentCheck(watched)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(check("m1", [f"p{n}"], PURPOSES) for n in range(1, 6)))
    assert answers == [set(), {"p2"}, set(), set(), set()]
    assert len(watched.asked) == 1


async def test_a_check_asked_during_a_query_waits_for_the_next_one(store: Store) -> None:
    """A withdrawal recorded while a query is in flight is seen by every check asked after it started."""
    watched = Watched(store)
    check = BatchedConsentCheck(watched)  # type: ignore[arg-type]
    watched.gate.clear()
    first = asyncio.ensure_future(check("m1", ["p1"], PURPOSES))
    await watched.in_flight.wait()
    await store.append_consent(consent_record(record_id="w", subject="p1", choice=ConsentChoice.WITHDRAWN))
    late = [asyncio.ensure_future(check("m1", ["p1"], PURPOSES)) for _ in range(3)]
    await asyncio.sleep(0)
    watched.gate.set()
    assert await asyncio.gather(*late) == [{"p1"}] * 3
    await first
    assert len(watched.asked) == 2  # the three late checks shared the second query


async def test_stopping_mid_query_fails_the_waiting_checks(store: Store) -> None:
    watched = Watched(store)
    check = BatchedConsentCheck(watched)  # type: ignore[arg-type]
    watched.gate.clear()
    first = asyncio.ensure_future(check("m1", ["p1"], PURPOSES))
    await watched.in_flight.wait()
    late = asyncio.ensure_future(check("m1", ["p2"], PURPOSES))
    await asyncio.sleep(0)
    for task in list(check._running):
        task.cancel()
    for waiting in (first, late):
        with pytest.raises(StorageError):
            await asyncio.wait_for(waiting, 5)
