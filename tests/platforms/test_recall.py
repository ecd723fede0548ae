"""Recall.ai real-time events over the webhook and WebSocket endpoints, against a signing fake Recall."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from gateway import meeting
from gateway.app import create_app
from gateway.events import ParticipantJoined, ParticipantRenamed
from gateway.model import ConsentChoice
from gateway.notify import Notice
from gateway.platforms import meet, recall, teams
from gateway.platforms.config import PlatformsConfigError, RecallInstall, parse_platforms
from gateway.settings import Settings
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.recall import (
    BOT,
    RECORDING,
    RecallSender,
    bot_status,
    participant,
    participant_event,
    signed,
    transcript_data,
)
from tests.platforms.platform_gateway import consent, forwarded, platform_gateway
from tests.web.harness import Dest, LiveGateway, wait_for
from tests.web.harness import consent as api_consent

SECRET = "whsec_" + base64.b64encode(b"recall workspace secret, 32 byte").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"recall previous secret, 32 bytes").decode()
ENV = {"RECALL_SECRET": SECRET, "RECALL_OLD_SECRET": OLD_SECRET}
INSTALL = RecallInstall(id="main", webhook_secret_envs=("RECALL_SECRET", "RECALL_OLD_SECRET"))
DATA = Path(__file__).resolve().parents[1] / "data" / "recall"
ADA, BEA = participant(100, "Ada Lovelace"), participant(200, "Bea Okafor")
KEY_ADA, KEY_BEA, KEY_CAROL = f"{RECORDING}:100", f"{RECORDING}:200", f"{RECORDING}:300"


def _setup(app: web.Application) -> None:
    recall.setup(app, [INSTALL], environ=ENV)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with platform_gateway(tmp_path, _setup) as gateway:
        yield gateway


@pytest.fixture
def sender(live: LiveGateway) -> RecallSender:
    return RecallSender(live.url, SECRET, live.http)


async def _meeting_with_consent(live: LiveGateway, sender: RecallSender) -> None:
    for who in (ADA, BEA):
        assert (await sender.post(participant_event("join", who))).status == 200
    await consent(live, recall.PLATFORM, BOT, KEY_ADA)
    await consent(live, recall.PLATFORM, BOT, KEY_BEA, ConsentChoice.REFUSED)


async def test_transcript_data_of_a_consenting_participant_is_forwarded(
    live: LiveGateway, sender: RecallSender
) -> None:
    """``transcript.data`` words become one utterance keyed by recording and participant id; only the
    consenting speaker's reaches the destination, and unattributed words never do."""
    await _meeting_with_consent(live, sender)
    for doc in (
        transcript_data(ADA, ["Shall", "we", "start?"], start=1.0),
        transcript_data(BEA, ["Not", "recorded", "please."], start=3.0),
        transcript_data(None, ["Who", "said", "this?"], start=5.0),
    ):
        reply = await sender.post(doc)
        assert reply.status == 200 and reply.doc["results"][0]["status"] == "accepted"
    await live.settle()
    (only,) = forwarded(live)
    assert only["participant_id"] == KEY_ADA and only["meeting_id"] == BOT
    assert only["text"] == "Shall we start?" and (only["start"], only["end"]) == (1.0, 1.9)


async def test_consent_through_the_api_names_the_recall_platform(
    live: LiveGateway, sender: RecallSender
) -> None:
    """An integration records Ada's consent through ``POST /v1/events`` with ``platform: recall``: it is
    keyed like the adapter's events (bot id, participant key), so her words flow. Without it the consent
    is the ``generic`` meeting's, and nothing of hers flows."""
    assert (await sender.post(participant_event("join", ADA))).status == 200
    reply = await live.post({**api_consent(KEY_ADA, "given", meeting=BOT), "platform": "recall"})
    assert reply.status == 200
    assert (await sender.post(transcript_data(ADA, ["Shall", "we", "start?"], start=1.0))).status == 200
    await live.settle()
    assert [p["text"] for p in forwarded(live)] == ["Shall we start?"]
    assert {(e.record.platform, e.record.meeting_id) for e in await live.ledger()} == {("recall", BOT)}


