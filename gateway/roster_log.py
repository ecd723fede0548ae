"""The shared roster: who joined, left or was renamed, and when each meeting started and ended.

Several replicas behind a load balancer may each receive some of one meeting's events. Consent travels
through the ledger (``gateway.replication``); this log carries the rest of what a replica needs to decide
safely on events it did not receive: the roster, whose names it scrubs from other speakers' words and whose
presence gates an all-party meeting, the jurisdiction that picks the meeting's mode, and the end after
which every replica may forget the meeting. Segments held for consent stay with the replica that received
them (and are in the shared outbox, ``gateway.store.outbox.HELD``, for another to take over if it stops);
parts kept for meeting-end transcripts are in the shared outbox (``gateway.store.outbox.BATCHED``), and the
replica that receives ``meeting.ended`` sends the transcript. A single process on SQLite keeps this log
too, so that a restart does not forget who is in a meeting.

Each change is written before it takes effect where it was received, so what a replica acknowledged is
already readable by every other; the others fold it in when notified (``Gateway.apply_roster``). Names and
e-mail addresses are personal data: each change is stored sealed with the outbox keys (``gateway.sealing``),
with its change id as associated data, and deleted once the meeting is forgotten. What the database shows in
clear is a sequence number, the platform, the meeting id, the change id, the participant id (as the ledger
and the decision log do) and their placeholder number.

Order: sequence numbers are commit order (the store appends under a lock). A replica folds its own changes
at once, possibly before an older one from elsewhere reaches it, so ``fold`` gives the same result in any
order: presence, display name and jurisdiction are set by the newest change, names only accumulate (which
errs towards scrubbing more), and placeholder numbers are handed out by the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from gateway import meeting
from gateway.events import (
    MeetingEnded,
    MeetingStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRenamed,
)
from gateway.meeting import MeetingState
from gateway.sealing import Keyring

RosterEvent = ParticipantJoined | ParticipantLeft | ParticipantRenamed | MeetingStarted | MeetingEnded
ROSTER_EVENTS = (ParticipantJoined, ParticipantLeft, ParticipantRenamed, MeetingStarted, MeetingEnded)


@dataclass(frozen=True, slots=True)
class RosterChange:
    """One roster event as the shared log holds it: ``seq`` is its place in commit order."""

    seq: int
    change_id: str
    event: RosterEvent
    ordinal: int = 0
    """The participant's placeholder number in the meeting, given by the log on their first join or
    rename, so that every replica calls them the same; 0 for a leave or a start."""

    @property
    def subject(self) -> str:
        return subject_of(self.event)


@dataclass(frozen=True, slots=True)
class StoredChange:
    """A row of the shared log as the store returns it: the event still sealed."""

    seq: int
    change_id: str
    platform: str
    meeting_id: str
    ordinal: int
    sealed: bytes


class RosterStore(Protocol):
    """The shared log's storage (``PostgresStore``): appends under a lock, so sequence is commit order."""

    async def append_roster(
        self, change_id: str, platform: str, meeting_id: str, participant_id: str, names: bool, sealed: bytes
    ) -> tuple[int, int]:
        """Durably append; the new row's sequence number and ordinal. ``participant_id``: "" for the meeting;
        ``names``: whether the change names the participant (a join or rename), which gives them the ordinal
        they already have in the meeting, or the next one."""

    async def roster_of(self, platform: str, meeting_id: str) -> list[StoredChange]:
        """A meeting's rows in sequence order."""

    async def forget_roster(self, platform: str, meeting_id: str) -> None:
        """Delete a meeting's rows."""

    async def roster_meetings(self) -> list[tuple[str, str]]:
        """(platform, meeting id) of every meeting with rows."""


