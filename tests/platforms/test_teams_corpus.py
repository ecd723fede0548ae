"""A real meeting from the shared corpus through a Teams transcript forwards what the generic API does."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from aiohttp import web

from gateway.platforms import teams
from gateway.platforms.config import TeamsInstall
from tests.fakes.graph import FakeGraph
from tests.platforms.corpus_meeting import DECLINER, Meeting, content, generic_content, load
from tests.platforms.platform_gateway import forwarded, platform_gateway
from tests.web.harness import consent, joined

MEETING, TRANSCRIPT = "MSo1Y29ycHVzLW1lZXRpbmc", "MSMjY29ycHVzLXRyYW5zY3JpcHQ"


def _vtt(meeting: Meeting) -> str:
    """The meeting as Teams writes it: unpadded times, escaped text, ``<v Name>`` tags (none when unknown)."""
    cues = ["WEBVTT", ""]
    for n, (label, text) in enumerate(meeting.turns):
        body = html.escape(text, quote=False)
        cues += [f"0:{n // 6}:{n % 6 * 10}.0 --> 0:{n // 6}:{n % 6 * 10 + 9}.500"]
        cues += [f"<v {html.escape(label, quote=False)}>{body}</v>" if label else body, ""]
    return "\n".join(cues)


@pytest.mark.corpus
async def test_a_corpus_meeting_over_teams_forwards_what_the_generic_api_does(tmp_path: Path) -> None:
    """ES2002a as a Teams VTT transcript, with the roster and consents (one declining) sent by the
    integration through the generic API, forwards the same content as the generic-API replay."""
    meeting = load()
    expected = await generic_content(meeting)
    async with FakeGraph() as graph:
        graph.transcripts[(MEETING, TRANSCRIPT)] = _vtt(meeting)
        install = TeamsInstall(id="c", client_state_env="S", token_env="T", graph_base=graph.base)

        def setup(app: web.Application) -> None:
            teams.setup(app, [install], environ={"S": "corpus-state", "T": graph.token})

        async with platform_gateway(tmp_path, setup) as live:
            await live.send(*(joined(f"spk-{label}", label, meeting=MEETING) for label in meeting.labels))
            await live.send(*(consent(f"spk-{label}", "refused" if label == DECLINER else "given",
                                      meeting=MEETING) for label in meeting.labels))  # fmt: skip
            url = f"{live.url}{teams.PATH}"
            status, _ = await FakeGraph.notify(
                live.http, url, FakeGraph.notification(MEETING, TRANSCRIPT, "corpus-state")
            )
            assert status == 202
            await live.app[teams.TEAMS].idle()
            await live.settle()
            got = content(forwarded(live), lambda pid: pid.removeprefix("spk-"))
    assert sum(expected.values()) > 100 and got == expected
