"""Zoom RTMS through the live gateway and a fake RTMS server: handshake, keep-alive, frames, ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.platforms.zoom_rtms import RtmsStreams
from gateway.web.keys import GATEWAY
from tests.conftest import require_shared
from tests.fakes.zoom import chat_event, participant_event
from tests.fakes.zoom_rtms import FakeRtms, rtms_signature, transcript_frame
from tests.platforms.zoom_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_SECRET,
    UUID,
    ZoomRig,
    fixture,
    texts,
    zoom_gateway,
)
from tests.web.harness import wait_for

STREAM = "rtms-stream-7f3a"
GWEN, TOMAS = 16778241, 16778242


@dataclass
class Rtms:
    rig: ZoomRig
    fake: FakeRtms

    @property
    def streams(self) -> RtmsStreams:
        streams = self.rig.service.rtms
        assert streams is not None
        return streams

    async def started(self, name: str = "meeting.rtms_started.flat.json") -> None:
        await self.rig.accept(fixture(name, SERVER_URLS=self.fake.url))

    async def until(self, check: Callable[[], bool], what: str) -> None:
        async def condition() -> bool:
            return check()

        await wait_for(condition, what)


@pytest.fixture
async def rtms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rtms]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig, FakeRtms(CLIENT_ID, CLIENT_SECRET) as fake:
        assert rig.service.rtms is not None
        rig.service.rtms.backoff = (0.05,)
        yield Rtms(rig, fake)


def _sent(messages: list[dict[str, Any]], msg_type: int) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("msg_type") == msg_type]


async def _consented_meeting(rtms: Rtms) -> None:
    rig = rtms.rig
    await rig.accept(fixture("meeting.started.json"))
    for user_id, name in ((GWEN, "Gwen Ap Rhys: Ops"), (TOMAS, "Tomás Ó Briain")):
        await rig.accept(participant_event("meeting.participant_joined", UUID, str(user_id), name))
    await rig.accept(chat_event(UUID, str(GWEN), "c-1", "/consent summary"))


def _texts_reach(rtms: Rtms, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(texts(rtms.rig.gw)) >= n

    return check


async def test_handshake_subscription_media_and_ready(rtms: Rtms) -> None:
    """The gateway signs the handshake, subscribes to joins/leaves, asks for transcripts, then says ready."""
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "the client-ready message")
    hello = _sent(rtms.fake.signaling, 1)[0]
    assert hello["meeting_uuid"] == UUID and hello["rtms_stream_id"] == STREAM
    assert hello["signature"] == rtms_signature(CLIENT_ID, CLIENT_SECRET, UUID, STREAM)
    assert hello["protocol_version"] == 1 and isinstance(hello["sequence"], int)
    (subscribe,) = _sent(rtms.fake.signaling, 5)
    assert {(e["event_type"], e["subscribe"]) for e in subscribe["events"]} == {(3, True), (4, True)}
    (media,) = _sent(rtms.fake.media, 3)
    assert media["media_type"] == 8 and "transcript" in media["media_params"]
    assert _sent(rtms.fake.signaling, 7) == [{"msg_type": 7, "rtms_stream_id": STREAM}]
    assert [m["msg_type"] for m in rtms.fake.signaling].index(7) > 0


async def test_shared_media_params_are_accepted_by_shape(rtms: Rtms) -> None:
    """The gateway's media_params have the documented transcript shape (the shared fixture's keys)."""
    documented = fixture("media_params.json", require_shared("fixtures/platforms/zoom_rtms"))
    await rtms.started()
    await rtms.until(lambda: bool(_sent(rtms.fake.media, 3)), "the media handshake")
    sent = _sent(rtms.fake.media, 3)[0]["media_params"]
    assert set(sent["transcript"]) == set(documented["media_params"]["transcript"])


async def test_keep_alives_are_answered_on_both_sockets(rtms: Rtms) -> None:
    """msg_type 12 is answered with 13 carrying the same timestamp, on signaling and on media."""
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.send_signaling({"msg_type": 12, "timestamp": 1795852811111})
    await rtms.fake.send_media({"msg_type": 12, "timestamp": 1795852822222})
    await rtms.until(lambda: bool(_sent(rtms.fake.signaling, 13) and _sent(rtms.fake.media, 13)), "13s")
    assert _sent(rtms.fake.signaling, 13) == [{"msg_type": 13, "timestamp": 1795852811111}]
    assert _sent(rtms.fake.media, 13) == [{"msg_type": 13, "timestamp": 1795852822222}]


async def test_redelivered_or_repeated_start_opens_one_connection(rtms: Rtms) -> None:
    """A retry of rtms_started (same or new event_ts) never opens a second connection for the stream."""
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    doc = fixture("meeting.rtms_started.flat.json", SERVER_URLS=rtms.fake.url)
    assert (await rtms.rig.send(doc)).doc == {"status": "duplicate"}
    doc["event_ts"] += 1
    await rtms.rig.accept(doc)
    await rtms.fake.send_media({"msg_type": 12, "timestamp": 1})
    await rtms.until(lambda: bool(_sent(rtms.fake.media, 13)), "a keep-alive round trip")
    assert rtms.fake.handshakes == 1


async def test_transcript_frames_follow_consent_and_revisions_are_decided_afresh(rtms: Rtms) -> None:
    """Frames of a consenting speaker are forwarded, each revision as ``{sentence}/rev{n}``; others' not;
    after an opt-out a revision of an already forwarded sentence is not forwarded."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.send_media(transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "Morning all", 18, 1795852812100))
    await rtms.fake.send_media(transcript_frame(TOMAS, "Tomás Ó Briain", "Hi there", 19, 1795852813100))
    await rtms.fake.send_media(
        transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "Morning all, hi", 18, 1795852814100)
    )
    await wait_for(_texts_reach(rtms, 2), "two revisions")
    await rtms.rig.gw.settle()
    assert texts(rtms.rig.gw) == [
        (str(GWEN), "speech", "Morning all"),
        (str(GWEN), "speech", "Morning all, hi"),
    ]
    ids = [s["segment_id"] for s in rtms.rig.gw.fake.segments()]
    assert ids == [f"{UUID}/rtms/18/rev1", f"{UUID}/rtms/18/rev2"]
    await rtms.rig.accept(chat_event(UUID, str(GWEN), "c-2", "/optout"))
    await rtms.fake.send_media(
        transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "Morning all, hi!", 18, 1795852815100)
    )

    async def third_decided() -> bool:
        return any(d.segment_id.endswith("/18/rev3") for d in await rtms.rig.gw.decisions())

    await wait_for(third_decided, "the third revision's decision")
    await rtms.rig.gw.settle()
    assert len(texts(rtms.rig.gw)) == 2


