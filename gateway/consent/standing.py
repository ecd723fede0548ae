"""Standing consent: a verified identity's consent for named purposes, across meetings, until it lapses.

A standing record lives in the same hash-chained ledger as every other consent, with ``meeting_id`` equal to
``STANDING_MEETING`` and ``subject`` equal to ``email:<address>`` (trimmed, case-folded). It never lets words
flow by itself: when a participant whose e-mail the platform vouches for joins a meeting, ``derive`` turns
the standing consents that still hold into ordinary per-meeting requests (channel ``standing``, evidence
``standing:<record id>``), which the shell records like any other consent, so each meeting's ledger says why
that person's words flow. A standing choice recorded while the identity is in live meetings applies there
at once (``changes``): a withdrawal withdraws, a new consent applies as on joining. Pure: no I/O, no
clock; the shell reads the records and supplies the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gateway import engine
from gateway.events import ConsentSubmitted
from gateway.meeting import MeetingState, with_records
from gateway.model import ConsentChoice, ConsentRecord, ConsentState, Purpose, RecordOutcome
from gateway.policy.compiled import Policy

STANDING_MEETING = "*standing*"
"""The ``meeting_id`` of standing records; the governing policy is the first that applies to it."""
CHANNEL = "standing"
EVIDENCE = "standing:"
"""The evidence prefix of a per-meeting record derived from a standing one (followed by its record id)."""


def subject_for(email: str) -> str:
    """The ledger subject of an e-mail identity; unverified e-mails never reach this function's callers."""
    # lower(), not casefold(): casefold maps "straße" to "strasse", another mailbox
    return "email:" + email.strip().lower()


@dataclass(frozen=True, slots=True)
class StandingSubmitted:
    """A platform asks to record a standing consent choice for the identity ``email`` on ``platform``."""

    platform: str
    email: str
    purposes: tuple[Purpose, ...]
    choice: ConsentChoice
    indicated_by: str
    """The identity's own e-mail when they decide themselves; anything else needs a delegation."""
    at: datetime
    evidence: str | None = None
    notice_version: str | None = None
    delegation: str | None = None


def _event(submitted: StandingSubmitted, expires_at: datetime | None) -> ConsentSubmitted:
    """The request as the ledger's per-subject consent logic reads it."""
    subject = subject_for(submitted.email)
    by_self = submitted.indicated_by.strip().lower() == submitted.email.strip().lower()
    return ConsentSubmitted(
        platform=submitted.platform,
        meeting_id=STANDING_MEETING,
        participant_id=subject,
        purposes=submitted.purposes,
        choice=submitted.choice,
        indicated_by=subject if by_self else submitted.indicated_by,
        channel=CHANNEL,
        at=submitted.at,
        notice_version=submitted.notice_version,
        delegation=submitted.delegation,
        evidence=submitted.evidence,
        expires_at=expires_at,
    )


def evaluate_ungoverned(submitted: StandingSubmitted, record_id: str) -> ConsentRecord:
    """The record a standing refusal or withdrawal deserves when no loaded policy covers standing consent
    (a reload narrowed ``applies_to``): accepted if the identity decides it themselves, so that the standing
    consent it ends derives nothing in a meeting a later policy covers (``engine.evaluate_ungoverned``)."""
    return engine.evaluate_ungoverned(submitted.platform, _event(submitted, None), record_id)


