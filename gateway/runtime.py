"""The imperative shell around the pure core: one place where events meet storage, time and delivery.

For each event, under that meeting's lock: expire due holds, fold the event through ``engine``, write
consent records durably *before* folding them in, write every decision to the decision log *before*
anything is handed to delivery, and only then commit the new meeting state. Any storage failure leaves the
state untouched and nothing is emitted (fail closed). Live serving and offline replay both use this class;
they differ only in the clock, the record ids and the sink.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from gateway import engine
from gateway.engine import Emit, Step
from gateway.events import ConsentSubmitted, MeetingEnded, MeetingEvent
from gateway.meeting import MeetingState, with_records
from gateway.model import ConsentChoice, RecordOutcome
from gateway.notify import Notify, discard
from gateway.policy.compiled import Policy
from gateway.store.base import Store

log = structlog.get_logger("gateway.runtime")

MeetingKey = tuple[str, str]
_FORGET_AFTER = timedelta(minutes=10)


class Sink(Protocol):
    """Where emissions go: the delivery dispatcher when serving, a file when replaying."""

    def submit(self, emit: Emit) -> None: ...

    def purge(self, meeting_id: str, participant_id: str) -> None:
        """Stop queued content of a participant whose consent no longer covers it."""


@dataclass(frozen=True, slots=True)
class Result:
    status: str
    """``accepted``, ``ignored`` or ``rejected``."""
    reason: str | None = None
    record_id: str | None = None


class PolicySet:
    """The loaded policies; the first that applies to a meeting governs it. Swapped whole on reload."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)

    def for_meeting(self, platform: str, meeting_id: str) -> Policy | None:
        return next((p for p in self.policies if p.applies(platform, meeting_id)), None)


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Gateway:
    def __init__(
        self,
        policies: PolicySet,
        store: Store,
        sink: Sink,
        *,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        notify: Notify = discard,
    ) -> None:
        self.policies = policies
        self.store = store
        self.sink = sink
        self.notify = notify
        """Where notices to participants go (consent links, chat replies); see gateway.notify."""
        self._new_id = new_id
        self._states: dict[MeetingKey, MeetingState] = {}
        self._ended_at: dict[MeetingKey, datetime] = {}
        self._locks: dict[MeetingKey, asyncio.Lock] = {}
        self._platforms: dict[str, set[str]] = {}

    # --- reading state (delivery asks before every attempt) ---------------------------------------

    def still_allowed(self, meeting_id: str, destination: str, participant_id: str) -> bool:
        """Whether the participant's consent covers ``destination`` now, on every platform with it."""
        keys = [(platform, meeting_id) for platform in self._platforms.get(meeting_id, ())]
        return bool(keys) and all(self._allows(key, destination, participant_id) for key in keys)

    def _allows(self, key: MeetingKey, destination: str, participant_id: str) -> bool:
        state = self._states.get(key)
        policy = self.policies.for_meeting(*key)
        if state is None or policy is None:
            return False
        try:
            dest = policy.destination(destination)
        except KeyError:
            return False
        return engine.still_allowed(state, dest, participant_id, wall_clock())

    def meeting(self, platform: str, meeting_id: str) -> MeetingState | None:
        return self._states.get((platform, meeting_id))

    # --- events -------------------------------------------------------------------------------------

    async def handle(self, platform: str, event: MeetingEvent, now: datetime | None = None) -> Result:
        policy = self.policies.for_meeting(platform, event.meeting_id)
        if policy is None:
            log.warning("event.no_policy", platform=platform, meeting_id=event.meeting_id)
            return Result("ignored", "no_policy_applies")
        key = (platform, event.meeting_id)
        async with self._locks.setdefault(key, asyncio.Lock()):
            now = now or wall_clock()
            state = await self._load(key)
            expired = engine.tick(state, policy, now)
            if isinstance(event, ConsentSubmitted):
                return await self._consent(key, expired, event, policy, now)
            step = engine.on_event(expired.state, event, policy, now)
            await self._commit(key, _merge(expired, step), now)
            if isinstance(event, MeetingEnded):
                self._ended_at[key] = now
            return Result("accepted")

    async def _consent(
        self, key: MeetingKey, expired: Step, event: ConsentSubmitted, policy: Policy, now: datetime
    ) -> Result:
        record = engine.evaluate_consent(expired.state, event, policy, self._new_id())
        await self.store.append_consent(record)  # durable before it takes effect (invariant 1)
        step = engine.on_record(expired.state, record, policy, now)
        restricts = record.outcome is RecordOutcome.ACCEPTED and record.choice is not ConsentChoice.GIVEN
        if restricts:
            # A refusal or withdrawal takes effect the moment it is durable, even if logging what it
            # purged fails next: the ledger and the live view must never disagree in the unsafe direction.
            self._states[key] = step.state
            self.sink.purge(event.meeting_id, event.participant_id)
        await self._commit(key, _merge(expired, step), now)
        log.info(
            "consent.recorded",
            meeting_id=event.meeting_id,
            record_id=record.record_id,
            choice=str(record.choice),
            outcome=str(record.outcome),
            channel=record.channel,
            reason=record.reason,
        )
        if record.outcome is not RecordOutcome.ACCEPTED:
            return Result("rejected", record.reason, record.record_id)
        return Result("accepted", None, record.record_id)

    async def _commit(self, key: MeetingKey, step: Step, now: datetime) -> None:
        """Log decisions, then publish the state, then emit: a failed write emits nothing."""
        if step.decisions:
            await self.store.append_decisions(step.decisions)
        self._states[key] = step.state
        for emit in step.emits:
            self.sink.submit(emit)

    async def _load(self, key: MeetingKey) -> MeetingState:
        state = self._states.get(key)
        if state is not None:
            return state
        platform, meeting_id = key
        self._platforms.setdefault(meeting_id, set()).add(platform)
        entries = await self.store.ledger_entries(meeting_id=meeting_id)
        records = (e.record for e in entries if e.record.platform == platform)
        return with_records(engine.new_meeting(platform, meeting_id), records)

    # --- time ---------------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Expire held segments everywhere and forget long-ended meetings; returns decisions made."""
        now = now or wall_clock()
        made = 0
        for key in list(self._states):
            policy = self.policies.for_meeting(*key)
            if policy is None:
                continue
            async with self._locks.setdefault(key, asyncio.Lock()):
                state = self._states.get(key)
                if state is None:
                    continue
                step = engine.tick(state, policy, now)
                if step.decisions:
                    await self._commit(key, step, now)
                    made += len(step.decisions)
                self._forget_if_done(key, step.state, now)
        return made

    def _forget_if_done(self, key: MeetingKey, state: MeetingState, now: datetime) -> None:
        ended = self._ended_at.get(key)
        if ended is not None and not state.held and now - ended > _FORGET_AFTER:
            del self._states[key]
            del self._ended_at[key]
            self._locks.pop(key, None)
            self._platforms.get(key[1], set()).discard(key[0])

    def held_count(self) -> int:
        return sum(len(s.held) for s in self._states.values())


def _merge(first: Step, second: Step) -> Step:
    return Step(second.state, first.decisions + second.decisions, first.emits + second.emits)
