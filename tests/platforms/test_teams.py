"""Microsoft Teams transcripts through Graph change notifications, against a fake Graph on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway import runtime
from gateway.platforms import teams, vtt
from gateway.platforms.config import OAuthClient, PlatformsConfigError, TeamsInstall
from gateway.runtime import wall_clock
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.graph import FakeGraph
from tests.fakes.oauth import FakeOAuth
from tests.platforms.platform_gateway import forwarded, platform_gateway
from tests.test_transcript_batches import transcripts
from tests.web.harness import Dest, LiveGateway, consent, event, joined

MEETING = "MSo1N2Y5ZGFjYy03MWJmLTQ3NDMtYjQxMy01M2EdFGkdRWHJlQ"
TRANSCRIPT = "MSMjMCMjNzU3ODc2ZDYtOTcwMi00MDhkLWFkNDItOTE2ZDNmZjkwZGY4"
CLIENT_STATE = "teams-client-state-0123456789"
DATA = Path(__file__).resolve().parents[1] / "data" / "teams"


@dataclass
class World:
    live: LiveGateway
    graph: FakeGraph

    @property
    def url(self) -> str:
        return f"{self.live.url}{teams.PATH}"

    async def notify(self, *notes: dict[str, object]) -> int:
        status, _ = await FakeGraph.notify(self.live.http, self.url, *notes)
        await self.live.app[teams.TEAMS].idle()
        await self.live.settle()
        return status

    async def roster(self, *people: tuple[str, str], consenting: tuple[str, ...] = ()) -> None:
        """The integration's roster and consents, through the generic API under the Graph meeting id."""
        await self.live.send(*(joined(pid, name, meeting=MEETING) for pid, name in people))
        await self.live.send(*(consent(pid, "given", meeting=MEETING) for pid in consenting))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeGraph() as graph:
        install = TeamsInstall(
            id="contoso", client_state_env="STATE", token_env="TOKEN", graph_base=graph.base
        )

        def setup(app: web.Application) -> None:
            teams.setup(app, [install], environ={"STATE": CLIENT_STATE, "TOKEN": graph.token})

        async with platform_gateway(tmp_path, setup) as live:
            live.app[teams.TEAMS].retry_delays = (0.01, 0.01, 0.01)
            yield World(live, graph)


async def test_validation_token_is_echoed_as_plain_text(world: World) -> None:
    """Subscription validation: the URL-decoded token comes back as 200 ``text/plain``."""
    token = "Validation: Testing client application reachability for subscription Request-Id: 7f+a/b%c"
    status, content_type, text = await FakeGraph.validate(world.live.http, world.url, token)
    assert (status, content_type, text) == (200, "text/plain", token)


async def test_a_transcript_is_fetched_and_names_resolve_against_the_roster(world: World) -> None:
    """A ``created`` notification is answered 202; the VTT is fetched with the bearer token as ``text/vtt``;
    cues of the one consenting roster name are forwarded with their (unpadded, clamped) times; a refusing
    speaker, an ambiguous name, an unknown name and a cue without voice are not."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (DATA / "transcript.vtt").read_text(encoding="utf-8")
    await world.roster(
        ("p-ada", "Ada Lovelace"), ("p-bea", "Bea Okafor"), ("p-sam1", "Sam Lee"), ("p-sam2", "Sam Lee"),
        consenting=("p-ada", "p-sam1", "p-sam2"),
    )  # fmt: skip
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    (request,) = world.graph.requests
    assert request.authorization == f"Bearer {world.graph.token}"
    assert request.query == {"$format": "text/vtt"}
    assert request.path.endswith(f"/onlineMeetings/{MEETING}/transcripts/{TRANSCRIPT}/content")
    sent = forwarded(world.live)
    assert [(p["participant_id"], p["text"]) for p in sent] == [
        ("p-ada", "We started before the recording did."),
        ("p-ada", "Understood, [participant 2]."),
        ("p-ada", "Q&A, then let's wrap up."),
    ]
    assert [(p["start"], p["end"]) for p in sent] == [(0.0, 2.5), (6.25, 9.0), (63.5, 64.0)]
    decisions = await world.live.decisions()
    assert len(decisions) == 7, "every cue was decided, attributed or not"


async def test_a_transcript_ready_after_the_meeting_was_forgotten_is_still_attributed(world: World) -> None:
    """Graph makes a transcript ready minutes or hours after the meeting ends; the gateway forgets an ended
    meeting after ten minutes. Its roster is announced again before the cues, so Ada's consented words are
    attributed and forwarded, and Bea's name (she never consented) is still scrubbed from them."""
    vtt_text = "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Thanks, Bea Okafor, for the numbers.</v>\n"
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = vtt_text
    await world.roster(("p-ada", "Ada Lovelace"), ("p-bea", "Bea Okafor"), consenting=("p-ada",))
    await world.live.send(event("meeting.ended", MEETING))
    gateway = world.live.app[GATEWAY]
    await gateway.tick(wall_clock() + timedelta(minutes=11))
    assert gateway.meeting("generic", MEETING) is None  # forgotten
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [(p["participant_id"], p["text"]) for p in forwarded(world.live)] == [
        ("p-ada", "Thanks, [participant 2], for the numbers.")
    ]


