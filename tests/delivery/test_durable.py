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
from gateway.model import ConsentChoice
from gateway.sealing import Keyring
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.outbox import Lease, Purge
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.strategies import consent_record
from tests.web.harness import wait_for

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
        assert await _a_new_process_delivers(session, config, Outbox(store, keyring), store, 60)
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


async def test_an_item_whose_ids_the_store_escapes_is_recovered_and_delivered(store: Store) -> None:
    """A segment id with backslashes (stored escaped) still opens after a restart: its seal is bound to the id
    as given."""
    keyring = Keyring.generate()
    sid = "rec\\2025\\seg-1"
    payload = MappingProxyType({"meeting_id": "m1", "participant_id": "p1", "segment_id": sid, "text": "hi"})
    odd = Item("ai", "k1", "m1", "segment", (Part("m1", "p1", sid, payload),))
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        config = DestinationConfig("ai", service.url, SECRET, purposes=("summary",))
        await store.append_decisions([], [Outbox(store, keyring).seal(odd, config)], Lease("dead", 0.0))
        assert await _a_new_process_delivers(session, config, Outbox(store, keyring), store, 10)
    assert [p["segment_id"] for p in service.segments()] == [sid]
    assert [row["status"] for row in await store.outbox_report()] == ["delivered"]


async def _a_new_process_delivers(
    session: aiohttp.ClientSession, config: DestinationConfig, outbox: Outbox, store: Store, within: float
) -> bool:
    """Start a dispatcher on what ``store`` holds, as a new process would; whether it drained in time."""
    dispatcher = Dispatcher(
        session, {"ai": config}, allowed=lambda dest, part: None, outbox=outbox, blocked=store.blocked
    )
    await dispatcher.start()
    try:
        return await dispatcher.drain(within)
    finally:
        await dispatcher.close()


def _said(who: str, sid: str) -> Part:
    payload = {"meeting_id": "m1", "participant_id": who, "segment_id": sid, "text": f"{who} words"}
    return Part("m1", who, sid, MappingProxyType(payload))


async def test_what_is_left_of_a_partly_withdrawn_item_keeps_its_key_across_a_restart(store: Store) -> None:
    """The same remaining content goes under the same idempotency key before a restart and after it."""
    keyring = Keyring.generate()
    withdrawn: set[str] = set()
    transcript = Item("ai", "t1", "m1", "transcript", (_said("ann", "s1"), _said("cat", "s2")))
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        config = DestinationConfig(
            "ai", service.url, SECRET, purposes=("summary",), backoff_base=0.05, backoff_max=0.1,
            breaker_failures=1000,
        )  # fmt: skip
        first = Outbox(store, keyring, owner="first")
        await store.append_decisions([], [first.seal(transcript, config)], first.lease())
        service.fail_next(10_000)
        before = Dispatcher(session, {"ai": config}, outbox=first, blocked=store.blocked,
                            allowed=lambda dest, part: part.participant_id not in withdrawn)  # fmt: skip
        before.submit(transcript)
        await before.start()
        await _requests(service, 1)
        withdrawal = consent_record(subject="ann", choice=ConsentChoice.WITHDRAWN)
        await store.append_consent(withdrawal, Purge("m1", "ann", ("ai",)))
        withdrawn.add("ann")
        before.purge("m1", "ann")
        await _requests(service, len(service.received) + 2)  # at least one attempt with cat's part alone
        await before.close()  # the item stays pending for the next start
        keys = {r.key for r in service.received if [p["segment_id"] for p in r.segment_payloads()] == ["s2"]}
        assert len(keys) == 1 and next(iter(keys)) != "t1"

        service.recover()
        mark = len(service.received)
        after = Dispatcher(session, {"ai": config}, outbox=Outbox(store, keyring, owner="second"),
                           blocked=store.blocked, allowed=lambda dest, part: None)  # fmt: skip
        await after.start()
        assert await after.drain(10)
        await after.close()
    assert [[p["segment_id"] for p in r.segment_payloads()] for r in service.received[mark:]] == [["s2"]]
    assert {r.key for r in service.received[mark:]} == keys


async def _requests(service: FakeAIService, count: int) -> None:
    async def arrived() -> bool:
        return len(service.received) >= count

    await wait_for(arrived, f"{count} requests at the destination")


async def test_parts_are_noted_as_attempted_before_they_go_where_deletion_may_be_asked(store: Store) -> None:
    """To a destination declaring an erasure endpoint, parts are noted as attempted, when and by whom,
    durably before the first byte goes, whatever comes back; to one declaring none, nothing is noted."""
    keyring = Keyring.generate()
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        configs = {
            "ai": DestinationConfig(
                "ai", service.url, SECRET, purposes=("summary",), erasure_url=service.url
            ),
            "plain": DestinationConfig("plain", service.url, SECRET, purposes=("summary",)),
        }
        outbox = Outbox(store, keyring)
        items = [
            dataclasses.replace(item(1), destination="ai"),
            dataclasses.replace(item(2), destination="plain"),
        ]
        await store.append_decisions(
            [], [outbox.seal(i, configs[i.destination]) for i in items], outbox.lease()
        )
        service.hang_next(2, 30)  # both arrive; no answer comes back
        dispatcher = Dispatcher(session, configs, allowed=lambda dest, part: True, outbox=outbox)
        for queued in items:
            dispatcher.submit(queued)
        await dispatcher.start()
        await _requests(service, 2)
        rows = await store.outbox_parts(meeting_id="m1", participant_id="p1")
        assert sorted((r["destination"], r["state"], r["attempted_by"]) for r in rows) == [
            ("ai", "queued", outbox.owner),
            ("plain", "queued", None),
        ]
        await dispatcher.close()
