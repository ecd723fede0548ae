"""Zoom webhooks through the live gateway: verification, URL validation, events, chat, dedup, errors."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway import meeting
from gateway.events import ParticipantJoined, ParticipantRenamed
from gateway.notify import Notice
from gateway.platforms.naming import announce
from gateway.platforms.zoom_wire import Apply, Deliveries, Envelope, parse
from gateway.sealing import new_key_spec
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.zoom import chat_event, meeting_event, participant_event, signed, zoom_signature
from tests.platforms.zoom_support import (
    OTHER_SECRET,
    SECRET,
    UUID,
    ZoomRig,
    fixture,
    texts,
    zoom_gateway,
)
from tests.web.harness import PROBLEM_JSON, wait_for

SHARED_ZOOM = "fixtures/platforms/zoom"


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ZoomRig]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig:
        yield rig


async def _nothing_stored(rig: ZoomRig) -> None:
    assert await rig.gw.ledger() == []
    assert await rig.gw.decisions() == []
    assert rig.gw.app[GATEWAY].meeting("zoom", UUID) is None


async def _start_with(rig: ZoomRig, *people: tuple[str, str]) -> None:
    await rig.accept(fixture("meeting.started.json"))
    for user_id, name in people:
        await rig.accept(participant_event("meeting.participant_joined", UUID, user_id, name))


async def test_url_validation_is_answered_with_the_app_secret(rig: ZoomRig) -> None:
    """``endpoint.url_validation`` gets plainToken and hex HMAC-SHA256(secret, plainToken), per app."""
    doc = {"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680,
           "event": "endpoint.url_validation"}  # fmt: skip
    for secret in (SECRET, OTHER_SECRET):
        reply = await rig.send(doc, secret)
        expected = hmac.new(secret.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
        assert reply.status == 200
        assert reply.doc == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}


async def test_shared_url_validation_fixture_is_answered(rig: ZoomRig) -> None:
    """Zoom's documented url_validation request is answered with the token it carries."""
    doc = fixture("endpoint.url_validation.request.json", require_shared(SHARED_ZOOM))
    reply = await rig.send(doc)
    assert reply.status == 200 and reply.doc["plainToken"] == doc["payload"]["plainToken"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x-zm-signature": "v0=" + "0" * 64}, "bad_signature"),
        ({"x-zm-signature": ""}, "missing_signature"),
        ({"x-zm-request-timestamp": str(int(time.time()) - 7)}, "bad_signature"),
        ({"x-zm-request-timestamp": "soon"}, "bad_timestamp"),
    ],
)
async def test_bad_signatures_are_refused_and_change_nothing(
    rig: ZoomRig, headers: dict[str, str], reason: str
) -> None:
    """A wrong, missing or re-stamped signature is refused 401 problem+json and nothing is stored."""
    body, sent = signed(fixture("meeting.started.json"), SECRET)
    reply = await rig.zoom.post_raw(rig.gw.url, body, {**sent, **headers})
    assert reply.status == 401 and reply.content_type == PROBLEM_JSON
    assert reply.doc["detail"] == reason
    await _nothing_stored(rig)


async def test_stale_timestamp_is_refused_even_when_signed(rig: ZoomRig) -> None:
    """A delivery signed over a timestamp more than 300 s old (or ahead) is refused."""
    for offset in (-301, 301):
        reply = await rig.send(fixture("meeting.started.json"), timestamp=int(time.time()) + offset)
        assert reply.status == 401 and reply.doc["detail"] == "stale_timestamp"
    await _nothing_stored(rig)


async def test_signature_over_reserialised_json_is_refused(rig: ZoomRig) -> None:
    """The signature covers the raw bytes: the same JSON with other whitespace does not verify."""
    body, sent = signed(fixture("meeting.started.json"), SECRET)
    reply = await rig.zoom.post_raw(rig.gw.url, body.replace(b'", "', b'","'), sent)
    assert reply.status == 401


async def test_malformed_json_and_schema_violations_are_400_naming_the_field(rig: ZoomRig) -> None:
    """Signed but invalid: 400 problem+json naming the field, and nothing is stored."""
    _, sent = signed("ignored", SECRET)
    broken = b"{not json"
    stamp = sent["x-zm-request-timestamp"]
    reply = await rig.zoom.post_raw(
        rig.gw.url, broken, {**sent, "x-zm-signature": zoom_signature(SECRET, stamp, broken)}
    )
    assert reply.status == 400 and reply.content_type == PROBLEM_JSON and reply.doc["detail"] == "body"
    doc = participant_event("meeting.participant_joined", UUID, "16778240", "Ana")
    del doc["payload"]["object"]["participant"]["user_name"]
    reply = await rig.send(doc)
    assert reply.status == 400
    assert reply.doc["detail"].startswith("payload.object.participant.user_name")
    reply = await rig.send({"event": "meeting.started", "payload": {"object": {"uuid": ""}}})
    assert reply.status == 400 and reply.doc["detail"].startswith("payload.object.uuid")
    reply = await rig.send({"event": 5, "payload": {}})
    assert reply.status == 400 and reply.doc["detail"].startswith("event")
    doc = participant_event("meeting.participant_joined", UUID, "16778240", "Ana")
    doc["payload"]["object"]["participant"]["join_time"] = "9999-12-31T23:59:59Z"  # would overflow later
    reply = await rig.send(doc)
    assert reply.status == 400 and reply.doc["detail"].startswith("payload.object.participant.join_time")
    await _nothing_stored(rig)


