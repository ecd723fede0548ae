"""Zoom's webhook wire format: the envelope and event schemas, and parsing into the work each asks for.

Zoom adds fields freely, so unknown fields are ignored while the ones used are validated (a violation is a
pydantic ``ValidationError`` whose location names the field). Parsing is pure: a verified, validated
envelope becomes ``Apply`` (internal events for the core), a ``TranscriptJob`` (a download), or an RTMS
start/stop. Also here: what makes two deliveries the same delivery, and the bounded memory of accepted ones.

Identity: the meeting is the meeting *instance*, ``object.uuid`` (``object.id`` is reused by recurring
meetings); the participant key is ``participant.user_id``, Zoom's per-meeting id (the same key RTMS uses).

Whom a delivery names. A chat message names its sender (``sender_name``, ``sender_email``) and a leave its
leaver (``user_name``, ``email``, as they are at the end). The join may have been missed (a subscription made
mid-meeting, a lost delivery), or the person renamed themselves (no Zoom webhook tells a rename), and a name
or e-mail the roster lacks is never scrubbed from others' words. So such a delivery carries the person it
names (``Apply.named``), and ``announce`` says what the roster must be told before its events, as Recall's
adapter does: someone the roster lacks joins and is asked for consent like any joiner; for someone known,
only a new name (a rename) or a new e-mail (a join that keeps the known name) is told, and nobody is asked
again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gateway.events import (
    MeetingEnded,
    MeetingEvent,
    MeetingStarted,
    ParticipantJoined,
    ParticipantLeft,
    SegmentReceived,
)
from gateway.instant import Instant
from gateway.model import ContentKind, Segment
from gateway.platforms import zoom_rtms, zoom_transcript
from gateway.platforms.naming import named as _named

PLATFORM = "zoom"
DEDUP_CAPACITY = 10_000


def _id_text(value: Any) -> Any:
    """Zoom sends ids as strings in some deliveries and numbers in others."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ZoomId = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(max_length=512)]
