"""Segments held while consent is pending survive a restart.

A segment of someone who has not decided yet is held for the policy's pending window. It used to live only
in the meeting's memory, so a restart (a crash, a deploy's drain) inside the window lost words that the
speaker then consented to: the second-worst bug. Each hold is now an outbox item of kind ``held``, sealed,
written with the hold decision before the event is acknowledged; the next process holds it again (with the
time it was first held) and decides it at once, and every decided hold is closed with its text cleared.
The real app on loopback, on the backend under test; a replica taking over another's holds is in
``tests/test_replicas.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.delivery.durable import Outbox
from gateway.delivery.items import Item
from gateway.model import Action
from gateway.sealing import new_key_spec
from gateway.store import outbox as stored
from gateway.store.base import StorageError
from gateway.web.keys import GATEWAY
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    MEETING,
    SIGNING_SECRET,
    Dest,
    LiveGateway,
    consent,
    event,
    joined,
    policy_yaml,
    segment,
    serving_policy,
    wait_for,
)

ADA, BO = "p-ada", "p-bo"
DEST = "summariser"
SAID = "Held until Ada decides, then over to Bo Nakamura."


async def held_rows(gw: LiveGateway) -> list[tuple[object, object, object]]:
    rows = await gw.store.outbox_report()
    return [(r["status"], r["reason"], r["sealed_parts"]) for r in rows if r["kind"] == stored.HELD]


def holds(gw: LiveGateway) -> int:
    state = gw.app[GATEWAY].meeting("generic", MEETING)
    return 0 if state is None else len(state.held)


class Restarts:
    """One fake AI service and one database; ``serving()`` starts a new gateway process on them."""

    def __init__(self, tmp: Path, fake: FakeAIService, window: float) -> None:
        self.tmp = tmp
        self.fake = fake
        self.text = policy_yaml({DEST: fake.url}, (Dest(DEST),), window=window)
        self.keys = (SecretStr(new_key_spec()),)  # the outbox keys outlive the process, as `serve` keeps them
        self.url: str | None = None

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[LiveGateway]:
        self.url = self.url or await database_for(self.tmp)
        async with serving_policy(
            self.tmp, self.text, fakes={DEST: self.fake}, database=self.url, outbox_keys=self.keys
        ) as gw:
            yield gw


async def hold_then_stop(run: Restarts) -> None:
    async with run.serving() as gw:
        await gw.send(joined(ADA, "Ada Lovelace"), joined(BO, "Bo Nakamura"), segment("s1", ADA, SAID))
        assert [d.action for d in await gw.decisions()] == [Action.HOLD]
        assert await held_rows(gw) == [("pending", None, 1)]  # sealed, before the answer
        summary = await gw.store.outbox_summary()  # `outbox status`: waiting for consent, not delivery
        assert [(r["status"], r["items"], r["sealed_parts"]) for r in summary] == [("held", 1, 1)]


async def test_a_hold_survives_a_restart_and_is_released_by_a_consent_given_after_it(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        run = Restarts(tmp_path, fake, window=60)
        await hold_then_stop(run)
        async with run.serving() as gw:

            async def restored() -> bool:
                return holds(gw) == 1

            await wait_for(restored, "the hold to be restored")  # at start, before any event of the meeting
            await gw.send(consent(ADA, "given"))

            async def delivered() -> bool:
                return len(fake.accepted()) == 1

            await wait_for(delivered, "the released segment")
            [payload] = fake.accepted()[0].segment_payloads()
            assert (payload["segment_id"], payload["text"]) == (
                "s1",
                SAID.replace("Bo Nakamura", "[participant 2]"),
            )
            assert holds(gw) == 0
            await gw.settle()
            assert await held_rows(gw) == [(stored.DECIDED, None, 0)]  # closed, its text gone
            actions = [(d.segment_id, d.action) for d in await gw.decisions()]
            assert actions == [("s1", Action.HOLD), ("s1", Action.REDACT)]


async def test_a_restored_hold_still_ends_when_its_window_ends(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        run = Restarts(tmp_path, fake, window=1.5)
        await hold_then_stop(run)
        async with run.serving() as gw:

            async def dropped() -> bool:
                return any(d.action is Action.DROP for d in await gw.decisions())

            await wait_for(dropped, "the hold to expire")
            [drop] = [d for d in await gw.decisions() if d.action is Action.DROP]
            assert (drop.segment_id, drop.reasons) == ("s1", ("pending_expired",))
            assert await held_rows(gw) == [(stored.DECIDED, None, 0)]
            assert holds(gw) == 0
        assert fake.accepted() == []


async def test_a_refusal_after_a_restart_drops_the_restored_hold(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        run = Restarts(tmp_path, fake, window=60)
        await hold_then_stop(run)
        async with run.serving() as gw:
            await gw.send(consent(ADA, "refused"))

            async def closed() -> bool:
                return holds(gw) == 0 and [s for s, _, _ in await held_rows(gw)] != ["pending"]

            await wait_for(closed, "the hold to be dropped")
            rows = await held_rows(gw)
            assert len(rows) == 1 and rows[0][2] == 0  # no text left, whichever closed it first
            assert not [d for d in await gw.decisions() if d.action in (Action.FORWARD, Action.REDACT)]
        assert fake.accepted() == []


async def test_holds_are_restored_even_when_storage_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage failing just as the process starts must not leave the holds behind: the ticker tries the
    start's recovery again until it has run."""
    real = Outbox.claim_held
    calls = 0

    async def failing_once(self: Outbox, **kwargs: Any) -> list[Item]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StorageError("storage read failed (OperationalError)")
        return await real(self, **kwargs)

    async with FakeAIService(SIGNING_SECRET) as fake:
        run = Restarts(tmp_path, fake, window=60)
        await hold_then_stop(run)
        monkeypatch.setattr(Outbox, "claim_held", failing_once)
        async with run.serving() as gw:

            async def restored() -> bool:
                return holds(gw) == 1

            await wait_for(restored, "the hold to be restored after the failed start")
            await gw.send(consent(ADA, "given"))
            await gw.settle()
            assert [p["segment_id"] for p in fake.segments()] == ["s1"]
        assert calls >= 2


