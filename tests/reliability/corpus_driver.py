"""Corpus meetings as scripts of API events with chosen decliners, and the verdict on what a destination got.

A ``Script`` is one corpus meeting turned into what a platform would send the gateway: everyone joins, each
speaker gives or refuses consent for ``summary`` (about one in four refuses, seeded per meeting), then the
turns follow in order as segments; a few consenting speakers withdraw at a turn of their own partway
through. The script knows, per segment, what must happen to it: ``must`` reach the destination (a speaker
who consented and never withdrew), ``never`` reach it (refusers, unattributed turns, anything a speaker said
after withdrawing), or ``may`` (said before a withdrawal: delivered, or purged from the outbox by it).

``verdict`` compares that with what a ``FakeAIService`` accepted and counts decliner names left in what
consenting speakers said. Everything it returns is counts: no transcript text leaves this module.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import load_corpus, roster
from gateway.names import parse_display_name
from tests.fakes.ai_service import Received
from tests.web.harness import consent, joined, segment

SEED = 2026
REFUSE_SHARE = 0.25
WITHDRAW_SHARE = 0.08
"""Of the speakers who consent, the share who withdraw at one of their own turns."""
BATCH_EVENTS = 40
BATCH_BYTES = 256 * 1024
NAMED_SOURCES = ("earnings21", "qmsum/committee")
"""Sources whose display names are people's names (Earnings-21 ``meta.speaker_names``, committee labels);
elsewhere labels are roles ("Project Manager", "PhD A") or numbers and name survival is not counted."""


def source_of(meeting_id: str) -> str:
    """``qmsum/product``, ``earnings21``...: the corpus source, as docs/reliability.md groups it."""
    parts = meeting_id.split("/")
    return "/".join(parts[:2]) if parts[0] == "qmsum" else parts[0]


def load(path: Path, full: bool) -> list[dict[str, Any]]:
    """Every meeting (full), or the shortest meeting of each source (a few hundred turns in all)."""
    meetings = load_corpus(path)
    if full:
        return meetings
    shortest: dict[str, dict[str, Any]] = {}
    for raw in meetings:
        src = source_of(raw["meeting_id"])
        if src not in shortest or len(raw["turns"]) < len(shortest[src]["turns"]):
            shortest[src] = raw
    return list(shortest.values())


@dataclass
class Script:
    meeting_id: str
    source: str
    names: dict[str, str]
    """participant id -> display name."""
    refusers: set[str]
    withdrawn_at: dict[str, int]
    """participant id -> index of the turn at which (just before it) that speaker withdraws."""
    batches: list[list[dict[str, Any]]]
    must: set[str] = field(default_factory=set)
    never: set[str] = field(default_factory=set)
    may: set[str] = field(default_factory=set)
    turns: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    """segment id -> (participant id, original text), for counting names before scrubbing."""

    @property
    def segments(self) -> int:
        return len(self.turns)


def script(raw: dict[str, Any], seed: int = SEED) -> Script:
    mid = raw["meeting_id"]
    people = roster(raw)
    rng = random.Random(f"{seed}:{mid}")
    refusers = {pid for pid, _ in people.values() if rng.random() < REFUSE_SHARE}
    turns_of: dict[str, list[int]] = {}
    for n, turn in enumerate(raw["turns"]):
        if turn["speaker"]:
            turns_of.setdefault(people[turn["speaker"]][0], []).append(n)
    withdrawn_at = {
        pid: rng.choice(own[1:])
        for pid, own in sorted(turns_of.items())
        if pid not in refusers and len(own) > 1 and rng.random() < WITHDRAW_SHARE
    }
    opening = [joined(pid, name, mid) for pid, name in people.values()]
    opening += [
        consent(pid, "refused" if pid in refusers else "given", meeting=mid) for pid, _ in people.values()
    ]
    plan = Script(mid, source_of(mid), dict(people.values()), refusers, withdrawn_at, [])
    events = list(opening)
    for n, turn in enumerate(raw["turns"]):
        pid = people[turn["speaker"]][0] if turn["speaker"] else None
        sid = f"t{n}"
        if pid is not None and withdrawn_at.get(pid) == n:
            events.append(consent(pid, "withdrawn", meeting=mid))
        events.append(segment(sid, pid, turn["text"], mid))
        plan.turns[sid] = (pid, turn["text"])
        _expect(plan, sid, pid, n)
    plan.batches = list(_batches(events))
    return plan


def _expect(plan: Script, sid: str, pid: str | None, n: int) -> None:
    if pid is None or pid in plan.refusers:
        plan.never.add(sid)
    elif pid not in plan.withdrawn_at:
        plan.must.add(sid)
    elif n < plan.withdrawn_at[pid]:
        plan.may.add(sid)
    else:
        plan.never.add(sid)


def _batches(events: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Events in order, cut into batches under both the event and the byte limit."""
    batch: list[dict[str, Any]] = []
    size = 0
    for one in events:
        length = len(json.dumps(one))
        if batch and (len(batch) >= BATCH_EVENTS or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(one)
        size += length
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------ the verdict


def fold(text: str) -> str:
    """Case- and diacritic-insensitive form for counting names as whole words."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@dataclass(frozen=True)
class NameForms:
    """The whole-word patterns of one decliner: the full name, and the first and last name tokens."""

    full: re.Pattern[str] | None
    tokens: re.Pattern[str] | None


def name_forms(display: str) -> NameForms:
    """Name parts as ``gateway.names`` parses a display name (titles, ridings, roles removed)."""
    parts = [fold(p) for p in parse_display_name(display).parts]
    if not parts:
        return NameForms(None, None)
    full = _whole(" ".join(parts)) if len(parts) > 1 else None
    return NameForms(full, _whole(*sorted({parts[0], parts[-1]})))


def _whole(*words: str) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


@dataclass
class Verdict:
    """What happened to a set of scripts at one destination: counts only."""

    meetings: int = 0
    segments: int = 0
    must: int = 0
    never: int = 0
    may: int = 0
    delivered: int = 0
    leaked: int = 0
    lost: int = 0
    duplicated: int = 0
    """Segments that arrived under more than one idempotency key (each key counted once)."""
    unexpected: int = 0
    """Delivered payloads naming a meeting or segment no script sent, or another speaker than it had."""
    speaker_leaks: int = 0
    """Payloads whose ``speaker`` metadata is a decliner's display name (not the speaker's own)."""
    may_delivered: int = 0
    refusers: int = 0
    withdrawers: int = 0
    names: dict[str, Counter[str]] = field(default_factory=dict)
    """source -> counts: ``full_before``/``full_after`` (full-name mentions of decliners in consenting
    speakers' delivered turns, before and after the gateway), ``token_before``/``token_after`` (first or
    last name tokens), and ``turns`` (delivered turns looked at)."""


def verdict(scripts: Iterable[Script], received: Sequence[Received]) -> Verdict:
    """Judge what a destination received against the scripts that produced it.

    A leak is any segment payload that reached the destination, whatever it answered (as the fault suite's
    verifier counts); arrival is a 2xx, counted once per idempotency key; a duplicate is a segment that
    reached it under more than one idempotency key."""
    plans = {p.meeting_id: p for p in scripts}
    out = Verdict(meetings=len(plans))
    reached: dict[tuple[str, str], set[str | None]] = {}
    arrived: set[tuple[str, str]] = set()
    accepted = {id(r) for r in _first_per_key(received)}
    for request in received:
        if request.body is None:
            continue  # refused by the fake's signature check: never processed
        for payload in request.segment_payloads():
            plan = plans.get(str(payload.get("meeting_id")))
            sid = str(payload.get("segment_id"))
            if plan is None or sid not in plan.turns or payload.get("participant_id") != plan.turns[sid][0]:
                out.unexpected += 1
                continue
            reached.setdefault((plan.meeting_id, sid), set()).add(request.key)
            if _names_a_decliner(plan, payload):
                out.speaker_leaks += 1
            if id(request) in accepted and (plan.meeting_id, sid) not in arrived:
                arrived.add((plan.meeting_id, sid))
                if sid in plan.must:
                    _count_names(out, plan, sid, str(payload.get("text", "")))
    for plan in plans.values():
        got = {sid for (mid, sid) in arrived if mid == plan.meeting_id}
        touched = {sid for (mid, sid) in reached if mid == plan.meeting_id}
        out.segments += plan.segments
        out.must += len(plan.must)
        out.never += len(plan.never)
        out.may += len(plan.may)
        out.delivered += len(got)
        out.leaked += len(touched & plan.never)
        out.lost += len(plan.must - got)
        out.may_delivered += len(got & plan.may)
        out.refusers += len(plan.refusers)
        out.withdrawers += len(plan.withdrawn_at)
    out.duplicated = sum(1 for keys in reached.values() if len(keys) > 1)
    return out


def _names_a_decliner(plan: Script, payload: dict[str, Any]) -> bool:
    """The payload's ``speaker`` is a decliner's display name, and not the speaker's own (one person can
    be two participants of a call, one consenting and one refusing, as in earnings21/4363614)."""
    speaker = payload.get("speaker")
    own = plan.names.get(str(payload.get("participant_id")))
    return speaker != own and speaker in {plan.names[r] for r in plan.refusers}


def _first_per_key(received: Sequence[Received]) -> list[Received]:
    """Requests answered 2xx, the first per idempotency key (``FakeAIService.accepted``)."""
    seen: set[str | None] = set()
    first = []
    for request in received:
        if request.ok and request.key not in seen:
            seen.add(request.key)
            first.append(request)
    return first


def _count_names(out: Verdict, plan: Script, sid: str, delivered: str) -> None:
    if plan.source not in NAMED_SOURCES:
        return
    counts = out.names.setdefault(plan.source, Counter())
    counts["turns"] += 1
    before, after = fold(plan.turns[sid][1]), fold(delivered)
    shared = _consenters_name_parts(plan)
    for refuser in plan.refusers:
        forms = _forms(plan.names[refuser])
        for kind, pattern in (("full", forms.full), ("token", forms.tokens)):
            if pattern is not None:
                counts[f"{kind}_before"] += len(pattern.findall(before))
                left = pattern.findall(after)
                counts[f"{kind}_after"] += len(left)
                counts[f"{kind}_after_shared"] += sum(1 for word in left if word in shared)


def _consenters_name_parts(plan: Script) -> set[str]:
    """Folded name parts of everyone in the meeting who did not refuse (what a scrubber must leave)."""
    return {
        fold(part)
        for pid, name in plan.names.items()
        if pid not in plan.refusers
        for part in parse_display_name(name).parts
    }


_FORMS: dict[str, NameForms] = {}


def _forms(display: str) -> NameForms:
    if display not in _FORMS:
        _FORMS[display] = name_forms(display)
    return _FORMS[display]
