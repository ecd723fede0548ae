"""The imperative shell around the pure core: one place where events meet storage, time and delivery.

For each event, under that meeting's lock: expire due holds, fold the event through ``engine``, write
consent records durably *before* folding them in, write every decision to the decision log *before*
anything is handed to delivery, and only then commit the new meeting state. Any storage failure leaves the
state untouched and nothing is emitted (fail closed). Live serving and offline replay both use this class;
they differ only in the clock, the record ids and the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol

import structlog

from gateway import engine, held, roster_log
from gateway.consent import asking, chat, standing
from gateway.delivery.items import Item
from gateway.delivery.items import Part as DeliveryPart
from gateway.engine import Emit, Step
from gateway.events import (
    ConsentSubmitted,
    MeetingEnded,
    MeetingEvent,
    ParticipantJoined,
    ParticipantRenamed,
    SegmentReceived,
)
from gateway.meeting import Held, MeetingState, Part, with_record, with_records
from gateway.model import (
    Action,
    ConsentChoice,
    ConsentRecord,
    ConsentState,
    ContentKind,
    Decision,
    DestinationId,
    Participant,
    RecordOutcome,
)
from gateway.names import NameScrubber
from gateway.notify import Notice, Notify, discard
from gateway.policy.compiled import Destination, Policy
from gateway.policy.decide import scrubber_for
from gateway.roster_log import ROSTER_EVENTS, Latest, RosterChange, SharedRoster
from gateway.shadow import Shadow
from gateway.store.base import LedgerEntry, StorageError, Store
from gateway.store.outbox import DROPPED, FAILED, LEASE_SECONDS, MERGED, Finished, Lease, OutboxItem, Purge

log = structlog.get_logger("gateway.runtime")

MeetingKey = tuple[str, str]
_FORGET_AFTER = timedelta(minutes=10)
_UNHELD_SECONDS = 5.0
"""How long delivery's request to hold a meeting the stored roster lacks is answered from memory."""
LATE_END_SECONDS = 2.0
"""How long after the latest part kept after a meeting's end it is ended again (``_end_again_soon``)."""
_FORGOTTEN_ROSTERS = 1000
"""Rosters of forgotten meetings kept for transcripts that arrive late (the latest this many meetings)."""


Staged = tuple[Sequence[OutboxItem], Lease | None]
"""Outbox items to write with the decisions that allowed them, and the lease their writer takes on them."""


class Sink(Protocol):
    """Where emissions go: the delivery dispatcher when serving, a file when replaying."""

    def stage(self, emits: Sequence[Emit]) -> Staged:
        """The outbox rows for ``emits``, written durably before they are submitted (none: no outbox)."""

    def submit(self, emit: Emit) -> None: ...

    def purge(self, meeting_id: str, participant_id: str) -> None:
        """Stop queued content of a participant whose consent no longer covers it."""

    def pending(self, meeting_id: str) -> bool:
        """Whether content of the meeting is still on its way (queued, in flight or retrying)."""

    async def delivered(
        self, meeting_id: str, participant_id: str, destination: str
    ) -> list[tuple[str, str]]:
        """``(segment id, idempotency key)`` of the participant's parts the destination already received."""

    async def batched(self, meeting_id: str) -> Batched | None:
        """The meeting's parts kept for meeting-end transcripts in the outbox (``stage`` writes them as
        ``batched`` items): every replica's, and what a restart left. None without an outbox: the meeting
        state's own parts are all there are."""

    def ended(self, meeting_id: str) -> None:
        """The meeting ended: content waiting for a batch to fill goes now."""

    async def claim_held(self, *, everything: bool) -> Sequence[Item]:
        """Held segments (``held`` items) left by a process that stopped (``everything``: all of them, for
        a single-process store at start), now this process's; none without an outbox."""


@dataclass(frozen=True, slots=True)
class Batched:
    """Stored parts for meeting-end transcripts, per destination in the order written, and the keys of the
    outbox items holding them (recorded as merged when the transcript item is written)."""

    parts: Mapping[DestinationId, tuple[Part, ...]]
    keys: Mapping[DestinationId, tuple[str, ...]]


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
        self._chosen: dict[tuple[str, str], Policy | None] = {}

    def for_meeting(self, platform: str, meeting_id: str) -> Policy | None:
        # Asked for every event and before every delivery attempt; matching patterns each time showed up
        # in profiles. The set is immutable (a reload builds a new one), so the answer can be kept.
        key = (platform, meeting_id)
        if key not in self._chosen:
            if len(self._chosen) >= 100_000:
                self._chosen.clear()
            self._chosen[key] = next((p for p in self.policies if p.applies(platform, meeting_id)), None)
        return self._chosen[key]


class Observer(Protocol):
    """Told what the gateway did (metrics); called after the fact, and its failures are only logged."""

    def on_event(self, platform: str, event: MeetingEvent, result: Result) -> None: ...

    def on_decisions(self, decisions: Sequence[Decision]) -> None: ...

    def on_consent(self, record: ConsentRecord) -> None: ...


