"""Replays (``gateway.web.replays``) over a real store: memory first, the store's claim for everyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.store.base import Store
from gateway.web.replays import TENTATIVE_SECONDS, Replays


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await opened.open()
    yield opened
    await opened.close()


async def test_an_id_is_claimed_once_here_and_for_every_other_process(store: Store) -> None:
    clock = Clock()
    here, there = Replays("events", 600, store, clock), Replays("events", 600, store, clock)
    assert await here.claim("msg-1")
    here.confirm("msg-1")
    await here.settle()
    assert not await here.claim("msg-1")  # from memory
    assert not await there.claim("msg-1")  # from the store: another replica, or after a restart
    assert await Replays("recall", 600, store, clock).claim("msg-1")  # another endpoint's senders


async def test_a_released_id_is_claimed_again_by_the_retry_that_follows_at_once(store: Store) -> None:
    """The store's release runs in the background; the sender's retry waits for it rather than being
    refused as a replay of a delivery that was never accepted."""
    replays = Replays("events", 600, store, Clock())
    assert await replays.claim("msg-1")
    replays.release("msg-1")
    assert await replays.claim("msg-1")
    await replays.settle()
    assert not await Replays("events", 600, store, Clock()).claim("msg-1")


async def test_after_the_window_an_id_is_new_again(store: Store) -> None:
    clock = Clock()
    replays = Replays("events", 600, store, clock)
    assert await replays.claim("msg-1")
    replays.confirm("msg-1")
    await replays.settle()
    clock.now += 601
    assert await replays.claim("msg-1")
    assert not await Replays("events", 600, store, clock).claim("msg-1")


async def test_a_store_that_cannot_answer_accepts_nothing(store: Store) -> None:
    """Storage down: the claim raises (the request is answered 503 and retried), and the id is not kept,
    so the retry, once storage is back, is applied."""
    replays = Replays("events", 600, store, Clock())
    await store.close()
    with pytest.raises(Exception, match="storage"):
        await replays.claim("msg-1")
    await store.open()
    assert await replays.claim("msg-1")


async def test_a_claim_whose_delivery_was_never_applied_lapses_before_any_retry(store: Store) -> None:
    """The claim lives a minute until the delivery is confirmed applied. One that never is (storage went
    down after the claim, and the release did not reach the store either; a crash) lapses by itself, so
    the platform's retry minutes later, on a restarted process or another replica, is applied, not taken
    for a duplicate; a confirmed one is kept for the whole window."""
    clock = Clock()
    here = Replays("zoom", 7200, store, clock)
    assert await here.claim("optout") and await here.claim("consent")
    here.confirm("consent")
    await here.settle()
    clock.now += TENTATIVE_SECONDS + 1
    restarted = Replays("zoom", 7200, store, clock)
    assert await restarted.claim("optout")  # Zoom's redelivery 5 minutes later is applied
    assert not await restarted.claim("consent")  # the applied one is still a duplicate


async def test_a_release_lost_to_an_outage_is_remembered_only_while_its_claim_can_live(store: Store) -> None:
    """A release the store did not take is remembered, so this process's retry of the id is accepted at
    once; once the claim it releases has lapsed in the store, the memory of it goes too: a long storage
    outage, each delivery failing, does not grow the process without bound."""
    clock = Clock()
    replays = Replays("events", 600, store, clock)
    ids = [f"msg-{n}" for n in range(50)]
    for delivery_id in ids:
        assert await replays.claim(delivery_id)
    await store.close()
    for delivery_id in ids:
        replays.release(delivery_id)
    await replays.settle()
    assert await replays.claim("msg-0")  # from memory, with storage still down: the release did not land
    clock.now += TENTATIVE_SECONDS + 1
    await store.open()
    assert await replays.claim("fresh")
    assert len(replays._unreleased) == 0  # every unreleased claim has lapsed in the store
    assert await replays.claim("msg-1")  # and the store, its claim lapsed, accepts the retry
