"""The segment pipeline and the fold: events in, new meeting state plus decisions and emissions out.

Pure: the shell (``runtime``) or the offline replayer supplies time and record ids, writes consent records
durably *before* folding them in with ``on_record``, logs every decision, and hands emissions to delivery.
Live serving and ``consent-gateway replay`` run these same functions, so they forward the same content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from gateway import meeting
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
from gateway.meeting import Held, MeetingState, Part
from gateway.model import (
    Action,
    ConsentChoice,
    ConsentRecord,
    ConsentState,
    Decision,
    Outcome,
    RecordOutcome,
    Segment,
)
from gateway.names import NameScrubber
from gateway.policy.compiled import Destination, Policy
from gateway.policy.decide import consent_of, decide, decide_all_party, decision_id, scrubber_for

STALE = "consent_view_stale"
"""Why a segment that would leave is held: this replica cannot confirm its consent view is fresh (another
replica may have recorded a withdrawal it has not seen yet; ``gateway.replication``)."""
STALE_RULE = "replication.consent_view"
STALE_HOLD_LIMIT = timedelta(minutes=5)
"""How long a segment held only for a stale view waits for the view to be confirmed (at least the policy's
pending window); after it, it is dropped with a logged reason. Count and size are bounded like any hold."""


@dataclass(frozen=True, slots=True)
class Emit:
    """Content to send to one destination: one segment (streamed) or a whole transcript (meeting end)."""

    destination: str
    meeting_id: str
    kind: Literal["segment", "transcript", "erasure", "batched", "held"]
    """``batched``: one part kept for a meeting-end transcript; ``held``: a segment held while consent is
    pending (``gateway.held``). Both are made by the shell, stored, never sent."""
    idempotency_key: str
    parts: tuple[Part, ...]
    scrubbed_with: object = field(default=None, repr=False, compare=False)
    """The name scrubber the parts' text went through (``Outcome.scrubbed_with``), None if not known."""


@dataclass(frozen=True, slots=True)
class Step:
    state: MeetingState
    decisions: tuple[Decision, ...] = ()
    emits: tuple[Emit, ...] = ()


def new_meeting(platform: str, meeting_id: str) -> MeetingState:
    return MeetingState(platform=platform, meeting_id=meeting_id)


def on_event(
    state: MeetingState, event: MeetingEvent, policy: Policy, now: datetime, *, view_fresh: bool = True
) -> Step:
    """Fold a non-consent event. Consent goes through ``evaluate_consent`` and ``on_record``.

    ``view_fresh`` False: the shell cannot confirm its consent view is current, so nothing is forwarded;
    what would have been is held (``STALE``) until ``tick`` is told the view is fresh again."""
    if isinstance(event, SegmentReceived):
        return on_segment(state, event.segment, policy, now, view_fresh=view_fresh)
    if isinstance(event, ParticipantJoined):
        return Step(meeting.joined(state, event.participant_id, event.name, event.email))
    if isinstance(event, ParticipantLeft):
        return Step(meeting.left(state, event.participant_id))
    if isinstance(event, ParticipantRenamed):
        return Step(meeting.renamed(state, event.participant_id, event.name))
    if isinstance(event, MeetingStarted):
        return Step(replace(state, jurisdiction=event.jurisdiction or state.jurisdiction))
    if isinstance(event, MeetingEnded):
        return on_meeting_end(state, policy, now)
    raise TypeError(f"on_event does not take {type(event).__name__}")


# --- segments -------------------------------------------------------------------------------------------


def on_segment(
    state: MeetingState, segment: Segment, policy: Policy, now: datetime, *, view_fresh: bool = True
) -> Step:
    decisions: list[Decision] = []
    emits: list[Emit] = []
    for dest in policy.destinations:
        outcome = decide(segment, state, policy, dest, now)
        if not view_fresh:
            outcome = _unconfirmed(outcome, dest, now)
        if outcome.decision.action is Action.HOLD:
            state, outcome = _hold(state, outcome, policy, dest, now)
        decisions.append(outcome.decision)
        state = _route(state, outcome, dest, emits)
    return Step(state, tuple(decisions), tuple(emits))


