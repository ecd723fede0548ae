"""What the stateful service test expects: who may be forwarded where, and which segments must arrive.

A plain model of the platform's side of the story, fed only with what the gateway acknowledged (a 200 to
``POST /v1/events``), and a verifier that compares it with what each fake AI service received. It works on
segment ids and participant ids alone: it never looks at, keeps or reports transcript text.

The rules it encodes (DESIGN.md invariants 1, 4 and 7, under a policy with no pending window):
- a segment may reach destination D only if, when it was acknowledged, its speaker's latest accepted
  choice was ``given`` for every purpose of D; otherwise it must never reach D at all;
- once a refusal or withdrawal touching a purpose of D is acknowledged, nothing of that speaker that was
  acknowledged before it may reach D afterwards (queued content is purged), even if they consent again;
- every other segment acknowledged for D must arrive at D, exactly once after de-duplication by
  idempotency key (and never under two different keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Request(Protocol):
    """What the verifier reads of one request a fake AI service recorded (``tests.fakes.ai_service``)."""

    @property
    def key(self) -> str | None: ...

    @property
    def body(self) -> Any: ...

    @property
    def seq(self) -> int: ...

    @property
    def ok(self) -> bool: ...

    def segment_payloads(self) -> list[dict[str, Any]]: ...


@dataclass
class Said:
    """One acknowledged segment and what each destination may do with it."""

    segment_id: str
    meeting_id: str
    participant_id: str
    required: set[str] = field(default_factory=set)
    """Destinations that must receive it (consented when acknowledged, not restricted since; for a
    meeting-end destination, once its meeting has ended)."""
    awaiting: set[str] = field(default_factory=set)
    """Meeting-end destinations whose transcript must hold it if nothing restricts it before the end."""
    forbidden_from: dict[str, int] = field(default_factory=dict)
    """Destination -> the request count of that destination from which this segment must not appear in
    any request (0: never allowed there at all)."""
    on_the_wire: dict[str, set[str]] = field(default_factory=dict)
    """Destination -> idempotency keys of attempts carrying this segment that were already on the wire when
    the restriction was acknowledged: each may still land once after it (it cannot be recalled), never
    be tried again."""


@dataclass(frozen=True)
class Problem:
    """A broken invariant, by ids only."""

    kind: str
    """``leak``, ``lost``, ``duplicate`` or ``stranger`` (a segment the model never acknowledged)."""
    destination: str
    segment_id: str
    participant_id: str

    def __str__(self) -> str:
        return f"{self.kind}: segment {self.segment_id} of {self.participant_id} at {self.destination}"


class Model:
    """Consent per (meeting, participant, purpose) and every acknowledged segment."""

    def __init__(self, destinations: Mapping[str, Sequence[str]], at_end: Iterable[str] = ()) -> None:
        """``at_end``: the destinations with ``delivery: meeting_end`` (a transcript at the meeting's end)."""
        self.destinations = {dest: tuple(purposes) for dest, purposes in destinations.items()}
        self.at_end = frozenset(at_end)
        self.choices: dict[tuple[str, str, str], str] = {}
        self.said: dict[str, Said] = {}

    def allows(self, meeting_id: str, participant_id: str, destination: str) -> bool:
        return all(
            self.choices.get((meeting_id, participant_id, purpose)) == "given"
            for purpose in self.destinations[destination]
        )

    def acknowledged_segment(self, segment_id: str, meeting_id: str, participant_id: str) -> Said:
        said = Said(segment_id, meeting_id, participant_id)
        for dest in self.destinations:
            if not self.allows(meeting_id, participant_id, dest):
                said.forbidden_from[dest] = 0
            elif dest in self.at_end:
                said.awaiting.add(dest)
            else:
                said.required.add(dest)
        self.said[segment_id] = said
        return said

    def acknowledged_consent(
        self,
        meeting_id: str,
        participant_id: str,
        purposes: Iterable[str],
        decision: str,
        counts: Mapping[str, int],
        on_the_wire: Mapping[tuple[str, str], set[str]] | None = None,
    ) -> list[tuple[str, str]]:
        """An accepted consent record; ``counts`` is each destination's request count when it was
        acknowledged (a restriction forbids what came before it from that point on), ``on_the_wire``
        the idempotency keys of attempts then in flight, by (destination, segment id). Returns the
        (segment id, destination) pairs it took away: they had to arrive, now they must not any more."""
        on_the_wire = on_the_wire or {}
        purposes = tuple(purposes)
        for purpose in purposes:
            self.choices[(meeting_id, participant_id, purpose)] = decision
        if decision == "given":
            return []
        touched = [d for d, theirs in self.destinations.items() if set(theirs) & set(purposes)]
        taken: list[tuple[str, str]] = []
        for said in self.said.values():
            if said.meeting_id != meeting_id or said.participant_id != participant_id:
                continue
            for dest in touched:
                if dest in said.required or dest in said.awaiting:
                    said.required.discard(dest)
                    said.awaiting.discard(dest)
                    taken.append((said.segment_id, dest))
                if dest not in said.forbidden_from:
                    said.forbidden_from[dest] = counts[dest]
                    said.on_the_wire[dest] = set(on_the_wire.get((dest, said.segment_id), ()))
        return taken

    def acknowledged_end(self, meeting_id: str) -> None:
        """The meeting ended: its transcripts must hold every part still awaited."""
        for said in self.said.values():
            if said.meeting_id == meeting_id:
                said.required |= said.awaiting
                said.awaiting.clear()

    def leaks(self, destination: str, received: Iterable[Request]) -> list[Problem]:
        """Segments that reached ``destination`` when they must not have (any request the fake verified,
        whatever it answered: the content reached it), and segments the model never acknowledged."""
        problems: list[Problem] = []
        landed: dict[str, set[str | None]] = {}
        for request in sorted(received, key=lambda r: r.seq):
            if request.body is None:
                continue  # refused by the fake's signature check: never read
            for payload in request.segment_payloads():
                sid, pid = str(payload.get("segment_id")), str(payload.get("participant_id"))
                said = self.said.get(sid)
                if said is None or said.participant_id != pid:
                    problems.append(Problem("stranger", destination, sid, pid))
                    continue
                start = said.forbidden_from.get(destination)
                if start is None or request.seq < start:
                    continue
                key = _key_of(request, payload)
                landing = said.on_the_wire.get(destination, set()) - landed.setdefault(sid, set())
                if key in landing:
                    landed[sid].add(key)  # the attempt already on the wire, landing late: once
                    continue
                problems.append(Problem("leak", destination, sid, pid))
        return problems

    def duplicates(self, destination: str, received: Iterable[Request]) -> list[Problem]:
        """Segments sent under more than one idempotency key (de-duplication could not catch them)."""
        keys: dict[str, set[str | None]] = {}
        speakers: dict[str, str] = {}
        for request in received:
            if request.body is None:
                continue
            for payload in request.segment_payloads():
                sid = str(payload.get("segment_id"))
                keys.setdefault(sid, set()).add(_key_of(request, payload))
                speakers[sid] = str(payload.get("participant_id"))
        return [
            Problem("duplicate", destination, sid, speakers[sid]) for sid, ks in keys.items() if len(ks) > 1
        ]

    @staticmethod
    def seen(received: Iterable[Request]) -> set[str]:
        """Segment ids in any request the fake verified (whatever it answered)."""
        return {
            str(payload.get("segment_id"))
            for request in received
            if request.body is not None
            for payload in request.segment_payloads()
        }

    def lost(self, destination: str, received: Iterable[Request]) -> list[Problem]:
        """Segments ``destination`` must have (call once delivery settled) that no 2xx answer covers."""
        arrived = {
            str(payload.get("segment_id"))
            for request in received
            if request.ok and request.body is not None
            for payload in request.segment_payloads()
        }
        return [
            Problem("lost", destination, said.segment_id, said.participant_id)
            for said in self.said.values()
            if destination in said.required and said.segment_id not in arrived
        ]

    def counts(self) -> dict[str, int]:
        """Acknowledged segments: how many each destination must receive, and how many it must not."""
        return {
            "segments": len(self.said),
            "required": sum(len(s.required) for s in self.said.values()),
            "forbidden": sum(len(s.forbidden_from) for s in self.said.values()),
        }


def _key_of(request: Request, payload: dict[str, Any]) -> str | None:
    """The key a destination deduplicates a segment by: its own, inside a batch; else the request's."""
    own = payload.get("idempotency_key")
    return str(own) if own is not None else request.key
