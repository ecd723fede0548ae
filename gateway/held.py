"""Held segments at rest: what the outbox keeps of a segment held while its speaker's consent is pending (or
while the replica could not confirm its consent view), so that a restart or a stopped replica does not lose
words that are then consented within the window (invariant 7).

Pure. The shell compares the meeting state before and after each step: a hold that is new is written to the
outbox (``stored``, an item of kind ``held``, its segment sealed like any payload) and a hold that is gone is
closed (``decided``), both in the transaction that logs the step's decisions, so the store holds exactly
what memory holds once the event is acknowledged. A claimed item (its replica stopped; on SQLite, whatever
the last process left) becomes a hold again with ``opened``, keeping the time it was first held, so its
pending window still ends when it would have.

A hold's item key names its meeting, destination, segment, the time it was held and whether it is held
only for an unconfirmed consent view: a hold that becomes one of those is a new item, so a restart restores
it as it last was.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway import engine
from gateway.delivery.items import Item
from gateway.engine import Emit
from gateway.meeting import Held, MeetingState, Part
from gateway.model import ContentKind, Segment
from gateway.store.outbox import DECIDED, HELD, Finished

_Ident = tuple[str, str, datetime, bool]


def _ident(held: Held) -> _Ident:
    return (held.segment.segment_id, held.destination, held.since, held.stale)


def item_key(meeting_id: str, held: Held) -> str:
    stale = "stale" if held.stale else "pending"
    return engine.item_key(
        meeting_id, held.destination, held.segment.segment_id, HELD, held.since.isoformat(), stale
    )


def stored(platform: str, before: MeetingState | None, after: MeetingState) -> list[Emit]:
    """Holds ``after`` has that ``before`` did not, as emissions for the outbox (never sent)."""
    old = before.held if before is not None else ()
    if after.held is old or not after.held:
        return []
    known = {_ident(h) for h in old}
    meeting_id = after.meeting_id
    return [
        Emit(held.destination, meeting_id, "held", item_key(meeting_id, held), (_part(platform, held),))
        for held in after.held
        if _ident(held) not in known
    ]


def decided(before: MeetingState | None, after: MeetingState, at: float) -> list[Finished]:
    """Holds ``before`` had that ``after`` has not (released, dropped or expired: the step's decisions say
    which), as outcomes that close their items and clear their text."""
    if before is None or not before.held or after.held is before.held:
        return []
    kept = {_ident(h) for h in after.held}
    return [
        Finished(item_key(before.meeting_id, held), DECIDED, None, 0, None, (), at)
        for held in before.held
        if _ident(held) not in kept
    ]


def _part(platform: str, held: Held) -> Part:
    segment = held.segment
    payload: dict[str, Any] = {
        "platform": platform,
        "text": segment.text,
        "at": segment.at.isoformat(),
        "start": segment.start,
        "end": segment.end,
        "kind": str(segment.kind),
        "since": held.since.isoformat(),
        "present": sorted(held.present),
        "stale": held.stale,
    }
    return Part(segment.segment_id, segment.participant_id or "", payload)


def opened(item: Item) -> tuple[str, Held]:
    """(platform, hold) of a claimed ``held`` item; KeyError, TypeError or ValueError if it is not one."""
    if item.kind != HELD or len(item.parts) != 1:
        raise ValueError("not a held item")
    part = item.parts[0]
    p: Mapping[str, Any] = part.payload
    segment = Segment(
        meeting_id=item.meeting_id,
        segment_id=part.segment_id,
        participant_id=part.participant_id or None,
        text=_str(p["text"]),
        at=datetime.fromisoformat(_str(p["at"])),
        start=_number(p["start"]),
        end=_number(p["end"]),
        kind=ContentKind(p["kind"]),
    )
    present = p["present"]
    if not isinstance(present, list) or not all(isinstance(x, str) for x in present):
        raise TypeError("present")
    since = datetime.fromisoformat(_str(p["since"]))
    return _str(p["platform"]), Held(segment, item.destination, since, frozenset(present), p["stale"] is True)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)
