"""The decision: one segment, one destination, the meeting state, the policy and the time, in; a value out.

Pure and synchronous: no I/O, no clock (``now`` is passed in), no exceptions for outcomes. Only a
"given" consent of the speaker for every purpose of the destination forwards (invariant 1); text nobody
is credited with never does (invariant 2); names of everyone else who has not consented are scrubbed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from gateway.meeting import ConsentEntry, MeetingState
from gateway.model import Action, ConsentState, Decision, Outcome, Segment, Span
from gateway.names import NameScrubber, NameTarget
from gateway.policy.compiled import Destination, Policy

# Worst first: the first of these found among a participant's purposes decides.
_SEVERITY = (
    ConsentState.WITHDRAWN,
    ConsentState.REFUSED,
    ConsentState.EXPIRED,
    ConsentState.UNKNOWN,
)
_FAR_FUTURE = datetime.max


def decide(
    segment: Segment, state: MeetingState, policy: Policy, dest: Destination, now: datetime
) -> Outcome:
    """Decide what ``dest`` may receive of ``segment`` now."""
    if segment.private:
        return _verdict(segment, dest, policy, now, Action.DROP, ("private_message",), ("private_message",))
    if segment.participant_id is None:
        return _verdict(segment, dest, policy, now, Action.DROP, ("unattributed",), ("unattributed",))
    mode_rule = policy.mode_rule(state.jurisdiction)
    if policy.mode_for(state.jurisdiction) == "all_party":
        present = state.present_ids() | {segment.participant_id}
        return decide_all_party(segment, state, policy, dest, now, present)
    worst, record_ids = consent_of(state, segment.participant_id, dest, now)
    if worst is not ConsentState.GIVEN:
        return _not_given(segment, dest, policy, now, worst, record_ids, mode_rule)
    return _forward(segment, state, policy, dest, now, record_ids, (dest.rule_id, mode_rule))


def decide_all_party(
    segment: Segment,
    state: MeetingState,
    policy: Policy,
    dest: Destination,
    now: datetime,
    present: frozenset[str],
) -> Outcome:
    """All-party mode: forward only when everyone present when it was said has consented."""
    rules = (dest.rule_id, policy.mode_rule(state.jurisdiction))
    worst, record_ids = ConsentState.GIVEN, tuple[str, ...]()
    for pid in sorted(present):
        state_p, ids = consent_of(state, pid, dest, now)
        record_ids += ids
        if _SEVERITY_RANK[state_p] < _SEVERITY_RANK[worst]:
            worst = state_p
    if worst is ConsentState.UNKNOWN:
        return _hold_or_drop(segment, dest, policy, now, "all_party_pending", record_ids, rules)
    if worst is not ConsentState.GIVEN:
        return _verdict(segment, dest, policy, now, Action.DROP, (f"all_party_{worst}",), rules, record_ids)
    return _forward(segment, state, policy, dest, now, record_ids, rules)


_SEVERITY_RANK = {**{s: i for i, s in enumerate(_SEVERITY)}, ConsentState.GIVEN: len(_SEVERITY)}


def consent_of(
    state: MeetingState, participant_id: str, dest: Destination, now: datetime
) -> tuple[ConsentState, tuple[str, ...]]:
    """The participant's weakest consent across the destination's purposes, and the records behind it.

    Runs for every decision and before every delivery attempt, so the answer is kept in the state's cache
    until the state changes or one of the consents behind it expires."""
    key = ("consent", participant_id, dest.purposes, dest.notices)
    cached = state.cache.get(key)
    if cached is not None and now < cached[2]:
        return cached[0], cached[1]
    worst, rank, ids = ConsentState.GIVEN, _SEVERITY_RANK[ConsentState.GIVEN], tuple[str, ...]()
    until = _FAR_FUTURE.replace(tzinfo=now.tzinfo)
    notices = dict(zip(dest.purposes, dest.notices, strict=False))
    for purpose in dest.purposes:
        entry = state.consent(participant_id, purpose)
        current = entry.at(now)
        if current is ConsentState.GIVEN and not entry.under(notices.get(purpose)):
            current = ConsentState.UNKNOWN  # given to a notice since changed: to be asked again
        if _SEVERITY_RANK[current] < rank:
            worst, rank = current, _SEVERITY_RANK[current]
        if entry.record_id and entry.record_id not in ids:
            ids = (*ids, entry.record_id)
        if entry.expires_at is not None and _expires_after(entry, now):
            until = min(until, entry.expires_at)
    state.cache[key] = (worst, ids, until)
    return worst, ids


def _not_given(
    segment: Segment,
    dest: Destination,
    policy: Policy,
    now: datetime,
    worst: ConsentState,
    record_ids: tuple[str, ...],
    mode_rule: str,
) -> Outcome:
    rules = (dest.rule_id, mode_rule)
    if worst is ConsentState.UNKNOWN:
        return _hold_or_drop(segment, dest, policy, now, "consent_unknown", record_ids, rules)
    return _verdict(segment, dest, policy, now, Action.DROP, (f"consent_{worst}",), rules, record_ids)


def _hold_or_drop(
    segment: Segment,
    dest: Destination,
    policy: Policy,
    now: datetime,
    reason: str,
    record_ids: tuple[str, ...],
    rules: tuple[str, ...],
) -> Outcome:
    if policy.spec.pending.window_seconds > 0:
        hold_rules = (*rules, "pending.window_seconds")
        return _verdict(segment, dest, policy, now, Action.HOLD, (reason,), hold_rules, record_ids)
    return _verdict(
        segment, dest, policy, now, Action.DROP, (reason,), (*rules, "pending.window_seconds"), record_ids
    )


def _forward(
    segment: Segment,
    state: MeetingState,
    policy: Policy,
    dest: Destination,
    now: datetime,
    record_ids: tuple[str, ...],
    rules: tuple[str, ...],
) -> Outcome:
    scrubber = scrubber_for(state, policy, dest, now)
    text, spans = scrubber.scrub(segment.text) if scrubber is not None else (segment.text, ())
    if not spans:
        return _verdict(
            segment, dest, policy, now, Action.FORWARD, ("consent_given",), rules, record_ids, text=text,
            scrubbed_with=scrubber,
        )  # fmt: skip
    return _verdict(
        segment,
        dest,
        policy,
        now,
        Action.REDACT,
        ("consent_given", "names_scrubbed"),
        (*rules, "redaction.mentions"),
        record_ids,
        text=text,
        spans=spans,
        scrubbed_with=scrubber,
    )


def scrubber_for(
    state: MeetingState, policy: Policy, dest: Destination, now: datetime
) -> NameScrubber | None:
    """The name scrubber for everyone not consenting to ``dest`` now, compiled once per state change."""
    if not policy.spec.redaction.scrub_names:
        return None
    key = ("scrubber", policy.revision, dest.purposes)
    cached = state.cache.get(key)
    if cached is not None and now < cached[0]:
        return cached[1]  # type: ignore[no-any-return]
    scrubber = _build_scrubber(state, policy, dest, now)
    state.cache[key] = (_next_expiry(state, now), scrubber)
    return scrubber


def _build_scrubber(state: MeetingState, policy: Policy, dest: Destination, now: datetime) -> NameScrubber:
    remove = policy.spec.redaction.mentions == "remove"
    targets: list[NameTarget] = []
    others: list[tuple[str, ...]] = []
    for pid, person in state.participants.items():
        if consent_of(state, pid, dest, now)[0] is ConsentState.GIVEN:
            others.append(person.names)
        else:
            # invariant 9: an address is identifying too, also one the participant had earlier
            targets.append(
                NameTarget("[name]" if remove else person.placeholder, person.names, person.emails)
            )
    return NameScrubber.build(targets, others)


def _next_expiry(state: MeetingState, now: datetime) -> datetime:
    """When a given consent next lapses: a cached scrubber is valid until then."""
    upcoming = [e.expires_at for e in state.consents.values() if e.expires_at and _expires_after(e, now)]
    return min(upcoming, default=_FAR_FUTURE.replace(tzinfo=now.tzinfo))


def _expires_after(entry: ConsentEntry, now: datetime) -> bool:
    return entry.state is ConsentState.GIVEN and entry.expires_at is not None and entry.expires_at > now


def _verdict(
    segment: Segment,
    dest: Destination,
    policy: Policy,
    now: datetime,
    action: Action,
    reasons: tuple[str, ...],
    rules: tuple[str, ...],
    record_ids: tuple[str, ...] = (),
    *,
    text: str | None = None,
    spans: tuple[Span, ...] = (),
    scrubbed_with: object = None,
) -> Outcome:
    decision = Decision(
        decision_id=decision_id(segment, dest.id, action, now),
        meeting_id=segment.meeting_id,
        segment_id=segment.segment_id,
        destination=dest.id,
        action=action,
        at=now,
        policy_revision=policy.revision,
        reasons=reasons,
        rule_ids=rules,
        consent_record_ids=record_ids,
        redactions=spans,
        participant_id=segment.participant_id,
    )
    return Outcome(decision, text, segment, scrubbed_with)


def decision_id(segment: Segment, destination: str, action: Action, now: datetime, stage: str = "") -> str:
    """Deterministic in the decision's inputs, time included: a platform's redelivery of a segment is a new
    decision (it gets its own record), while retrying an event that failed to commit names the same one."""
    # the instant as a POSIX timestamp: the same for any time zone, and much cheaper than isoformat()
    raw = f"{segment.meeting_id}\0{segment.segment_id}\0{destination}\0{action}\0{now.timestamp()!r}\0{stage}"
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()