async def test_frames_storage_cannot_take_wait_and_are_applied_in_order_once_it_is_back(rtms: Rtms) -> None:
    """Zoom never sends a frame again. One that meets a storage outage waits, with every frame after it,
    and they are decided in order once storage is back: a consenting speaker's words are not lost."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    gw = rtms.rig.gw
    with capture_logs() as logs:
        await gw.store.close()
        await rtms.fake.send_media(
            transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "In the outage", 18, 1795852812100)
        )
        await rtms.fake.send_media(
            transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "Still in it", 19, 1795852813100)
        )

        async def refused() -> bool:
            return any(e["log_level"] == "error" and "unavailable" in e["event"] for e in logs)

        await wait_for(refused, "the outage met by a frame")
        await gw.store.open()
        await wait_for(_texts_reach(rtms, 2), "the frames once storage is back")
        await rtms.fake.send_media(transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "After it", 20, 1795852814100))
        await wait_for(_texts_reach(rtms, 3), "the frame after the outage")
    await gw.settle()
    assert [text for _, _, text in texts(gw)] == ["In the outage", "Still in it", "After it"]


@pytest.mark.parametrize("first_seen", ["in_a_frame", "in_a_join_webhook"])
async def test_a_renamed_speaker_is_scrubbed_under_the_new_name_and_the_old(
    rtms: Rtms, first_seen: str
) -> None:
    """A decliner first seen as a device, whose later frames carry their real name, is scrubbed under both."""
    rig = rtms.rig
    await rig.accept(fixture("meeting.started.json"))
    await rig.accept(participant_event("meeting.participant_joined", UUID, str(GWEN), "Gwen Rhys"))
    if first_seen == "in_a_join_webhook":
        await rig.accept(participant_event("meeting.participant_joined", UUID, str(TOMAS), "iPad (2)"))
    await rig.accept(chat_event(UUID, str(GWEN), "c-1", "/consent summary"))
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.send_media(transcript_frame(TOMAS, "iPad (2)", "Can you hear me", 1, 1795852812100))
    await rtms.fake.send_media(transcript_frame(TOMAS, "Tomás Ó Briain", "I renamed", 2, 1795852813100))
    said = "Thanks iPad (2), or rather Tomás Ó Briain: over to you, Tomás."
    await rtms.fake.send_media(transcript_frame(GWEN, "Gwen Rhys", said, 3, 1795852814100))
    await wait_for(_texts_reach(rtms, 1), "Gwen's words")
    await rig.gw.settle()
    ((speaker, _, text),) = texts(rig.gw)
    assert speaker == str(GWEN)
    assert "Tomás" not in text and "Briain" not in text and "iPad" not in text, text
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    assert state is not None and state.participants[str(TOMAS)].names == ("Tomás Ó Briain", "iPad (2)")


async def test_participant_events_and_unattributed_frames(rtms: Rtms) -> None:
    """RTMS joins (msg_type 6, event_type 3) add participants; a frame without user_id is unattributed."""
    await rtms.started("meeting.rtms_started.object.json")
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    people = [{"user_id": 555, "user_name": "Ola Nowak"}]
    join = {"msg_type": 6, "content": {"event_type": 3, "timestamp": 1795852811000, "participants": people}}
    await rtms.fake.send_signaling(join)
    contact_center = fixture("contact-center.msg_type17.json", require_shared("fixtures/platforms/zoom_rtms"))
    await rtms.fake.send_media(contact_center)
    gateway = rtms.rig.gw.app

    async def decided() -> bool:
        return any("/rtms/18/" in d.segment_id for d in await rtms.rig.gw.decisions())

    await wait_for(decided, "the contact-center frame's decisions")
    state = gateway[GATEWAY].meeting("zoom", UUID)
    assert state is not None and state.participants["555"].name == "Ola Nowak"
    reasons = [d.reasons for d in await rtms.rig.gw.decisions() if "/rtms/18/" in d.segment_id]
    assert reasons and all(any("unattributed" in r for r in rs) for rs in reasons)


async def test_own_transcript_frame_fixture_is_applied(rtms: Rtms) -> None:
    """The documented meeting frame shape (user_id, user_name, sentence_id) becomes a forwarded segment."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.send_media(fixture("rtms.msg_type17.json"))
    await wait_for(_texts_reach(rtms, 1), "the frame")
    assert texts(rtms.rig.gw) == [(str(GWEN), "speech", "Morning all, let's start with the release.")]