async def test_unknown_events_are_acknowledged_and_ignored(rig: ZoomRig) -> None:
    """An event type the adapter does not handle gets 200 and changes nothing."""
    reply = await rig.send(meeting_event("meeting.sharing_started", UUID))
    assert reply.status == 200 and reply.doc == {"status": "ignored"}
    await _nothing_stored(rig)


async def test_shared_real_deliveries_build_the_roster(rig: ZoomRig) -> None:
    """Zoom's real started/joined/left/ended deliveries are accepted; the participant key is user_id."""
    directory = require_shared(SHARED_ZOOM)
    names = ["meeting.started.json", "meeting.participant_joined.json"]
    for name in names:
        await rig.accept(fixture(name, directory))
    state = rig.gw.app[GATEWAY].meeting("zoom", "hwkAADUySwyG3GyUkqc0vA==")
    assert state is not None and set(state.participants) == {"16778240"}
    assert state.participants["16778240"].name == "Jana Dvořáková"
    for name in ("meeting.participant_left.json", "meeting.ended.json"):
        await rig.accept(fixture(name, directory))
    state = rig.gw.app[GATEWAY].meeting("zoom", "hwkAADUySwyG3GyUkqc0vA==")
    assert state is not None and not state.participants["16778240"].present


async def test_own_fixtures_accept_numeric_and_string_ids(rig: ZoomRig) -> None:
    """object.id and participant.user_id arrive as numbers or strings; both give the same participant key."""
    for name in ("meeting.started.json", "meeting.participant_joined.json", "meeting.participant_left.json",
                 "meeting.ended.json"):  # fmt: skip
        await rig.accept(fixture(name))
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    assert state is not None and set(state.participants) == {"16778241"}
    assert not state.participants["16778241"].present


def test_email_is_verified_only_for_signed_in_users() -> None:
    """A signed-in user's e-mail is passed as verified; a guest's (empty ``id``) as unverified."""
    signed_in = participant_event(
        "meeting.participant_joined", UUID, "1", "A", email="a@x.org", account_id="u1"
    )
    guest = participant_event("meeting.participant_joined", UUID, "2", "B", email="b@x.org")
    events = [parse(Envelope.model_validate(doc)) for doc in (signed_in, guest)]
    joins = [e.events[0] for e in events if e is not None and hasattr(e, "events")]
    assert [(j.email, j.email_verified) for j in joins if isinstance(j, ParticipantJoined)] == [
        ("a@x.org", True), ("b@x.org", False)]  # fmt: skip


async def test_chat_consent_command_and_chat_content(rig: ZoomRig) -> None:
    """A Zoom chat ``/consent summary`` records the sender's consent; their next chat is forwarded as chat."""
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"), ("16778242", "Tomás Ó Briain"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary"))
    entries = await rig.gw.ledger()
    assert [(e.record.subject, e.record.channel) for e in entries] == [("16778241", "chat")]
    await rig.accept(fixture("meeting.chat_message_sent.json"))
    await rig.accept(chat_event(UUID, "16778242", "m-2", "Not consented yet."))
    await rig.gw.settle()
    await wait_for(_has(rig, 1), "the chat message to arrive")
    assert texts(rig.gw) == [("16778241", "chat", "Agenda is in the doc.")]


async def test_flat_chat_shape_and_numeric_sender_are_accepted(rig: ZoomRig) -> None:
    """*Unconfirmed shape*: chat fields flat under payload.object, sender a number: still the participant."""
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, 16778241, "m-1", "/consent summary", flat=True))
    await rig.accept(fixture("meeting.chat_message_sent.flat.json"))
    await wait_for(_has(rig, 1), "the chat message to arrive")
    assert texts(rig.gw) == [("16778241", "chat", "Second item: hiring.")]


