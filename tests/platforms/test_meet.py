"""Google Meet: Pub/Sub push of Workspace Events, then pulling participants and transcript entries from a fake
Meet REST API on loopback (with pagination)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.platforms import meet
from gateway.platforms.config import MeetInstall, OAuthClient, PlatformsConfigError
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.meet import FakeMeet
from tests.fakes.oauth import FakeOAuth
from tests.platforms.platform_gateway import consent, forwarded, platform_gateway
from tests.web.harness import LiveGateway

PUSH_TOKEN = "meet-push-token-0123456789"
CONF = "AAA-BBB-CCC-DDD-EEE"
MEETING = f"conferenceRecords/{CONF}"
DATA = Path(__file__).resolve().parents[1] / "data" / "meet"


@dataclass
class World:
    live: LiveGateway
    api: FakeMeet

    @property
    def url(self) -> str:
        return f"{self.live.url}{meet.PATH}"

    async def push(self, data: dict[str, Any], token: str | None = PUSH_TOKEN) -> tuple[int, Any]:
        reply = await FakeMeet.push(self.live.http, self.url, token, FakeMeet.envelope(data))
        await self.live.app[meet.MEET].idle()
        await self.live.settle()
        return reply


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeMeet() as api:
        install = MeetInstall(id="ws", push_token_env="PUSH", token_env="TOKEN", api_base=api.base)

        def setup(app: web.Application) -> None:
            meet.setup(app, [install], environ={"PUSH": PUSH_TOKEN, "TOKEN": api.token})

        async with platform_gateway(tmp_path, setup) as live:
            yield World(live, api)


def _conference(api: FakeMeet) -> tuple[str, str, str]:
    ada = api.add_participant(CONF, "P-ADA", "Ada Lovelace")
    bea = api.add_participant(CONF, "P-BEA", "Bea Okafor", kind="anonymousUser")
    tel = api.add_participant(CONF, "P-TEL", "+1 555-0100", kind="phoneUser")
    lines = [
        (ada, "Good morning."), (bea, "Hi Ada."), (ada, "Shall we?"), (tel, "Dialled in."),
        (ada, "Item one."), (None, "Unattributed words."), (bea, "Skip me."), (ada, "Done."),
    ]  # fmt: skip
    for second, (who, text) in enumerate(lines):
        api.add_entry(CONF, "T1", who, text, second)
    return ada, bea, tel


async def test_a_transcript_event_pulls_participants_and_every_entry_page(world: World) -> None:
    """On a push naming a transcript, all participant and entry pages are pulled with the bearer token;
    participants are keyed by resource name, and only the consenting one's entries are forwarded."""
    ada, _, _ = _conference(world.api)
    await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}})  # joins the roster first
    state = world.live.app[GATEWAY].meeting(meet.PLATFORM, MEETING)
    assert state is not None and {p.name for p in state.participants.values()} == {
        "Ada Lovelace", "Bea Okafor", "+1 555-0100",
    }  # fmt: skip
    assert forwarded(world.live) == [], "nobody had consented yet"
    await consent(world.live, meet.PLATFORM, MEETING, ada)
    world.api.add_entry(CONF, "T1", ada, "One more thing.", 9)
    status, doc = await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}})
    assert (status, doc) == (200, {"status": "accepted"})
    sent = forwarded(world.live)
    assert [(p["participant_id"], p["text"]) for p in sent] == [(ada, "One more thing.")]
    entry_pages = [q for path, q in world.api.requests if path.endswith("/entries")]
    assert len(entry_pages) == 6 and entry_pages[1]["pageToken"] == "3", "9 entries in pages of 3, twice"
    assert len(await world.live.decisions()) == 9, "each entry decided once, never again on a repeat event"