async def test_update_brings_the_email_and_chat_is_a_chat_segment(
    live: LiveGateway, sender: RecallSender
) -> None:
    """The e-mail that arrives on ``participant_events.update`` lands on the roster; a chat message of a
    consenting participant is forwarded as a chat segment."""
    await _meeting_with_consent(live, sender)
    with_email = participant(100, "Ada Lovelace", "ada@example.org")
    assert (await sender.post(participant_event("update", with_email))).status == 200
    state = live.app[GATEWAY].meeting(recall.PLATFORM, BOT)
    assert state is not None and state.participants[KEY_ADA].email == "ada@example.org"
    assert (
        await sender.post(participant_event("chat_message", ADA, chat="Agenda is in the doc."))
    ).status == 200
    await live.settle()
    (only,) = forwarded(live)
    assert (only["kind"], only["text"], only["participant_id"]) == ("chat", "Agenda is in the doc.", KEY_ADA)


async def test_a_speaker_known_only_from_their_words_joins_and_is_asked_once(
    live: LiveGateway, sender: RecallSender
) -> None:
    """Carol, whose join never arrived, is put on the roster by her ``transcript.data`` and asked for consent
    once; her name is scrubbed from Ada's words. Naming Ada again (update, utterance) asks nobody again and
    leaves her consent as it was."""
    asked = _consent_requests(live)
    await _meeting_with_consent(live, sender)
    carol = participant(300, "Carol Danvers")
    for doc in (
        transcript_data(carol, ["Please", "do", "not", "record", "me."], start=1.0),
        participant_event("chat_message", carol, chat="Still me.", relative=2.0),
        transcript_data(carol, ["Really."], start=3.0),
        participant_event("update", ADA, relative=4.0),
        transcript_data(ADA, ["Thanks,", "Carol", "Danvers."], start=5.0),
    ):
        assert (await sender.post(doc)).status == 200
    await live.settle()
    assert asked == [KEY_ADA, KEY_BEA, KEY_CAROL]
    state = live.app[GATEWAY].meeting(recall.PLATFORM, BOT)
    assert state is not None and state.participants[KEY_CAROL].name == "Carol Danvers"
    assert [(p["participant_id"], p["text"]) for p in forwarded(live)] == [
        (KEY_ADA, "Thanks, [participant 3].")
    ]


async def test_an_update_without_a_name_brings_the_email_and_keeps_the_name(
    live: LiveGateway, sender: RecallSender
) -> None:
    """An ``update`` whose name is null still brings Bea's e-mail, without wiping her name: both are scrubbed
    from Ada's words, as Bea refused. The update asks nobody again."""
    asked = _consent_requests(live)
    await _meeting_with_consent(live, sender)
    bea_mail = participant(200, None, "bea@example.org")
    assert (await sender.post(participant_event("update", bea_mail))).status == 200
    state = live.app[GATEWAY].meeting(recall.PLATFORM, BOT)
    assert state is not None
    assert (state.participants[KEY_BEA].name, state.participants[KEY_BEA].email) == (
        "Bea Okafor", "bea@example.org",
    )  # fmt: skip
    words = ["Bea", "Okafor", "will", "read", "bea@example.org", "later."]
    assert (await sender.post(transcript_data(ADA, words))).status == 200
    await live.settle()
    assert [p["text"] for p in forwarded(live)] == ["[participant 2] will read [participant 2] later."]
    assert asked == [KEY_ADA, KEY_BEA]


