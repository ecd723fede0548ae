"""What a consent-page submission changes: the ledger records it asks for, one per changed group.

Pure: the current consent state, the participant's answers and the notice versions they were shown go in;
``(choice, purposes, notice version)`` groups come out, restrictions first. Unanswered purposes and answers
that match the current state produce nothing, so a resubmitted page never writes a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.meeting import MeetingState
from gateway.model import ConsentChoice, ConsentState, Purpose

Group = tuple[ConsentChoice, tuple[Purpose, ...], str | None]
_ORDER = (ConsentChoice.WITHDRAWN, ConsentChoice.REFUSED, ConsentChoice.GIVEN)


def plan(
    consents: MeetingState,
    participant_id: str,
    choices: Mapping[Purpose, bool],
    shown: Mapping[Purpose, str],
    now: datetime,
) -> list[Group]:
    """The records a submission asks for: one per (choice, notice version), changes only.

    Yes gives (unless already given); No withdraws a given consent and refuses an undecided or expired
    one (a standing refusal or withdrawal is left alone). Restrictions come first, so that a failure
    halfway never leaves a consent in place that the participant was taking back."""
    groups: dict[tuple[ConsentChoice, str | None], list[Purpose]] = {}
    for purpose, yes in choices.items():
        entry = consents.consent(participant_id, purpose)
        current = entry.at(now)
        if yes:
            # given to an older notice: a Yes now gives it under the one shown
            given = current is ConsentState.GIVEN and entry.under(shown.get(purpose))
            choice = None if given else ConsentChoice.GIVEN
        elif current is ConsentState.GIVEN:
            choice = ConsentChoice.WITHDRAWN
        elif current in (ConsentState.REFUSED, ConsentState.WITHDRAWN):
            choice = None
        else:
            choice = ConsentChoice.REFUSED
        if choice is not None:
            groups.setdefault((choice, shown.get(purpose)), []).append(purpose)
    ordered = sorted(groups.items(), key=lambda item: (_ORDER.index(item[0][0]), item[0][1] or ""))
    return [(choice, tuple(ps), version) for (choice, version), ps in ordered]


def withdraw_all(
    consents: MeetingState, participant_id: str, shown: Mapping[Purpose, str], now: datetime
) -> list[Group]:
    # every purpose given, also one the policy no longer shows (a reload dropped it, another may restore it)
    held = dict.fromkeys((*shown, *consents.purposes_of(participant_id)))
    given = {p: False for p in held if consents.consent(participant_id, p).at(now) is ConsentState.GIVEN}
    return plan(consents, participant_id, given, shown, now)
