"""Recall on two replicas sharing PostgreSQL: a delivery naming a participant whose join another replica took
reads the stored roster first, so that participant is known there too."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from gateway.model import ConsentChoice
from gateway.platforms import recall
from gateway.web.keys import GATEWAY
from tests.fakes.recall import BOT, RECORDING, RecallSender, participant, participant_event, transcript_data
from tests.platforms.platform_gateway import consent
from tests.platforms.test_recall import ENV, INSTALL, SECRET
from tests.test_replicas import replicas
from tests.web.harness import LiveGateway

ADA, BEA = participant(100, "Ada Lovelace"), participant(200, "Bea Okafor")
KEY_ADA, KEY_BEA = f"{RECORDING}:100", f"{RECORDING}:200"


def _asked(live: LiveGateway) -> list[str]:
    """The participants the replica sends a consent request from now on."""
    gateway, asked = live.app[GATEWAY], list[str]()
    forward = gateway.notify

    def notify(notice) -> None:  # type: ignore[no-untyped-def]
        if notice.kind == "consent_request":
            asked.append(notice.participant_id)
        forward(notice)

    gateway.notify = notify
    return asked


def _setup(app: web.Application) -> None:
    recall.setup(app, [INSTALL], environ=ENV)


async def test_words_reaching_another_replica_ask_nobody_again_and_bring_nobody_back(tmp_path: Path) -> None:
    """Ada and Bea join through A; Bea refuses and leaves. Her last words, transcribed after she left, and
    Ada's next ones reach B, which has not read the meeting yet: neither is taken for a newcomer, so
    nobody is sent another consent link and Bea is not put back on the shared roster as present (which
    in an all-party meeting would block everyone's words)."""
    async with replicas(tmp_path, setup=_setup) as ([a, b], _):
        asked_a, asked_b = _asked(a), _asked(b)
        to_a, to_b = RecallSender(a.url, SECRET, a.http), RecallSender(b.url, SECRET, b.http)
        for who in (ADA, BEA):
            assert (await to_a.post(participant_event("join", who))).status == 200
        await consent(a, recall.PLATFORM, BOT, KEY_ADA)
        await consent(a, recall.PLATFORM, BOT, KEY_BEA, ConsentChoice.REFUSED)
        assert (await to_a.post(participant_event("leave", BEA))).status == 200
        assert (await to_b.post(transcript_data(BEA, ["Bye", "all."], start=9.0))).status == 200
        assert (await to_b.post(transcript_data(ADA, ["Carry", "on."], start=10.0))).status == 200
        await asyncio.sleep(0.5)
        state = b.app[GATEWAY].meeting(recall.PLATFORM, BOT)
        assert asked_b == [], f"replica B asked {asked_b} for consent again"
        assert state is not None and state.participants[KEY_BEA].present is False
        assert asked_a == [KEY_ADA, KEY_BEA]
