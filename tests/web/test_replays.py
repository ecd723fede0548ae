"""Replays (``gateway.web.replays``) over a real store: memory first, the store's claim for everyone else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.store.base import Store
from gateway.web.replays import Replays


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
