"""Shadow mode: a candidate policy decides beside the active one, and only where it *differs* is it logged.

The shell (``runtime``) hands every event it has folded to ``Shadow.follow``, together with the active
meeting state from before the event and the active decisions it made. The shadow keeps its own parallel
``MeetingState`` per meeting, folded with the same pure engine functions under the candidate policy, and
returns the candidate's segment decisions whose action or redactions differ from the active ones, marked
``shadow=True``. Its emissions are discarded: nothing the shadow decides is ever forwarded. Synchronous and
free of I/O; the shell logs what it returns and keeps any failure here away from the real path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from gateway import engine
from gateway.events import ConsentSubmitted, MeetingEvent, SegmentReceived
from gateway.meeting import MeetingState
from gateway.model import ConsentRecord, Decision
from gateway.policy.compiled import Policy

MeetingKey = tuple[str, str]
OnDifference = Callable[[Decision, Decision | None], None]
"""Told of each differing shadow decision and the active one it differs from (None: the active made none)."""


class Shadow:
    """Candidate policies and their parallel meeting states; the first candidate that applies governs."""

    def __init__(self, policies: Sequence[Policy], on_difference: OnDifference | None = None) -> None:
        self.policies = tuple(policies)
        self.on_difference = on_difference
        self._states: dict[MeetingKey, MeetingState] = {}

    def policy_for(self, platform: str, meeting_id: str) -> Policy | None:
        return next((p for p in self.policies if p.applies(platform, meeting_id)), None)

    def follow(
        self,
        before: MeetingState,
        event: MeetingEvent,
        record: ConsentRecord | None,
        active: Sequence[Decision],
        now: datetime,
    ) -> tuple[Decision, ...]:
        """Fold ``event`` (or the ledger's ``record`` for it) in; returns the differing decisions."""
        key = (before.platform, before.meeting_id)
        policy = self.policy_for(*key)
        if policy is None:
            return ()
        state = engine.tick(self._state(key, before), policy, now).state
        if isinstance(event, ConsentSubmitted):
            step = engine.on_record(state, record, policy, now) if record else engine.Step(state)
        else:
            step = engine.on_event(state, event, policy, now)
        self._states[key] = step.state
        if not isinstance(event, SegmentReceived):
            return ()
        return self._differences(event.segment.segment_id, step.decisions, active)

    def _state(self, key: MeetingKey, before: MeetingState) -> MeetingState:
        """The parallel state; a meeting first seen mid-way starts from the active roster and consents."""
        known = self._states.get(key)
        if known is not None:
            return known
        return replace(before, held=(), batches=MappingProxyType({}), cache={})

    def _differences(
        self, segment_id: str, shadow: Sequence[Decision], active: Sequence[Decision]
    ) -> tuple[Decision, ...]:
        by_dest = {d.destination: d for d in active if d.segment_id == segment_id}
        out = []
        for decision in shadow:
            if decision.segment_id != segment_id:
                continue
            theirs = by_dest.get(decision.destination)
            if theirs is not None and _same(theirs, decision):
                continue
            marked = replace(decision, decision_id=f"shadow-{decision.decision_id}", shadow=True)
            out.append(marked)
            if self.on_difference is not None:
                self.on_difference(marked, theirs)
        return tuple(out)

    def forget(self, key: MeetingKey) -> None:
        self._states.pop(key, None)


def _same(a: Decision, b: Decision) -> bool:
    return a.action is b.action and a.redactions == b.redactions