async def test_a_conference_event_lists_its_transcripts(world: World) -> None:
    """A push naming only the conference (the shared Workspace Events example) lists its transcripts."""
    ada, _, _ = _conference(world.api)
    await consent(world.live, meet.PLATFORM, MEETING, ada)
    data = json.loads(
        require_shared("fixtures/platforms/google_meet/events-meet.conference-started.data.json").read_text()
    )
    status, _ = await world.push(data)
    assert status == 200
    assert [p["text"] for p in forwarded(world.live)] == ["Good morning.", "Shall we?", "Item one.", "Done."]
    assert any(path.endswith(f"{MEETING}/transcripts") for path, _ in world.api.requests)


async def test_a_participant_session_event_names_its_conference(world: World) -> None:
    """The shared participant-joined example (a participant session name) synchronises its conference."""
    _conference(world.api)
    data = json.loads(
        require_shared("fixtures/platforms/google_meet/events-meet.participant-joined.data.json").read_text()
    )
    assert (await world.push(data))[0] == 200
    state = world.live.app[GATEWAY].meeting(meet.PLATFORM, MEETING)
    assert state is not None and len(state.participants) == 3


@pytest.mark.parametrize("token", [None, "", "guessed"])
async def test_a_push_without_the_shared_token_is_refused(world: World, token: str | None) -> None:
    """No or a wrong push token: 401 before the body is read, and the Meet API is never called."""
    _conference(world.api)
    status, doc = await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}}, token=token)
    assert status == 401 and doc["type"].endswith("/unauthenticated")
    assert world.api.requests == []


async def test_the_token_may_come_in_a_header(world: World) -> None:
    """``X-Push-Token`` works like the ``token`` query parameter."""
    doc = FakeMeet.envelope({"conferenceRecord": {"name": MEETING}})
    async with world.live.http.post(world.url, json=doc, headers={"X-Push-Token": PUSH_TOKEN}) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        ({"message": {}}, "message.data"),
        ({"message": {"data": "%%%"}}, "message.data"),
        ({"message": {"data": "bm90IGpzb24="}}, "message.data"),
        ({}, "message"),
    ],
)
async def test_malformed_envelopes_get_400(world: World, doc: dict[str, Any], detail: str) -> None:
    """An authenticated push that is not a Pub/Sub envelope of base64 JSON gets 400 naming the field."""
    async with world.live.http.post(world.url, params={"token": PUSH_TOKEN}, json=doc) as r:
        body = await r.json(content_type=None)
    assert r.status == 400 and body["detail"].startswith(detail), body


async def test_events_naming_no_conference_are_ignored(world: World) -> None:
    """A payload without a conference resource name is acknowledged (Pub/Sub would redeliver) and ignored."""
    status, doc = await world.push({"space": {"name": "spaces/abc"}})
    assert (status, doc) == (200, {"status": "ignored"}) and world.api.requests == []


@pytest.mark.parametrize(("failure", "answer"), [(503, 503), (401, 503), (429, 503), (404, 200), (400, 200)])
async def test_api_errors_are_logged_and_feed_nothing(world: World, failure: int, answer: int) -> None:
    """When the Meet API fails, nothing is fed in; the push is answered 503 (for Pub/Sub to deliver it
    again) unless the failure would come again (400, 404), when it is acknowledged."""
    _conference(world.api)
    world.api.fail_with = failure
    status, _ = await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}})
    assert status == answer and world.live.app[GATEWAY].meeting(meet.PLATFORM, MEETING) is None


async def test_documented_entry_pages_are_read(world: World) -> None:
    """Self-written pages in the Meet API's documented shapes (tests/data/meet) parse into events."""
    page = json.loads((DATA / "participants.page.json").read_text())
    entries = json.loads((DATA / "transcriptEntries.page.json").read_text())
    conference = "conferenceRecords/abc-mnop-xyz"
    people = [
        meet.participant_event(conference, meet.MeetParticipant.model_validate(p), _now())
        for p in page["participants"]
    ]
    found = [
        meet.entry_event(conference, meet.Entry.model_validate(e), _now())
        for e in entries["transcriptEntries"]
    ]
    assert [p.name for p in people if p] == ["Ada Lovelace", "Guest 7"]
    assert [(s.segment.participant_id, s.segment.text) for s in found if s] == [
        (f"{conference}/participants/11", "Welcome, everyone."),
        (None, "Not from this conference."),
    ]