@pytest.mark.parametrize("kind", ["leave", "speech_on", "speech_off"])
async def test_a_participant_named_only_by_a_leave_or_speech_event_is_scrubbed(
    live: LiveGateway, sender: RecallSender, kind: str
) -> None:
    """Dora's join never arrived; Recall names her (name and e-mail) only in a ``leave``, ``speech_on`` or
    ``speech_off``. She joins the roster from it, so her name and address are scrubbed from Ada's words.
    Speaking, she is asked for consent like any joiner; leaving, she is asked nothing and is not present."""
    asked = _consent_requests(live)
    await _meeting_with_consent(live, sender)
    dora, key = participant(400, "Dorothea Quist", "dorothea@example.org"), f"{RECORDING}:400"
    assert (await sender.post(participant_event(kind, dora, relative=2.0))).status == 200
    words = ["Dorothea", "Quist", "has", "the", "numbers,", "mail", "dorothea@example.org", "today."]
    assert (await sender.post(transcript_data(ADA, words, start=5.0))).status == 200
    await live.settle()
    assert [p["text"] for p in forwarded(live)] == [
        "[participant 3] has the numbers, mail [participant 3] today."
    ]
    state = live.app[GATEWAY].meeting(recall.PLATFORM, BOT)
    assert state is not None
    dora_now = state.participants[key]
    assert (dora_now.name, dora_now.email, dora_now.present) == (
        "Dorothea Quist", "dorothea@example.org", kind != "leave",
    )  # fmt: skip
    assert asked == [KEY_ADA, KEY_BEA] + ([] if kind == "leave" else [key])


def test_announce_tells_only_what_the_roster_lacks() -> None:
    """Someone new joins and is asked; for someone known only a new e-mail (a join without the name) or a new
    name (a rename) is told, never an old name, and nobody is asked again."""
    at = datetime.now(UTC)
    state = meeting.joined(meeting.MeetingState(recall.PLATFORM, BOT), KEY_ADA, "Ada", None)
    state = meeting.left(meeting.renamed(state, KEY_ADA, "Ada L."), KEY_ADA)

    def named(pid: str, name: str, email: str | None = None) -> ParticipantJoined:
        return ParticipantJoined(recall.PLATFORM, BOT, pid, name, at, email)

    assert recall.announce(None, named(KEY_BEA, "Bea")) == (named(KEY_BEA, "Bea"), True)
    assert recall.announce(state, named(KEY_BEA, "Bea")) == (named(KEY_BEA, "Bea"), True)
    for same in ("Ada L.", "Ada", ""):  # a late utterance must not bring back a participant who left
        assert recall.announce(state, named(KEY_ADA, same)) == (None, False)
    assert recall.announce(state, named(KEY_ADA, "Ada", "a@example.org")) == (
        named(KEY_ADA, "", "a@example.org"), False,
    )  # fmt: skip
    renamed = ParticipantRenamed(recall.PLATFORM, BOT, KEY_ADA, "Ada K.", at)
    assert recall.announce(state, named(KEY_ADA, "Ada K.")) == (renamed, False)


async def test_a_direct_message_to_the_bot_is_never_forwarded_but_its_command_counts(
    live: LiveGateway, sender: RecallSender
) -> None:
    """A chat message ``to: only_bot`` is not meeting content: a consenting sender's is dropped as
    ``private_message`` (recorded, without its text); a consent command in one is the sender's own and
    counts, so Bea's ``/consent summary`` sent only to the bot lets her public chat through."""
    await _meeting_with_consent(live, sender)
    for doc in (
        participant_event("chat_message", ADA, chat="Between us and the bot.", to="only_bot", relative=1.0),
        participant_event("chat_message", BEA, chat="/consent summary", to="only_bot", relative=2.0),
        participant_event("chat_message", BEA, chat="Now for everyone.", relative=3.0),
    ):
        assert (await sender.post(doc)).status == 200
    await live.settle()
    assert [(p["participant_id"], p["text"]) for p in forwarded(live)] == [(KEY_BEA, "Now for everyone.")]
    ledger = [(e.record.subject, e.record.choice, e.record.channel) for e in await live.ledger()]
    assert ledger[-1] == (KEY_BEA, ConsentChoice.GIVEN, "chat")
    private = [d.participant_id for d in await live.decisions() if d.reasons == ("private_message",)]
    assert private == [KEY_ADA]


