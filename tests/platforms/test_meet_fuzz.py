"""Hypothesis against the Meet push endpoint: arbitrary bytes, tokens and headers are answered cleanly, and
the Meet API is never called (so nothing is fed in or forwarded) without the installation's push token."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.platforms import meet
from gateway.platforms.config import MeetInstall
from tests.fakes.meet import FakeMeet
from tests.platforms.platform_gateway import forwarded, in_thread, post_sync, run
from tests.web.harness import LiveGateway

PUSH_TOKEN = "meet-fuzz-push-token-0123456789"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
payloads = st.sampled_from(
    [
        {"transcript": {"name": "conferenceRecords/C1/transcripts/T1"}},
        {"conferenceRecord": {"name": "conferenceRecords/C1"}},
        {"participantSession": {"name": "conferenceRecords/C1/participants/P1/participantSessions/S1"}},
        {"conferenceRecord": {"name": "conferenceRecords/../../x"}},
        {"space": {"name": "spaces/abc"}},
        [],
    ]
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveGateway, Any, FakeMeet]]:
    api = FakeMeet()
    who = api.add_participant("C1", "P1", "Ada Lovelace")
    api.add_entry("C1", "T1", who, "Only with the right push token.", 1)

    def setup(app: web.Application) -> None:
        install = MeetInstall(id="f", push_token_env="P", token_env="T", api_base=api.base)
        meet.setup(app, [install], environ={"P": PUSH_TOKEN, "T": api.token})

    async def start() -> None:
        await api.__aenter__()  # on the serving loop, before ``setup`` reads its address

    with in_thread(tmp_path_factory.mktemp("meet-fuzz"), setup, before=start) as (live, loop):
        yield live, loop, api
        run(loop, api.__aexit__(None, None, None))


envelopes = payloads.map(lambda d: json.dumps(FakeMeet.envelope(d)).encode())


@FUZZ
@given(
    body=st.binary(max_size=2048) | envelopes,
    token=st.none() | header_text.filter(lambda t: t != PUSH_TOKEN),
    header=st.none() | header_text.filter(lambda t: t != PUSH_TOKEN),
)
def test_pushes_without_our_token_are_refused_and_never_pull(
    served: tuple[LiveGateway, Any, FakeMeet], body: bytes, token: str | None, header: str | None
) -> None:
    """Without the push token every request is 401 problem+json, and the Meet API is never called."""
    live, loop, api = served
    query = "?" + urllib.parse.urlencode({"token": token}) if token is not None else ""
    headers = {"X-Push-Token": header} if header is not None else {}
    before = len(api.requests)
    status, content_type, _ = post_sync(live.url + meet.PATH + query, body, headers)
    assert status == 401 and content_type.startswith("application/problem+json")
    run(loop, live.app[meet.MEET].idle())
    assert len(api.requests) == before and forwarded(live) == []


@FUZZ
@given(
    body=st.binary(max_size=2048)
    | envelopes
    | st.binary(max_size=200).map(
        lambda b: json.dumps({"message": {"data": base64.b64encode(b).decode()}}).encode()
    )
)
def test_authenticated_pushes_get_200_or_a_clean_400(
    served: tuple[LiveGateway, Any, FakeMeet], body: bytes
) -> None:
    """With the right token, any body is acknowledged or refused with a 400 problem; never a 500."""
    live, loop, _ = served
    status, content_type, raw = post_sync(f"{live.url}{meet.PATH}?token={PUSH_TOKEN}", body)
    assert status in (200, 400), raw[:200]
    if status == 400:
        assert content_type.startswith("application/problem+json") and json.loads(raw)["detail"]
    run(loop, live.app[meet.MEET].idle())