Email = Annotated[str, Field(max_length=320)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Envelope(_Wire):
    event: Annotated[str, Field(min_length=1, max_length=128)]
    event_ts: Annotated[int, Field(ge=0)] | None = None
    payload: dict[str, Any]
    download_token: Annotated[str, Field(max_length=8192)] | None = None


class UrlValidation(_Wire):
    plainToken: Annotated[str, Field(min_length=1, max_length=512)]


class MeetingObject(_Wire):
    uuid: ZoomId
    id: ZoomId | None = None
    topic: Name | None = None
    start_time: Instant | None = None
    end_time: Instant | None = None


class ZoomParticipant(_Wire):
    user_id: ZoomId
    user_name: Name
    id: Annotated[str, BeforeValidator(_id_text)] | None = None
    email: Email | None = None
    join_time: Instant | None = None
    leave_time: Instant | None = None


class ParticipantObject(MeetingObject):
    participant: ZoomParticipant


class ChatMessage(_Wire):
    sender_session_id: ZoomId
    message_id: ZoomId
    message_content: Annotated[str, Field(max_length=100_000)]
    sender_name: Name | None = None
    sender_email: Email | None = None
    date_time: Instant | None = None
    recipient_type: str | None = None


class ChatObject(MeetingObject):
    chat_message: ChatMessage


class MeetingPayload(_Wire):
    object: MeetingObject


class ParticipantPayload(_Wire):
    object: ParticipantObject


# --- parsing: a validated envelope into the work it asks for ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Apply:
    """Events for the core, applied before the answer."""

    events: tuple[MeetingEvent, ...]
    named: ParticipantJoined | None = None
    """The participant the delivery names, as a join: told to the roster first (``announce``)."""


Work = Apply | zoom_transcript.TranscriptJob | zoom_rtms.RtmsStart | zoom_rtms.RtmsStop


def parse(envelope: Envelope) -> Work | None:
    """What a verified delivery asks for; None for an event this adapter ignores (raises ValidationError)."""
    parser = _PARSERS.get(envelope.event)
    return parser(envelope, _received_at(envelope)) if parser else None


def _received_at(envelope: Envelope) -> datetime:
    if envelope.event_ts is not None and envelope.event_ts < 10**14:
        return datetime.fromtimestamp(envelope.event_ts / 1000, UTC)
    return datetime.now(UTC)


def _started(envelope: Envelope, at: datetime) -> Work:
    payload = envelope.payload
    obj = MeetingPayload.model_validate(payload).object
    return Apply((MeetingStarted(PLATFORM, obj.uuid, obj.start_time or at, title=obj.topic),))


def _ended(envelope: Envelope, at: datetime) -> Work:
    payload = envelope.payload
    obj = MeetingPayload.model_validate(payload).object
    return Apply((MeetingEnded(PLATFORM, obj.uuid, obj.end_time or at),))


def _joined(envelope: Envelope, at: datetime) -> Work:
    obj = ParticipantPayload.model_validate(envelope.payload).object
    return Apply((_join_of(obj, obj.participant.join_time or at),))


def _left(envelope: Envelope, at: datetime) -> Work:
    """The leave, naming the leaver as they are now: a name taken during the meeting reaches the roster."""
    obj = ParticipantPayload.model_validate(envelope.payload).object
    at = obj.participant.leave_time or at
    left = ParticipantLeft(PLATFORM, obj.uuid, obj.participant.user_id, at)
    return Apply((left,), _named(_join_of(obj, at)))


def _join_of(obj: ParticipantObject, at: datetime) -> ParticipantJoined:
    """The participant of a join or leave as a join."""
    person = obj.participant
    # Zoom vouches for an e-mail only when the participant is signed in to a Zoom account (non-empty
    # ``id``, the account user id); a guest or registrant types whatever address they like, so theirs is
    # passed on as unverified and can never carry a standing consent.
    return ParticipantJoined(
        PLATFORM,
        obj.uuid,
        person.user_id,
        person.user_name,
        at,
        email=person.email or None,
        email_verified=bool(person.id and person.email),
    )


def _chat(envelope: Envelope, at: datetime) -> Work:
    payload = envelope.payload
    obj = _chat_object(payload)
    message = obj.chat_message
    segment = Segment(
        meeting_id=obj.uuid,
        segment_id=f"{obj.uuid}/chat/{message.message_id}",
        # sender_session_id is taken to be the participant's per-meeting user_id; if it is not one the
        # roster knows, the core finds no such participant and treats the message as unattributed.
        participant_id=message.sender_session_id,
        text=message.message_content,
        at=message.date_time or at,
        kind=ContentKind.CHAT,
        # a private message is not meeting content: never forwarded (a consent command in it counts)
        private=message.recipient_type not in (None, "everyone"),
    )
    # Zoom does not say whether the sender is signed in, so the address is unverified (no standing consent)
    sender = ParticipantJoined(
        PLATFORM,
        obj.uuid,
        message.sender_session_id,
        message.sender_name or "",
        segment.at,
        email=message.sender_email or None,
    )
    return Apply((SegmentReceived(PLATFORM, segment),), _named(sender))


def _chat_object(payload: dict[str, Any]) -> ChatObject:
    """*Unconfirmed shape*: ``chat_message`` under ``payload.object`` (documented), or its fields flat."""
    obj = payload.get("object")
    if isinstance(obj, dict) and "chat_message" not in obj and "message_id" in obj:
        return ChatObject.model_validate({**obj, "chat_message": obj})
    return _ChatPayload.model_validate(payload).object


class _ChatPayload(_Wire):
    object: ChatObject


def _transcript(envelope: Envelope, at: datetime) -> Work:
    return zoom_transcript.parse_completed(envelope.payload, at, envelope.download_token)


def _rtms_started(envelope: Envelope, at: datetime) -> Work:
    return zoom_rtms.parse_started(envelope.payload)


def _rtms_stopped(envelope: Envelope, at: datetime) -> Work:
    return zoom_rtms.parse_stopped(envelope.payload)


_PARSERS: dict[str, Callable[[Envelope, datetime], Work]] = {
    "meeting.started": _started,
    "meeting.ended": _ended,
    "meeting.participant_joined": _joined,
    "meeting.participant_left": _left,
    "meeting.chat_message_sent": _chat,
    "recording.transcript_completed": _transcript,
    "meeting.rtms_started": _rtms_started,
    "meeting.rtms_stopped": _rtms_stopped,
}


def dedup_key(envelope: Envelope) -> tuple[str, ...]:
    """(event, event_ts, meeting uuid, participant, message): what makes a redelivery the same delivery."""
    payload = envelope.payload
    obj = payload.get("object") if isinstance(payload.get("object"), dict) else {}
    assert isinstance(obj, dict)
    person = obj.get("participant") if isinstance(obj.get("participant"), dict) else {}
    chat = obj.get("chat_message") if isinstance(obj.get("chat_message"), dict) else obj
    assert isinstance(person, dict) and isinstance(chat, dict)
    uuid = obj.get("uuid") or obj.get("meeting_uuid") or payload.get("meeting_uuid")
    return tuple(
        str(v)
        for v in (envelope.event, envelope.event_ts, uuid, person.get("user_id"), chat.get("message_id"))
    )


class Deliveries:
    """Keys of accepted deliveries, oldest forgotten first (bounded memory)."""

    def __init__(self, capacity: int = DEDUP_CAPACITY) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def reserve(self, key: tuple[str, ...]) -> bool:
        """False when ``key`` was already accepted (or is being applied now)."""
        if key in self._keys:
            return False
        self._keys[key] = None
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def release(self, key: tuple[str, ...]) -> None:
        """Forget a delivery that was not accepted, so Zoom's retry of it is applied."""
        self._keys.pop(key, None)

    def __len__(self) -> int:
        return len(self._keys)