def evaluate(
    submitted: StandingSubmitted,
    policy: Policy,
    record_id: str,
    prior: Iterable[ConsentRecord] = (),
    now: datetime | None = None,
) -> ConsentRecord:
    """The ledger record a standing request deserves under ``policy``: accepted, or rejected with a reason.
    ``prior``: the identity's standing records so far, against which a consent made before a refusal or
    withdrawal already recorded is ``superseded`` (a resent old request must not undo the later choice);
    ``now``: when it is received (a consent stamped later is ``future_time``)."""
    subject = subject_for(submitted.email)
    event = _event(submitted, submitted.at + timedelta(days=policy.spec.consent.standing.max_days))
    mine = (r for r in prior if r.platform == submitted.platform and r.subject == subject)
    record = engine.evaluate_consent(
        with_records(engine.new_meeting(submitted.platform, STANDING_MEETING), mine),
        event,
        policy,
        record_id,
        now,
    )
    if (
        record.outcome is RecordOutcome.ACCEPTED
        and record.choice is ConsentChoice.GIVEN
        and not policy.spec.consent.standing.allowed
    ):  # a refusal or withdrawal is recorded even so: it ends what earlier standing consent derived
        return replace(record, outcome=RecordOutcome.REJECTED, reason="standing_not_allowed")
    return record


def holding(records: Iterable[ConsentRecord], platform: str, now: datetime) -> dict[Purpose, ConsentRecord]:
    """Per purpose, the standing record giving consent now (the latest accepted one, if given and live).
    Consent counts only as the standing-consent API records it (channel ``standing``); a restriction
    counts whatever its channel (fail closed)."""
    latest: dict[Purpose, ConsentRecord] = {}
    for record in records:
        by_api = record.channel == CHANNEL or record.choice is not ConsentChoice.GIVEN
        if record.outcome is RecordOutcome.ACCEPTED and record.platform == platform and by_api:
            latest.update(dict.fromkeys(record.purposes, record))
    return {p: r for p, r in latest.items() if _live(r, now)}


def _live(record: ConsentRecord, now: datetime) -> bool:
    return record.choice is ConsentChoice.GIVEN and (record.expires_at is None or now < record.expires_at)


def usable(policy: Policy) -> bool:
    consent = policy.spec.consent
    return consent.standing.allowed and CHANNEL in consent.channels


def derive(
    state: MeetingState,
    participant_id: str,
    records: Iterable[ConsentRecord],
    policy: Policy,
    now: datetime,
) -> tuple[ConsentSubmitted, ...]:
    """The per-meeting consents a joining participant's standing records justify.

    Only purposes of this policy, only where the participant has not decided otherwise in this meeting, and
    only where the standing consent was given to the notice the policy shows now (a changed notice is asked
    again). One request per standing record, so that each derived record points at its source.
    """
    if not usable(policy):
        return ()
    by_record: dict[str, tuple[ConsentRecord, list[Purpose]]] = {}
    for purpose, record in holding(records, state.platform, now).items():
        decided = state.consent(participant_id, purpose).state is not ConsentState.UNKNOWN
        if purpose in policy.purposes and not decided and _same_notice(record, policy, purpose):
            by_record.setdefault(record.record_id, (record, []))[1].append(purpose)
    return tuple(
        _request(state, participant_id, tuple(purposes), ConsentChoice.GIVEN, record, now)
        for record, purposes in by_record.values()
    )


def _same_notice(record: ConsentRecord, policy: Policy, purpose: Purpose) -> bool:
    current = policy.notice_version(purpose)
    return current is not None and current in (record.notice_version or "").split(",")


def withdrawal(
    state: MeetingState, participant_id: str, record: ConsentRecord, policy: Policy, now: datetime
) -> ConsentSubmitted | None:
    """After a standing refusal or withdrawal: withdraw, in this meeting, what the identity had given (also
    where the policy no longer allows standing consent: what it derived before still ends)."""
    if record.outcome is not RecordOutcome.ACCEPTED:
        return None
    if record.choice is ConsentChoice.GIVEN:
        return None
    given = tuple(  # also a purpose the policy dropped on a reload: a later reload may bring it back
        p for p in record.purposes if state.consent(participant_id, p).at(now) is ConsentState.GIVEN
    )
    if not given:
        return None
    return _request(state, participant_id, given, ConsentChoice.WITHDRAWN, record, now)