async def test_a_late_transcript_is_one_transcript_at_meeting_end_however_slow_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transcript Graph makes ready after the end reaches a meeting-end destination whole, even when
    every cue takes longer to apply than the pause after which late parts go on their own (made nil)."""
    monkeypatch.setattr(runtime, "LATE_END_SECONDS", 0.0)
    cues = 40
    vtt_text = "WEBVTT\n\n" + "".join(
        f"0:0:{i}.0 --> 0:0:{i}.5\n<v Ada Lovelace>Point {i} of the review.</v>\n\n" for i in range(cues)
    )
    async with FakeGraph() as graph:
        graph.transcripts[(MEETING, TRANSCRIPT)] = vtt_text
        install = TeamsInstall(id="contoso", client_state_env="S", token_env="T", graph_base=graph.base)

        def setup(app: web.Application) -> None:
            teams.setup(app, [install], environ={"S": CLIENT_STATE, "T": graph.token})

        async with platform_gateway(tmp_path, setup, (Dest("archive", delivery="meeting_end"),)) as live:
            world = World(live, graph)
            await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
            await live.send(event("meeting.ended", MEETING))
            assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
            await live.settle()
            assert [len(t) for t in transcripts(live.fakes["archive"])] == [cues]


async def test_a_voice_the_roster_lacks_is_scrubbed_from_what_others_say(world: World) -> None:
    """Carol speaks in the transcript, but the integration's roster never had her (a dial-in, a join the
    gateway did not hear of). Her own cue stays unattributed and is not forwarded; her name in Ada's words
    is scrubbed like that of anyone who has not consented, and nobody is asked for consent on her behalf."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n"
        "0:0:1.0 --> 0:0:2.0\n<v Carol Danvers>I would rather not be recorded.</v>\n\n"
        "0:0:3.0 --> 0:0:4.0\n<v Ada Lovelace>Noted, Carol Danvers. Carol, we will follow up.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [(p["participant_id"], p["text"]) for p in forwarded(world.live)] == [
        ("p-ada", "Noted, [participant 2]. [participant 2], we will follow up.")
    ]
    assert [e.record.subject for e in await world.live.ledger()] == ["p-ada"]
    # a second transcript: Carol's voice is on the roster now, by its name only, so her cue is still
    # credited to nobody (words are never attributed by a display name)
    world.graph.transcripts[(MEETING, "second")] = (
        "WEBVTT\n\n0:0:5.0 --> 0:0:6.0\n<v Carol Danvers>Again.</v>\n"
    )
    assert await world.notify(FakeGraph.notification(MEETING, "second", CLIENT_STATE)) == 202
    carol = [d for d in await world.live.decisions() if d.segment_id.startswith("second:")]
    assert carol and all(d.participant_id is None and d.reasons == ("unattributed",) for d in carol)