async def test_meeting_id_is_the_recording_without_a_bot(live: LiveGateway, sender: RecallSender) -> None:
    """A recording made without a bot is its own meeting."""
    reply = await sender.post(participant_event("join", ADA, bot=None))
    assert reply.status == 200
    assert live.app[GATEWAY].meeting(recall.PLATFORM, RECORDING) is not None
    assert live.app[GATEWAY].meeting(recall.PLATFORM, BOT) is None


async def test_partial_data_and_unknown_events_are_acknowledged_and_ignored(
    live: LiveGateway, sender: RecallSender
) -> None:
    """``transcript.partial_data``, a known participant's ``speech_on`` / ``speech_off`` and unknown events
    answer 200 and change nothing."""
    await _meeting_with_consent(live, sender)
    partial = transcript_data(ADA, ["Shall", "we"], event="transcript.partial_data")
    speech = [participant_event(kind, ADA) for kind in ("speech_on", "speech_off")]
    for doc in (partial, *speech, {"event": "bot.whatever", "data": {}}):
        reply = await sender.post(doc)
        assert (reply.status, reply.doc) == (200, {"results": []})
    await live.settle()
    assert forwarded(live) == [] and await live.decisions() == []


async def test_legacy_svix_headers_and_a_previous_secret_verify(
    live: LiveGateway, sender: RecallSender
) -> None:
    """Older accounts' ``svix-*`` headers are accepted, and so is a second configured (rotated) secret."""
    assert (await sender.post(participant_event("join", ADA), legacy=True)).status == 200
    old = RecallSender(live.url, OLD_SECRET, live.http)
    assert (await old.post(participant_event("join", BEA))).status == 200


async def test_a_replayed_delivery_is_refused_but_a_refused_one_may_be_retried(
    live: LiveGateway, sender: RecallSender
) -> None:
    """The same ``webhook-id`` twice is a replay (409); an id whose delivery was refused as invalid is not."""
    reply = await sender.post(participant_event("join", ADA), msg_id="msg_once")
    assert reply.status == 200
    again = await sender.post(participant_event("join", ADA), msg_id="msg_once")
    assert again.status == 409 and again.doc["type"].endswith("/replayed")
    bad = await sender.post({"event": "transcript.data", "data": {}}, msg_id="msg_retry")
    assert bad.status == 400
    assert (await sender.post(participant_event("join", BEA), msg_id="msg_retry")).status == 200


@pytest.mark.parametrize(
    "case",
    [
        "no headers",
        "wrong secret",
        "stale timestamp",
        "future timestamp",
        "body changed",
        "bearer token only",
    ],
)
async def test_unauthenticated_deliveries_are_refused_and_change_nothing(
    live: LiveGateway, sender: RecallSender, case: str
) -> None:
    """Every way of failing Standard Webhooks verification answers 401 problem+json and stores nothing."""
    body = json.dumps(participant_event("join", ADA)).encode()
    now = int(time.time())
    headers = {
        "no headers": {},
        "wrong secret": signed("whsec_" + base64.b64encode(b"x" * 32).decode(), body),
        "stale timestamp": signed(SECRET, body, timestamp=now - 301),
        "future timestamp": signed(SECRET, body, timestamp=now + 301),
        "body changed": signed(SECRET, body + b" "),
        "bearer token only": {"Authorization": "Bearer test-ingest-token"},
    }[case]
    reply = await sender.post_raw(body, headers)
    assert reply.status == 401 and reply.doc["type"].endswith("/unauthenticated")
    assert live.app[GATEWAY].meeting(recall.PLATFORM, BOT) is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"data": {}}, "event"),
        ({"event": "transcript.data", "data": {"data": {"words": []}, "bot": {"id": BOT}}}, "data.recording"),
        (
            {
                **transcript_data(ADA, ["a"]),
                "data": {**transcript_data(ADA, ["a"])["data"], "recording": {"id": ""}},
            },
            "data.recording.id",
        ),
        ({**participant_event("join", {**ADA, "id": True})}, "data.data.participant.id"),
    ],
)
async def test_invalid_payloads_get_400_naming_the_field(
    live: LiveGateway, sender: RecallSender, doc: dict[str, Any], field: str
) -> None:
    """A signed delivery that is not a valid Recall event is refused with 400 naming the field."""
    reply = await sender.post(doc)
    assert reply.status == 400 and reply.doc["detail"].startswith(field), reply.doc
    malformed = await sender.post(None, body=b"{not json")
    assert malformed.status == 400 and malformed.doc["type"].endswith("/malformed-json")