ConsentRequest = Callable[[Policy, str, str, str, datetime], Notice]
"""Mints a participant's consent-request notice: ``(policy, platform, meeting_id, participant_id, now)``
(``gateway.consent.links.consent_request`` bound to the gateway's link signer)."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ConsentViewStale(Exception):
    """This replica cannot confirm its consent view is fresh, so it cannot say content may leave now.

    Raised by ``Gateway.still_allowed`` instead of answering yes; delivery counts it as a failed check and
    tries again later (the content stays queued), rather than sending or dropping it."""


def _always_fresh() -> bool:
    return True


def _ignore(seq: int) -> None:
    return None


class _Minted:
    """Record ids this process handed out, so that the ledger follower can tell its own records apart."""

    _LIMIT = 100_000  # ids whose write failed are never seen again; the oldest are forgotten past this

    def __init__(self, mint: Callable[[], str]) -> None:
        self._mint = mint
        self._ids: dict[str, None] = {}

    def __call__(self) -> str:
        minted = self._mint()
        self._ids[minted] = None
        if len(self._ids) > self._LIMIT:
            del self._ids[next(iter(self._ids))]
        return minted

    def take(self, record_id: str) -> bool:
        """Whether this process minted ``record_id`` (and forget it: each record is seen once)."""
        return record_id in self._ids and self._ids.pop(record_id) is None


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
        self._new_id = _Minted(new_id)
        self._states: dict[MeetingKey, MeetingState] = {}
        self._ended_at: dict[MeetingKey, datetime] = {}
        self._locks: dict[MeetingKey, asyncio.Lock] = {}
        self._platforms: dict[str, set[str]] = {}
        self._seen_policy: dict[MeetingKey, Policy] = {}
        """The policy each live meeting was last governed by: a revision needing new purposes asks again."""
        self._identities: dict[str, set[tuple[MeetingKey, str]]] = {}
        """Standing subject -> (meeting, participant id) of live participants with that verified e-mail."""
        self.observers: list[Observer] = []
        self.shadow: Shadow | None = None
        """A candidate policy evaluated beside the active one (gateway.shadow); never affects forwarding."""
        self.consent_request: ConsentRequest | None = None
        """Set by the app: mints the consent link a participant is sent (see ``ask``)."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Background work: deletion requests being prepared, decision records of send-time scrubbing."""
        self._unheld: dict[str, float] = {}
        """Meeting ids delivery asked to hold that the stored roster did not have, until when (monotonic)."""
        self._ending_again: dict[MeetingKey, float] = {}
        """Meetings to be ended again, for parts kept after their end, and when (``_end_again_soon``)."""
        self._late_transcripts: dict[MeetingKey, int] = {}
        """Meetings a late transcript is being applied to now, and by how many (``late_transcript``)."""
        self._ungoverned: dict[str, tuple[MeetingKey, ...]] = {}
        """Meetings the stored roster has that no loaded policy covers (``hold_meeting``), with their keys."""
        self._forgotten: OrderedDict[MeetingKey, Mapping[str, Participant]] = OrderedDict()
        """Rosters of the latest meetings forgotten (bounded): a transcript a platform makes ready after
        the end (Teams) announces them again (``rejoins``)."""
        self._restricting: dict[tuple[str, str], int] = {}
        """(meeting id, participant id) -> refusals or withdrawals of theirs being written now."""
        self.wrote: Callable[[int], None] = _ignore
        """Told the ledger sequence number of every record this process wrote (already in its view):
        ``gateway.replication`` need not wait to read those back before calling the view fresh."""
        self.fresh: Callable[[], bool] = _always_fresh
        """Whether the consent view is confirmed current (``gateway.replication`` on PostgreSQL; a single
        SQLite process always is). While it is not, nothing is forwarded: segments are held."""
        self.roster: SharedRoster | None = None
        """Several replicas: where each roster change is written before it takes effect here, and read when a
        meeting is first seen (``gateway.roster_log``). None for a single process."""
        self.wrote_roster: Callable[[int], None] = _ignore
        """Told the sequence number of every roster change this process wrote (as ``wrote``)."""
        self._mint_change = new_id
        self._latest: dict[MeetingKey, Latest] = {}
        self._roster_to_forget: set[MeetingKey] = set()

    # --- reading state (delivery asks before every attempt) ---------------------------------------

    def still_allowed(self, meeting_id: str, destination: str, participant_id: str) -> bool:
        """Whether the participant's consent covers ``destination`` now, on every platform with it."""
        keys = [(platform, meeting_id) for platform in self._platforms.get(meeting_id, ())]
        allowed = bool(keys) and all(self._allows(key, destination, participant_id) for key in keys)
        if allowed and not self.fresh():
            # a "no" from a stale view stands (it can only lack later records); a "yes" may be outdated
            raise ConsentViewStale("consent view not confirmed fresh")
        if allowed and (meeting_id, participant_id) in self._restricting:
            # a refusal or withdrawal is being written: durable before this view shows it, so not a yes now
            raise ConsentViewStale("a restriction is being recorded")
        return allowed

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

    def scrubber_now(self, meeting_id: str, destination: str) -> object:
        """The name scrubber delivery to ``destination`` would use now, where one platform holds the
        meeting (None otherwise): one is compiled per change of who is in it or who consents, and cached."""
        platforms = self._platforms.get(meeting_id, ())
        if len(platforms) != 1:
            return None
        key = (next(iter(platforms)), meeting_id)
        state, policy = self._states.get(key), self.policies.for_meeting(*key)
        if state is None or policy is None:
            return None
        try:
            return scrubber_for(state, policy, policy.destination(destination), wall_clock())
        except KeyError:
            return None

    def scrubbed_now(
        self, meeting_id: str, destination: str, part: DeliveryPart, stamp: object = None
    ) -> DeliveryPart:
        """``part`` as it may leave now for ``destination``: names of those who do not consent now scrubbed
        (``engine.rescrubbed``), unless ``stamp``, the scrubber its text went through when decided, scrubs
        as the one in use now does. Each change is logged with a decision record, written in the
        background (what leaves has fewer names than the record of its first decision, never more)."""
        if isinstance(stamp, NameScrubber) and stamp.scrubs_as(self.scrubber_now(meeting_id, destination)):
            return part
        for platform in self._platforms.get(meeting_id, ()):
            key = (platform, meeting_id)
            state, policy = self._states.get(key), self.policies.for_meeting(*key)
            if state is None or policy is None:
                continue
            try:
                dest = policy.destination(destination)
            except KeyError:
                continue
            said = Part(part.segment_id, part.participant_id, part.payload)
            changed = engine.rescrubbed(state, policy, dest, said, wall_clock())
            if changed is not None:
                fields, decision = changed
                part = replace(part, payload=MappingProxyType({**part.payload, **fields}))
                log.info("delivery.names_scrubbed_at_send", meeting_id=meeting_id, destination=destination,
                         segment_id=part.segment_id, reasons=decision.reasons)  # fmt: skip
                self._background(self._log_decisions([decision]))
        return part

    async def _log_decisions(self, decisions: Sequence[Decision]) -> None:
        try:
            await self.store.append_decisions(decisions)
        except StorageError:
            log.error("decisions.write_failed", decisions=len(decisions))
            return
        for observer in self.observers:
            _safely(observer.on_decisions, decisions)

    def _background(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def holds(self, meeting_id: str) -> bool:
        """Whether this process has the meeting's consent view in memory (else delivery asks the store).
        A meeting counts once a state of it is published (``_publish``), not while its first event here is
        still reading the ledger: a view being loaded would answer "no" for everyone, and recovered content
        of a consenting participant would be dropped as withdrawn."""
        return bool(self._platforms.get(meeting_id))

    def meeting(self, platform: str, meeting_id: str) -> MeetingState | None:
        return self._states.get((platform, meeting_id))

    def meetings(self) -> list[MeetingState]:
        """The live meeting states (read-only values), for the admin API and the dashboard."""
        return list(self._states.values())

    # --- events -------------------------------------------------------------------------------------

    async def handle(
        self, platform: str, event: MeetingEvent, now: datetime | None = None, *, ask: bool = True
    ) -> Result:
        """Apply one event. ``ask=False``: a join that only brings back a roster the gateway had (a
        transcript of a forgotten meeting) sends nobody a consent request again."""
        result = await self._handle(platform, event, now, ask)
        for observer in self.observers:
            _safely(observer.on_event, platform, event, result)
        return result

    async def _handle(self, platform: str, event: MeetingEvent, now: datetime | None, ask: bool) -> Result:
        policy = self.policies.for_meeting(platform, event.meeting_id)
        if policy is None:
            if isinstance(event, ConsentSubmitted) and event.choice is not ConsentChoice.GIVEN:
                return await self._restrict_ungoverned(platform, event, now or wall_clock())
            if isinstance(event, SegmentReceived) and (stop := await self._stop_ungoverned(platform, event)):
                return await self._restrict_ungoverned(platform, stop, now or wall_clock())
            log.warning("event.no_policy", platform=platform, meeting_id=event.meeting_id)
            return Result("ignored", "no_policy_applies")
        key = (platform, event.meeting_id)
        async with self._locks.setdefault(key, asyncio.Lock()):
            now = now or wall_clock()
            state = await self._load(key)
            change = None
            if self.roster is not None and isinstance(event, ROSTER_EVENTS):
                # shared before it takes effect: what this replica acknowledges, every replica can read
                change = await self.roster.write(self._mint_change(), event)
                self.wrote_roster(change.seq)
            stored = await self.sink.batched(event.meeting_id) if isinstance(event, MeetingEnded) else None
            if isinstance(event, MeetingEnded) and not self.fresh():
                # the end decides the transcript once, and closes what it leaves out: a view that may lack
                # a consent recorded on another replica must not decide it, the ledger itself does
                state = await self._ledger_view(key, state)
            fresh = self.fresh()  # once: nothing below awaits before the event is decided
            expired = engine.tick(state, policy, now, view_fresh=fresh)
            seen = self._seen_policy.get(key)
            if seen is not None and seen.revision != policy.revision and expired.state.held:
                expired = _merge(expired, engine.revised(expired.state, policy, now, view_fresh=fresh))
            self._ask_again(key, expired.state, policy, now)
            if isinstance(event, ConsentSubmitted):
                return await self._consent(key, expired, event, policy, now)
            if isinstance(event, SegmentReceived) and (command := chat.command_of(event, policy)):
                return await self._chat(key, expired, event, command, policy, now)
            merged: list[Finished] = []
            if stored is not None:
                # the transcript is built from every stored part (every replica's, and what a restart left),
                # not only those this process holds in memory; their items are closed in the same commit
                before = replace(expired.state, batches=MappingProxyType(dict(stored.parts)))
                step = engine.on_event(before, event, policy, now, view_fresh=fresh)
                merged = _merged(stored, policy, now)
            elif change is None or isinstance(event, MeetingEnded):
                step = engine.on_event(expired.state, event, policy, now, view_fresh=fresh)
            else:  # as the engine folds it, with the placeholder number the shared roster gave
                step = Step(roster_log.fold(expired.state, change, self._latest.setdefault(key, Latest())))
            await self._commit(key, _merge(expired, step), now, merged)
            await self._follow_shadow(expired.state, event, None, step.decisions, now)
            if isinstance(event, ParticipantJoined):
                if ask:
                    self.ask(policy, platform, event.meeting_id, event.participant_id, now)
                if event.email:
                    await self._standing_join(key, event, event.email, policy, now)
            if isinstance(event, MeetingEnded):
                self._ended_at[key] = now
                self.sink.ended(event.meeting_id)
            return Result("accepted")

    async def _consent(
        self, key: MeetingKey, expired: Step, event: ConsentSubmitted, policy: Policy, now: datetime
    ) -> Result:
        record = engine.evaluate_consent(expired.state, event, policy, self._new_id(), now)
        # what the store has of the meeting, before this step publishes (a meeting just read back: as read)
        stored = self._states.get(key) or expired.state
        # durable before it takes effect (invariant 1); a withdrawal empties the outbox of the participant's
        # content for the destinations it concerns in the same transaction (invariant 4)
        restricting = _restricts(record)
        # from here until this view shows it, delivery gets no "yes" for them: the record is durable
        # (recorded) a few loop turns before this coroutine resumes to publish it
        with self._no_yes_for([(event.meeting_id, event.participant_id)] if restricting else []):
            entry = await self.store.append_consent(record, _purge_for(record, policy))
            if restricting:  # durable: in the live view at once, before anything below that could fail
                self._publish(key, with_record(self._states.get(key) or expired.state, record))
        self.wrote(entry.seq)
        for observer in self.observers:
            _safely(observer.on_consent, record)
        step = engine.on_record(expired.state, record, policy, now, view_fresh=self.fresh())
        if restricting:  # no await since the mark was cleared: the view shows it before delivery runs again
            # A refusal or withdrawal takes effect the moment it is durable, even if logging what it
            # purged fails next: the ledger and the live view must never disagree in the unsafe direction.
            self._publish(key, step.state)
            self.sink.purge(event.meeting_id, event.participant_id)
            self._erase_later(key, record, policy)
        # published already if it restricts: the holds it dropped are still open in the store
        await self._commit(key, _merge(expired, step), now, before=stored)
        await self._follow_shadow(expired.state, event, record, step.decisions, now)
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

    async def _restrict_ungoverned(self, platform: str, event: ConsentSubmitted, now: datetime) -> Result:
        """A refusal or withdrawal for a meeting no loaded policy covers is recorded all the same
        (``engine.evaluate_ungoverned``), and everything queued of the participant is purged: a later
        reload that covers the meeting again must find it."""
        record = engine.evaluate_ungoverned(platform, event, self._new_id())
        reason = record.reason
        key = (platform, event.meeting_id)
        every = tuple(sorted({d.id for policy in self.policies.policies for d in policy.destinations}))
        purge = Purge(event.meeting_id, event.participant_id, every) if reason is None and every else None
        async with self._locks.setdefault(key, asyncio.Lock()):
            with self._no_yes_for([(event.meeting_id, event.participant_id)] if reason is None else []):
                entry = await self.store.append_consent(record, purge)
            self.wrote(entry.seq)
            if reason is None:
                state = self._states.get(key)
                if state is not None:
                    self._publish(key, with_record(state, record))
                self.sink.purge(event.meeting_id, event.participant_id)
        for observer in self.observers:
            _safely(observer.on_consent, record)
        log.info("consent.recorded", meeting_id=event.meeting_id, record_id=record.record_id,
                 choice=str(record.choice), outcome=str(record.outcome), channel=record.channel,
                 reason=reason, policy="none")  # fmt: skip
        if reason is not None:
            return Result("rejected", reason, record.record_id)
        return Result("accepted", None, record.record_id)

    async def _stop_ungoverned(self, platform: str, event: SegmentReceived) -> ConsentSubmitted | None:
        """The withdrawal a chat opt-out makes in a meeting no loaded policy covers, over every purpose the
        sender has a record for here (``chat.stop_ungoverned``)."""
        sender = event.segment.participant_id
        if event.segment.kind is not ContentKind.CHAT or sender is None:
            return None
        key = (platform, event.meeting_id)
        state = self._states.get(key)
        if state is None:
            entries = await self.store.ledger_entries(meeting_id=event.meeting_id, participant_id=sender)
            state = with_records(
                engine.new_meeting(*key), (e.record for e in entries if e.record.platform == platform)
            )
        return chat.stop_ungoverned(event, self.last_policy(*key), state.purposes_of(sender))

    def last_policy(self, platform: str, meeting_id: str) -> Policy | None:
        """The policy that last governed a meeting held here (it may cover it no more after a reload)."""
        return self._seen_policy.get((platform, meeting_id))

    def _erase_later(self, key: MeetingKey, record: ConsentRecord, policy: Policy) -> None:
        """After a withdrawal, ask each destination that declares an erasure endpoint to delete what it
        may hold of the participant. In the background: it waits for attempts on the wire to end (the
        request must reach the destination after them), and the withdrawal's answer must not wait. Every
        replica that learns of the withdrawal calls this; the one that claims what it owes asks."""
        targets = _erasure_targets(record, policy)
        if targets:
            self._background(self._request_erasure(key, record, policy, targets))

    async def _request_erasure(
        self, key: MeetingKey, record: ConsentRecord, policy: Policy, targets: Sequence[Destination]
    ) -> None:
        """Stage each target's deletion request in the outbox (durable, retried) if this gateway claims
        what the withdrawal owes it (``Purge.erase``), then clear that. Not claimed: staged already, or
        being staged elsewhere, where the list covers this process's attempts too (``Sink.delivered``).
        One that fails stays owed: staged again once its lease runs out (``erase_owed``)."""
        for dest in targets:
            try:
                lease = self._erasure_lease()
                if not await self.store.claim_erasure(record.record_id, dest.id, lease, time.time()):
                    continue
                sent = await self.sink.delivered(record.meeting_id, record.subject, dest.id)
                made = _erasure(record, policy, dest, sent, wall_clock())
                if made is not None:
                    decisions, emit = made
                    # not if another replica asked for exactly these segments
                    if not await self._asked_already(record.meeting_id, emit.idempotency_key):
                        async with self._locks.setdefault(key, asyncio.Lock()):
                            state = await self._load(key)
                            await self._commit(key, Step(state, decisions, (emit,)), wall_clock())
                        log.info("erasure.requested", meeting_id=record.meeting_id, destination=dest.id,
                                 record_id=record.record_id, segments=len(decisions))  # fmt: skip
                await self.store.erasure_done(record.record_id, dest.id)
            except Exception as exc:
                log.error("erasure.failed", meeting_id=record.meeting_id, record_id=record.record_id,
                          destination=dest.id, error=type(exc).__name__)  # fmt: skip

    async def erase_owed(self, *, everything: bool = False, limit: int = 500) -> int:
        """Claim the deletion requests that withdrawals owe and nobody staged (their process stopped first,
        or staging failed; ``everything``: all of them, for a single-process store at start), and stage
        them in the background. Returns how many were claimed."""
        now = float("inf") if everything else time.time()
        owed = await self.store.claim_erasures(self._erasure_lease(), now, limit)
        wanted: dict[tuple[str, str, str], set[str]] = {}
        for row in owed:
            wanted.setdefault((row.meeting_id, row.participant_id, row.record_id), set()).add(row.destination)
        for (meeting_id, subject, record_id), destinations in wanted.items():
            self._background(self._erase_owed(meeting_id, subject, record_id, destinations))
        return len(owed)

    def _erasure_lease(self) -> Lease:
        """This gateway's lease on an owed deletion request it stages (one per gateway, not per process:
        replicas may share one)."""
        return Lease(f"{_ERASER}:{id(self):x}", time.time() + LEASE_SECONDS)

    async def _erase_owed(
        self, meeting_id: str, subject: str, record_id: str, destinations: set[str]
    ) -> None:
        """One withdrawal's owed requests, as ``_erase_later`` would have staged them. One the policies no
        longer allow (the meeting, or the destination's erasure endpoint, gone from them) is given up."""
        try:
            entries = await self.store.ledger_entries(meeting_id=meeting_id, participant_id=subject)
        except StorageError:
            log.error("erasure.failed", meeting_id=meeting_id, record_id=record_id, error="StorageError")
            return  # still owed: tried again once its lease runs out
        record = next((e.record for e in entries if e.record.record_id == record_id), None)
        policy = None if record is None else self.policies.for_meeting(record.platform, meeting_id)
        targets = [] if record is None or policy is None else _erasure_targets(record, policy)
        targets = [dest for dest in targets if dest.id in destinations]
        for gone in sorted(destinations - {dest.id for dest in targets}):
            log.error("erasure.given_up", meeting_id=meeting_id, record_id=record_id, destination=gone,
                      reason="no_record" if record is None else "no_erasure_url")  # fmt: skip
            with contextlib.suppress(StorageError):
                await self.store.erasure_done(record_id, gone)
        if record is not None and policy is not None and targets:
            await self._request_erasure((record.platform, meeting_id), record, policy, targets)

    async def _asked_already(self, meeting_id: str, key: str) -> bool:
        return any(row["key"] == key for row in await self.store.outbox_report(meeting_id=meeting_id))

    async def settle(self) -> None:
        """Wait for background work (deletion requests still being prepared, decision records) before delivery
        drains at shutdown."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def ask(self, policy: Policy, platform: str, meeting_id: str, participant_id: str, now: datetime) -> None:
        """Send a participant their personal consent link (on joining, or when they must be asked again).

        Runs after the event committed, so a failure here is logged, never raised: it must not turn an
        applied event into an error the platform would retry."""
        if self.consent_request is None:
            return
        try:
            self.notify(self.consent_request(policy, platform, meeting_id, participant_id, now))
        except Exception as exc:
            log.error("consent_request.failed", meeting_id=meeting_id, error=type(exc).__name__)

    # --- consent channels: chat commands, standing consent, asking again (gateway.consent) -----------

    async def _chat(
        self,
        key: MeetingKey,
        expired: Step,
        event: SegmentReceived,
        command: chat.Command,
        policy: Policy,
        now: datetime,
    ) -> Result:
        """A chat command changes only the sender's consent, through ``_consent``; it is never content."""
        sender = event.segment.participant_id
        assert sender is not None
        step, rejected, record_id = expired, list[str](), None
        for submitted in chat.submissions(command, event, expired.state, policy):
            result = await self._consent(key, step, submitted, policy, now)
            step, record_id = Step(self._states[key]), result.record_id
            if result.status == "rejected":
                rejected.append(result.reason or "rejected")
        dropped = Step(step.state, chat.dropped(event.segment, policy, now))
        await self._commit(key, _merge(step, dropped), now)
        text = chat.reply(command, rejected, self._states[key], sender, policy, now)
        data = {"text": text, "in_reply_to": event.segment.segment_id}
        self.notify(Notice(key[0], key[1], sender, "chat_reply", data))
        return Result("rejected" if rejected else "accepted", chat.REASON, record_id)

    def _identify(self, key: MeetingKey, event: object) -> str | None:
        """Note a verified identity's place in a meeting (a join received here, read back from the stored
        roster, or replicated): a standing choice recorded later applies there at once. Returns the other
        verified identity the participant id had here before, if any, when the join names another address,
        verified or not (a platform that reuses an id for someone else): a standing choice of that one must
        no longer reach it. A join naming no address changes nothing (some platforms send it later)."""
        if not (isinstance(event, ParticipantJoined) and event.email):
            return None
        place, subject, before = (key, event.participant_id), standing.subject_for(event.email), None
        for other, holders in self._identities.items():
            if other != subject and place in holders:
                holders.discard(place)
                before = other
        if event.email_verified:
            self._identities.setdefault(subject, set()).add(place)
        return before

    async def load_meetings(self) -> int:
        """At start: hold every meeting the stored roster has (not yet forgotten), so that this process knows
        who is in them, verified identities included, before any event of theirs arrives."""
        if self.roster is None:
            return 0
        loaded = 0
        for key in await self.roster.meetings():
            if self.policies.for_meeting(*key) is None:
                continue
            async with self._locks.setdefault(key, asyncio.Lock()):
                if key not in self._states:
                    self._publish(key, await self._load(key))
                    loaded += 1
        return loaded

    async def bring_back(
        self, platform: str, meeting_id: str, at: datetime, also: Sequence[ParticipantJoined] = ()
    ) -> tuple[MeetingState | None, bool]:
        """A meeting as a platform's late transcript needs it, and whether it had ended (or was gone, so
        that it is to be ended again after the transcript). Held from the stored roster if this process has
        not read it back (a restart); if forgotten, its roster announced again without asking anyone
        (``rejoins``), then ``also``: joins the adapter remembers that the gateway's roster lacks."""
        await self.hold_meeting(meeting_id)
        state = self.meeting(platform, meeting_id)
        if state is not None:
            return state, state.ended
        rejoined = self.rejoins(platform, meeting_id, at)
        known = {event.participant_id for event in rejoined if isinstance(event, ParticipantJoined)}
        for event in (*rejoined, *(joined for joined in also if joined.participant_id not in known)):
            await self.handle(platform, event, ask=False)  # the meeting is over: nobody is asked again
        return self.meeting(platform, meeting_id), True

    def rejoins(self, platform: str, meeting_id: str, at: datetime) -> list[MeetingEvent]:
        """The joins (and renames, in order) that bring a forgotten meeting's roster back, for a transcript
        that arrives after it was forgotten: its cues are attributed, and names scrubbed, against it. Empty
        if the meeting is held, or was not forgotten lately."""
        roster = self._forgotten.get((platform, meeting_id))
        if roster is None or (platform, meeting_id) in self._states:
            return []
        events: list[MeetingEvent] = []
        for person in sorted(roster.values(), key=lambda p: p.ordinal):
            first, *later = (*person.former_names, person.name)
            # earlier addresses first, so that the last join leaves the current one current
            addresses = (*person.former_emails, *([person.email] if person.email else []))
            email = addresses[0] if addresses else None
            events.append(ParticipantJoined(platform, meeting_id, person.id, first, at, email))
            events += [ParticipantRenamed(platform, meeting_id, person.id, name, at) for name in later]
            events += [ParticipantJoined(platform, meeting_id, person.id, "", at, a) for a in addresses[1:]]
        return events

    async def hold_meeting(self, meeting_id: str) -> None:
        """Hold a meeting the stored roster has but this process does not hold yet (delivery asks, for
        content of it read back from the outbox: at start, before ``load_meetings`` has run, or taken over
        from another replica). A meeting the roster no longer has (forgotten) stays unheld: delivery then
        checks its content against the store's consent, and sends its text as decided."""
        if self.holds(meeting_id) or self.roster is None:
            return
        if time.monotonic() < self._unheld.get(meeting_id, 0.0):
            return  # looked for a moment ago and not found: not a roster read before every retry
        found = [key for key in await self.roster.meetings() if key[1] == meeting_id]
        if not found:  # only a read that worked and found nothing is remembered
            self._unheld[meeting_id] = time.monotonic() + _UNHELD_SECONDS
            while len(self._unheld) > _FORGOTTEN_ROSTERS:
                self._unheld.pop(next(iter(self._unheld)))
        governed = [key for key in found if self.policies.for_meeting(*key) is not None]
        if found and not governed:
            # its content was queued under a policy that covered it; none does now (a policy narrowed
            # before a restart): nothing of it may leave, as for a meeting held when a reload dropped it
            self._ungoverned[meeting_id] = tuple(found)
            while len(self._ungoverned) > _FORGOTTEN_ROSTERS:
                self._ungoverned.pop(next(iter(self._ungoverned)))
        for key in governed:
            self._ungoverned.pop(meeting_id, None)
            async with self._locks.setdefault(key, asyncio.Lock()):
                if key not in self._states:
                    self._publish(key, await self._load(key))
                    log.info("meeting.held_for_delivery", meeting_id=meeting_id)

    def ungoverned(self, meeting_id: str) -> bool:
        """Whether the stored roster has this meeting, not held here, and no loaded policy covers it now."""
        keys = self._ungoverned.get(meeting_id)
        if keys is None or self.holds(meeting_id):
            return False
        return all(self.policies.for_meeting(*key) is None for key in keys)

    async def _standing_join(
        self, key: MeetingKey, event: ParticipantJoined, email: str, policy: Policy, now: datetime
    ) -> None:
        """A join naming an address: if the participant id had another verified identity here (a platform
        that reuses an id for someone else, whose address it vouches for or not), what was given under it is
        withdrawn first: it was another person's choice. Then, for a verified identity, what its standing
        consent covers is recorded for this meeting."""
        if self._identify(key, event) is not None:
            state = self._states[key]
            held = dict.fromkeys((*policy.purposes, *state.purposes_of(event.participant_id)))
            given = tuple(
                p for p in held if state.consent(event.participant_id, p).at(now) is ConsentState.GIVEN
            )
            if given:
                pid, withdrawn = event.participant_id, ConsentChoice.WITHDRAWN
                ended = ConsentSubmitted(*key, pid, given, withdrawn, pid, standing.CHANNEL, now,
                                         evidence="identity_changed")  # fmt: skip
                await self._consent(key, Step(state), ended, policy, now)
        if not event.email_verified:
            return
        records = await self.store.standing_records(email)
        for submitted in standing.derive(self._states[key], event.participant_id, records, policy, now):
            await self._consent(key, Step(self._states[key]), submitted, policy, now)

    async def record_standing(
        self, submitted: standing.StandingSubmitted, now: datetime | None = None
    ) -> Result:
        """Record a standing consent choice; a refusal or withdrawal applies at once wherever it is held,
        and is recorded even when no loaded policy covers standing consent (a reload narrowed
        ``applies_to``): the consent it ends must derive nothing once a policy covers it again."""
        policy = self.policies.for_meeting(submitted.platform, standing.STANDING_MEETING)
        given = submitted.choice is ConsentChoice.GIVEN
        if policy is None and given:
            return Result("ignored", "no_policy_applies")
        now = now or wall_clock()
        if policy is None:
            record = standing.evaluate_ungoverned(submitted, self._new_id())
        else:
            # only consent can be superseded by a choice already recorded; a restriction applies whatever
            # came before
            prior = await self.store.standing_records(submitted.email) if given else []
            record = standing.evaluate(submitted, policy, self._new_id(), prior, now)
        restricting = _restricts(record)
        holders = sorted(self._identities.get(record.subject, ()))
        # recorded before it reaches each meeting (a write, a read, each meeting's lock): meanwhile
        # delivery gets no "yes" for the identity's participants
        with self._no_yes_for([(key[1], pid) for key, pid in holders] if restricting else []):
            self.wrote((await self.store.append_consent(record)).seq)  # durable before it takes effect
            log.info("standing.recorded", record_id=record.record_id, choice=str(record.choice),
                     outcome=str(record.outcome), reason=record.reason)  # fmt: skip
            if record.outcome is not RecordOutcome.ACCEPTED:
                return Result("rejected", record.reason, record.record_id)
            before = holders
            holders = sorted(self._identities.get(record.subject, ()))
            joined_meanwhile = [(key[1], pid) for key, pid in holders if (key, pid) not in before]
            with self._no_yes_for(joined_meanwhile if restricting else []):
                records = await self.store.standing_records(submitted.email) if holders else []
                for key, participant_id in holders:
                    await self._standing_apply(key, participant_id, record, records, now)
        return Result("accepted", None, record.record_id)

    @contextlib.contextmanager
    def _no_yes_for(self, who: Sequence[tuple[str, str]]) -> Iterator[None]:
        """While a refusal or withdrawal of these (meeting id, participant id) is written or applied,
        ``still_allowed`` tells delivery to try again later instead of yes."""
        for pair in who:
            self._restricting[pair] = self._restricting.get(pair, 0) + 1
        try:
            yield
        finally:
            for pair in who:
                self._restricting[pair] -= 1
                if not self._restricting[pair]:
                    del self._restricting[pair]

    async def apply_remote(self, record: ConsentRecord) -> None:
        """Fold in a ledger record another replica wrote (``gateway.replication`` hands them over in ledger
        order), as ``_consent`` folds one written here: under the meeting's lock, a restriction at once.

        Records written here were folded in then and are skipped. A meeting this replica does not hold is
        left alone: it reads the ledger when first seen. A meeting being loaded right now holds its lock,
        so the record is folded in after the load (twice is harmless: a record's effect is idempotent)."""
        if self._new_id.take(record.record_id) or record.outcome is not RecordOutcome.ACCEPTED:
            return
        if record.meeting_id == standing.STANDING_MEETING:
            await self._standing_remote(record)
            return
        key = (record.platform, record.meeting_id)
        lock, policy = self._locks.get(key), self.policies.for_meeting(*key)
        if lock is None or policy is None:
            return
        async with lock:
            state = self._states.get(key)
            if state is None:
                return
            current = await self._still_latest(record)
            if current is None:
                return
            now = wall_clock()
            step = engine.on_record(state, current, policy, now, view_fresh=self.fresh())
            if current.choice is not ConsentChoice.GIVEN:
                self._publish(key, step.state)  # as in _consent: the restriction holds even if logging fails
                self.sink.purge(record.meeting_id, record.subject)
            await self._commit(key, step, now, before=state)
            if current.choice is not ConsentChoice.GIVEN:
                # what this replica had on the wire when the withdrawal was recorded elsewhere may have
                # arrived after that replica listed what to erase: once this one's attempts have ended, it
                # asks for what the destination then has (a request listing the same segments is the same)
                self._erase_later(key, current, policy)
        log.info("consent.replicated", meeting_id=record.meeting_id, record_id=record.record_id,
                 choice=str(record.choice))  # fmt: skip

    async def apply_roster(self, change: RosterChange) -> None:
        """Fold in a roster change from the shared log (``gateway.replication`` hands them over in log order),
        under the meeting's lock, so that names said here are scrubbed and presence counts here wherever the
        participant joined. Changes written here were folded in then and change nothing now. A meeting this
        replica does not hold is left alone: it reads the shared roster when first seen."""
        event = change.event
        key = (event.platform, event.meeting_id)
        lock = self._locks.get(key)
        if lock is None:
            return
        async with lock:
            state = self._states.get(key)
            if state is None:
                return
            ending = isinstance(event, MeetingEnded) and key not in self._ended_at
            if ending:
                # forgotten in time here too; what this replica holds of it expires as the policy says
                self._ended_at[key] = wall_clock()
                self.sink.ended(event.meeting_id)
            folded = roster_log.fold(state, change, self._latest.setdefault(key, Latest()))
            self._identify(key, event)  # a standing choice recorded here reaches them too
            if folded is not state:
                self._publish(key, folded)
            if ending or folded is not state:
                log.info("roster.replicated", meeting_id=event.meeting_id, seq=change.seq,
                         kind=type(event).__name__)  # fmt: skip

    async def _still_latest(self, record: ConsentRecord) -> ConsentRecord | None:
        """``record`` cut to the purposes for which it is still the subject's latest accepted record.

        A record written here after it (a later sequence number) was folded in already, when written; folding
        the older one now would undo it, so the ledger's order decides."""
        entries = await self.store.ledger_entries(meeting_id=record.meeting_id, participant_id=record.subject)
        latest: dict[str, str] = {}
        for entry in entries:
            if entry.record.platform == record.platform and entry.record.outcome is RecordOutcome.ACCEPTED:
                latest.update(dict.fromkeys(entry.record.purposes, entry.record.record_id))
        purposes = tuple(p for p in record.purposes if latest.get(p) == record.record_id)
        return replace(record, purposes=purposes) if purposes else None

    async def _standing_remote(self, record: ConsentRecord) -> None:
        """A standing choice recorded by another replica applies to the live meetings held here."""
        holders = sorted(self._identities.get(record.subject, ()))
        if not holders:
            return
        restricting = record.choice is not ConsentChoice.GIVEN
        with self._no_yes_for([(key[1], pid) for key, pid in holders] if restricting else []):
            entries = await self.store.ledger_entries(
                meeting_id=standing.STANDING_MEETING, participant_id=record.subject
            )
            records = [entry.record for entry in entries]
            now = wall_clock()
            for key, participant_id in holders:
                await self._standing_apply(key, participant_id, record, records, now)

    async def _standing_apply(
        self,
        key: MeetingKey,
        participant_id: str,
        record: ConsentRecord,
        records: Sequence[ConsentRecord],
        now: datetime,
    ) -> None:
        policy = self.policies.for_meeting(*key)
        if policy is None:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            state = self._states.get(key)
            if state is None:
                return
            for submitted in standing.changes(state, participant_id, record, records, policy, now):
                await self._consent(key, Step(self._states[key]), submitted, policy, now)

    def _ask_again(self, key: MeetingKey, state: MeetingState, policy: Policy, now: datetime) -> None:
        """Under a new policy revision, ask present participants about purposes newly needed."""
        before = self._seen_policy.get(key)
        self._seen_policy[key] = policy
        if before is None or before.revision == policy.revision or state.ended:
            return
        for participant_id, purposes in asking.new_purposes(state, before, policy):
            extra = {"new_purposes": list(purposes), "reason": asking.REASON}
            if self.consent_request is None:
                notice = Notice(*key, participant_id, "consent_request", {"purposes": list(purposes)})
            else:
                notice = self.consent_request(policy, key[0], key[1], participant_id, now)
            self.notify(replace(notice, data={**notice.data, **extra}))

    async def _commit(
        self,
        key: MeetingKey,
        step: Step,
        now: datetime,
        finished: Sequence[Finished] = (),
        before: MeetingState | None = None,
    ) -> None:
        """Log decisions and write what they allow to the outbox in one transaction (with the parts newly kept
        for meeting-end transcripts, segments newly held, outcomes closing holds that were decided, and
        ``finished``), then publish the state, then hand the content to delivery: a failed write emits
        nothing. ``before``: what the store has of the meeting, if not the published state."""
        before = self._states.get(key) if before is None else before
        after = step.state
        emits = (*step.emits, *_newly_batched(before, after), *held.stored(key[0], before, after))
        if before is not None and before.held and after.held is not before.held:
            finished = (*finished, *held.decided(before, after, now.timestamp()))
        items, lease = self.sink.stage(emits) if emits else ((), None)
        if step.decisions or items or finished:
            await self.store.append_decisions(step.decisions, items, lease, finished)
            for observer in self.observers:
                _safely(observer.on_decisions, step.decisions)
        self._publish(key, step.state)
        for emit in step.emits:
            self.sink.submit(emit)
        # ended here, or known ended (read back after a restart, or ended through another replica)
        ended = after.ended or key in self._ended_at
        if ended and after.batches and (before is None or after.batches is not before.batches):
            self._end_again_soon(key)

    def _end_again_soon(self, key: MeetingKey) -> None:
        """Parts kept for a meeting-end transcript after the meeting ended (a consent within the pending
        window but after the end releasing held words, a late segment) missed the transcript: once no
        more such parts have come for ``LATE_END_SECONDS`` (so that what arrives together, a late recorded
        transcript cue by cue, goes together), the meeting is ended again and they go in a transcript of
        their own, as a platform's late transcript does. Else they would wait until they expired."""
        pending = key in self._ending_again
        self._ending_again[key] = time.monotonic() + LATE_END_SECONDS
        if not pending:
            self._background(self._end_again(key))

    @contextlib.asynccontextmanager
    async def late_transcript(self, platform: str, meeting_id: str) -> AsyncIterator[None]:
        """While a platform's late transcript (Zoom's recording, Teams', Meet's entries after the end) is
        applied cue by cue, its parts are not ended again on their own (``_end_again_soon``), however long
        a slow store makes the applying take: the adapter ends the meeting again once, after the last cue,
        and the recording goes in one transcript. Should the adapter stop half way (storage gone), what it
        applied is ended again ``LATE_END_SECONDS`` after it leaves."""
        key = (platform, meeting_id)
        self._late_transcripts[key] = self._late_transcripts.get(key, 0) + 1
        try:
            yield
        finally:
            if (left := self._late_transcripts[key] - 1) > 0:
                self._late_transcripts[key] = left
            else:
                del self._late_transcripts[key]
                if key in self._ending_again:
                    self._ending_again[key] = time.monotonic() + LATE_END_SECONDS

    async def _end_again(self, key: MeetingKey) -> None:
        try:
            # a deadline each new late part pushes back, and that waits for a late transcript being applied:
            # a timer, not a condition to be signalled
            while True:
                wait = self._ending_again[key] - time.monotonic()
                if wait <= 0 and key not in self._late_transcripts:
                    break
                await asyncio.sleep(wait if wait > 0 else LATE_END_SECONDS)
        finally:
            self._ending_again.pop(key, None)
        state = self._states.get(key)
        if state is None or not (state.ended or key in self._ended_at) or not state.batches:
            return  # sent meanwhile (an adapter ended it again), or purged
        try:
            await self.handle(key[0], MeetingEnded(key[0], key[1], wall_clock()), ask=False)
        except StorageError:
            log.error("meeting_end.late_parts_unsent", meeting_id=key[1])  # they stay stored, and expire

    def _publish(self, key: MeetingKey, state: MeetingState) -> None:
        """Make ``state`` the meeting's live view (what delivery and the admin API read)."""
        self._states[key] = state
        self._platforms.setdefault(key[1], set()).add(key[0])

    async def _follow_shadow(
        self,
        before: MeetingState,
        event: MeetingEvent,
        record: ConsentRecord | None,
        active: Sequence[Decision],
        now: datetime,
    ) -> None:
        """Let the shadow policy decide too and log where it differs; after the real commit, and any
        failure here is logged and swallowed: the shadow must never change what the real path does."""
        shadow = self.shadow
        if shadow is None:
            return
        try:
            differing = shadow.follow(before, event, record, active, now)
            if differing:
                await self.store.append_decisions(differing)
        except Exception as exc:
            log.error("shadow.failed", meeting_id=before.meeting_id, error=type(exc).__name__)

    async def _load(self, key: MeetingKey) -> MeetingState:
        state = self._states.get(key)
        if state is not None:
            return state
        platform, meeting_id = key
        entries = await self.store.ledger_entries(meeting_id=meeting_id)
        records = (e.record for e in entries if e.record.platform == platform)
        state = with_records(engine.new_meeting(platform, meeting_id), records)
        subjects: dict[str, str] = {}
        """Participant id -> the standing subject (verified identity) they are in this meeting."""
        if self.roster is not None:
            latest = self._latest[key] = Latest()
            for change in await self.roster.load(platform, meeting_id):
                state = roster_log.fold(state, change, latest)
                self._identify(key, change.event)
                event = change.event
                if isinstance(event, ParticipantJoined) and event.email and event.email_verified:
                    subjects[event.participant_id] = standing.subject_for(event.email)
                if isinstance(event, MeetingEnded):
                    self._ended_at.setdefault(key, wall_clock())
        subjects.update(await self._standing_sources(platform, entries, subjects))
        for participant_id, subject in subjects.items():
            # a standing choice recorded from now on reaches them here, wherever the identity was learnt
            self._identities.setdefault(subject, set()).add((key, participant_id))
        if subjects:
            return await self._missed_standing(key, state, entries, subjects)
        return state

    async def _standing_sources(
        self, platform: str, entries: Sequence[LedgerEntry], known: Mapping[str, str]
    ) -> dict[str, str]:
        """The standing subjects of participants whose consent here came from standing consent but whom the
        stored roster no longer names (a meeting forgotten after its end, then seen again: a late event)."""
        sources = {
            entry.record.subject: (entry.record.evidence or "").removeprefix(standing.EVIDENCE)
            for entry in entries
            if entry.record.platform == platform
            and entry.record.channel == standing.CHANNEL
            and entry.record.subject not in known
            and (entry.record.evidence or "").startswith(standing.EVIDENCE)
        }
        if not sources:
            return {}
        found = await self.store.ledger_entries(meeting_id=standing.STANDING_MEETING)
        subject_of = {entry.record.record_id: entry.record.subject for entry in found}
        return {pid: subject_of[sid] for pid, sid in sources.items() if sid in subject_of}

    async def _ledger_view(self, key: MeetingKey, state: MeetingState) -> MeetingState:
        """``state`` with its consents read again from the ledger (every replica's records, committed)."""
        entries = await self.store.ledger_entries(meeting_id=key[1])
        records = (entry.record for entry in entries if entry.record.platform == key[0])
        log.info("meeting_end.consent_reread", meeting_id=key[1], records=len(entries))
        # a state of its own (version, memo): answers cached for the old view must not outlive it
        cleared = replace(state, consents=MappingProxyType({}), version=state.version + 1, cache={})
        return with_records(cleared, records)

    async def _missed_standing(
        self,
        key: MeetingKey,
        state: MeetingState,
        entries: Sequence[LedgerEntry],
        subjects: Mapping[str, str],
    ) -> MeetingState:
        """Apply to a meeting just read back the standing choices recorded while no process held it
        (``standing.missed``). Under the meeting's lock, before anything of it is decided. If recording one
        fails the meeting is not kept, so that the next event reads it, and tries, again."""
        policy = self.policies.for_meeting(*key)
        if policy is None:
            return state
        seq_of = {entry.record.record_id: entry.seq for entry in entries}
        now = wall_clock()
        try:
            for participant_id, subject in sorted(subjects.items()):
                found = await self.store.ledger_entries(
                    meeting_id=standing.STANDING_MEETING, participant_id=subject
                )
                pairs = [(entry.seq, entry.record) for entry in found]
                for submitted in standing.missed(state, participant_id, pairs, seq_of, policy, now):
                    await self._consent(key, Step(state), submitted, policy, now)
                    state = self._states[key]
                    log.info("standing.applied_late", meeting_id=key[1], choice=str(submitted.choice))
        except BaseException:
            self._states.pop(key, None)
            raise
        return state

    # --- time ---------------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Expire held segments everywhere and forget long-ended meetings; returns decisions made."""
        now = now or wall_clock()
        made = 0
        for key in list(self._states):
            governing = self.policies.for_meeting(*key)
            # a meeting no policy covers any more: its holds still end with the window of the last one
            policy = governing or self._seen_policy.get(key)
            if policy is None:
                continue
            async with self._locks.setdefault(key, asyncio.Lock()):
                state = self._states.get(key)
                if state is None:
                    continue
                seen = self._seen_policy.get(key)
                renewed = governing is not None and seen is not None and seen.revision != governing.revision
                if governing is not None:
                    self._ask_again(key, state, policy, now)  # a reload asks without waiting for an event
                fresh = self.fresh() and governing is not None
                try:  # ungoverned: holds only end (nothing is released under a policy no longer loaded)
                    step = engine.tick(state, policy, now, view_fresh=fresh)
                    if renewed and step.state.held:  # what the new revision holds, releases or drops
                        step = _merge(step, engine.revised(step.state, policy, now, view_fresh=fresh))
                except Exception as exc:  # one meeting must not stop holds ending everywhere else
                    log.error("tick.meeting_failed", meeting_id=key[1], error=type(exc).__name__)
                    continue
                if step.decisions:
                    await self._commit(key, step, now)
                    made += len(step.decisions)
                if self._forget_if_done(key, step.state, now) and self.roster is not None:
                    self._roster_to_forget.add(key)
        await self._forget_rosters()
        return made

    async def recover_held(self, *, everything: bool = False, now: datetime | None = None) -> int:
        """Hold again, here, the segments a stopped process held (``everything``: all it left, for a
        single-process store at start), and decide them at once (``engine.restored``); returns how many."""
        claimed = await self.sink.claim_held(everything=everything)
        now = now or wall_clock()
        by_meeting: dict[MeetingKey, list[tuple[Item, Held]]] = {}
        unreadable: list[Finished] = []
        for item in claimed:
            try:
                platform, hold = held.opened(item)
            except (KeyError, TypeError, ValueError):
                log.error("held.unreadable", meeting_id=item.meeting_id, item=item.idempotency_key)
                unreadable.append(
                    Finished(item.idempotency_key, FAILED, "unreadable", 0, None, (), now.timestamp())
                )
                continue
            by_meeting.setdefault((platform, item.meeting_id), []).append((item, hold))
        if unreadable:  # closed, its text cleared: never held again, never sent
            await self.store.finish_outbox(unreadable)
        for key, entries in by_meeting.items():
            await self._restore(key, entries, now)
        return len(claimed)

    async def _restore(self, key: MeetingKey, entries: Sequence[tuple[Item, Held]], now: datetime) -> None:
        policy = self.policies.for_meeting(*key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            state = await self._load(key)
            before, step = (
                engine.restored(state, [h for _, h in entries], policy, now, view_fresh=self.fresh())
                if policy is not None
                else (state, Step(state))
            )
            kept = {held.item_key(key[1], h) for h in before.held}
            at = now.timestamp()
            left = [
                Finished(item.idempotency_key, DROPPED, "not_restored", 0, None, (), at)
                for item, _ in entries
                if item.idempotency_key not in kept
            ]
            if left:  # no policy for the meeting now, or a destination it no longer has
                log.warning("held.not_restored", meeting_id=key[1], items=len(left))
            await self._commit(key, step, now, left, before=before)
            log.info("held.restored", meeting_id=key[1], items=len(entries) - len(left))

    async def _forget_rosters(self) -> None:
        """Delete forgotten meetings' names from the shared roster; what fails is logged and tried again on
        the next tick."""
        for key in sorted(self._roster_to_forget):
            assert self.roster is not None
            try:
                await self.roster.forget(*key)
            except StorageError:
                log.error("roster.forget_failed", meeting_id=key[1])
                return
            self._roster_to_forget.discard(key)

    def _forget_if_done(self, key: MeetingKey, state: MeetingState, now: datetime) -> bool:
        ended = self._ended_at.get(key)
        # A meeting whose content is still being delivered stays: delivery asks its consent view before every
        # attempt, and a forgotten meeting would answer "no" and lose consented content.
        # A meeting ended through another replica (``state.ended`` is False here) may still have parts for
        # meeting-end transcripts that only this replica holds: kept, not dropped unsaid (gateway.roster_log)
        unsent = not state.ended and bool(state.batches)
        done = not state.held and not unsent and not self.sink.pending(key[1])
        if ended is not None and done and now - ended > _FORGET_AFTER:
            del self._states[key]
            del self._ended_at[key]
            self._forgotten[key] = state.participants
            while len(self._forgotten) > _FORGOTTEN_ROSTERS:
                self._forgotten.popitem(last=False)
            if self.shadow is not None:
                self.shadow.forget(key)
            self._locks.pop(key, None)
            self._platforms.get(key[1], set()).discard(key[0])
            self._seen_policy.pop(key, None)
            for holders in self._identities.values():
                holders.difference_update({h for h in holders if h[0] == key})
            self._latest.pop(key, None)
            return True
        return False


def _newly_batched(before: MeetingState | None, after: MeetingState) -> list[Emit]:
    """Parts ``after`` keeps for meeting-end transcripts that ``before`` did not, as ``batched`` emissions:
    the outbox stores them with the decisions that allowed them."""
    old = before.batches if before is not None else _NO_BATCHES
    if after.batches is old or not after.batches:
        return []
    out: list[Emit] = []
    for dest, parts in after.batches.items():
        kept = old.get(dest, ())
        if len(kept) <= len(parts) and (not kept or parts[len(kept) - 1] is kept[-1]):
            new = parts[len(kept) :]  # appended (the usual case): no need to compare the rest
        else:  # a purge took some out
            seen = {p.segment_id for p in kept}
            new = tuple(p for p in parts if p.segment_id not in seen)
        for p in new:
            key = engine.item_key(after.meeting_id, dest, p.segment_id, "batched")
            out.append(Emit(dest, after.meeting_id, "batched", key, (p,)))
    return out


def _merged(stored: Batched, policy: Policy, now: datetime) -> list[Finished]:
    """The stored batched items a meeting's end decided (those of its policy's destinations), as outcomes."""
    at = now.timestamp()
    return [
        Finished(k, MERGED, "meeting_ended", 0, None, (), at)
        for dest in policy.destinations
        for k in stored.keys.get(dest.id, ())
    ]


_NO_BATCHES: Mapping[DestinationId, tuple[Part, ...]] = MappingProxyType({})


def _safely(call: Callable[..., None], *args: object) -> None:
    try:
        call(*args)
    except Exception as exc:
        log.error("observer.failed", error=type(exc).__name__)


_ERASER = f"erasure:{uuid.uuid4().hex[:12]}"
"""This process's part of the lease owner on owed deletion requests (``Gateway._erasure_lease``)."""


def _erasure_targets(record: ConsentRecord, policy: Policy) -> list[Destination]:
    taken = set(record.purposes)
    return [d for d in policy.destinations if d.erasure_url and taken.intersection(d.purposes)]


def _erasure(
    record: ConsentRecord, policy: Policy, dest: Destination, sent: Sequence[tuple[str, str]], now: datetime
) -> tuple[tuple[Decision, ...], Emit] | None:
    """The deletion request to ``dest`` for what it received of the withdrawn participant, and one ``erase``
    decision per segment citing the withdrawal's ledger record (ids only, never content)."""
    if not sent:
        return None
    # one key per withdrawal, destination and set of segments: another replica that learns of the withdrawal
    # after its own attempts on the wire ended may ask again with more segments, under a key of its own
    segments = sorted({segment for segment, _ in sent})
    listed = "\0".join(segments)
    key = hashlib.sha256(f"erasure\0{record.record_id}\0{dest.id}\0{listed}".encode()).hexdigest()[:32]
    payload = {
        "meeting_id": record.meeting_id,
        "participant_id": record.subject,
        "segment_ids": segments,
        "idempotency_keys": sorted({item_key for _, item_key in sent}),
        "consent_record_id": record.record_id,
        "reason": str(record.choice),
    }
    part = Part(f"erasure:{record.record_id}", record.subject, MappingProxyType(payload))
    emit = Emit(dest.id, record.meeting_id, "erasure", key, (part,))
    decisions = tuple(
        Decision(
            decision_id=hashlib.sha256(f"{key}\0{segment}".encode()).hexdigest()[:32],
            meeting_id=record.meeting_id,
            segment_id=segment,
            destination=dest.id,
            action=Action.ERASE,
            at=now,
            policy_revision=policy.revision,
            reasons=(f"consent_{record.choice}",),
            rule_ids=(f"destinations.{dest.id}.erasure_url",),
            consent_record_ids=(record.record_id,),
            participant_id=record.subject,
        )
        for segment in segments
    )
    return decisions, emit


def _restricts(record: ConsentRecord) -> bool:
    """An accepted refusal or withdrawal: it takes effect at once, and delivery waits while it is written."""
    return record.outcome is RecordOutcome.ACCEPTED and record.choice is not ConsentChoice.GIVEN


def _purge_for(record: ConsentRecord, policy: Policy) -> Purge | None:
    """For an accepted refusal or withdrawal: the destinations whose purposes it takes away."""
    if not _restricts(record):
        return None
    taken = set(record.purposes)
    destinations = tuple(d.id for d in policy.destinations if taken.intersection(d.purposes))
    # the deletion requests it owes are written with it: a crash before they are staged loses none
    erase = tuple(d.id for d in _erasure_targets(record, policy))
    return Purge(record.meeting_id, record.subject, destinations, erase) if destinations else None


def _merge(first: Step, second: Step) -> Step:
    return Step(second.state, first.decisions + second.decisions, first.emits + second.emits)
