"""The generic event API's wire format (``POST /v1/events``, ``GET /v1/stream``, replay files).

Pydantic at the edge: every field is validated and unknown fields are errors that name the field. Events
whose ``type`` the gateway does not know are acknowledged and ignored (platforms retry otherwise), which is
why the type is looked at before the body is validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from gateway.events import (
    ConsentSubmitted,
    MeetingEnded,
    MeetingEvent,
    MeetingStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRenamed,
    SegmentReceived,
)
from gateway.instant import Instant
from gateway.model import ConsentChoice, ContentKind, Segment

Id = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(max_length=512)]
Text = Annotated[str, Field(max_length=100_000)]
Seconds = Annotated[float, Field(ge=0, le=1e7)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    meeting_id: Id
    at: Instant


class MeetingStartedIn(_Event):
    type: Literal["meeting.started"]
    title: Name | None = None
    jurisdiction: Annotated[str, Field(pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")] | None = None


class MeetingEndedIn(_Event):
    type: Literal["meeting.ended"]


class ParticipantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Id
    name: Name
    email: Annotated[str, Field(max_length=320)] | None = None
    email_verified: bool = False


class ParticipantJoinedIn(_Event):
    type: Literal["participant.joined"]
    participant: ParticipantIn


class ParticipantLeftIn(_Event):
    type: Literal["participant.left"]
    participant_id: Id


class ParticipantRenamedIn(_Event):
    type: Literal["participant.renamed"]
    participant_id: Id
    name: Name


class SegmentIn(_Event):
    type: Literal["segment"]
    segment_id: Id
    participant_id: Id | None
    text: Text
    start: Seconds | None = None
    end: Seconds | None = None


class ChatMessageIn(_Event):
    type: Literal["chat.message"]
    message_id: Id
    participant_id: Id | None
    text: Text


class ConsentIn(_Event):
    type: Literal["consent"]
    participant_id: Id
    purposes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=32)
    ]
    decision: ConsentChoice
    indicated_by: Id
    channel: Annotated[str, Field(min_length=1, max_length=32)]
    notice_version: Annotated[str, Field(max_length=64)] | None = None
    delegation: Annotated[str, Field(max_length=64)] | None = None
    evidence: Annotated[str, Field(max_length=256)] | None = None
    platform: Literal["generic", "zoom", "recall", "meet"] = "generic"
    """Whose meeting and participant keys these are: consent for a meeting a platform adapter feeds in is
    keyed by that platform (a Recall bot id, a Meet conference record), not by ``generic``."""


EventIn = Annotated[
    MeetingStartedIn
    | MeetingEndedIn
    | ParticipantJoinedIn
    | ParticipantLeftIn
    | ParticipantRenamedIn
    | SegmentIn
    | ChatMessageIn
    | ConsentIn,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[EventIn] = TypeAdapter(EventIn)
KNOWN_TYPES = frozenset(
    {
        "meeting.started",
        "meeting.ended",
        "participant.joined",
        "participant.left",
        "participant.renamed",
        "segment",
        "chat.message",
        "consent",
    }
)


def is_known(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("type") in KNOWN_TYPES


def to_event(wire: EventIn, platform: str) -> MeetingEvent:
    """The internal event for a validated wire event."""
    match wire:
        case SegmentIn():
            return SegmentReceived(
                platform,
                Segment(
                    wire.meeting_id,
                    wire.segment_id,
                    wire.participant_id,
                    wire.text,
                    wire.at,
                    wire.start,
                    wire.end,
                ),
            )
        case ChatMessageIn():
            return SegmentReceived(
                platform,
                Segment(
                    wire.meeting_id,
                    wire.message_id,
                    wire.participant_id,
                    wire.text,
                    wire.at,
                    kind=ContentKind.CHAT,
                ),
            )
        case ConsentIn():
            return ConsentSubmitted(
                platform,
                wire.meeting_id,
                wire.participant_id,
                tuple(wire.purposes),
                wire.decision,
                wire.indicated_by,
                wire.channel,
                wire.at,
                wire.notice_version,
                wire.delegation,
                wire.evidence,
            )
        case ParticipantJoinedIn():
            p = wire.participant
            return ParticipantJoined(
                platform, wire.meeting_id, p.id, p.name, wire.at, p.email, p.email_verified
            )
        case ParticipantLeftIn():
            return ParticipantLeft(platform, wire.meeting_id, wire.participant_id, wire.at)
        case ParticipantRenamedIn():
            return ParticipantRenamed(platform, wire.meeting_id, wire.participant_id, wire.name, wire.at)
        case MeetingStartedIn():
            return MeetingStarted(platform, wire.meeting_id, wire.at, wire.title, wire.jurisdiction)
        case MeetingEndedIn():
            return MeetingEnded(platform, wire.meeting_id, wire.at)
    raise AssertionError("unreachable")
