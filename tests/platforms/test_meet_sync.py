"""Google Meet synchronisation against the fake Meet API on loopback: conference ends, participants who
leave and come back, failed syncs answered for Pub/Sub to deliver again, and listings with repeated or
invalid items."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

import tests.platforms.platform_gateway as platform_gateway_module
from gateway.meeting import MeetingState
from gateway.model import ConsentChoice
from gateway.platforms import meet
from gateway.platforms.config import MeetInstall
from gateway.web.keys import GATEWAY
from tests.fakes.meet import FakeMeet
from tests.platforms.platform_gateway import consent, forwarded, platform_gateway
from tests.web.harness import Dest, LiveGateway, wait_for

PUSH_TOKEN = "meet-push-token-0123456789"
CONF = "AAA-BBB-CCC-DDD-EEE"
MEETING = f"conferenceRecords/{CONF}"
TRANSCRIPT = {"transcript": {"name": f"{MEETING}/transcripts/T1"}}
STARTED = {"conferenceRecord": {"name": MEETING}}
AT_END = (Dest("summariser", delivery="meeting_end"),)


class World:
    def __init__(self, live: LiveGateway, api: FakeMeet) -> None:
        self.live, self.api = live, api

    async def push(self, data: dict[str, Any]) -> tuple[int, Any]:
        url = f"{self.live.url}{meet.PATH}"
        reply = await FakeMeet.push(self.live.http, url, PUSH_TOKEN, FakeMeet.envelope(data))
        await self.live.app[meet.MEET].idle()
        await self.live.settle()
        return reply

    def state(self) -> MeetingState:
        state = self.live.app[GATEWAY].meeting(meet.PLATFORM, MEETING)
        assert state is not None
        return state

    def present(self) -> dict[str, bool]:
        return {p.name: p.present for p in self.state().participants.values()}

    def texts(self) -> list[str]:
        return [p["text"] for p in forwarded(self.live)]

    def requests_to(self, suffix: str) -> int:
        return sum(1 for path, _ in self.api.requests if path.endswith(suffix))


@asynccontextmanager
async def world(tmp: Path, dests: Sequence[Dest] = (Dest("summariser"),)) -> AsyncIterator[World]:
    async with FakeMeet() as api:
        install = MeetInstall(id="ws", push_token_env="PUSH", token_env="TOKEN", api_base=api.base)

        def setup(app: web.Application) -> None:
            meet.setup(app, [install], environ={"PUSH": PUSH_TOKEN, "TOKEN": api.token})

        async with platform_gateway(tmp, setup, dests) as live:
            yield World(live, api)


@pytest.fixture
def all_party(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test policy in all-party mode."""
    mode = functools.partial(platform_gateway_module.policy_yaml, mode="all_party")
    monkeypatch.setattr(platform_gateway_module, "policy_yaml", mode)


# --- the conference ends ---------------------------------------------------------------------------------


async def test_an_ended_conference_sends_the_meeting_end_transcript(tmp_path: Path) -> None:
    """Once the conference record has an ``endTime``, the meeting ends after the entries are fed: a
    meeting-end destination gets the consenting participant's words, and only theirs."""
    async with world(tmp_path, AT_END) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        bea = w.api.add_participant(CONF, "P-BEA", "Bea Okafor")
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Consented words of Ada.", 1)
        w.api.add_entry(CONF, "T1", bea, "Bea never agreed.", 2)
        w.api.end(CONF)
        assert (await w.push(TRANSCRIPT))[0] == 200
        assert w.state().ended
        await wait_for(_async(lambda: w.texts() == ["Consented words of Ada."]), "the meeting-end transcript")


