"""Ended meetings are forgotten only once nothing of theirs is still on its way to a destination."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from gateway.app import DispatchSink
from gateway.delivery import DestinationConfig, Dispatcher
from gateway.delivery.durable import Outbox
from gateway.events import ConsentSubmitted, MeetingEnded, ParticipantJoined, SegmentReceived
from gateway.model import ConsentChoice, Segment
from gateway.policy.load import parse_policy
from gateway.runtime import Gateway, PolicySet
from gateway.sealing import Keyring
from gateway.store import open_store
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService

SECRET = "whsec_" + base64.b64encode(b"forgetting test secret, 32 bytes").decode()
POLICY = """\
policy: f
purposes: {{summary: {{description: s, notice: n, notice_version: v1}}}}
destinations: [{{id: live, url: "{url}", purposes: [summary]}}]
"""


async def _until(condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_meeting_with_content_still_retrying_is_not_forgotten(tmp_path: Path) -> None:
    """Consented content queued behind a failing destination survives the meeting being long over."""
    async with FakeAIService(SECRET) as service, aiohttp.ClientSession() as session:
        policy = parse_policy(POLICY.format(url=service.url).encode(), "f.yaml")
        store = open_store(await database_for(tmp_path))
        await store.open()
        config = DestinationConfig(
            "live", service.url, SECRET, backoff_base=0.05, backoff_max=0.05, breaker_cooldown=0.05
        )
        outbox = Outbox(store, Keyring.generate())
        sink_ref: list[DispatchSink] = []
        dispatcher = Dispatcher(
            session,
            {"live": config},
            allowed=lambda dest, part: sink_ref[0].allowed(dest, part.meeting_id, part.participant_id),
            outbox=outbox,
            blocked=store.blocked,
        )
        sink = DispatchSink(dispatcher, outbox, {"live": config})
        sink_ref.append(sink)
        gateway = Gateway(PolicySet([policy]), store, sink)
        sink.gateway = gateway
        await dispatcher.start()
        service.fail_next(20)  # about a second of 503s at this backoff
        now = datetime.now(UTC)
        for event in (
            ParticipantJoined("generic", "m1", "p1", "Ann Example", now),
            ConsentSubmitted("generic", "m1", "p1", ("summary",), ConsentChoice.GIVEN, "p1", "api", now),
            SegmentReceived("generic", Segment("m1", "s1", "p1", "hello", now)),
            MeetingEnded("generic", "m1", now),
        ):
            await gateway.handle("generic", event, now=now)
        await _until(lambda: len(service.received) >= 2)  # failing, and being retried
        await gateway.tick(now + timedelta(minutes=11))
        assert gateway.meeting("generic", "m1") is not None
        await _until(lambda: any(r.ok for r in service.received))
        await _until(lambda: dispatcher.depth() == 0)  # the answer reached the lane: the item has finished
        await gateway.tick(now + timedelta(minutes=12))
        assert gateway.meeting("generic", "m1") is None
        await dispatcher.close()
        await store.close()