def changes(
    state: MeetingState,
    participant_id: str,
    record: ConsentRecord,
    records: Iterable[ConsentRecord],
    policy: Policy,
    now: datetime,
) -> tuple[ConsentSubmitted, ...]:
    """What a newly recorded standing choice means in a live meeting the identity is in: a given one
    applies as on joining; a refusal or withdrawal withdraws what the identity had given there."""
    if record.choice is ConsentChoice.GIVEN:
        return derive(state, participant_id, records, policy, now)
    withdrawn = withdrawal(state, participant_id, record, policy, now)
    return () if withdrawn is None else (withdrawn,)


def missed(
    state: MeetingState,
    participant_id: str,
    entries: Iterable[tuple[int, ConsentRecord]],
    seq_of: Mapping[str, int],
    policy: Policy,
    now: datetime,
) -> tuple[ConsentSubmitted, ...]:
    """When a meeting is read back from storage: the standing choices it missed because no process held it
    when they were recorded (a crash between a standing record and its application, or every replica that
    held the meeting down), as the requests that bring it to where ``changes`` would have, had each been
    applied when recorded. ``entries``: the identity's standing records with their ledger sequence numbers;
    ``seq_of``: the sequence number of each of this meeting's records, by record id.

    For each purpose, the standing records after the meeting's own latest record for it are played again
    in ledger order: one applied when recorded that changed the purpose would have left a newer record
    here, and one that changed nothing then changes nothing now, so only what was missed has an effect (a
    record the meeting cannot place counts as older: the safe side). A refusal or withdrawal withdraws a
    given purpose; a consent applies to an undecided one, as on joining."""
    choices = {p: state.consent(participant_id, p) for p in policy.purposes}
    since = {p: seq_of.get(entry.record_id, 0) for p, entry in choices.items()}
    now_state = {p: entry.at(now) for p, entry in choices.items()}
    played = dict(now_state)
    source: dict[Purpose, ConsentRecord] = {}
    seen: list[ConsentRecord] = []
    for seq, record in sorted(entries, key=lambda pair: pair[0]):
        if record.outcome is not RecordOutcome.ACCEPTED or record.platform != state.platform:
            continue
        seen.append(record)
        if record.choice is ConsentChoice.GIVEN:
            if not usable(policy):
                continue
            for purpose, holder in holding(seen, state.platform, now).items():
                if (
                    seq > since.get(purpose, seq)
                    and played[purpose] is ConsentState.UNKNOWN
                    and _same_notice(holder, policy, purpose)
                ):
                    played[purpose], source[purpose] = ConsentState.GIVEN, holder
        else:
            for purpose in record.purposes:
                if seq > since.get(purpose, seq) and played[purpose] is ConsentState.GIVEN:
                    played[purpose], source[purpose] = ConsentState.WITHDRAWN, record
    requests: dict[tuple[ConsentChoice, str], tuple[ConsentRecord, list[Purpose]]] = {}
    for purpose, after in played.items():
        if after is not now_state[purpose]:
            choice = ConsentChoice.GIVEN if after is ConsentState.GIVEN else ConsentChoice.WITHDRAWN
            origin = source[purpose]
            requests.setdefault((choice, origin.record_id), (origin, []))[1].append(purpose)
    return tuple(
        _request(state, participant_id, tuple(purposes), choice, origin, now)
        for (choice, _), (origin, purposes) in requests.items()
    )


def _request(
    state: MeetingState,
    participant_id: str,
    purposes: tuple[Purpose, ...],
    choice: ConsentChoice,
    source: ConsentRecord,
    now: datetime,
) -> ConsentSubmitted:
    return ConsentSubmitted(
        platform=state.platform,
        meeting_id=state.meeting_id,
        participant_id=participant_id,
        purposes=purposes,
        choice=choice,
        indicated_by=participant_id,
        channel=CHANNEL,
        at=now,
        evidence=f"{EVIDENCE}{source.record_id}",
        expires_at=source.expires_at if choice is ConsentChoice.GIVEN else None,
    )
