"""Internal meeting events: the small vocabulary every platform adapter produces.

Adapters (the generic API, later Zoom, Teams, Meet, Recall) verify and parse their wire formats into these
values; everything after them is platform-independent. Times are timezone-aware datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.model import ConsentChoice, Purpose, Segment


@dataclass(frozen=True, slots=True)
class MeetingStarted:
    platform: str
    meeting_id: str
    at: datetime
    title: str | None = field(default=None, repr=False)
    jurisdiction: str | None = None


@dataclass(frozen=True, slots=True)
class MeetingEnded:
    platform: str
    meeting_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    platform: str
    meeting_id: str
    participant_id: str
    name: str = field(repr=False)
    at: datetime = field()
    email: str | None = field(default=None, repr=False)
    email_verified: bool = False
    """Whether the platform vouches for ``email``: only a verified e-mail can carry a standing consent."""


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    platform: str
    meeting_id: str
    participant_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ParticipantRenamed:
    platform: str
    meeting_id: str
    participant_id: str
    name: str = field(repr=False)
    at: datetime = field()


@dataclass(frozen=True, slots=True)
class SegmentReceived:
    """An utterance or a chat message (``segment.kind`` tells which)."""

    platform: str
    segment: Segment

    @property
    def meeting_id(self) -> str:
        return self.segment.meeting_id

    @property
    def at(self) -> datetime:
        return self.segment.at


@dataclass(frozen=True, slots=True)
class ConsentSubmitted:
    """Someone asks to record a consent choice; the core decides whether the ledger accepts it."""

    platform: str
    meeting_id: str
    participant_id: str
    purposes: tuple[Purpose, ...]
    choice: ConsentChoice
    indicated_by: str
    channel: str
    at: datetime
    notice_version: str | None = None
    delegation: str | None = None
    evidence: str | None = None
    expires_at: datetime | None = None
    """A limit on a given consent's life (a consent derived from a standing one ends with it)."""


MeetingEvent = (
    MeetingStarted
    | MeetingEnded
    | ParticipantJoined
    | ParticipantLeft
    | ParticipantRenamed
    | SegmentReceived
    | ConsentSubmitted
)