async def test_a_transcript_ready_after_the_end_is_sent_at_a_second_end(tmp_path: Path) -> None:
    """Entries Meet makes ready after the conference ended (and the meeting with it) bring the meeting back
    and end it again, so the meeting-end destination gets them too."""
    async with world(tmp_path, AT_END) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.end(CONF)
        await w.push(STARTED)  # conference.ended names the conference record
        assert w.state().ended and w.texts() == []
        w.api.add_entry(CONF, "T1", ada, "Words transcribed after the end.", 1)
        assert (await w.push(TRANSCRIPT))[0] == 200
        await wait_for(_async(lambda: w.texts() == ["Words transcribed after the end."]), "a second end")
        assert w.state().ended


async def test_a_repeated_end_event_sends_nothing_again(tmp_path: Path) -> None:
    """Events after the end that bring nothing new do not end the meeting again."""
    async with world(tmp_path, AT_END) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Once.", 1)
        w.api.end(CONF)
        await w.push(TRANSCRIPT)
        await wait_for(_async(lambda: w.texts() == ["Once."]), "the transcript")
        decisions = len(await w.live.decisions())
        await w.push(STARTED)
        await w.push(TRANSCRIPT)
        assert w.texts() == ["Once."] and len(await w.live.decisions()) == decisions


# --- participants leave and come back --------------------------------------------------------------------


async def test_a_participant_with_no_open_session_has_left(tmp_path: Path) -> None:
    """``latestEndTime`` set and every session ended: the participant leaves the gateway's roster."""
    async with world(tmp_path) as w:
        w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        bea = w.api.add_participant(CONF, "P-BEA", "Bea Okafor")
        await w.push(STARTED)
        assert w.present() == {"Ada Lovelace": True, "Bea Okafor": True}
        w.api.leave(bea, "2026-11-27T09:01:00Z")
        await w.push({"participantSession": {"name": f"{bea}/participantSessions/S0"}})
        assert w.present() == {"Ada Lovelace": True, "Bea Okafor": False}


async def test_a_participant_who_came_back_is_present(tmp_path: Path) -> None:
    """A participant whose ``latestEndTime`` is set but who has an open session again is present."""
    async with world(tmp_path) as w:
        bea = w.api.add_participant(CONF, "P-BEA", "Bea Okafor")
        w.api.leave(bea, "2026-11-27T09:01:00Z")
        await w.push(STARTED)
        assert w.present() == {"Bea Okafor": False}
        w.api.come_back(bea, "2026-11-27T09:05:00Z")
        await w.push(STARTED)
        assert w.present() == {"Bea Okafor": True}
        assert w.requests_to(f"{bea}/participantSessions") >= 2


@pytest.mark.usefixtures("all_party")
async def test_all_party_words_after_a_decliner_left_are_forwarded(tmp_path: Path) -> None:
    """All-party mode: a decliner who left no longer blocks what the others say after."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        bea = w.api.add_participant(CONF, "P-BEA", "Bea Okafor")
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        await consent(w.live, meet.PLATFORM, MEETING, bea, ConsentChoice.REFUSED)
        w.api.leave(bea, "2026-11-27T09:01:00Z")
        w.api.add_entry(CONF, "T1", ada, "Said long after she left.", 1800)
        await w.push(TRANSCRIPT)
        assert w.texts() == ["Said long after she left."]


@pytest.mark.usefixtures("all_party")
async def test_all_party_words_said_before_a_decliner_left_stay_blocked(tmp_path: Path) -> None:
    """All-party mode: entries that arrive after a decliner's leaving was fed in, but were said while they
    were there, are decided with them present (and dropped); what was said after they left is forwarded."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        bea = w.api.add_participant(CONF, "P-BEA", "Bea Okafor")
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        await consent(w.live, meet.PLATFORM, MEETING, bea, ConsentChoice.REFUSED)
        w.api.leave(bea, "2026-11-27T09:01:00Z")
        await w.push({"participantSession": {"name": f"{bea}/participantSessions/S0"}})
        assert w.present()["Bea Okafor"] is False
        w.api.add_entry(CONF, "T1", ada, "Said while she was there.", 30)
        w.api.add_entry(CONF, "T1", ada, "Said after she left.", 90)
        await w.push(TRANSCRIPT)
        assert w.texts() == ["Said after she left."]
        assert w.present() == {"Ada Lovelace": True, "Bea Okafor": False}
        reasons = [d.reasons for d in await w.live.decisions()]
        assert reasons[0] == ("all_party_refused",), reasons