async def test_private_and_unknown_sender_chat_is_never_forwarded(rig: ZoomRig) -> None:
    """A direct message, or a sender the roster does not know, forwards nothing."""
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary"))
    await rig.accept(chat_event(UUID, "16778241", "m-2", "Just to you.", recipient_type="user"))
    await rig.accept(chat_event(UUID, "999", "m-3", "Who am I?"))
    await rig.accept(chat_event(UUID, "16778241", "m-4", "For everyone."))
    await wait_for(_has(rig, 1), "the public chat message to arrive")
    await rig.gw.settle()
    assert texts(rig.gw) == [("16778241", "chat", "For everyone.")]
    private = [d for d in await rig.gw.decisions() if d.segment_id.endswith("/chat/m-2")]
    assert [d.reasons for d in private] == [("private_message",)]


async def test_a_chat_sender_the_roster_lacks_joins_is_asked_and_is_scrubbed(rig: ZoomRig) -> None:
    """Dana's join never arrived; her chat names her (``sender_name``, ``sender_email``): she joins the
    roster and is asked for consent once, her message is not forwarded, and her name and address are
    scrubbed from Gwen's words."""
    asked = consent_requests(rig)
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary"))
    dana = {"name": "Dana Whitfield", "email": "dwhitfield@corp.example"}
    await rig.accept(chat_event(UUID, "16778299", "m-2", "Please leave me out.", **dana))
    await rig.accept(chat_event(UUID, "16778299", "m-3", "Still me.", **dana))
    await rig.accept(
        chat_event(UUID, "16778241", "m-4", "Sure Dana Whitfield, I'll cc dwhitfield@corp.example")
    )
    await wait_for(_has(rig, 1), "Gwen's chat message")
    await rig.gw.settle()
    assert texts(rig.gw) == [("16778241", "chat", "Sure [participant 2], I'll cc [participant 2]")]
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    assert state is not None
    dana_now = state.participants["16778299"]
    assert (dana_now.name, dana_now.email, dana_now.present) == (*dana.values(), True)
    assert asked == ["16778241", "16778299"]


async def test_a_new_name_or_address_in_a_chat_or_leave_reaches_the_roster_asking_nobody(
    rig: ZoomRig,
) -> None:
    """Dana joined as "iPad" and renamed herself (no webhook tells a rename): her chat's ``sender_name``
    renames her, and her leave's ``user_name`` and ``email`` bring her later name and her address. Each is
    scrubbed from Gwen's words; nobody is asked again, and the leave still leaves."""
    asked = consent_requests(rig)
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"), ("16778250", "iPad"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary"))
    await rig.accept(chat_event(UUID, "16778250", "m-2", "Hello.", name="Dana Whitfield"))
    await rig.accept(chat_event(UUID, "16778241", "m-3", "Welcome Dana Whitfield."))
    left = participant_event("meeting.participant_left", UUID, "16778250", "Dana Kowalczyk",
                             email="dk@corp.example")  # fmt: skip
    await rig.accept(left)
    await rig.accept(chat_event(UUID, "16778241", "m-4", "Bye Dana Kowalczyk, mail dk@corp.example."))
    await wait_for(_has(rig, 2), "Gwen's chat messages")
    await rig.gw.settle()
    assert [text for _, _, text in texts(rig.gw)] == [
        "Welcome [participant 2].",
        "Bye [participant 2], mail [participant 2].",
    ]
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    assert state is not None
    dana = state.participants["16778250"]
    assert (dana.names, dana.email, dana.present) == (
        ("Dana Kowalczyk", "iPad", "Dana Whitfield"), "dk@corp.example", False,
    )  # fmt: skip
    assert asked == ["16778241", "16778250"]


def test_announce_tells_only_what_the_roster_lacks() -> None:
    """Someone new joins and is asked; for someone known only a new e-mail (a join without the name) or a
    new name (a rename) is told, never an old name, and nobody is asked again."""
    at = datetime.now(UTC)
    state = meeting.joined(meeting.MeetingState("zoom", UUID), "1", "Ada", None)
    state = meeting.left(meeting.renamed(state, "1", "Ada L."), "1")

    def named(pid: str, name: str, email: str | None = None) -> ParticipantJoined:
        return ParticipantJoined("zoom", UUID, pid, name, at, email)

    assert announce(None, named("2", "Bea")) == (named("2", "Bea"), True)
    assert announce(state, named("2", "Bea")) == (named("2", "Bea"), True)
    for same in ("Ada L.", "Ada", ""):  # a late chat must not bring back a participant who left
        assert announce(state, named("1", same)) == (None, False)
    assert announce(state, named("1", "Ada", "a@example.org")) == (named("1", "", "a@example.org"), False)
    assert announce(state, named("1", "Ada K.")) == (
        ParticipantRenamed("zoom", UUID, "1", "Ada K.", at),
        False,
    )


