"""Hypothesis against the Teams notification endpoint: arbitrary bytes and queries are answered cleanly, and
nothing is fetched, fed in or forwarded unless the ``clientState`` is the installation's."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.platforms import teams
from gateway.platforms.config import TeamsInstall
from tests.fakes.graph import FakeGraph
from tests.platforms.platform_gateway import forwarded, in_thread, post_sync, run
from tests.web.harness import LiveGateway, consent, joined

CLIENT_STATE = "fuzz-client-state-0123456789"
MEETING, TRANSCRIPT = "MSo1fuzzmeeting", "MSMjfuzztranscript"
VTT = "WEBVTT\n\n0:0:0.0 --> 0:0:1.0\n<v Ada Lovelace>Only with the right client state.</v>\n"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveGateway, Any, FakeGraph]]:
    graph = FakeGraph()
    graph.transcripts[(MEETING, TRANSCRIPT)] = VTT

    def setup(app: web.Application) -> None:
        install = TeamsInstall(id="f", client_state_env="S", token_env="T", graph_base=graph.base)
        teams.setup(app, [install], environ={"S": CLIENT_STATE, "T": graph.token})

    async def start() -> None:
        await graph.__aenter__()  # on the serving loop, before ``setup`` reads its address

    with in_thread(tmp_path_factory.mktemp("teams-fuzz"), setup, before=start) as (live, loop):
        run(loop, live.send(joined("p-ada", "Ada Lovelace", meeting=MEETING)))
        run(loop, live.send(consent("p-ada", "given", meeting=MEETING)))
        yield live, loop, graph
        run(loop, graph.__aexit__(None, None, None))


notification = st.fixed_dictionaries(
    {
        "clientState": st.one_of(st.none(), st.text(max_size=40)).filter(lambda s: s != CLIENT_STATE),
        "changeType": st.sampled_from(["created", "updated"]),
        "resource": st.sampled_from(
            [f"users('u1')/onlineMeetings('{MEETING}')/transcripts('{TRANSCRIPT}')", "users/u1/messages/m1"]
        ),
    }
)


@FUZZ
@given(
    body=st.binary(max_size=2048)
    | st.lists(notification, min_size=1, max_size=4).map(lambda v: json.dumps({"value": v}).encode()),
    query=st.dictionaries(
        st.sampled_from(["validationToken", "x", "token"]), st.text(max_size=40), max_size=2
    ),
)
def test_requests_without_our_client_state_never_fetch_or_forward(
    served: tuple[LiveGateway, Any, FakeGraph], body: bytes, query: dict[str, str]
) -> None:
    """Any bytes and query get 200 (validation echo), 400 or 401, never a 500; Graph is never asked and
    nothing is forwarded without the installation's clientState."""
    live, loop, graph = served
    url = live.url + teams.PATH + ("?" + urllib.parse.urlencode(query) if query else "")
    status, content_type, raw = post_sync(url, body, {"Content-Type": "application/json"})
    if query.get("validationToken"):
        assert (status, raw.decode()) == (200, query["validationToken"])
    else:
        assert status in (400, 401) and content_type.startswith("application/problem+json"), (
            status,
            raw[:200],
        )
    run(loop, live.app[teams.TEAMS].idle())
    assert graph.requests == [] and forwarded(live) == []