# --- failed syncs are delivered again --------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["http_503", "not_json"])
async def test_a_failed_sync_is_answered_for_pubsub_to_deliver_again(tmp_path: Path, failure: str) -> None:
    """A sync that fails for a reason that may pass (a 5xx, a page that is not JSON) is answered 503 with a
    log line, and the delivery Pub/Sub then makes again feeds the transcript."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Consented words of Ada.", 1)
        w.api.fail_with, w.api.not_json = (503, False) if failure == "http_503" else (None, True)
        with capture_logs() as logs:
            status, doc = await w.push(TRANSCRIPT)
        assert status == 503 and doc["type"].endswith("/upstream-unavailable"), doc
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["meet.fetch_failed"]
        assert w.texts() == []
        w.api.fail_with, w.api.not_json = None, False
        assert (await w.push(TRANSCRIPT))[0] == 200
        assert w.texts() == ["Consented words of Ada."]


async def test_a_conference_that_is_gone_is_acknowledged(tmp_path: Path) -> None:
    """A 404 (the conference record expired) would come again: the delivery is acknowledged, not retried."""
    async with world(tmp_path) as w:
        assert (await w.push({"conferenceRecord": {"name": "conferenceRecords/unknown"}}))[0] == 200
        assert w.live.app[GATEWAY].meeting(meet.PLATFORM, "conferenceRecords/unknown") is None


async def test_pushes_during_a_sync_share_the_next_one(tmp_path: Path) -> None:
    """A burst of pushes for one conference costs at most two syncs, and every one is answered after the
    sync that covers it."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Once.", 1)
        replies = await asyncio.gather(*(w.push(TRANSCRIPT if n % 2 else STARTED) for n in range(8)))
        assert {status for status, _ in replies} == {200}
        assert w.requests_to("/participants") <= 2, "one page of participants per sync, two syncs at most"
        assert w.texts() == ["Once."]


# --- listings with repeated or invalid items -------------------------------------------------------------


async def test_an_item_listed_twice_is_fed_once(tmp_path: Path) -> None:
    """An entry or participant a listing repeats (overlapping pages) is decided and delivered once."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        w.api.participants[CONF].append(dict(w.api.participants[CONF][0]))
        await w.push(STARTED)
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Ada once.", 1)
        w.api.add_entry(CONF, "T1", ada, "Ada twice.", 2)
        entries = w.api.entries[(CONF, "T1")]
        entries.insert(2, dict(entries[0]))  # on the next page
        entries.append(dict(entries[1]))
        await w.push(TRANSCRIPT)
        assert w.texts() == ["Ada once.", "Ada twice."]
        assert len(await w.live.decisions()) == 2


async def test_an_invalid_item_is_skipped_and_counted(tmp_path: Path) -> None:
    """An invalid entry is skipped with a log line that counts it (and carries no text); the rest is fed."""
    async with world(tmp_path) as w:
        ada = w.api.add_participant(CONF, "P-ADA", "Ada Lovelace")
        await consent(w.live, meet.PLATFORM, MEETING, ada)
        w.api.add_entry(CONF, "T1", ada, "Before.", 1)
        w.api.entries[(CONF, "T1")].append({"name": f"{MEETING}/transcripts/T1/entries/bad",
                                            "text": "Secret words.", "startTime": "yesterday"})  # fmt: skip
        w.api.add_entry(CONF, "T1", ada, "After.", 3)
        with capture_logs() as logs:
            assert (await w.push(TRANSCRIPT))[0] == 200
        assert w.texts() == ["Before.", "After."]
        skipped = [e for e in logs if e["event"] == "meet.invalid_items"]
        assert [(e["key"], e["skipped"]) for e in skipped] == [("transcriptEntries", 1)]
        assert "Secret" not in repr(logs)


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run
