"""Zoom RTMS (real-time media streams): on ``meeting.rtms_started`` the gateway connects out to Zoom.

Per stream: connect to the signaling socket, send the signed handshake (msg_type 1), receive the media server
(msg_type 2), subscribe to participant join/leave events (msg_type 5; they arrive as msg_type 6), connect to
the media socket, ask for transcripts (msg_type 3, media_type 8), and once the media handshake is answered
(msg_type 4) tell signaling the client is ready (msg_type 7). Keep-alives (12) are answered (13, same
timestamp) on both sockets. A dropped connection is reopened with backoff; a stream ends on
``meeting.rtms_stopped`` or on a stream/session state update (msg_type 8 / 9) with stop reason 6 (meeting
ended) or 8 (stream revoked). There is one connection per stream id: Zoom allows only one and a second kicks
the first, so a redelivered ``rtms_started`` never opens another.

Transcript frames (msg_type 17) become segments. Zoom revises a sentence by resending its ``sentence_id``;
every revision goes through the core afresh (consent and scrubbing are decided per revision) as its own
segment with id ``{meeting uuid}/rtms/{sentence_id}/rev{n}`` (n = 1, 2, ...). A destination tells a revision
from a new sentence by that id: the part before ``/rev`` names the sentence, and a higher ``n`` supersedes
every lower one it received. A frame without ``user_id`` (or with 0) is unattributed.

Every frame carries its speaker's current display name, and no webhook reports a rename: a frame whose name
differs from the one the gateway was last told for that speaker is preceded by a ``ParticipantRenamed``, so
that the core scrubs the new name as well as the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from gateway.events import (
    MeetingEvent,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRenamed,
    SegmentReceived,
)
from gateway.model import Segment
from gateway.platforms.backlog import Backlog

log = structlog.get_logger("gateway.platforms.zoom_rtms")
PLATFORM = "zoom"
MEDIA_TRANSCRIPT = 8
EVENT_JOIN, EVENT_LEAVE = 3, 4
STOP_REASONS = frozenset({6, 8})
"""Stop reasons that end a stream: 6 meeting ended, 8 stream revoked."""
MAX_FRAME_BYTES = 1024 * 1024
MAX_SENTENCES = 100_000
END_GRACE_SECONDS = 1.0
"""How long a stream's sockets are still read once it ends (an end message on one socket, or the
``rtms_stopped`` webhook): frames sent before the end are applied, not cut off."""
MAX_MEETINGS = 1_000
"""Meetings whose sentence revision counts are kept after their streams (the oldest are forgotten)."""
DEFAULT_MEDIA_PARAMS: dict[str, Any] = {
    "transcript": {"content_type": 5, "src_language": 9, "enable_lid": True}
}


def handshake_signature(client_id: str, client_secret: str, meeting_uuid: str, stream_id: str) -> str:
    """hex HMAC-SHA256(client_secret, ``{client_id},{meeting_uuid},{rtms_stream_id}``)."""
    message = f"{client_id},{meeting_uuid},{stream_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


# --- the webhooks that start and stop a stream -------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


Text = Annotated[str, Field(min_length=1, max_length=2048)]


class StartedFields(_Wire):
    meeting_uuid: Text
    rtms_stream_id: Text
    server_urls: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^wss?://")]
    operator_id: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] | None = None


class StoppedFields(_Wire):
    rtms_stream_id: Text
    meeting_uuid: Text | None = None


@dataclass(frozen=True, slots=True)
class RtmsStart:
    meeting_uuid: str
    rtms_stream_id: str
    server_urls: str


@dataclass(frozen=True, slots=True)
class RtmsStop:
    rtms_stream_id: str


def _fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Zoom's sample code has the fields flat under ``payload``, its docs under ``payload.object``."""
    obj = payload.get("object")
    if isinstance(obj, dict) and "rtms_stream_id" in obj:
        return obj
    return payload


def parse_started(payload: dict[str, Any]) -> RtmsStart:
    fields = StartedFields.model_validate(_fields(payload))
    return RtmsStart(fields.meeting_uuid, fields.rtms_stream_id, fields.server_urls)


def parse_stopped(payload: dict[str, Any]) -> RtmsStop:
    return RtmsStop(StoppedFields.model_validate(_fields(payload)).rtms_stream_id)


# --- frames into events (pure) ---------------------------------------------------------------------------


