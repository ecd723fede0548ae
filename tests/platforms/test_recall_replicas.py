"""Recall on two replicas sharing PostgreSQL: a delivery naming a participant whose join another replica took
reads the stored roster first, so that participant is known there too."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway.app import create_app
from gateway.model import ConsentChoice
from gateway.platforms import recall
from gateway.sealing import new_key_spec
from gateway.settings import Settings
from gateway.web.keys import GATEWAY
from tests.conftest import postgres_database
from tests.fakes.ai_service import FakeAIService
from tests.fakes.recall import BOT, RECORDING, RecallSender, participant, participant_event, transcript_data
from tests.platforms.platform_gateway import consent
from tests.platforms.test_recall import ENV, INSTALL, SECRET
from tests.web.harness import (
    INGEST_TOKEN,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Dest,
    LiveGateway,
    policy_yaml,
    until_fresh,
)

ADA, BEA = participant(100, "Ada Lovelace"), participant(200, "Bea Okafor")
KEY_ADA, KEY_BEA = f"{RECORDING}:100", f"{RECORDING}:200"


def _asked(live: LiveGateway) -> list[str]:
    gateway, asked = live.app[GATEWAY], list[str]()
    forward = gateway.notify

    def notify(notice) -> None:  # type: ignore[no-untyped-def]
        if notice.kind == "consent_request":
            asked.append(notice.participant_id)
        forward(notice)

    gateway.notify = notify
    return asked


async def test_words_reaching_another_replica_ask_nobody_again_and_bring_nobody_back(tmp_path: Path) -> None:
    """Ada and Bea join through A; Bea refuses and leaves. Her last words, transcribed after she left, and
    Ada's next ones reach B, which has not read the meeting yet: neither is taken for a newcomer, so
    nobody is sent another consent link and Bea is not put back on the shared roster as present (which
    in an all-party meeting would block everyone's words)."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database())
        fake = await stack.enter_async_context(FakeAIService(SIGNING_SECRET))
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_yaml({"summariser": fake.url}, (Dest("summariser"),)))
        config = Settings(
            port=0,
            database=url,
            policies=(policy,),
            ingest_token=SecretStr(INGEST_TOKEN),
            webhook_secrets=(SecretStr(WEBHOOK_SECRET),),
            signing_secret=SecretStr(SIGNING_SECRET),
            outbox_keys=(SecretStr(new_key_spec()),),
            tick_seconds=0.05,
            secrets_file=tmp_path / "s.json",
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        gws = []
        for _ in range(2):
            app = create_app(config)
            recall.setup(app, [INSTALL], environ=ENV)
            runner = web.AppRunner(app)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            gws.append(LiveGateway(app, f"http://127.0.0.1:{runner.addresses[0][1]}", http, {}, policy, url))
            await until_fresh(app)
        a, b = gws
        asked_a, asked_b = _asked(a), _asked(b)
        to_a, to_b = RecallSender(a.url, SECRET, http), RecallSender(b.url, SECRET, http)
        for who in (ADA, BEA):
            assert (await to_a.post(participant_event("join", who))).status == 200
        await consent(a, recall.PLATFORM, BOT, KEY_ADA)
        await consent(a, recall.PLATFORM, BOT, KEY_BEA, ConsentChoice.REFUSED)
        assert (await to_a.post(participant_event("leave", BEA))).status == 200
        # Bea's last words (transcribed after she left) and Ada's next utterance reach replica B
        assert (await to_b.post(transcript_data(BEA, ["Bye", "all."], start=9.0))).status == 200
        assert (await to_b.post(transcript_data(ADA, ["Carry", "on."], start=10.0))).status == 200
        await asyncio.sleep(0.5)
        state = b.app[GATEWAY].meeting(recall.PLATFORM, BOT)
        bea_present = state.participants[KEY_BEA].present if state else None
        assert asked_b == [], f"replica B asked {asked_b} for consent again"
        assert bea_present is False, "a late utterance brought Bea (who left) back onto the roster"
        assert asked_a == [KEY_ADA, KEY_BEA]
