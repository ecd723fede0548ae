"""Whom a platform delivery names, and what the roster must be told of them before its events.

An utterance, a chat message, an update or a leave names its participant (a name, an e-mail). The join may
have been missed (a subscription made mid-meeting, a lost delivery, another endpoint) or the person renamed
themselves where no event says so, and a name or e-mail the roster lacks is never scrubbed from others'
words. So an adapter hands the person a delivery names to ``announce``, which says what to tell the roster
first: someone it lacks joins and is asked for consent like any joiner; for someone known, only a new
e-mail (a join that keeps the known name) or a new name (a rename) is told, and nobody is asked again.
Pure; used by the Recall and Zoom adapters.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.events import MeetingEvent, ParticipantJoined, ParticipantRenamed
from gateway.meeting import MeetingState


def named(joined: ParticipantJoined) -> ParticipantJoined | None:
    """A participant without a name or e-mail gives nothing to scrub: nobody to announce."""
    return joined if joined.name or joined.email else None


def announce(state: MeetingState | None, named: ParticipantJoined) -> tuple[MeetingEvent | None, bool]:
    """What the roster must be told about the participant a delivery names (``named``), and whether to ask
    them for consent. Nothing, for someone known under that name and e-mail (now or earlier): an utterance
    or update of a known participant changes nothing, and asks nobody again. Presence is left alone unless
    an e-mail is new (a late utterance, after a leave, must not bring anyone back)."""
    known = state.participants.get(named.participant_id) if state is not None else None
    if known is None:
        return named, True
    new_name = named.name not in ("", *known.names)
    if named.email and named.email not in known.emails:
        # an empty name leaves the known one (meeting.joined and roster_log.fold both keep it)
        return replace(named, name=named.name if new_name else ""), False
    if new_name:
        renamed = ParticipantRenamed(
            named.platform, named.meeting_id, named.participant_id, named.name, named.at
        )
        return renamed, False
    return None, False