async def test_a_hold_dropped_by_someone_elses_refusal_is_closed_in_the_store(tmp_path: Path) -> None:
    """All parties: Ada's words wait while Bo has not decided; Bo refuses, so they are dropped. The store
    must close that hold as the log says (its text cleared) in the refusal's own commit: left open, its
    text stayed at rest, and a restart would hold it again and forward it once Bo changed his mind,
    against the drop the log records."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST),), window=60, mode="all_party")
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"))
            await gw.send(segment("s1", ADA, SAID))
            assert await held_rows(gw) == [("pending", None, 1)]
            await gw.send(consent(BO, "refused"))
            assert holds(gw) == 0
            assert await held_rows(gw) == [(stored.DECIDED, None, 0)]
            await gw.send(consent(BO, "given"))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            await gw.settle()
            assert holds(gw) == 0
            actions = [(d.segment_id, d.action) for d in await gw.decisions()]
        assert actions == [("s1", Action.HOLD), ("s1", Action.DROP)]
        assert fake.accepted() == []


async def test_a_hold_released_after_the_meeting_ended_and_a_restart_reaches_the_meeting_end_destination(
    tmp_path: Path,
) -> None:
    """A ``meeting_end`` destination; Ada's words are held when the meeting ends; the gateway restarts;
    Ada consents within the window. Her words go in a transcript of their own, as without the restart
    (the end, read back from the stored roster, counts), rather than waiting until they expire."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        run = Restarts(tmp_path, fake, window=60)
        run.text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),), window=60)
        async with run.serving() as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), joined(BO, "Bo Nakamura"), consent(BO, "given"))
            await gw.send(segment("s0", BO, "Bo's words."), segment("s1", ADA, SAID), event("meeting.ended"))
            await wait_for(lambda: _accepted(fake, 1), "the transcript of the end")
        async with run.serving() as gw:
            await wait_for(lambda: _holds_async(gw, 1), "the hold to be restored")
            await gw.send(consent(ADA, "given"))
            await wait_for(lambda: _accepted(fake, 2), "a transcript of the late words")
    late = fake.accepted()[1].segment_payloads()
    assert [p["segment_id"] for p in late] == ["s1"]


async def _accepted(fake: FakeAIService, n: int) -> bool:
    return len(fake.accepted()) >= n


async def _holds_async(gw: LiveGateway, n: int) -> bool:
    return holds(gw) == n
