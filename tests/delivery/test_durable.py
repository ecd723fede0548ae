"""The delivery side of the outbox on a real store: sealed round trips, recovery at start, bad keys."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import aiohttp
import pytest

from gateway.delivery import DestinationConfig, Dispatcher, Item, Part
from gateway.delivery.durable import Outbox
from gateway.sealing import Keyring
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.outbox import Lease
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService

SECRET = "whsec_" + base64.b64encode(b"durable outbox test secret").decode()


def item(n: int, meeting: str = "m1", who: str = "p1") -> Item:
    payload = MappingProxyType(
        {"meeting_id": meeting, "participant_id": who, "segment_id": f"s{n}", "text": "hi"}
    )
    return Item("ai", f"k{n:04d}", meeting, "segment", (Part(meeting, who, f"s{n}", payload),))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(await database_for(tmp_path))
    await opened.open()
    yield opened
    await opened.close()


async def test_seal_and_open_round_trip_including_odd_ids(store: Store) -> None:
    outbox = Outbox(store, Keyring.generate())
    config = DestinationConfig("ai", "http://127.0.0.1:9/x", SECRET, purposes=("summary",))
    odd = Item(
        "ai", "k1", "m\x00\\1", "segment", (Part("m\x00\\1", "p\ud800", "s1", MappingProxyType({"t": "é"})),)
    )
    sealed = outbox.seal(odd, config)
    assert sealed.purposes == ("summary",)
    assert outbox.open(sealed) == dataclasses.replace(odd, expires_at=sealed.expires_at)


async def test_a_new_process_delivers_everything_a_dead_one_left_in_the_store(store: Store) -> None:
    """More items than one recovery batch, all under a lease that ran out: every one arrives, once."""
    keyring = Keyring.generate()
    config = DestinationConfig("ai", "http://127.0.0.1:9/x", SECRET, purposes=("summary",))
    dead = Outbox(store, keyring, owner="dead")
    items = [item(n, meeting=f"m{n % 7}") for n in range(620)]
    await store.append_decisions([], [dead.seal(i, config) for i in items], Lease("dead", 0.0))
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        config = DestinationConfig("ai", service.url, SECRET, purposes=("summary",))
        outbox = Outbox(store, keyring)
        dispatcher = Dispatcher(
            session, {"ai": config}, allowed=lambda dest, part: None, outbox=outbox, blocked=store.blocked
        )
        await dispatcher.start()
        assert await dispatcher.drain(60)
        await dispatcher.close()
    assert sorted(p["segment_id"] for p in service.segments()) == sorted(f"s{n}" for n in range(620))
    assert len(service.received) == 620
    assert {row["status"] for row in await store.outbox_report()} == {"delivered"}


async def test_an_item_sealed_under_a_removed_key_is_recorded_as_unreadable(store: Store) -> None:
    config = DestinationConfig("ai", "http://127.0.0.1:9/x", SECRET, purposes=("summary",))
    old = Outbox(store, Keyring.generate(), owner="dead")
    await store.append_decisions([], [old.seal(item(1), config)], Lease("dead", 0.0))
    other_key = Outbox(store, Keyring.generate())
    assert await other_key.recover({"ai": config}, everything=True) == []
    await other_key.flush()
    (row,) = await store.outbox_report()
    assert (row["status"], row["reason"]) == ("failed", "unreadable")
