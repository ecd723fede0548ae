"""A real meeting from the shared corpus through the Meet API forwards what the generic API does."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from gateway.model import ConsentChoice
from gateway.platforms import meet
from gateway.platforms.config import MeetInstall
from tests.fakes.meet import FakeMeet
from tests.platforms.corpus_meeting import DECLINER, content, generic_content, load
from tests.platforms.platform_gateway import consent, forwarded, platform_gateway

CONF = "corpus-conference"
MEETING = f"conferenceRecords/{CONF}"
EVENT = {"transcript": {"name": f"{MEETING}/transcripts/T1"}}


@pytest.mark.corpus
async def test_a_corpus_meeting_over_meet_forwards_what_the_generic_api_does(tmp_path: Path) -> None:
    """ES2002a as Meet participants and transcript entries (pulled page by page after a push; one speaker
    declining) forwards the same content as the generic-API replay."""
    meeting = load()
    expected = await generic_content(meeting)
    async with FakeMeet(max_page=50) as api:
        install = MeetInstall(id="c", push_token_env="P", token_env="T", api_base=api.base)

        def setup(app: web.Application) -> None:
            meet.setup(app, [install], environ={"P": "corpus-push", "T": api.token})

        async with platform_gateway(tmp_path, setup) as live:
            url = f"{live.url}{meet.PATH}"
            ids = {label: api.add_participant(CONF, f"P{n}", label) for n, label in enumerate(meeting.labels)}
            assert (await FakeMeet.push(live.http, url, "corpus-push", FakeMeet.envelope(EVENT)))[0] == 200
            await live.app[meet.MEET].idle()
            for label, pid in ids.items():
                choice = ConsentChoice.REFUSED if label == DECLINER else ConsentChoice.GIVEN
                await consent(live, meet.PLATFORM, MEETING, pid, choice)
            for n, (label, text) in enumerate(meeting.turns):
                api.add_entry(CONF, "T1", ids[label] if label else None, text, n)
            assert (await FakeMeet.push(live.http, url, "corpus-push", FakeMeet.envelope(EVENT)))[0] == 200
            await live.app[meet.MEET].idle()
            await live.settle()
            label_of = {pid: label for label, pid in ids.items()}
            got = content(forwarded(live), label_of.__getitem__)
    assert sum(expected.values()) > 100 and got == expected