async def test_words_a_malformed_transcript_puts_where_an_id_goes_never_leave(world: World) -> None:
    """A cue's words after a blank line are the next cue's identifier to the parser. Bea refused; her
    words must not ride out as the segment id of Ada's forwarded cue, nor sit in the decision records."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n\n<v Bea Okafor>ZQXSECRET, and I said no.</v>\n"
        "0:0:2.0 --> 0:0:3.0\n<v Ada Lovelace>Noted.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), ("p-bea", "Bea Okafor"), consenting=("p-ada",))
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [(p["participant_id"], p["text"]) for p in forwarded(world.live)] == [("p-ada", "Noted.")]
    assert "ZQXSECRET" not in repr(world.live.fake.received)
    assert "ZQXSECRET" not in repr([d.segment_id for d in await world.live.decisions()])


async def test_transcript_logs_carry_ids_and_counts_never_words(world: World) -> None:
    """Invariant 6 on the Graph path: an applied transcript and one that cannot be parsed are both logged,
    and neither log line holds a word of them."""
    good = (DATA / "transcript.vtt").read_text(encoding="utf-8")
    bad = "<v Ada Lovelace>the merger closes on Friday, keep it quiet</v>"
    other = TRANSCRIPT[::-1]
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = good
    world.graph.transcripts[(MEETING, other)] = bad
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    with capture_logs() as logs:
        for transcript in (TRANSCRIPT, other):
            assert await world.notify(FakeGraph.notification(MEETING, transcript, CLIENT_STATE)) == 202
    assert {"teams.transcript", "teams.transcript_unparsable"} <= {entry["event"] for entry in logs}
    assert forwarded(world.live), "the good transcript was forwarded, so its words were in the gateway"
    words = [cue.text for cue in vtt.parse(good)] + ["the merger closes on Friday"]
    assert not [w for w in words if w in repr(logs)]


async def test_disabled_speaker_attribution_forwards_nothing(world: World) -> None:
    """Graph's 403 (attribution disabled for the tenant): nothing is fed in, so nothing is decided or sent."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (DATA / "transcript.vtt").read_text(encoding="utf-8")
    world.graph.attribution_disabled = True
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert len(world.graph.requests) == 1
    assert forwarded(world.live) == [] and await world.live.decisions() == []


async def test_a_wrong_client_state_is_refused_and_nothing_is_fetched(world: World) -> None:
    """A request whose every ``clientState`` matches no installation is refused 401, and nothing fetched."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = "WEBVTT\n"
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, "guessed")) == 401
    assert world.graph.requests == []


async def test_a_foreign_notification_in_a_batch_is_discarded_and_the_authentic_one_applied(
    world: World,
) -> None:
    """Graph batches notifications; one whose ``clientState`` matches no installation (another
    subscription on this URL, a guess) is discarded alone: the authentic one's transcript is still fetched
    (refusing the batch lost it, since Graph sends it again with the same foreign neighbour)."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Hello.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    other = TRANSCRIPT[::-1]
    notes = [FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE),
             FakeGraph.notification(MEETING, other, "guessed")]  # fmt: skip
    assert await world.notify(*notes) == 202
    assert [(p["participant_id"], p["text"]) for p in forwarded(world.live)] == [("p-ada", "Hello.")]
    assert len(world.graph.requests) == 1


async def test_redelivered_notifications_fetch_once(world: World) -> None:
    """Graph's redelivery of a notification does not feed the same transcript twice."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:0.0 --> 0:0:1.0\n<v Ada Lovelace>Hi.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    note = FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)
    assert await world.notify(note) == 202
    assert await world.notify(note) == 202
    assert len(world.graph.requests) == 1 and len(forwarded(world.live)) == 1


async def test_the_communications_form_of_the_resource_is_understood(world: World) -> None:
    """``communications/onlineMeetings('m')/transcripts('t')`` resources are fetched under that path."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = "WEBVTT\n"
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE, user=None)) == 202
    (request,) = world.graph.requests
    assert request.path.startswith("/v1.0/communications/onlineMeetings/")