def test_missing_secrets_name_their_variable() -> None:
    """An installation whose push token or API token variable is unset is a configuration error naming it."""
    with pytest.raises(PlatformsConfigError, match="MEET_PUSH"):
        meet.Meet([MeetInstall(id="w", push_token_env="MEET_PUSH", token_env="T")], {"T": "t"})


def _now() -> datetime:
    return datetime.now(UTC)


# --- OAuth refresh token ---------------------------------------------------------------------------------


@pytest.fixture
async def oauth_world(tmp_path: Path) -> AsyncIterator[tuple[World, FakeOAuth]]:
    """The Meet API accepting only the live access tokens a fake Google token endpoint issued."""
    async with FakeOAuth() as google, FakeMeet(tokens=google.valid) as api:
        client = OAuthClient(
            token_url=google.url,
            grant="refresh_token",
            client_id=google.client_id,
            client_secret_env="SECRET",
            refresh_token_env="REFRESH",
        )
        install = MeetInstall(id="ws", push_token_env="PUSH", oauth=client, api_base=api.base)
        environ = {"PUSH": PUSH_TOKEN, "SECRET": google.client_secret, "REFRESH": google.refresh_token}

        def setup(app: web.Application) -> None:
            meet.setup(app, [install], environ=environ)

        async with platform_gateway(tmp_path, setup) as live:
            yield World(live, api), google


async def test_an_access_token_revoked_mid_run_is_replaced_and_the_next_entries_arrive(
    oauth_world: tuple[World, FakeOAuth],
) -> None:
    """The access token stops working between two syncs (its hour is up): the Meet API's 401 invalidates
    it, the refresh token gets a new one at once, and the consenting participant's new words arrive."""
    world, google = oauth_world
    ada, _, _ = _conference(world.api)
    await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}})
    await consent(world.live, meet.PLATFORM, MEETING, ada)
    google.revoke()
    world.api.add_entry(CONF, "T1", ada, "After the hour.", 9)
    assert await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}}) == (
        200, {"status": "accepted"},
    )  # fmt: skip
    assert [p["text"] for p in forwarded(world.live)] == ["After the hour."]
    assert [(r.grant, r.refresh_token_ok, r.secret_ok) for r in google.requests] == [
        ("refresh_token", True, True)
    ] * 2


async def test_a_token_endpoint_down_is_answered_503_and_the_redelivery_feeds(
    oauth_world: tuple[World, FakeOAuth],
) -> None:
    """The token endpoint answers 503: nothing is read, the push is answered 503 so that Pub/Sub delivers
    it again, and the redelivery, with the endpoint back, feeds the consented words."""
    world, google = oauth_world
    ada, _, _ = _conference(world.api)
    await consent(world.live, meet.PLATFORM, MEETING, ada)
    google.fail_next = [503]
    assert (await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}}))[0] == 503
    assert world.api.requests == [] and forwarded(world.live) == []
    assert (await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}}))[0] == 200
    assert [p["text"] for p in forwarded(world.live)] == ["Good morning.", "Shall we?", "Item one.", "Done."]


async def test_a_refused_refresh_token_is_answered_503_for_redelivery(
    oauth_world: tuple[World, FakeOAuth],
) -> None:
    """A refresh token the endpoint refuses (400 ``invalid_grant``) is a configuration error, logged; the
    push is still answered 503, so that a redelivery after the configuration is mended is not lost."""
    world, google = oauth_world
    _conference(world.api)
    google.refresh_token = "the-operator-revoked-ours"
    with capture_logs() as logs:
        assert (await world.push({"transcript": {"name": f"{MEETING}/transcripts/T1"}}))[0] == 503
    assert [e["status"] for e in logs if e["event"] == "oauth.token_refused"] == [400]
    assert world.api.requests == []
