"""Signed delivery ids claimed in the store (``gateway.store.deliveries``), on SQLite and PostgreSQL: a claim
is refused while it lives, whichever store object (replica, or the same process after a restart) made it."""

from __future__ import annotations

import asyncio

from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.deliveries import key_of

NOW = 1_800_000_000.0


async def test_a_live_claim_refuses_the_same_key_only(store: Store) -> None:
    assert await store.claim_delivery("k1", NOW, NOW + 600)
    assert not await store.claim_delivery("k1", NOW + 1, NOW + 601)
    assert await store.claim_delivery("k2", NOW + 1, NOW + 601)


async def test_an_expired_claim_can_be_made_again(store: Store) -> None:
    assert await store.claim_delivery("k1", NOW, NOW + 600)
    assert not await store.claim_delivery("k1", NOW + 599, NOW + 1199)
    assert await store.claim_delivery("k1", NOW + 601, NOW + 1201)
    assert not await store.claim_delivery("k1", NOW + 700, NOW + 1300)  # the new claim lives on


async def test_a_released_claim_can_be_made_again(store: Store) -> None:
    assert await store.claim_delivery("k1", NOW, NOW + 600)
    await store.release_delivery("k1")
    assert await store.claim_delivery("k1", NOW + 1, NOW + 601)


async def test_a_claim_holds_for_another_store_on_the_same_database(database_url: str) -> None:
    """Another replica, or this process after a restart: the claim is in the database, not in memory."""
    first = open_store(database_url)
    await first.open()
    try:
        assert await first.claim_delivery("k1", NOW, NOW + 600)
    finally:
        await first.close()
    second = open_store(database_url)
    await second.open()
    try:
        assert not await second.claim_delivery("k1", NOW + 1, NOW + 601)
    finally:
        await second.close()


async def test_of_many_claims_of_one_key_at_once_exactly_one_wins(store: Store) -> None:
    won = await asyncio.gather(*(store.claim_delivery("k1", NOW, NOW + 600) for _ in range(5)))
    assert sorted(won) == [False] * 4 + [True]


def test_stored_keys_are_hashes_scoped_by_endpoint() -> None:
    assert key_of("events", "msg-1") != key_of("recall", "msg-1")
    assert "msg-1" not in key_of("events", "msg-1") and len(key_of("events", "msg-1")) == 64
    assert key_of("zoom", "\ud800 lone surrogate")  # opaque platform text hashes too