class Sentences:
    """Revision numbers per ``sentence_id`` (bounded: the oldest sentences are forgotten first)."""

    def __init__(self, capacity: int = MAX_SENTENCES) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()

    def revision(self, sentence_id: str) -> int:
        n = self._seen.pop(sentence_id, 0) + 1
        self._seen[sentence_id] = n
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return n


def _when(ms: Any) -> datetime:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and 0 < ms < 10**14:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return datetime.now(UTC)


def _user(content: dict[str, Any]) -> str | None:
    user = content.get("user_id")
    if isinstance(user, bool) or user in (None, "", 0, "0"):
        return None
    return str(user) if isinstance(user, int | str) else None


def _same_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def transcript_events(
    meeting_uuid: str,
    content: dict[str, Any],
    sentences: Sentences,
    known: set[str],
    names: dict[str, str] | None = None,
) -> list[MeetingEvent]:
    """A msg_type 17 frame: the speaker's join when first seen, or rename when their name changed, then the
    segment of this revision. ``names``: the name (``_same_name``) the gateway was last told per speaker;
    a known speaker missing from it (known from the roster by id only) is told the frame's name."""
    text = content.get("data")
    if not isinstance(text, str) or not text.strip():
        return []
    at = _when(content.get("timestamp") or content.get("start_time"))
    user = _user(content)
    name = content.get("user_name")
    events: list[MeetingEvent] = []
    if user is not None and isinstance(name, str):
        events += _speaker(meeting_uuid, user, name[:512], at, known, {} if names is None else names)
    sentence = content.get("sentence_id")
    base = str(sentence) if isinstance(sentence, int | str) and not isinstance(sentence, bool) else None
    base = base or f"t{content.get('timestamp')}-{user}"
    segment_id = f"{meeting_uuid}/rtms/{base[:128]}/rev{sentences.revision(base)}"
    events.append(SegmentReceived(PLATFORM, Segment(meeting_uuid, segment_id, user, text, at)))
    return events


def _speaker(
    meeting_uuid: str, user: str, name: str, at: datetime, known: set[str], names: dict[str, str]
) -> list[MeetingEvent]:
    """The join of a speaker first seen; the rename of a known one whose frames carry another name."""
    same = _same_name(name)
    if user not in known:
        known.add(user)
        names[user] = same
        return [ParticipantJoined(PLATFORM, meeting_uuid, user, name, at)]
    if not same or names.get(user) == same:
        return []
    names[user] = same
    return [ParticipantRenamed(PLATFORM, meeting_uuid, user, name, at)]


def participant_events(
    meeting_uuid: str, content: dict[str, Any], known: set[str], names: dict[str, str] | None = None
) -> list[MeetingEvent]:
    """A msg_type 6 frame: joins (event_type 3) and leaves (4); other event types are ignored."""
    kind = content.get("event_type")
    people = content.get("participants")
    if kind not in (EVENT_JOIN, EVENT_LEAVE) or not isinstance(people, list):
        return []
    at = _when(content.get("timestamp"))
    events: list[MeetingEvent] = []
    for person in people:
        user = _user(person) if isinstance(person, dict) else None
        if user is None:
            continue
        if kind == EVENT_JOIN:
            name = str(person.get("user_name") or "")[:512]
            known.add(user)
            if names is not None and (same := _same_name(name)):
                names[user] = same
            events.append(ParticipantJoined(PLATFORM, meeting_uuid, user, name, at))
        else:
            events.append(ParticipantLeft(PLATFORM, meeting_uuid, user, at))
    return events


def stops(message: dict[str, Any]) -> bool:
    """Whether a stream/session state update (msg_type 8 / 9) ends the stream."""
    reason = message.get("reason", message.get("stop_reason"))
    return message.get("msg_type") in (8, 9) and reason in STOP_REASONS


# --- connections -----------------------------------------------------------------------------------------


class Refused(Exception):
    """Zoom answered a handshake with a non-zero status: retrying the same handshake will not help."""


class _Ended(Exception):
    """The stream ended (meeting ended, revoked)."""


Handle = Callable[[MeetingEvent], Awaitable[Any]]


