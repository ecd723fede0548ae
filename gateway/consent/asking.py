"""Asking again: when a policy revision makes destinations need purposes they did not need before, or
changes the notice of a purpose someone consented to.

A consent covers the purposes it names, never more, so a destination whose purposes grew stops receiving
the words of people who consented only to the old ones (the decision core already sees to that). This
module says whom to ask about what: every present participant who has not decided on a newly needed
purpose. Pure: the shell compares the policy a meeting last saw with the one that governs it now.
"""

from __future__ import annotations

from gateway.meeting import MeetingState
from gateway.model import ConsentState, Purpose
from gateway.policy.compiled import Policy

REASON = "new_purpose"


def needed(policy: Policy) -> frozenset[Purpose]:
    """Every purpose some destination of the policy serves."""
    return frozenset(p for dest in policy.destinations for p in dest.purposes)


def new_purposes(
    state: MeetingState, before: Policy, after: Policy
) -> tuple[tuple[str, tuple[Purpose, ...]], ...]:
    """``(participant id, purposes to ask about)`` for each present participant, in join order: purposes
    newly needed they have not decided on, and purposes needed whose notice changed that they had given
    consent to (that consent no longer counts: ``ConsentEntry.under``)."""
    fresh = needed(after) - needed(before)
    renoticed = {p for p in needed(after) if after.notice_version(p) != before.notice_version(p)}
    if not fresh and not renoticed:
        return ()
    present = sorted((p for p in state.participants.values() if p.present), key=lambda p: p.ordinal)
    out = []
    for person in present:
        undecided = {p for p in fresh if state.consent(person.id, p).state is ConsentState.UNKNOWN}
        outdated = {p for p in renoticed if _given_before(state, person.id, p, after)}
        ask = tuple(sorted(undecided | outdated))
        if ask:
            out.append((person.id, ask))
    return tuple(out)


def _given_before(state: MeetingState, participant_id: str, purpose: Purpose, policy: Policy) -> bool:
    entry = state.consent(participant_id, purpose)
    return entry.state is ConsentState.GIVEN and not entry.under(policy.notice_version(purpose))