def _hold(
    state: MeetingState, outcome: Outcome, policy: Policy, dest: Destination, now: datetime
) -> tuple[MeetingState, Outcome]:
    segment = outcome.segment
    assert segment is not None
    full = _full(state, segment, policy)
    if full is not None:
        return state, _redecided(outcome, Action.DROP, ("hold_full",), full)
    stale = outcome.decision.reasons == (STALE,)
    held = Held(segment, dest.id, now, state.present_ids() | {segment.participant_id or ""}, stale)
    return replace(state, held=(*state.held, held)), outcome


def _unconfirmed(outcome: Outcome, dest: Destination, now: datetime) -> Outcome:
    """A forward decided on a consent view that may be stale becomes a hold: nothing leaves on it."""
    if outcome.decision.action not in (Action.FORWARD, Action.REDACT) or outcome.segment is None:
        return outcome
    decision = replace(
        outcome.decision,
        decision_id=decision_id(outcome.segment, dest.id, Action.HOLD, now, STALE),
        action=Action.HOLD,
        reasons=(STALE,),
        rule_ids=(STALE_RULE,),
        redactions=(),
    )
    return replace(outcome, decision=decision, text=None)


def _over(held: Held, policy: Policy, now: datetime) -> bool:
    """Whether a hold's time is up: at the end of its window exactly, whichever path asks (a tick, or a
    consent re-deciding it), so that the same consent at the same moment gets the same answer."""
    return now - held.since >= _hold_limit(held, policy)


def _hold_limit(held: Held, policy: Policy) -> timedelta:
    window = timedelta(seconds=policy.spec.pending.window_seconds)
    return max(window, STALE_HOLD_LIMIT) if held.stale else window


def _full(state: MeetingState, segment: Segment, policy: Policy) -> str | None:
    """The bound holding ``segment`` would pass (the rule a drop cites), None if there is room. Bounds count
    segments, not (segment, destination) pairs: a segment held for two destinations is one."""
    held = {h.segment.segment_id: h.segment for h in state.held}
    if segment.segment_id in held:
        return None
    pending = policy.spec.pending
    mine = sum(1 for s in held.values() if s.participant_id == segment.participant_id)
    if mine >= pending.max_segments_per_participant:
        return "pending.max_segments_per_participant"
    if sum(len(s.text) for s in held.values()) + len(segment.text) > pending.max_chars_per_meeting:
        return "pending.max_chars_per_meeting"
    return None


def _route(state: MeetingState, outcome: Outcome, dest: Destination, emits: list[Emit]) -> MeetingState:
    """Forwarded content goes out now (stream; batched, which delivery groups into requests) or into the
    meeting's batch (meeting end)."""
    if outcome.decision.action not in (Action.FORWARD, Action.REDACT) or outcome.segment is None:
        return state
    part = _part(state, outcome, dest)
    if dest.delivery != "meeting_end":
        key = _key(state.meeting_id, dest.id, outcome.segment.segment_id)
        emits.append(Emit(dest.id, state.meeting_id, "segment", key, (part,), outcome.scrubbed_with))
        return state
    batch = (*state.batches.get(dest.id, ()), part)
    return replace(state, batches=MappingProxyType({**state.batches, dest.id: batch}))


def _part(state: MeetingState, outcome: Outcome, dest: Destination) -> Part:
    segment = outcome.segment
    assert segment is not None and segment.participant_id is not None
    speaker = state.participants.get(segment.participant_id)
    payload: dict[str, Any] = {
        "meeting_id": segment.meeting_id,
        "segment_id": segment.segment_id,
        "participant_id": segment.participant_id,
        "kind": str(segment.kind),
        "text": outcome.text,
        "start": segment.start,
        "end": segment.end,
        "at": segment.at.isoformat(),
        "decision_id": outcome.decision.decision_id,
        "policy_revision": outcome.decision.policy_revision,
    }
    if dest.include_speaker_name:
        # the label is scrubbed like the words: a shared device's name ("Room 4 (Carol + Dana)") may name
        # someone who does not consent
        label = speaker.name if speaker else None
        scrubber = outcome.scrubbed_with
        if label is not None and isinstance(scrubber, NameScrubber):
            label = _scrubbed_label(state, scrubber, label)
        payload["speaker"] = label
    return Part(segment.segment_id, segment.participant_id, MappingProxyType(payload))


def _scrubbed_label(state: MeetingState, scrubber: NameScrubber, label: str) -> str:
    """``label`` scrubbed, kept in the state's cache with the scrubber it went through: a speaker's every
    segment carries the same label, and the state (its cache with it) changes whenever the scrubber does."""
    key = ("speaker_label", label)
    cached = state.cache.get(key)
    if cached is not None and cached[0] is scrubber:
        return str(cached[1])
    scrubbed = scrubber.scrub(label)[0]
    state.cache[key] = (scrubber, scrubbed)
    return scrubbed


