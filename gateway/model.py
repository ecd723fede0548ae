"""Core value types shared by every stage of the flow.

Everything here is a frozen value with no behaviour beyond construction helpers. Identity is always the
platform's participant id: a display name is an attribute that may change, collide or be absent.
Decisions carry reasons, rule ids, consent record ids and redaction *spans*, never transcript text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

Purpose = str
"""A purpose name declared by the policy (``summary``, ``training``...)."""

DestinationId = str


@dataclass(frozen=True, slots=True)
class ParticipantKey:
    """Who a consent is about: the platform's own participant id within one meeting."""

    platform: str
    meeting_id: str
    participant_id: str


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    name: str
    email: str | None = None
    ordinal: int = 0
    """Join order within the meeting (1-based); gives the stable placeholder ``[participant N]``."""
    present: bool = True
    former_names: tuple[str, ...] = ()
    """Names the participant used earlier in this meeting: they are scrubbed too."""
    former_emails: tuple[str, ...] = ()
    """E-mails the participant had earlier in this meeting (a rejoin, an update): scrubbed too."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.former_names)

    @property
    def emails(self) -> tuple[str, ...]:
        return (self.email, *self.former_emails) if self.email else self.former_emails

    @property
    def placeholder(self) -> str:
        return f"[participant {self.ordinal}]"


class ContentKind(enum.StrEnum):
    SPEECH = "speech"
    CHAT = "chat"


@dataclass(frozen=True, slots=True)
class Segment:
    """One utterance or chat message. ``participant_id`` is None when the platform could not attribute it."""

    meeting_id: str
    segment_id: str
    participant_id: str | None
    text: str = field(repr=False)
    at: datetime = field()
    start: float | None = None
    end: float | None = None
    kind: ContentKind = ContentKind.SPEECH
    private: bool = False
    """A chat message addressed to the bot or to one participant, not to the meeting: it is not meeting
    content and is never forwarded (a consent command in it still counts: it is the sender's own)."""


class ConsentState(enum.StrEnum):
    UNKNOWN = "unknown"
    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class ConsentChoice(enum.StrEnum):
    """What a consent event asks for; the ledger decides whether it is accepted."""

    GIVEN = "given"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


class RecordOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    """A consent attempt the policy does not allow (for example indicated by someone else): it is recorded
    so that the attempt is provable, and it changes no state."""


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A consent record with the fields of ISO/IEC TS 27560 / Kantara consent receipts that apply here."""

    record_id: str
    platform: str
    meeting_id: str
    subject: str
    """The participant id the consent is about."""
    indicated_by: str
    """Who expressed it: equal to ``subject`` unless a policy delegation allowed otherwise."""
    purposes: tuple[Purpose, ...]
    choice: ConsentChoice
    channel: str
    notice_version: str | None
    policy_revision: str
    at: datetime
    expires_at: datetime | None = None
    evidence: str | None = None
    """Pointer to the evidence (request id, page submission id, chat message id), never content."""
    delegation: str | None = None
    outcome: RecordOutcome = RecordOutcome.ACCEPTED
    reason: str | None = None
    """Why a record was rejected (machine-readable code)."""

    @property
    def key(self) -> ParticipantKey:
        return ParticipantKey(self.platform, self.meeting_id, self.subject)


class Action(enum.StrEnum):
    FORWARD = "forward"
    REDACT = "redact"
    """Forwarded, but with name mentions of non-consenting participants replaced."""
    DROP = "drop"
    HOLD = "hold"
    ERASE = "erase"
    """After a withdrawal: a deletion request for this already delivered segment was queued to the
    destination (its erasure endpoint); cites the withdrawal's ledger record."""


@dataclass(frozen=True, slots=True)
class Span:
    """A replaced range of the original text: offsets and the placeholder used, never the replaced words."""

    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the core decided for one segment and one destination. Contains no transcript text."""

    decision_id: str
    meeting_id: str
    segment_id: str
    destination: DestinationId
    action: Action
    at: datetime
    policy_revision: str
    reasons: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    consent_record_ids: tuple[str, ...] = ()
    redactions: tuple[Span, ...] = ()
    participant_id: str | None = None
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision travelling with the content it allows (None unless forwarded or redacted)."""

    decision: Decision
    text: str | None = None
    segment: Segment | None = field(default=None, repr=False)
    scrubbed_with: object = field(default=None, repr=False, compare=False)
    """The name scrubber ``text`` went through (None: none, or not known): delivery scrubs again before
    sending unless the meeting's scrubber is still this very one."""