async def test_websocket_with_a_signed_upgrade_feeds_events(live: LiveGateway, sender: RecallSender) -> None:
    """Recall's WebSocket, signed over an empty body at the upgrade, delivers events like the webhook."""
    ws = await sender.connect()
    await ws.send_str(json.dumps(participant_event("join", ADA)))
    await ws.send_str("{not json")  # logged and skipped; the socket stays open
    await wait_for(_roster_has(live, KEY_ADA), "the join over the socket")
    await consent(live, recall.PLATFORM, BOT, KEY_ADA)
    await ws.send_str(json.dumps(transcript_data(ADA, ["Over", "the", "socket."])))
    await wait_for(_forwarded_count(live, 1), "the utterance over the socket")
    await ws.close()
    assert forwarded(live)[0]["text"] == "Over the socket."


async def test_a_withdrawal_on_the_socket_while_storage_is_down_is_applied_before_what_follows(
    live: LiveGateway, sender: RecallSender
) -> None:
    """Recall never sends a socket message again. A "/optout" typed while storage is down waits, with
    everything after it, and is applied first once storage is back: Bea's words after it are never
    forwarded, and Ada's words sent during the outage are not lost."""
    for who in (ADA, BEA):
        assert (await sender.post(participant_event("join", who))).status == 200
    await consent(live, recall.PLATFORM, BOT, KEY_ADA)
    await consent(live, recall.PLATFORM, BOT, KEY_BEA)
    ws = await sender.connect()
    with capture_logs() as logs:
        await live.store.close()
        await ws.send_str(json.dumps(participant_event("chat_message", BEA, chat="/optout", relative=1.0)))
        await ws.send_str(json.dumps(transcript_data(ADA, ["Said", "in", "the", "outage."], start=2.0)))
        await ws.send_str(json.dumps(transcript_data(BEA, ["After", "my", "optout."], start=3.0)))
        await wait_for(_storage_refused(logs), "the outage met on the socket")
        await live.store.open()
        await wait_for(_forwarded_count(live, 1), "Ada's words once storage is back")
        await ws.send_str(json.dumps(transcript_data(ADA, ["After", "the", "outage."], start=4.0)))
        await wait_for(_forwarded_count(live, 2), "Ada's words after the outage")
    await ws.close()
    await live.settle()
    assert [(p["participant_id"], p["text"]) for p in forwarded(live)] == [
        (KEY_ADA, "Said in the outage."),
        (KEY_ADA, "After the outage."),
    ]
    ledger = [(e.record.subject, e.record.choice) for e in await live.ledger()]
    assert ledger[-1] == (KEY_BEA, ConsentChoice.REFUSED)  # "/optout": a no to every purpose


def _storage_refused(logs: list[dict[str, Any]]) -> Any:
    async def check() -> bool:
        return any(entry["log_level"] == "error" and "unavailable" in entry["event"] for entry in logs)

    return check


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "signed body not empty"])
async def test_websocket_upgrade_must_be_signed(live: LiveGateway, case: str) -> None:
    """An upgrade request that does not verify over an empty body is refused with 401 before upgrading."""
    headers = {
        "unsigned": {},
        "wrong secret": signed("whsec_" + base64.b64encode(b"y" * 32).decode(), b""),
        "signed body not empty": signed(SECRET, b"{}"),
    }[case]
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await live.http.ws_connect(f"{live.url}{recall.WS_PATH}", headers=headers)
    assert err.value.status == 401