async def test_shared_graph_examples(world: World) -> None:
    """Graph's own examples: the documented VTT (``0:0:0.0`` timestamps) is attributed to its one roster
    name; the documented notification (a message resource) is authenticated by its clientState and ignored."""
    vtt = require_shared("fixtures/platforms/msgraph/calltranscript-get.example2.content.text-vtt.vtt")
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = vtt.read_text(encoding="utf-8")
    await world.roster(("p-user", "User Name"), consenting=("p-user",))
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    (only,) = forwarded(world.live)
    assert (only["participant_id"], only["text"], only["start"], only["end"]) == (
        "p-user", "This is a transcript test.", 0.0, 5.32,
    )  # fmt: skip
    doc = json.loads(
        require_shared(
            "fixtures/platforms/msgraph/change-notifications-delivery-webhooks.notification.json"
        ).read_text()
    )
    assert await world.notify(*doc["value"]) == 401, "its clientState is not ours"
    doc["value"][0]["clientState"] = CLIENT_STATE
    assert await world.notify(*doc["value"]) == 202
    assert len(world.graph.requests) == 1, "a message resource is not a transcript"
    deleted = {**FakeGraph.notification(MEETING, "other", CLIENT_STATE), "changeType": "deleted"}
    assert await world.notify(deleted) == 202
    assert len(world.graph.requests) == 1, "only a created transcript is fetched"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{nope", 400, "body"),
        (b"{}", 400, "value"),
        (b'{"value": []}', 400, "value"),
        (b'{"value": [{"clientState": "x"}]}', 400, "value[0].resource"),
    ],
)
async def test_malformed_notifications_get_400_naming_the_field(
    world: World, body: bytes, status: int, detail: str
) -> None:
    """A request that is not a notification collection is refused with a problem naming the field."""
    async with world.live.http.post(world.url, data=body, headers={"Content-Type": "application/json"}) as r:
        doc = await r.json(content_type=None)
    assert r.status == status and doc["detail"].startswith(detail), doc
    assert world.graph.requests == []


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (f"users('u1')/onlineMeetings('{MEETING}')/transcripts('t1')", ("u1", MEETING, "t1")),
        (f"/users/u1/onlineMeetings/{MEETING}/transcripts/t1", ("u1", MEETING, "t1")),
        ("communications/onlineMeetings('m1')/transcripts('t1')", (None, "m1", "t1")),
        ("users('u1')/onlineMeetings('m1')/transcripts('../../me')", None),
        ("users('u1')/onlineMeetings('m1?x=1')/transcripts('t1')", None),
        ("users/u1/messages/m1", None),
    ],
)
def test_transcript_resources_are_recognised_and_nothing_else(
    resource: str, expected: tuple[str | None, str, str] | None
) -> None:
    """Only transcript resources with plain ids are fetched (no path or query smuggled into the URL)."""
    ref = teams.transcript_ref(resource)
    assert (None if ref is None else (ref.user_id, ref.meeting_id, ref.transcript_id)) == expected


def test_missing_secrets_name_their_variable() -> None:
    """An installation whose clientState or token variable is unset is a configuration error naming it."""
    install = TeamsInstall(id="c", client_state_env="TEAMS_STATE", token_env="TEAMS_TOKEN")
    with pytest.raises(PlatformsConfigError, match="TEAMS_TOKEN"):
        teams.Teams([install], {"TEAMS_STATE": "s"})