def test_chat_and_leave_name_their_participant_for_the_roster() -> None:
    """A chat names its sender (unverified e-mail: Zoom does not say they are signed in) and a leave its
    leaver; a chat without a name or e-mail names nobody."""
    chat = parse(Envelope.model_validate(chat_event(UUID, 7, "m", "hi", name="Dana", email="d@x.org")))
    leave = participant_event("meeting.participant_left", UUID, "8", "Bo", email="b@x.org", account_id="u8")
    left = parse(Envelope.model_validate(leave))
    anonymous = parse(Envelope.model_validate(chat_event(UUID, 7, "m", "hi")))
    named = [w.named for w in (chat, left, anonymous) if isinstance(w, Apply)]
    assert [(n.participant_id, n.name, n.email, n.email_verified) if n else None for n in named] == [
        ("7", "Dana", "d@x.org", False), ("8", "Bo", "b@x.org", True), None,
    ]  # fmt: skip


def consent_requests(rig: ZoomRig) -> list[str]:
    """Whom the gateway sends a consent request from now on, in order (the notices still go out)."""
    gateway, asked = rig.gw.app[GATEWAY], list[str]()
    forward = gateway.notify

    def notify(notice: Notice) -> None:
        if notice.kind == "consent_request":
            asked.append(notice.participant_id)
        forward(notice)

    gateway.notify = notify  # type: ignore[method-assign]
    return asked


async def test_a_consent_command_in_a_direct_message_counts(rig: ZoomRig) -> None:
    """A ``/consent summary`` sent privately is the sender's own choice: it is recorded, and their public
    chat then flows; the direct message itself is never forwarded."""
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary", recipient_type="user"))
    entries = await rig.gw.ledger()
    assert [(e.record.subject, e.record.channel) for e in entries] == [("16778241", "chat")]
    await rig.accept(chat_event(UUID, "16778241", "m-2", "For everyone."))
    await wait_for(_has(rig, 1), "the public chat message to arrive")
    await rig.gw.settle()
    assert texts(rig.gw) == [("16778241", "chat", "For everyone.")]


async def test_a_redelivery_after_a_restart_is_still_a_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gwen consents in chat, then opts out. Zoom, which never got the first answer, redelivers the consent
    25 minutes later, after the gateway restarted (or to another replica): the delivery's key is claimed in
    the store, so it is acknowledged as a duplicate and not applied. Applied, it would undo her opt-out."""
    consented = chat_event(UUID, "16778241", "m-1", "/consent summary", ts=1795852900000)
    keys = (SecretStr(new_key_spec()),)
    async with zoom_gateway(tmp_path, monkeypatch, outbox_keys=keys) as before:
        await _start_with(before, ("16778241", "Gwen Ap Rhys: Ops"))
        await before.accept(consented, chat_event(UUID, "16778241", "m-2", "/optout", ts=1795852901000))
        ledger = await before.gw.ledger()
    async with zoom_gateway(tmp_path, monkeypatch, outbox_keys=keys, database=before.gw.database) as after:
        again = await after.send(consented)
        assert again.status == 200 and again.doc == {"status": "duplicate"}
        assert await after.gw.ledger() == ledger


async def test_redeliveries_are_applied_once(rig: ZoomRig) -> None:
    """Zoom's retry of an accepted delivery is acknowledged as a duplicate and not applied again."""
    await _start_with(rig, ("16778241", "Gwen Ap Rhys: Ops"))
    await rig.accept(chat_event(UUID, "16778241", "m-1", "/consent summary", ts=1795852900000))
    chat = chat_event(UUID, "16778241", "m-2", "Only once.", ts=1795852901000)
    await rig.accept(chat)
    again = await rig.send(chat)
    assert again.status == 200 and again.doc == {"status": "duplicate"}
    assert len(await rig.gw.ledger()) == 1
    await rig.gw.settle()
    await wait_for(_has(rig, 1), "the chat message")
    assert len(texts(rig.gw)) == 1
    decisions = [d for d in await rig.gw.decisions() if d.segment_id.endswith("/chat/m-2")]
    assert len(decisions) == 1


async def test_same_delivery_from_two_apps_is_two_deliveries(rig: ZoomRig) -> None:
    """Deduplication is per app: the other app's delivery with the same key is applied."""
    doc = meeting_event("meeting.started", UUID, ts=1795852800123)
    assert (await rig.send(doc)).doc == {"status": "accepted"}
    assert (await rig.send(doc, OTHER_SECRET)).doc == {"status": "accepted"}


def _has(rig: ZoomRig, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(texts(rig.gw)) >= n

    return check


def test_remembered_deliveries_are_bounded() -> None:
    """The memory of accepted deliveries keeps the newest keys only; a released key can be accepted again."""
    seen = Deliveries(capacity=3)
    assert all(seen.reserve((str(n),)) for n in range(5))
    assert len(seen) == 3 and not seen.reserve(("4",)) and seen.reserve(("0",))
    seen.release(("0",))
    assert seen.reserve(("0",))
