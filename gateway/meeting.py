"""Meeting state: roster, consent per participant and purpose, held segments and pending batches.

A frozen value folded from events by pure functions (``joined``, ``left``, ``renamed``, ``with_record``...).
Consent here is keyed by participant id, never by display name, and only records the ledger accepted
(and durably wrote, the shell's job) are ever folded in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from gateway.model import (
    ConsentChoice,
    ConsentRecord,
    ConsentState,
    DestinationId,
    Participant,
    Purpose,
    RecordOutcome,
    Segment,
)

_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_STATE_OF_CHOICE = {
    ConsentChoice.GIVEN: ConsentState.GIVEN,
    ConsentChoice.REFUSED: ConsentState.REFUSED,
    ConsentChoice.WITHDRAWN: ConsentState.WITHDRAWN,
}


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    state: ConsentState
    record_id: str
    expires_at: datetime | None = None
    since: datetime | None = None
    """When the choice behind it was made (its record's ``at``)."""
    restricted_at: datetime | None = None
    """The latest time a refusal or withdrawal of this purpose was made, of all this meeting folded in."""
    restricted_channel: str = ""
    """The channel of that refusal or withdrawal: whose clock its time is on."""
    notice_version: str | None = None
    """The notice versions (comma-separated) the choice was made under, as its record has them."""

    def at(self, now: datetime) -> ConsentState:
        if self.state is ConsentState.GIVEN and self.expires_at is not None and now >= self.expires_at:
            return ConsentState.EXPIRED
        return self.state

    def under(self, notice: str | None) -> bool:
        """Whether the choice was made under ``notice`` (the purpose's notice version now). A consent to a
        notice since changed ("kept by the vendor to train models" where it said "summaries") is not
        consent to the new one: the participant is asked again. True where either is not known."""
        return notice is None or self.notice_version is None or notice in self.notice_version.split(",")


UNKNOWN = ConsentEntry(ConsentState.UNKNOWN, "")


@dataclass(frozen=True, slots=True)
class Held:
    """A segment waiting for consent, for one destination. ``present`` matters in all-party mode: every
    participant present when it was said must consent before it may leave."""

    segment: Segment
    destination: DestinationId
    since: datetime
    present: frozenset[str] = frozenset()
    stale: bool = False
    """Held only because this replica could not confirm its consent view was fresh (``gateway.replication``):
    re-decided as soon as it can, instead of waiting for a consent."""


@dataclass(frozen=True, slots=True)
class Part:
    """Forwardable content of one segment for one destination, already scrubbed."""

    segment_id: str
    participant_id: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class MeetingState:
    platform: str
    meeting_id: str
    jurisdiction: str | None = None
    ended: bool = False
    participants: Mapping[str, Participant] = field(default_factory=lambda: _EMPTY)
    consents: Mapping[tuple[str, Purpose], ConsentEntry] = field(default_factory=lambda: _EMPTY)
    held: tuple[Held, ...] = ()
    batches: Mapping[DestinationId, tuple[Part, ...]] = field(default_factory=lambda: _EMPTY)
    next_ordinal: int = 1
    version: int = 0
    """Bumped on every roster or consent change; keys the derived-value cache."""
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    """Values derived from this exact state (compiled name scrubbers). Safe because the state is frozen."""

    def consent(self, participant_id: str, purpose: Purpose) -> ConsentEntry:
        return self.consents.get((participant_id, purpose), UNKNOWN)

    def purposes_of(self, participant_id: str) -> tuple[Purpose, ...]:
        """Every purpose the participant has a consent entry for, whether the policy lists it now or not (a
        reload may have dropped one that a later reload brings back)."""
        return tuple(purpose for pid, purpose in self.consents if pid == participant_id)

    def present_ids(self) -> frozenset[str]:
        return frozenset(pid for pid, p in self.participants.items() if p.present)


def _bump(state: MeetingState, **changes: Any) -> MeetingState:
    return replace(state, version=state.version + 1, cache={}, **changes)


def joined(
    state: MeetingState, participant_id: str, name: str, email: str | None, ordinal: int = 0
) -> MeetingState:
    """``ordinal``: the placeholder number to give someone new (several replicas take it from the shared
    roster, so that all call them the same); 0 for the next one here."""
    known = state.participants.get(participant_id)
    if known is None:
        ordinal = ordinal or state.next_ordinal
        person = Participant(participant_id, name, email, ordinal=ordinal)
        return _bump(
            state,
            participants=_put(state.participants, participant_id, person),
            next_ordinal=max(state.next_ordinal, ordinal + 1),
        )
    person = _renamed(known, name)
    person = replace(_with_email(person, email), present=True)
    return _bump(state, participants=_put(state.participants, participant_id, person))


def _with_email(person: Participant, email: str | None) -> Participant:
    """``person`` now with ``email`` (unchanged if None); the address it replaces stays scrubbed."""
    if not email or email == person.email:
        return person
    former = person.former_emails if person.email is None else (*person.former_emails, person.email)
    return replace(person, email=email, former_emails=tuple(e for e in dict.fromkeys(former) if e != email))


def left(state: MeetingState, participant_id: str) -> MeetingState:
    known = state.participants.get(participant_id)
    if known is None or not known.present:
        return state
    return _bump(state, participants=_put(state.participants, participant_id, replace(known, present=False)))


def renamed(state: MeetingState, participant_id: str, name: str) -> MeetingState:
    known = state.participants.get(participant_id)
    if known is None:
        return joined(state, participant_id, name, None)
    return _bump(state, participants=_put(state.participants, participant_id, _renamed(known, name)))


def back(state: MeetingState, participant_id: str, email: str | None) -> MeetingState:
    """A known participant is present again (and vouched for with ``email``, if given); name unchanged."""
    known = state.participants.get(participant_id)
    if known is None or (known.present and (not email or email == known.email)):
        return state
    person = replace(_with_email(known, email), present=True)
    return _bump(state, participants=_put(state.participants, participant_id, person))


def also_known_as(state: MeetingState, participant_id: str, name: str) -> MeetingState:
    """Add ``name`` to a known participant's former names, leaving the current one (a rename older than the
    name it has now, told late): whatever the participant was called is still scrubbed."""
    known = state.participants.get(participant_id)
    if known is None or not name or name == known.name or name in known.former_names:
        return state
    person = replace(known, former_names=(*known.former_names, name))
    return _bump(state, participants=_put(state.participants, participant_id, person))


def _renamed(person: Participant, name: str) -> Participant:
    if not name or name == person.name:
        return person
    former = tuple(dict.fromkeys((*person.former_names, person.name)))
    return replace(person, name=name, former_names=former)


def with_record(state: MeetingState, record: ConsentRecord) -> MeetingState:
    """Fold one ledger record in. Rejected records change nothing (they are evidence only)."""
    if record.outcome is not RecordOutcome.ACCEPTED:
        return state
    if (
        record.choice is ConsentChoice.GIVEN
        and record.indicated_by != record.subject
        and not record.delegation
    ):
        return state  # backstop for invariant 3, whatever wrote the record
    choice = _STATE_OF_CHOICE[record.choice]
    consents = dict(state.consents)
    for purpose in record.purposes:
        prior = consents.get((record.subject, purpose), UNKNOWN)
        restricted_at, restricted_channel = prior.restricted_at, prior.restricted_channel
        if choice is not ConsentState.GIVEN and (restricted_at is None or record.at > restricted_at):
            restricted_at, restricted_channel = record.at, record.channel
        entry = ConsentEntry(
            choice,
            record.record_id,
            record.expires_at,
            record.at,
            restricted_at,
            restricted_channel,
            record.notice_version,
        )
        consents[(record.subject, purpose)] = entry
    return _bump(state, consents=MappingProxyType(consents))


def with_records(state: MeetingState, records: Iterable[ConsentRecord]) -> MeetingState:
    for record in records:
        state = with_record(state, record)
    return state


def _put(mapping: Mapping[str, Participant], key: str, value: Participant) -> Mapping[str, Participant]:
    return MappingProxyType({**mapping, key: value})