async def test_a_replayed_websocket_upgrade_is_refused(live: LiveGateway) -> None:
    """Re-using a signed upgrade request's id is a replay: 409."""
    headers = signed(SECRET, b"", msg_id="msg_ws")
    ws = await live.http.ws_connect(f"{live.url}{recall.WS_PATH}", headers=headers)
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await live.http.ws_connect(f"{live.url}{recall.WS_PATH}", headers=headers)
    assert err.value.status == 409


async def test_documented_payload_fixtures_parse(live: LiveGateway, sender: RecallSender) -> None:
    """The self-written fixtures in Recall's documented shapes (tests/data/recall) are accepted as events."""
    files = sorted(DATA.glob("*.json"))
    assert len(files) >= 3
    for path in files:
        reply = await sender.post(None, body=path.read_bytes())
        assert reply.status == 200, (path.name, reply.doc)
    state = live.app[GATEWAY].meeting(recall.PLATFORM, "8bd5c6e4-7a6b-4f0a-9e4b-3d1f7a0c2b11")
    assert state is not None and len(state.participants) == 1


# --- known answers and configuration --------------------------------------------------------------------


def _vector() -> dict[str, str]:
    text = require_shared("fixtures/platforms/standard_webhooks/test-vector.txt").read_text(encoding="utf-8")
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("tampered", [False, True])
async def test_the_standard_webhooks_vector_authenticates_at_the_endpoint(
    tmp_path: Path, tampered: bool
) -> None:
    """The specification's known-answer request passes the endpoint's verification (its body is no Recall
    event, so 400 naming ``event``); the same request with one signature byte changed is 401."""
    v = _vector()
    ts = int(v["timestamp"])

    def setup(app: web.Application) -> None:
        recall.setup(app, [RecallInstall(id="kat", webhook_secret_envs=("K",))], environ={"K": v["secret"]},
                     clock=lambda: float(ts))  # fmt: skip

    signature = v["signature"]
    if tampered:
        signature = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    headers = {"webhook-id": v["msg_id"], "webhook-timestamp": v["timestamp"], "webhook-signature": signature}
    async with (
        platform_gateway(tmp_path, setup) as live,
        live.http.post(f"{live.url}{recall.WEBHOOK_PATH}", data=v["payload"].encode(), headers=headers) as r,
    ):
        doc = await r.json(content_type=None)
    assert (r.status, doc["detail"]) == (
        (401, "bad_signature") if tampered else (400, "event: required string")
    )


def test_secrets_come_from_the_named_variables() -> None:
    """A missing variable or a value that is not a ``whsec_`` key is a configuration error naming it."""
    with pytest.raises(PlatformsConfigError, match="RECALL_SECRET"):
        recall.secrets_of([INSTALL], {"RECALL_OLD_SECRET": OLD_SECRET})
    with pytest.raises(PlatformsConfigError, match="RECALL_OLD_SECRET"):
        recall.secrets_of([INSTALL], {**ENV, "RECALL_OLD_SECRET": "whsec_%%%"})
    assert recall.secrets_of([INSTALL], ENV) == [SECRET, OLD_SECRET]


def test_platforms_file_sections_validate_strictly() -> None:
    """The ``recall``, ``teams`` and ``meet`` sections parse, and an unknown key is an error naming it."""
    config = parse_platforms(
        {
            "recall": [{"id": "main", "webhook_secret_envs": ["RECALL_SECRET"]}],
            "teams": [{"id": "contoso", "client_state_env": "TEAMS_STATE", "token_env": "TEAMS_TOKEN"}],
            "meet": [{"id": "ws", "push_token_env": "MEET_PUSH", "token_env": "MEET_TOKEN"}],
        }
    )
    assert (config.recall[0].id, config.teams[0].graph_base, config.meet[0].api_base) == (
        "main", "https://graph.microsoft.com/v1.0", "https://meet.googleapis.com/v2",
    )  # fmt: skip
    with pytest.raises(PlatformsConfigError, match=r"recall\.0\.secret"):
        parse_platforms({"recall": [{"id": "main", "webhook_secret_envs": ["A"], "secret": "x"}]})