async def test_a_transcript_not_ready_or_graph_down_is_fetched_again(world: World) -> None:
    """Graph does not send a notification again once answered 202: a transcript not readable yet (404),
    throttled (429) or Graph down (503) is tried again, and its consented words arrive."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Hello again.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    world.graph.fail_next = [404, 429, 503]
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [p["text"] for p in forwarded(world.live)] == ["Hello again."]
    assert len(world.graph.requests) == 4


async def test_a_transcript_that_keeps_failing_is_given_up_and_may_come_again(world: World) -> None:
    """After the last retry the transcript is given up (logged), and a redelivered notification for it
    is fetched afresh."""
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>At last.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    world.graph.fail_next = [503] * 4
    with capture_logs() as logs:
        assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert "teams.transcript_given_up" in {entry["event"] for entry in logs}
    assert forwarded(world.live) == []
    assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [p["text"] for p in forwarded(world.live)] == ["At last."]


# --- OAuth client credentials ----------------------------------------------------------------------------


@pytest.fixture
async def oauth_world(tmp_path: Path) -> AsyncIterator[tuple[World, FakeOAuth]]:
    """Graph accepting only the live tokens a fake Microsoft identity platform issued to the installation."""
    async with FakeOAuth() as idp, FakeGraph(tokens=idp.valid) as graph:
        client = OAuthClient(
            token_url=idp.url,
            grant="client_credentials",
            client_id=idp.client_id,
            client_secret_env="SECRET",
            scope="https://graph.microsoft.com/.default",
        )
        install = TeamsInstall(id="contoso", client_state_env="STATE", oauth=client, graph_base=graph.base)
        environ = {"STATE": CLIENT_STATE, "SECRET": idp.client_secret}

        def setup(app: web.Application) -> None:
            teams.setup(app, [install], environ=environ)

        async with platform_gateway(tmp_path, setup) as live:
            live.app[teams.TEAMS].retry_delays = (0.01, 0.01, 0.01)
            yield World(live, graph), idp


async def test_a_token_revoked_mid_run_is_replaced_and_the_next_transcript_arrives(
    oauth_world: tuple[World, FakeOAuth],
) -> None:
    """The installation's client-credentials token stops working between two transcripts (expired,
    revoked): Graph's 401 invalidates it, a new one is fetched at once, and Ada's words still arrive."""
    world, idp = oauth_world
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    for n, transcript in enumerate(("first", "second")):
        world.graph.transcripts[(MEETING, transcript)] = (
            f"WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Part {n}.</v>\n"
        )
    assert await world.notify(FakeGraph.notification(MEETING, "first", CLIENT_STATE)) == 202
    revoked = idp.revoke()
    assert await world.notify(FakeGraph.notification(MEETING, "second", CLIENT_STATE)) == 202
    assert [p["text"] for p in forwarded(world.live)] == ["Part 0.", "Part 1."]
    assert [r.authorization for r in world.graph.requests] == [
        f"Bearer {revoked}", f"Bearer {revoked}", f"Bearer {idp.issued[-1]}",
    ]  # fmt: skip
    assert [(r.grant, r.scope, r.secret_ok) for r in idp.requests] == [
        ("client_credentials", "https://graph.microsoft.com/.default", True)
    ] * 2


async def test_a_token_endpoint_down_then_back_still_delivers_the_transcript(
    oauth_world: tuple[World, FakeOAuth],
) -> None:
    """The token endpoint answers 503 (then 429): the fetch is retried on the transcript schedule, and once
    a token is issued the transcript arrives."""
    world, idp = oauth_world
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = (
        "WEBVTT\n\n0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Still here.</v>\n"
    )
    await world.roster(("p-ada", "Ada Lovelace"), consenting=("p-ada",))
    idp.fail_next = [503, 429]
    with capture_logs() as logs:
        assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [p["text"] for p in forwarded(world.live)] == ["Still here."]
    retries = [e["reason"] for e in logs if e["event"] == "teams.transcript_retry"]
    assert retries == ["token: token endpoint status 503", "token: token endpoint status 429"]
    assert len(idp.requests) == 3 and len(world.graph.requests) == 1


async def test_a_fresh_token_refused_by_graph_is_final(oauth_world: tuple[World, FakeOAuth]) -> None:
    """A 401 to a token just fetched (the app lacks the permission) is not retried again: logged, skipped."""
    world, idp = oauth_world
    world.graph.tokens = set()
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = "WEBVTT\n"
    with capture_logs() as logs:
        assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [e.get("status") for e in logs if e["event"] == "teams.fetch_failed"] == [401]
    assert len(world.graph.requests) == 2 and len(idp.requests) == 2


async def test_a_static_token_refused_by_graph_is_not_retried(world: World) -> None:
    """With ``token_env`` nothing can give another token: Graph's 401 is final at once, as before."""
    world.graph.token = "rotated-by-someone-else"
    world.graph.transcripts[(MEETING, TRANSCRIPT)] = "WEBVTT\n"
    with capture_logs() as logs:
        assert await world.notify(FakeGraph.notification(MEETING, TRANSCRIPT, CLIENT_STATE)) == 202
    assert [e.get("status") for e in logs if e["event"] == "teams.fetch_failed"] == [401]
    assert len(world.graph.requests) == 1