class SharedRoster:
    """Writes and reads the shared log for one gateway, sealing on the way in and opening on the way out."""

    def __init__(self, store: RosterStore, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring

    async def write(self, change_id: str, event: RosterEvent) -> RosterChange:
        """Append ``event`` (StorageError if it cannot be made durable; then it must not take effect)."""
        sealed = seal(self.keyring, change_id, event)
        names = isinstance(event, ParticipantJoined | ParticipantRenamed)
        seq, ordinal = await self.store.append_roster(
            change_id, event.platform, event.meeting_id, subject_of(event), names, sealed
        )
        return RosterChange(seq, change_id, event, ordinal)

    async def load(self, platform: str, meeting_id: str) -> list[RosterChange]:
        """Every change of the meeting so far, in sequence order."""
        return [opened(self.keyring, row) for row in await self.store.roster_of(platform, meeting_id)]

    async def forget(self, platform: str, meeting_id: str) -> None:
        await self.store.forget_roster(platform, meeting_id)

    async def meetings(self) -> list[tuple[str, str]]:
        """(platform, meeting id) of every meeting not forgotten yet."""
        return await self.store.roster_meetings()


_ASPECTS: dict[type, tuple[str, ...]] = {
    ParticipantJoined: ("presence", "name"),
    ParticipantLeft: ("presence",),
    ParticipantRenamed: ("name",),
    MeetingStarted: ("jurisdiction",),
    MeetingEnded: (),
}


class Latest:
    """For one meeting, the sequence number of the newest change folded in that set each participant's
    presence and display name, and the meeting's jurisdiction."""

    def __init__(self) -> None:
        self._newest: dict[tuple[str, str], int] = {}

    def newest(self, change: RosterChange, aspect: str) -> bool:
        """Whether no change as new or newer set ``aspect`` of the same participant (or meeting)."""
        return change.seq > self._newest.get((aspect, change.subject), 0)

    def set_any(self, change: RosterChange, aspect: str) -> bool:
        """Whether a change folded in so far set ``aspect`` of the same participant (or meeting)."""
        return (aspect, change.subject) in self._newest

    def took(self, change: RosterChange) -> None:
        """``change`` was folded in (here, or read back from the log)."""
        event = change.event
        if isinstance(event, MeetingStarted) and not event.jurisdiction:
            return  # a start that names no jurisdiction leaves the one named before
        for aspect in _ASPECTS[type(event)]:
            if self.newest(change, aspect):
                self._newest[(aspect, change.subject)] = change.seq


def fold(state: MeetingState, change: RosterChange, latest: Latest) -> MeetingState:
    """Fold a change read from the shared log into a meeting's state, whatever order changes arrive in.

    Presence (joined, left), display name (joined, renamed) and jurisdiction (started) are each set by the
    newest change that bears on them, by sequence number; an older change told late still adds the name it
    carries, since a name is never forgotten and scrubbing errs towards more. Someone new gets the
    placeholder number the log gave them. Folding a change twice changes nothing."""
    event = change.event
    present, named = latest.newest(change, "presence"), latest.newest(change, "name")
    jurisdiction = latest.newest(change, "jurisdiction")
    left_before = latest.set_any(change, "presence")  # for someone unknown, only a leave can have
    latest.took(change)
    if isinstance(event, MeetingEnded):
        return state  # the shell's to act on: the replica that received it sends meeting-end transcripts
    if isinstance(event, MeetingStarted):
        if not jurisdiction or not event.jurisdiction:
            return state
        return replace(state, jurisdiction=event.jurisdiction)
    pid = event.participant_id
    if isinstance(event, ParticipantLeft):
        return meeting.left(state, pid) if present else state
    if pid not in state.participants:
        joining = isinstance(event, ParticipantJoined)
        email = event.email if isinstance(event, ParticipantJoined) else None
        state = meeting.joined(state, pid, event.name, email, change.ordinal)
        # a leave told first found nobody to mark absent: a join is absent if that leave is newer, and a
        # rename (which says nothing of presence) is absent after any leave
        if (not present) if joining else left_before:
            state = meeting.left(state, pid)
        return state
    name_it = meeting.renamed if named else meeting.also_known_as
    state = name_it(state, pid, event.name)
    if isinstance(event, ParticipantJoined) and present:
        state = meeting.back(state, pid, event.email)
    return state


def subject_of(event: RosterEvent) -> str:
    """Whom a change is about: a participant id, or "" for the meeting itself."""
    return "" if isinstance(event, MeetingStarted | MeetingEnded) else event.participant_id


def seal(keyring: Keyring, change_id: str, event: RosterEvent) -> bytes:
    return keyring.seal(encode(event), _aad(change_id))


def opened(keyring: Keyring, row: StoredChange) -> RosterChange:
    """The row's change; SealingError if no configured key opens it (replicas must share outbox keys), and
    ValueError if what it holds is not a roster event."""
    event = decode(keyring.open(row.sealed, _aad(row.change_id)), row.platform, row.meeting_id)
    return RosterChange(row.seq, row.change_id, event, row.ordinal)


def encode(event: RosterEvent) -> bytes:
    """The event as JSON, without its platform and meeting (stored beside it) or a title (not needed)."""
    fields: dict[str, Any] = {"at": event.at.isoformat()}
    if isinstance(event, MeetingStarted):
        fields |= {"kind": "started", "jurisdiction": event.jurisdiction}
    elif isinstance(event, MeetingEnded):
        fields |= {"kind": "ended"}
    elif isinstance(event, ParticipantJoined):
        fields |= {
            "kind": "joined",
            "participant_id": event.participant_id,
            "name": event.name,
            "email": event.email,
            "email_verified": event.email_verified,
        }
    elif isinstance(event, ParticipantLeft):
        fields |= {"kind": "left", "participant_id": event.participant_id}
    else:
        fields |= {"kind": "renamed", "participant_id": event.participant_id, "name": event.name}
    return json.dumps(fields, separators=(",", ":")).encode()


def decode(data: bytes, platform: str, meeting_id: str) -> RosterEvent:
    try:
        fields = json.loads(data)
        kind, at = fields["kind"], datetime.fromisoformat(fields["at"])
        if kind == "started":
            return MeetingStarted(platform, meeting_id, at, jurisdiction=fields["jurisdiction"])
        if kind == "ended":
            return MeetingEnded(platform, meeting_id, at)
        pid = str(fields["participant_id"])
        if kind == "joined":
            email, verified = fields["email"], bool(fields["email_verified"])
            return ParticipantJoined(platform, meeting_id, pid, str(fields["name"]), at, email, verified)
        if kind == "left":
            return ParticipantLeft(platform, meeting_id, pid, at)
        if kind == "renamed":
            return ParticipantRenamed(platform, meeting_id, pid, str(fields["name"]), at)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a roster change ({type(exc).__name__})") from None
    raise ValueError("not a roster change (unknown kind)")


def _aad(change_id: str) -> bytes:
    return b"roster:" + change_id.encode()