async def test_dropped_connection_is_reopened(rtms: Rtms) -> None:
    """When Zoom's sockets drop, the gateway reconnects (a new signed handshake) and keeps receiving."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.drop()
    await rtms.until(lambda: rtms.fake.ready_count() == 2, "the second connection")
    assert rtms.fake.handshakes == 2
    await rtms.fake.send_media(
        transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "After the drop", 30, 1795852820000)
    )
    await wait_for(_texts_reach(rtms, 1), "a frame after reconnecting")


@pytest.mark.parametrize("how", ["stream_state_meeting_ended", "session_state_revoked", "rtms_stopped"])
async def test_stream_ends_without_reconnecting(rtms: Rtms, how: str) -> None:
    """Stop reason 6 (meeting ended) or 8 (revoked) in msg_type 8/9, or meeting.rtms_stopped, close it."""
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    if how == "stream_state_meeting_ended":
        await rtms.fake.send_signaling({"msg_type": 8, "rtms_stream_id": STREAM, "state": 4, "reason": 6})
    elif how == "session_state_revoked":
        await rtms.fake.send_media({"msg_type": 9, "state": 4, "stop_reason": 8})
    else:
        await rtms.rig.accept(fixture("meeting.rtms_stopped.json", STREAM_ID=STREAM))
    await rtms.until(lambda: not rtms.streams.running(STREAM), "the stream to end")
    await rtms.until(lambda: not rtms.fake.open_signaling and not rtms.fake.open_media, "sockets closed")
    assert rtms.fake.handshakes == 1


async def test_a_refused_handshake_is_not_retried_forever(rtms: Rtms) -> None:
    """A handshake Zoom refuses (bad signature: status_code != 0) ends the stream without reconnecting."""
    rtms.fake.client_secret = "another secret"
    await rtms.started()
    await rtms.until(lambda: not rtms.streams.running(STREAM), "the stream to give up")
    assert rtms.fake.refused == 1 and rtms.fake.handshakes == 0


async def test_app_without_rtms_credentials_opens_nothing(rtms: Rtms) -> None:
    """rtms_started signed by an app without client credentials is acknowledged and opens no stream."""
    doc = fixture("meeting.rtms_started.flat.json", SERVER_URLS=rtms.fake.url)
    reply = await rtms.rig.send(doc, OTHER_SECRET)
    assert reply.status == 200
    assert not rtms.streams.running(STREAM) and rtms.fake.handshakes == 0


async def test_a_stream_started_again_never_reuses_a_segment_id(rtms: Rtms) -> None:
    """The host stops and restarts the app's stream; the new stream numbers its sentences from 1 again.
    Its sentence is a new revision, not the first stream's segment id again (which the outbox would take
    for a resend and drop): both arrive."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    await rtms.fake.send_media(transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "First stream", 1, 1795852812100))
    await wait_for(_texts_reach(rtms, 1), "the first stream's sentence")
    await rtms.rig.accept(fixture("meeting.rtms_stopped.json", STREAM_ID=STREAM))
    await rtms.until(lambda: not rtms.streams.running(STREAM), "the first stream stopped")
    again = fixture("meeting.rtms_started.flat.json", SERVER_URLS=rtms.fake.url)
    again["payload"]["rtms_stream_id"] = "rtms-stream-second"
    again["event_ts"] += 1000
    await rtms.rig.accept(again)
    await rtms.until(lambda: rtms.fake.ready_count() == 2, "the second stream ready")
    await rtms.fake.send_media(transcript_frame(GWEN, "Gwen Ap Rhys: Ops", "Second stream", 1, 1795852912100))
    await wait_for(_texts_reach(rtms, 2), "the second stream's sentence")
    assert [text for _, _, text in texts(rtms.rig.gw)] == ["First stream", "Second stream"]


@pytest.mark.parametrize("how", ["end_on_signaling", "rtms_stopped_webhook"])
async def test_frames_sent_before_the_stream_ends_are_all_decided(rtms: Rtms, how: str) -> None:
    """Zoom sends the last sentences on the media socket and the end on another channel (an end message on
    signaling, or the ``rtms_stopped`` webhook), with no order between them. What was sent before the end
    is still read and decided, not cut off with the sockets."""
    await _consented_meeting(rtms)
    await rtms.started()
    await rtms.until(lambda: rtms.fake.ready_count() == 1, "ready")
    for n in range(20):
        await rtms.fake.send_media(
            transcript_frame(GWEN, "Gwen Ap Rhys: Ops", f"Closing remark {n}", 100 + n, 1795852812100 + n)
        )
    if how == "end_on_signaling":
        await rtms.fake.send_signaling({"msg_type": 8, "rtms_stream_id": STREAM, "state": 4, "reason": 6})
    else:
        await rtms.rig.accept(fixture("meeting.rtms_stopped.json", STREAM_ID=STREAM))
    await wait_for(_texts_reach(rtms, 20), "every sentence sent before the end")
    await rtms.until(lambda: not rtms.streams.running(STREAM), "the stream to end")