@dataclass
class Stream:
    """One RTMS stream: its identity, credentials and what it has seen across reconnections."""

    start: RtmsStart
    client_id: str
    client_secret: str = field(repr=False)
    sentences: Sentences = field(default_factory=Sentences)
    known: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    """The name (``_same_name``) the gateway was last told per participant id: what a rename is told from."""
    connections: int = 0

    def signature(self) -> str:
        s = self.start
        return handshake_signature(self.client_id, self.client_secret, s.meeting_uuid, s.rtms_stream_id)


class RtmsStreams:
    """The open streams, one task per stream id."""

    def __init__(
        self,
        handle: Handle,
        roster: Callable[[str], Iterable[str]] = lambda meeting_uuid: (),
        backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0),
        max_attempts: int = 8,
        media_params: dict[str, Any] | None = None,
    ) -> None:
        self.handle = handle
        self.roster = roster
        """The participant ids the core already knows in a meeting (they are not announced again)."""
        self.backoff = tuple(backoff)
        self.max_attempts = max_attempts
        self.media_params = media_params or DEFAULT_MEDIA_PARAMS
        self.end_grace = END_GRACE_SECONDS
        self.streams: dict[str, Stream] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sentences: OrderedDict[str, Sentences] = OrderedDict()
        """Revision counts per meeting, across its streams: a stream started again (a new stream id, or
        the same) must not reuse a segment id an earlier one sent (the outbox keeps the first)."""
        self._backlogs: dict[str, Backlog[MeetingEvent]] = {}
        """Per stream id: events storage could not take yet (Zoom never sends a frame again), applied in
        order before later ones; kept across reconnections, and past the stream's end until applied."""

    def start(self, start: RtmsStart, client_id: str, client_secret: str) -> bool:
        """Open the stream unless it is already open (a redelivered webhook); True when opened."""
        running = self._tasks.get(start.rtms_stream_id)
        if running is not None and not running.done():
            return False
        sentences = self._sentences.pop(start.meeting_uuid, None) or Sentences()
        self._sentences[start.meeting_uuid] = sentences
        while len(self._sentences) > MAX_MEETINGS:
            self._sentences.popitem(last=False)
        stream = Stream(start, client_id, client_secret, sentences=sentences)
        self.streams[start.rtms_stream_id] = stream
        if start.rtms_stream_id not in self._backlogs:
            self._backlogs[start.rtms_stream_id] = _backlog(self.handle)
        task = asyncio.create_task(self._run(stream), name=f"rtms-{start.rtms_stream_id[:16]}")
        self._tasks[start.rtms_stream_id] = task
        return True

    def running(self, stream_id: str) -> bool:
        task = self._tasks.get(stream_id)
        return task is not None and not task.done()

    async def stop(self, stream_id: str, reason: str) -> None:
        task = self._tasks.pop(stream_id, None)
        if task is not None:
            # frames Zoom sent before it told us of the stop may still be on their way: read a moment more
            await asyncio.wait({task}, timeout=self.end_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("zoom.rtms.closed", reason=reason)
        backlog = self._backlogs.get(stream_id)
        if backlog is not None and not backlog.waiting and stream_id not in self._tasks:
            del self._backlogs[stream_id]  # else it is applied, or given up, by itself; shutdown closes it

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(stream_id, reason="shutdown") for stream_id in list(self._tasks)))
        for backlog in self._backlogs.values():
            await backlog.close()
        self._backlogs.clear()

    async def _run(self, stream: Stream) -> None:
        failures = 0
        while True:
            try:
                await self._connection(stream)
            except _Ended:
                log.info("zoom.rtms.ended")
                return
            except Refused as exc:
                log.warning("zoom.rtms.refused", status=str(exc))
                return
            except (OSError, TimeoutError, WebSocketException, ValueError, KeyError, TypeError) as exc:
                log.warning("zoom.rtms.dropped", error=type(exc).__name__, attempt=failures + 1)
            except Exception as exc:  # a stream must never die silently; reconnecting is safe
                log.error("zoom.rtms.error", error=type(exc).__name__)
            # A connection that got through the handshakes starts the backoff afresh.
            failures = 1 if stream.connections else failures + 1
            stream.connections = 0
            if failures > self.max_attempts:
                log.error("zoom.rtms.gave_up")
                return
            await asyncio.sleep(self.backoff[min(failures - 1, len(self.backoff) - 1)])

    async def _connection(self, stream: Stream) -> None:
        start = stream.start
        async with connect(start.server_urls, open_timeout=10, max_size=MAX_FRAME_BYTES) as signaling:
            await _send(signaling, self._handshake(stream, msg_type=1))
            reply = await _expect(signaling, 2)
            media_url = reply["media_server"]["server_urls"]
            media_url = media_url.get("transcript") or media_url["all"]
            subscribe = [{"event_type": t, "subscribe": True} for t in (EVENT_JOIN, EVENT_LEAVE)]
            await _send(signaling, {"msg_type": 5, "events": subscribe})
            async with connect(media_url, open_timeout=10, max_size=MAX_FRAME_BYTES) as media:
                media_hello = {
                    **self._handshake(stream, msg_type=3),
                    "media_type": MEDIA_TRANSCRIPT,
                    "payload_encryption": False,
                    "media_params": self.media_params,
                }
                await _send(media, media_hello)
                await _expect(media, 4)
                await _send(signaling, {"msg_type": 7, "rtms_stream_id": start.rtms_stream_id})
                stream.connections += 1
                log.info("zoom.rtms.connected")
                await self._pump(stream, signaling, media)

    def _handshake(self, stream: Stream, msg_type: int) -> dict[str, Any]:
        return {
            "msg_type": msg_type,
            "protocol_version": 1,
            "meeting_uuid": stream.start.meeting_uuid,
            "rtms_stream_id": stream.start.rtms_stream_id,
            "sequence": secrets.randbelow(10**9),
            "signature": stream.signature(),
        }

    async def _pump(self, stream: Stream, signaling: ClientConnection, media: ClientConnection) -> None:
        """Read both sockets until one closes (raise: reconnect) or the stream ends (raise _Ended)."""
        readers = [asyncio.create_task(self._read(stream, ws)) for ws in (signaling, media)]
        try:
            done, pending = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            if pending and any(not t.cancelled() and isinstance(t.exception(), _Ended) for t in done):
                # the end came on one socket: what the other still holds was said before it
                await asyncio.wait(pending, timeout=self.end_grace)
            for task in done:
                task.result()
            raise ConnectionResetError("an RTMS socket closed")
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, stream: Stream, ws: ClientConnection) -> None:
        uuid = stream.start.meeting_uuid
        async for raw in ws:
            message = _decode(raw)
            kind = message.get("msg_type")
            content = message.get("content")
            content = content if isinstance(content, dict) else {}
            if kind == 12:
                await _send(ws, {"msg_type": 13, "timestamp": message.get("timestamp")})
            elif stops(message):
                raise _Ended()
            elif kind == 6:
                await self._apply(stream, participant_events(uuid, content, stream.known, stream.names))
            elif kind == 17:
                stream.known.update(self.roster(uuid))
                events = transcript_events(uuid, content, stream.sentences, stream.known, stream.names)
                await self._apply(stream, events)

    async def _apply(self, stream: Stream, events: list[MeetingEvent]) -> None:
        # storage down: the event waits, and so does everything after it on this stream (``Backlog``)
        backlog = self._backlogs.get(stream.start.rtms_stream_id)
        if backlog is None:  # a stream stopped meanwhile: the frame was said before, a backlog of its own
            backlog = self._backlogs[stream.start.rtms_stream_id] = _backlog(self.handle)
        for event in events:
            await backlog.put(event)


def _backlog(handle: Handle) -> Backlog[MeetingEvent]:
    """A stream's backlog: words may be given up after a long outage, who joined, left or was renamed never
    (the stream remembers having told them, and a name the core lacks is never scrubbed)."""
    return Backlog(handle, name="zoom_rtms", keep=lambda event: not isinstance(event, SegmentReceived))


async def _send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return message if isinstance(message, dict) else {}


async def _expect(ws: ClientConnection, msg_type: int) -> dict[str, Any]:
    """The next message of ``msg_type`` (answering keep-alives meanwhile); Refused on a non-zero status."""
    async with asyncio.timeout(15):
        async for raw in ws:
            message = _decode(raw)
            if message.get("msg_type") == 12:
                await _send(ws, {"msg_type": 13, "timestamp": message.get("timestamp")})
            elif stops(message):
                raise _Ended()
            elif message.get("msg_type") == msg_type:
                status = message.get("status_code", 0)
                if status != 0:
                    raise Refused(str(status))
                return message
    raise ConnectionResetError("closed during the handshake")