SCRUBBED_FIELDS = ("text", "speaker")
"""The fields of a part's payload that may name someone: its words and its speaker's label."""


def _scrubbed_fields(scrubber: NameScrubber, payload: Any) -> tuple[dict[str, str], int]:
    """The fields of ``payload`` that change when scrubbed by ``scrubber``, and how many names went."""
    changed: dict[str, str] = {}
    names = 0
    for name in SCRUBBED_FIELDS:
        value = payload.get(name)
        if isinstance(value, str):
            scrubbed, spans = scrubber.scrub(value)
            if spans:
                changed[name] = scrubbed
                names += len(spans)
    return changed, names


def item_key(*parts: str) -> str:
    """An idempotency key from the ids that make an item what it is."""
    return _key(*parts)


def _key(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


# --- consent --------------------------------------------------------------------------------------------


def evaluate_consent(
    state: MeetingState,
    event: ConsentSubmitted,
    policy: Policy,
    record_id: str,
    now: datetime | None = None,
) -> ConsentRecord:
    """Turn a consent request into the ledger record it deserves: accepted, or rejected with a reason.
    ``now``: when it is received (None: not checked, as in a replay of recorded events)."""
    reason, delegation = _refusal(event, policy)
    if reason is None and now is not None and _from_the_future(event, now):
        reason = "future_time"
    if reason is None and _superseded(state, event):
        reason = "superseded"
    expires = None
    max_age = policy.spec.consent.max_age_days
    if event.choice is ConsentChoice.GIVEN and max_age is not None:
        expires = event.at + timedelta(days=max_age)
    if event.choice is ConsentChoice.GIVEN and event.expires_at is not None:
        expires = min(event.expires_at, expires or event.expires_at)
    notice = event.notice_version or _notice_of(policy, event.purposes)
    return _record(state.platform, event, record_id, notice, policy.revision, expires, delegation, reason)


NO_POLICY = "none"
"""The ``policy_revision`` of a refusal or withdrawal recorded while no loaded policy covered its meeting."""


def evaluate_ungoverned(platform: str, event: ConsentSubmitted, record_id: str) -> ConsentRecord:
    """The record a consent request deserves when no loaded policy covers its meeting (a reload narrowed
    ``applies_to``): a refusal or withdrawal by the participant is accepted (every channel can withdraw,
    DESIGN); with no policy no delegation can be checked, and consent to give is the shell's to ignore."""
    reason = None
    if not event.purposes:
        reason = "unknown_purpose"
    elif event.indicated_by != event.participant_id:
        reason = "indicated_by_other"
    return _record(platform, event, record_id, event.notice_version, NO_POLICY, None, None, reason)


def _record(
    platform: str,
    event: ConsentSubmitted,
    record_id: str,
    notice: str | None,
    revision: str,
    expires: datetime | None,
    delegation: str | None,
    reason: str | None,
) -> ConsentRecord:
    return ConsentRecord(
        record_id=record_id,
        platform=platform,
        meeting_id=event.meeting_id,
        subject=event.participant_id,
        indicated_by=event.indicated_by,
        purposes=tuple(dict.fromkeys(event.purposes)),
        choice=event.choice,
        channel=event.channel,
        notice_version=notice,
        policy_revision=revision,
        at=event.at,
        expires_at=expires,
        evidence=event.evidence,
        delegation=delegation,
        outcome=RecordOutcome.REJECTED if reason else RecordOutcome.ACCEPTED,
        reason=reason,
    )


def _refusal(event: ConsentSubmitted, policy: Policy) -> tuple[str | None, str | None]:
    """Why the ledger must refuse this request (None if it may accept), and the delegation it relies on.

    A refusal or withdrawal is not refused for its channel or for a purpose the policy does not know: every
    channel can also withdraw (DESIGN), so a participant who consented through a channel a reloaded policy
    no longer accepts can still say stop there, and a purpose a policy dropped stays refused if a later one
    brings it back. Only consent to give is held to the policy's channels and purposes."""
    if not event.purposes:
        return "unknown_purpose", None
    if event.choice is ConsentChoice.GIVEN:
        if event.channel not in policy.spec.consent.channels:
            return "channel_not_allowed", None
        if any(p not in policy.purposes for p in event.purposes):
            return "unknown_purpose", None
    if event.choice is ConsentChoice.GIVEN and event.notice_version is not None:
        stale = [p for p in event.purposes if policy.notice_version(p) != event.notice_version]
        if stale:
            return "stale_notice", None
    if event.indicated_by == event.participant_id:
        return None, None
    delegation = policy.delegations.get(event.delegation or "")
    if delegation is None or event.channel not in delegation.channels:
        return "indicated_by_other", None
    return None, delegation.name


CLOCK_SKEW = timedelta(seconds=30)
"""How far the clocks behind two channels' times may disagree (``_superseded``)."""
CONSENT_PAGE = "consent_page"
"""The channel of choices made on the gateway's own consent page (``gateway.web.consent_page``)."""


def _from_the_future(event: ConsentSubmitted, now: datetime) -> bool:
    """Consent stamped later than it was received (beyond ``CLOCK_SKEW``). Its time would put it after any
    refusal or withdrawal to come (nothing could supersede it) and start its expiry years ahead, so it is
    refused; a refusal or withdrawal so stamped still applies (fail closed)."""
    return event.choice is ConsentChoice.GIVEN and event.at - now > CLOCK_SKEW


def _superseded(state: MeetingState, event: ConsentSubmitted) -> bool:
    """Consent given at a time before a refusal or withdrawal this meeting already received for one of its
    purposes (even one since followed by a newer consent): the participant's later choice stands. A
    platform's redelivery of an old consent (hours after the first attempt), a delivery that overtook an
    earlier one, or a captured request sent again once its id is forgotten would otherwise undo the
    withdrawal. Refusals and withdrawals always apply (fail closed). Consent given on the consent page is
    never superseded: the gateway stamps it with its own clock as it happens, after everything the meeting
    holds was received, while a relayed restriction's time is the sender's clock (possibly ahead). A
    restriction relayed through another channel than the consent supersedes it only if it leads by more
    than ``CLOCK_SKEW``: their times come from different clocks."""
    if event.choice is not ConsentChoice.GIVEN or event.channel == CONSENT_PAGE:
        return False
    for purpose in event.purposes:
        entry = state.consent(event.participant_id, purpose)
        if entry.restricted_at is None:
            continue
        # times relayed through one channel are on one clock; across channels (the page's gateway clock, a
        # platform's chat, an integration's API) they may disagree by seconds, so only a clear lead counts
        margin = timedelta(0) if entry.restricted_channel == event.channel else CLOCK_SKEW
        if entry.restricted_at - event.at > margin:
            return True
    return False


def _notice_of(policy: Policy, purposes: Iterable[str]) -> str | None:
    versions = sorted({v for p in purposes if (v := policy.notice_version(p))})
    return ",".join(versions) or None


def on_record(
    state: MeetingState, record: ConsentRecord, policy: Policy, now: datetime, *, view_fresh: bool = True
) -> Step:
    """Fold in a record the ledger has durably written, then release or purge what it affects (a release
    waits while the consent view is not confirmed fresh: see ``on_event``)."""
    if record.outcome is not RecordOutcome.ACCEPTED:
        return Step(state)
    state = meeting.with_record(state, record)
    decisions: list[Decision] = []
    emits: list[Emit] = []
    state = _without_lost_destinations(state, policy, now, decisions)
    if record.choice is ConsentChoice.GIVEN:
        state = _release(state, policy, now, decisions, emits, view_fresh)
    else:
        state = _purge(state, record.subject, policy, now, decisions)
    return Step(state, tuple(decisions), tuple(emits))


def _release(
    state: MeetingState,
    policy: Policy,
    now: datetime,
    decisions: list[Decision],
    emits: list[Emit],
    view_fresh: bool = True,
) -> MeetingState:
    """Re-decide held segments now that someone consented; those still waiting stay held."""
    if not policy.spec.pending.release_on_consent or not state.held:
        return state
    return _redecide(state, policy, now, decisions, emits, view_fresh, lambda held: True)


def restored(
    state: MeetingState, held: Iterable[Held], policy: Policy, now: datetime, *, view_fresh: bool = True
) -> tuple[MeetingState, Step]:
    """Holds recovered from the outbox (their process restarted, or their replica stopped) are held here
    again, keeping the time they were first held, and decided at once as when a consent arrives: the consent
    that releases them, or the refusal that drops them, may have been recorded while nobody held them.
    Returns the state with them held (what the store has) and the step that decided them; holds already
    here, or for a destination the policy no longer has, are left out."""
    known = {(h.segment.segment_id, h.destination) for h in state.held}
    ours = {d.id for d in policy.destinations}
    new = sorted(
        (h for h in held if (h.segment.segment_id, h.destination) not in known and h.destination in ours),
        key=lambda h: h.since,
    )
    state = replace(state, held=(*state.held, *new))
    if not new:
        return state, Step(state)
    decisions: list[Decision] = []
    emits: list[Emit] = []
    ids = {id(h) for h in new}
    after = state
    if policy.spec.pending.release_on_consent:  # else, as any hold under such a policy, to its window's end
        after = _redecide(state, policy, now, decisions, emits, view_fresh, lambda h: id(h) in ids)
    return state, Step(after, tuple(decisions), tuple(emits))


def _redecide(
    state: MeetingState,
    policy: Policy,
    now: datetime,
    decisions: list[Decision],
    emits: list[Emit],
    view_fresh: bool,
    which: Callable[[Held], bool],
) -> MeetingState:
    """Decide the held segments ``which`` selects again: released, dropped, or kept (stale if the view is)."""
    keep: list[Held] = []
    released: list[tuple[Outcome, Destination]] = []
    for held in state.held:
        if not which(held):
            keep.append(held)
            continue
        dest = policy.destination(held.destination)
        outcome = _redecide_held(held, state, policy, dest, now)
        if outcome.decision.action is Action.HOLD:
            keep.append(held)
        elif not view_fresh and outcome.decision.action in (Action.FORWARD, Action.REDACT):
            keep.append(replace(held, stale=True))
        else:
            decisions.append(outcome.decision)
            released.append((outcome, dest))
    state = replace(state, held=tuple(keep))
    for outcome, dest in released:
        state = _route(state, outcome, dest, emits)
    return state


def _redecide_held(
    held: Held, state: MeetingState, policy: Policy, dest: Destination, now: datetime
) -> Outcome:
    if _over(held, policy, now):
        return _expired(held, policy, dest, now)
    if policy.mode_for(state.jurisdiction) == "all_party":
        return decide_all_party(held.segment, state, policy, dest, now, held.present)
    return decide(held.segment, state, policy, dest, now)


def _purge(
    state: MeetingState, subject: str, policy: Policy, now: datetime, decisions: list[Decision]
) -> MeetingState:
    """After a refusal or withdrawal: nothing of the subject that is still here may leave."""
    keep: list[Held] = []
    all_party = policy.mode_for(state.jurisdiction) == "all_party"
    for held in state.held:
        dest = policy.destination(held.destination)
        if _blocked_by(held, subject, state, dest, now, all_party=all_party):
            decisions.append(drop_decision(held.segment, dest, policy, now, "purged_consent_changed"))
        else:
            keep.append(held)
    batches: dict[str, tuple[Part, ...]] = {}
    for dest_id, parts in state.batches.items():
        dest = policy.destination(dest_id)
        gone = consent_of(state, subject, dest, now)[0] is not ConsentState.GIVEN
        batches[dest_id] = tuple(p for p in parts if not (gone and p.participant_id == subject))
        decisions.extend(
            drop_decision(_stub(state, p), dest, policy, now, "purged_consent_changed")
            for p in parts
            if gone and p.participant_id == subject
        )
    return replace(state, held=tuple(keep), batches=MappingProxyType(batches))


def _stub(state: MeetingState, part: Part) -> Segment:
    """Ids of a batched segment, for decisions about it (its text is not needed and not kept)."""
    return Segment(state.meeting_id, part.segment_id, part.participant_id, "", datetime.min)


def _blocked_by(
    held: Held, subject: str, state: MeetingState, dest: Destination, now: datetime, *, all_party: bool
) -> bool:
    """Whether the subject's refusal or withdrawal ends this held segment: it is theirs, or (all-party mode
    only) they were present when it was said. In per-speaker mode another speaker's held words stay held:
    their names are scrubbed when it is decided again, and dropping them would lose consented words."""
    concerned = held.segment.participant_id == subject or (all_party and subject in held.present)
    return concerned and consent_of(state, subject, dest, now)[0] is not ConsentState.GIVEN


def still_allowed(state: MeetingState, dest: Destination, participant_id: str, now: datetime) -> bool:
    """Checked by delivery right before every attempt: a withdrawal stops even queued content."""
    return consent_of(state, participant_id, dest, now)[0] is ConsentState.GIVEN


# --- time and meeting end -------------------------------------------------------------------------------


def tick(state: MeetingState, policy: Policy, now: datetime, *, view_fresh: bool = True) -> Step:
    """Drop held segments whose pending window has ended; with a fresh consent view, decide again those held
    only because it was not (``STALE``)."""
    decisions: list[Decision] = []
    state = _without_lost_destinations(state, policy, now, decisions)
    expired = [h for h in state.held if _over(h, policy, now)]
    stale = view_fresh and any(h.stale for h in state.held)
    if not expired and not stale:
        return Step(state, tuple(decisions))
    keep = tuple(h for h in state.held if not _over(h, policy, now))
    decisions += [_expired(h, policy, policy.destination(h.destination), now).decision for h in expired]
    emits: list[Emit] = []
    state = replace(state, held=keep)
    if stale:
        state = _redecide(state, policy, now, decisions, emits, True, lambda held: held.stale)
    return Step(state, tuple(decisions), tuple(emits))


def revised(state: MeetingState, policy: Policy, now: datetime, *, view_fresh: bool = True) -> Step:
    """Under a new policy revision, every held segment is decided again: a reload may release what the old
    one held (a switch from all-party to per-speaker mode, a purpose dropped), or drop it."""
    decisions: list[Decision] = []
    emits: list[Emit] = []
    state = _without_lost_destinations(state, policy, now, decisions)
    if state.held:
        state = _redecide(state, policy, now, decisions, emits, view_fresh, lambda held: True)
    return Step(state, tuple(decisions), tuple(emits))


def on_meeting_end(state: MeetingState, policy: Policy, now: datetime) -> Step:
    """Send each meeting-end destination its transcript, scrubbed against who consents *now*."""
    state = replace(state, ended=True)
    decisions: list[Decision] = []
    emits: list[Emit] = []
    state = _without_lost_destinations(state, policy, now, decisions)
    for dest in policy.destinations:
        parts = _final_parts(state, policy, dest, now, decisions)
        if parts:
            # the parts name the transcript: a meeting id used again after its end (a standing room) gets
            # a transcript of its own, not one a destination would take for a resend of the first
            key = _key(state.meeting_id, dest.id, "transcript", *(part.segment_id for part in parts))
            emits.append(Emit(dest.id, state.meeting_id, "transcript", key, parts))
    state = replace(state, batches=MappingProxyType({}))
    return Step(state, tuple(decisions), tuple(emits))


def _final_parts(
    state: MeetingState, policy: Policy, dest: Destination, now: datetime, decisions: list[Decision]
) -> tuple[Part, ...]:
    """Every part is decided again at the end, and each outcome logged: what leaves is what was decided."""
    scrubber = scrubber_for(state, policy, dest, now)
    out: list[Part] = []
    for part in state.batches.get(dest.id, ()):
        if not still_allowed(state, dest, part.participant_id, now):
            decisions.append(
                drop_decision(_stub(state, part), dest, policy, now, "consent_lapsed_before_meeting_end")
            )
            continue
        changed, names = _scrubbed_fields(scrubber, part.payload) if scrubber else ({}, 0)
        decisions.append(_sent_at_end(state, part, dest, policy, now, names))
        if changed:
            part = replace(part, payload=MappingProxyType({**part.payload, **changed}))
        out.append(part)
    return tuple(out)


def rescrubbed(
    state: MeetingState, policy: Policy, dest: Destination, part: Part, now: datetime
) -> tuple[dict[str, str], Decision] | None:
    """A part decided earlier, right before it leaves: its text (and speaker label) scrubbed again against
    who consents now. Someone mentioned in it who consented then may have withdrawn since, while it waited
    (a batch window, a destination outage, retries): their name must not leave with it (invariant 9). None
    if nothing changes; else the changed fields and a ``redact`` decision counting the names replaced
    (offsets would refer to text already scrubbed once)."""
    scrubber = scrubber_for(state, policy, dest, now)
    if not isinstance(scrubber, NameScrubber):
        return None
    changed, names = _scrubbed_fields(scrubber, part.payload)
    if not names:
        return None
    reasons = (f"names_scrubbed_at_send:{names}",)
    rules = (dest.rule_id, "redaction.mentions")
    return changed, _part_decision(state, part, dest, policy, now, Action.REDACT, reasons, rules, "send")


def _sent_at_end(
    state: MeetingState, part: Part, dest: Destination, policy: Policy, now: datetime, scrubbed: int
) -> Decision:
    # Offsets here would refer to already-scrubbed text, so the record keeps only how many names went.
    action = Action.REDACT if scrubbed else Action.FORWARD
    reasons = (
        ("sent_at_meeting_end", f"names_scrubbed_at_meeting_end:{scrubbed}")
        if scrubbed
        else ("sent_at_meeting_end",)
    )
    rules = (dest.rule_id, "redaction.mentions") if scrubbed else (dest.rule_id,)
    return _part_decision(state, part, dest, policy, now, action, reasons, rules, "meeting_end")


def _part_decision(
    state: MeetingState,
    part: Part,
    dest: Destination,
    policy: Policy,
    now: datetime,
    action: Action,
    reasons: tuple[str, ...],
    rules: tuple[str, ...],
    stage: str,
) -> Decision:
    """A decision about a part decided once already (at meeting end, at send): ids only, never text."""
    return Decision(
        decision_id=decision_id(_stub(state, part), dest.id, action, now, stage),
        meeting_id=state.meeting_id,
        segment_id=part.segment_id,
        destination=dest.id,
        action=action,
        at=now,
        policy_revision=policy.revision,
        reasons=reasons,
        rule_ids=rules,
        participant_id=part.participant_id,
    )


def _expired(held: Held, policy: Policy, dest: Destination, now: datetime) -> Outcome:
    if held.stale:
        decision = drop_decision(held.segment, dest, policy, now, "consent_view_stale_expired", STALE_RULE)
        return Outcome(decision, None, held.segment)
    decision = drop_decision(held.segment, dest, policy, now, "pending_expired", "pending.window_seconds")
    return Outcome(decision, None, held.segment)


def _without_lost_destinations(
    state: MeetingState, policy: Policy, now: datetime, decisions: list[Decision]
) -> MeetingState:
    """Held segments and meeting-end parts for a destination the governing policy does not have (a reload
    moved the meeting under another policy) are dropped, each with a decision (``destination_removed``):
    nothing may leave for a destination no policy here governs, nor wait for one for ever; and every step
    that follows may look each remaining one up in the policy."""
    ours = {d.id for d in policy.destinations}
    lost = [h for h in state.held if h.destination not in ours]
    gone = {dest_id: parts for dest_id, parts in state.batches.items() if dest_id not in ours}
    if not lost and not gone:
        return state
    decisions += [drop_decision(h.segment, _removed(h.destination), policy, now, REMOVED) for h in lost]
    for dest_id, parts in gone.items():
        decisions += [drop_decision(_stub(state, p), _removed(dest_id), policy, now, REMOVED) for p in parts]
    batches = {dest_id: parts for dest_id, parts in state.batches.items() if dest_id in ours}
    held = tuple(h for h in state.held if h.destination in ours)
    return replace(state, held=held, batches=MappingProxyType(batches))


REMOVED = "destination_removed"
"""The reason a held segment or meeting-end part is dropped when its destination left the policy."""


def _removed(dest_id: str) -> Destination:
    """A destination the governing policy no longer has, as a decision names it."""
    return Destination(dest_id, "", (), "stream", None, False)


def drop_decision(
    segment: Segment, dest: Destination, policy: Policy, now: datetime, reason: str, rule: str | None = None
) -> Decision:
    """A DROP of ``segment`` for ``dest``, citing ``rule`` (default: the destination's purposes)."""
    return Decision(
        decision_id=decision_id(segment, dest.id, Action.DROP, now, reason),
        meeting_id=segment.meeting_id,
        segment_id=segment.segment_id,
        destination=dest.id,
        action=Action.DROP,
        at=now,
        policy_revision=policy.revision,
        reasons=(reason,),
        rule_ids=(rule or dest.rule_id,),
        participant_id=segment.participant_id,
    )


def _redecided(outcome: Outcome, action: Action, reasons: tuple[str, ...], rule: str) -> Outcome:
    decision = replace(outcome.decision, action=action, reasons=reasons, rule_ids=(rule,))
    return replace(outcome, decision=decision, text=None)