def _consent_requests(live: LiveGateway) -> list[str]:
    """Whom the gateway sends a consent request from now on, in order (the notices still go out)."""
    gateway, asked = live.app[GATEWAY], list[str]()
    forward = gateway.notify

    def notify(notice: Notice) -> None:
        if notice.kind == "consent_request":
            asked.append(notice.participant_id)
        forward(notice)

    gateway.notify = notify
    return asked


def _roster_has(live: LiveGateway, key: str) -> Any:
    async def check() -> bool:
        state = live.app[GATEWAY].meeting(recall.PLATFORM, BOT)
        return state is not None and key in state.participants

    return check


def _forwarded_count(live: LiveGateway, n: int) -> Any:
    async def check() -> bool:
        return len(forwarded(live)) >= n

    return check


def test_the_platforms_file_mounts_recall_teams_and_meet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_app`` with a platforms file naming all three platforms mounts their routes, reading the
    secrets from the variables it names."""
    env = {
        "CG_RECALL": SECRET,
        "CG_TEAMS_STATE": "s",
        "CG_TEAMS_TOKEN": "t",
        "CG_MEET_PUSH": "p",
        "CG_MEET_TOKEN": "m",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    platforms = tmp_path / "platforms.yaml"
    platforms.write_text(
        "recall:\n  - {id: main, webhook_secret_envs: [CG_RECALL]}\n"
        "teams:\n  - {id: contoso, client_state_env: CG_TEAMS_STATE, token_env: CG_TEAMS_TOKEN}\n"
        "meet:\n  - {id: ws, push_token_env: CG_MEET_PUSH, token_env: CG_MEET_TOKEN}\n"
    )
    settings = Settings(database=f"sqlite:///{tmp_path / 'g.db'}", policies=(Path("policies/default.yaml"),),
                        signing_secret=SecretStr(SECRET), platforms_file=platforms)  # fmt: skip
    routes = {r.resource.canonical for r in create_app(settings).router.routes() if r.resource is not None}
    assert {recall.WEBHOOK_PATH, recall.WS_PATH, teams.PATH, meet.PATH} <= routes


async def test_a_nameless_participant_scrubs_nothing(live: LiveGateway, sender: RecallSender) -> None:
    """A participant whose name Recall does not know (null) joins with an empty name, which matches nothing
    in others' words."""
    nameless = participant(300, None)
    for who in (ADA, nameless):
        assert (await sender.post(participant_event("join", who))).status == 200
    await consent(live, recall.PLATFORM, BOT, KEY_ADA)
    assert (await sender.post(transcript_data(ADA, ["Nothing", "to", "scrub", "here."]))).status == 200
    await live.settle()
    assert [p["text"] for p in forwarded(live)] == ["Nothing to scrub here."]


async def test_bot_status_webhooks_start_and_end_the_meeting(tmp_path: Path) -> None:
    """``bot.in_call_recording`` starts the meeting and ``bot.done`` ends it, which delivers the batch of a
    ``meeting_end`` destination; ``bot.call_ended`` (transcripts may still follow) changes nothing."""
    async with platform_gateway(tmp_path, _setup, (Dest("archive", delivery="meeting_end"),)) as live:
        sender = RecallSender(live.url, SECRET, live.http)
        assert (await sender.post(bot_status("in_call_recording"))).doc["results"] == [{"status": "accepted"}]
        assert (await sender.post(participant_event("join", ADA))).status == 200
        await consent(live, recall.PLATFORM, BOT, KEY_ADA)
        assert (await sender.post(transcript_data(ADA, ["Kept", "for", "the", "end."]))).status == 200
        assert (await sender.post(bot_status("call_ended"))).doc["results"] == []
        await live.settle()
        assert forwarded(live) == []
        assert (await sender.post(bot_status("done"))).doc["results"] == [{"status": "accepted"}]
        await live.settle()
        assert [p["text"] for p in forwarded(live)] == ["Kept for the end."]
