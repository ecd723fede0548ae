"""Asking again: when a policy revision makes destinations need purposes they did not need before.

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
    """``(participant id, purposes to ask about)`` for each present participant, in join order."""
    fresh = needed(after) - needed(before)
    if not fresh:
        return ()
    present = sorted((p for p in state.participants.values() if p.present), key=lambda p: p.ordinal)
    out = []
    for person in present:
        ask = tuple(sorted(p for p in fresh if state.consent(person.id, p).state is ConsentState.UNKNOWN))
        if ask:
            out.append((person.id, ask))
    return tuple(out)
