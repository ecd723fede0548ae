"""The dispatcher: delivers allowed content to AI services, in order, with retries, and purges on withdrawal.

Last step of the flow (transform → outbox → **delivery** → AI service). Each (meeting, destination) pair
is a lane: a FIFO of items served by one worker task that exists only while the lane has work, so a later item
waits while an earlier one retries and different meetings or destinations proceed concurrently.

Consent (invariants 4 and 7 of DESIGN.md): ``allowed(part)`` is asked for every part immediately before every
attempt, with no await between the check and the start of the request, so a withdrawal recorded before an
attempt begins keeps that participant's parts out of it. ``purge()`` removes a participant's parts from queued
items and from the item in flight or in backoff; an item left with no parts is dropped as ``withdrawn``. A
request already on the wire cannot be recalled: the deletion request to the destination covers that case.

Durability (invariant 7): with an ``Outbox`` (``gateway.delivery.durable``) every item submitted here was
already written to the store with the decisions that allowed it; lanes hold the in-memory copy. Outcomes are
recorded there, leases on unfinished items are renewed, and items whose owner died (or, on a single-process
store, everything pending at start) are recovered into lanes. A shutdown leaves unfinished items pending in
the store for the next owner. Without an outbox (tests of this module alone) lanes are memory only.

Consent on a shared store: where this process does not hold the meeting's consent view (a recovered item) or
several processes share the store, the store's latest consent (``blocked``) is asked before every attempt
too, then the in-memory answer, still with no await between it and the send.

Deletion requests: before each attempt to a destination that declares an erasure endpoint, the parts are
noted in the outbox as attempted, now, by this process (``Outbox.attempting``), durably and before the
consent checks: a withdrawal recorded after the note is seen by the checks, one recorded before it lists
the parts. So a deletion request covers every attempt that may have reached the destination, whatever came
back (a timeout, a reset), and a crash loses none of them; and whoever lists them knows until when
another process's attempt may still be on the wire.

Batched destinations (``delivery: batched``): each segment is still an item of its own, stored and decided
alone; the lane's worker waits until its oldest queued segment has waited ``batch_seconds`` (or ``batch_max``
are queued, the meeting ended, or a drain began) and sends the segments queued at its head in one request,
a ``batch``. From then on the batch is one entry: purge shrinks it, retries send it again under the same key
(derived from its members' keys), and its outcome is recorded for each member item. Each part in its body
carries its own item's key, so a destination deduplicates segment by segment even where a restart groups
them differently.

Retries go on until the item's retention ends (then ``expired``), unless ``max_attempts`` bounds them; a
per-destination circuit breaker (one for its content, one for its deletion requests) stops hammering a
destination that keeps failing. Concurrency towards destinations is bounded by the aiohttp session's
connector (its per-host limit), not here.

Logs and results carry ids, status codes, attempt numbers and timings, never payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp
import structlog

from gateway.delivery.durable import Outbox
from gateway.delivery.http import CONSENT_CHANGED, Attempt, Still, always, post
from gateway.delivery.items import DestinationConfig, Item, Part, Result, Status, body, idempotency_key
from gateway.delivery.retry import Verdict, backoff, classify, retry_after

Allowed = Callable[[str, Part], bool | None]
"""Whether a part may still leave now for a destination (its id comes first); the consent ledger's answer,
asked before every attempt. None: this process does not hold the meeting, the store's answer decides."""
Rewrite = Callable[[str, Part, object], Part]
"""A part as it may leave now for a destination (its id comes first; its item's stamp last: what its text
was scrubbed under, None if not known, as for an item recovered from the store or a batch mixing stamps),
asked with ``Allowed`` before every attempt: the names of those who do not consent now scrubbed again
(``Gateway.scrubbed_now``)."""
Scrubbing = Callable[[str, str], object]
"""``(meeting_id, destination)`` -> what names are scrubbed now, compared by equality (it changes when
someone's names or consent do; None if not known): a body whose names were scrubbed under one may not leave
under another (``DispatchSink.scrubbing_now``)."""
Blocked = Callable[[str, tuple[str, ...], tuple[str, ...]], Awaitable[set[str]]]
"""``(meeting_id, participant_ids, purposes)`` -> who of them the store says may not be sent for now."""
OnResult = Callable[[Item, Result], None]
"""Told once per submitted item how it ended (with the item as submitted)."""
CHANGED_AT_ONCE = 3
"""Attempts in a row stopped by a consent change (``CONSENT_CHANGED``) that are tried again at once."""
_RECOVER_BATCH = 500
"""Items claimed from the store per query (``Outbox.recover``'s default limit)."""
LaneKey = tuple[str, str]
"""(meeting_id, destination)."""
Send = Callable[[DestinationConfig, str, bytes, int, Still], Awaitable[Attempt]]
"""One attempt: ``(config, idempotency key, body, unix timestamp, still)`` -> what happened; never raises
for network trouble. ``still`` says whether the body may still go (``delivery.http.Still``)."""

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Entry:
    """An item on its way: the parts still to send and the bookkeeping of its attempts."""

    item: Item
    parts: tuple[Part, ...]
    submitted: float
    active: bool = False
    """Picked up by its lane's worker (in flight or in backoff): purge may shrink it but not remove it."""
    attempts: int = 0
    last_key: str | None = None
    last_status: int | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when purge empties an active entry, to end its backoff early."""
    expires_at: float = float("inf")
    """Wall time after which the item is dropped as ``expired`` (its destination's retention)."""
    last_sent: tuple[Part, ...] = ()
    """The parts the latest attempt carried: what the destination has if that attempt succeeded."""
    stamp: object = None
    """What the item's text was scrubbed under (see ``submit``); None: unknown, ``Rewrite`` checks it."""
    sending: bool = False
    """An attempt is on the wire now."""
    members: tuple[_Entry, ...] = ()
    """A batch: the queued entries it carries, in order (empty: an entry for its own item)."""
    owners: dict[int, tuple[_Entry, Part]] = field(default_factory=dict)
    """A batch: for each of its parts (by ``id``), the member it came from and that member's own part."""
    origin: dict[int, Part] = field(default_factory=dict)
    """A batch: for each part rewritten before an attempt (by ``id``), the part of ``item`` it stands for."""
    expired: set[int] = field(default_factory=set)
    """A batch: ``id`` of each member whose retention ended while the batch waited; its parts are out."""


@dataclass
class _Breaker:
    """A destination's circuit: opens after ``failures`` consecutive failed attempts, for ``cooldown`` s
    (monotonic time: the wall clock may jump)."""

    failures: int = 0
    open_until: float = 0.0

    def failed(self, config: DestinationConfig, now: float) -> None:
        self.failures += 1
        if self.failures >= config.breaker_failures:
            self.open_until = now + config.breaker_cooldown

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0


class Dispatcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        destinations: Mapping[str, DestinationConfig],
        *,
        allowed: Allowed,
        on_result: OnResult | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        outbox: Outbox | None = None,
        blocked: Blocked | None = None,
        shared_store: bool = False,
        send: Send | None = None,
        purposes_of: Callable[[str], tuple[str, ...]] | None = None,
        on_purge: Callable[[str], None] | None = None,
        holds: Callable[[str], bool] | None = None,
        rewrite: Rewrite | None = None,
        prepare: Callable[[str], Awaitable[None]] | None = None,
        scrubbing: Scrubbing | None = None,
    ) -> None:
        """``clock``: wall time (signature timestamps, ``Retry-After`` dates, retention); ``rng``: backoff
        jitter; ``outbox``: durable storage of items (see the module doc); ``blocked``: the store's consent
        answer, asked before every attempt when ``shared_store`` or the meeting is not held here; ``send``:
        how one attempt goes out (default: signed HTTP POST); ``purposes_of``: a destination's purposes now
        (default: its config's; the live policies' when serving, since a reload may change them);
        ``rewrite``: each allowed part as it may leave now (default: unchanged); ``prepare``: awaited with
        the meeting id before every attempt's checks (the app holds a meeting known only from storage);
        ``scrubbing``: asked when an attempt's body is built and again right before its first byte."""
        self._session = session
        self._destinations = dict(destinations)
        self._allowed = allowed
        self._on_result = on_result
        self._clock = clock
        self._outbox = outbox
        self._blocked = blocked
        self._shared_store = shared_store
        self._send: Send = send or functools.partial(post, session)
        self._holds = holds
        """Whether this process holds a meeting's consent view (None: always); else the store is asked."""
        self._rewrite = rewrite
        self._prepare = prepare
        self._scrubbing = scrubbing
        self._on_purge = on_purge
        """Told the meeting id after a purge (transports drop what they cached of it, e.g. summaries)."""
        self._purposes_of = purposes_of or (lambda destination: self._destinations[destination].purposes)
        self._breakers: dict[str, _Breaker] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        self._lanes: dict[LaneKey, deque[_Entry]] = {}
        self._workers: dict[LaneKey, asyncio.Task[None]] = {}
        self._wakes: dict[LaneKey, asyncio.Event] = {}
        """Lanes whose worker waits for a batch to fill: set to end the wait early."""
        self._flushing: set[LaneKey] = set()
        """Lanes whose meeting ended: queued segments go without waiting for a batch to fill."""
        self._draining = 0
        """Drains under way: while any is, segments waiting for a batch to fill go at once."""
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._closed = False

    # -- public surface -------------------------------------------------------------------------------

    def submit(self, item: Item, *, stamp: object = None) -> None:
        """Queue ``item`` behind earlier items of its meeting and destination; never blocks. ``stamp``: the
        name scrubber its text went through when it was decided (None: not known, as for an item read back
        from the store), handed to ``Rewrite`` before every attempt."""
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        if item.destination not in self._destinations:
            raise ValueError(f"unknown destination {item.destination!r}")
        key = (item.meeting_id, item.destination)
        config = self._destinations[item.destination]
        expires = item.expires_at if item.expires_at is not None else self._clock() + config.retention_seconds
        entry = _Entry(item, item.parts, time.monotonic(), expires_at=expires, stamp=stamp)
        self._lanes.setdefault(key, deque()).append(entry)
        self._pending += 1
        self._idle.clear()
        if _debugging():
            log.debug("delivery.queued", **_ids(item), parts=len(item.parts))
        if self._started:
            self._ensure_worker(key)
        batch_max = config.batch_max  # None for every destination that is not batched: one test a segment
        if batch_max is not None and len(self._lanes[key]) >= batch_max and (wake := self._wakes.get(key)):
            wake.set()  # a full batch goes now; the worker counts again

    def flush(self, meeting_id: str) -> None:
        """The meeting ended: its queued segments for batched destinations go without waiting."""
        for key in self._lanes:
            if key[0] == meeting_id:
                self._flushing.add(key)
                if (wake := self._wakes.get(key)) is not None:
                    wake.set()

    def destinations(self) -> tuple[str, ...]:
        return tuple(self._destinations)

    def purge(self, meeting_id: str, participant_id: str, destination: str | None = None) -> int:
        """Remove the participant's parts from every queued, in-flight or retrying item (of one destination,
        if named: a withdrawal of one purpose leaves the others' content alone); returns the count."""
        removed = 0
        for key, lane in list(self._lanes.items()):
            if key[0] == meeting_id and destination in (None, key[1]):
                removed += sum(self._purge_entry(lane, entry, participant_id) for entry in list(lane))
                if not lane and key not in self._workers:
                    del self._lanes[key]
        log.info("delivery.purged", meeting_id=meeting_id, participant_id=participant_id, parts=removed)
        if self._on_purge is not None and removed:
            self._on_purge(meeting_id)
        return removed

    async def start(self) -> None:
        """Recover what the store holds (all of it on a single-process store), then work."""
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        if self._outbox is not None:
            while True:  # in batches, until a batch comes back short
                recovered = await self._outbox.recover(self._destinations, everything=not self._shared_store)
                for item in recovered:
                    self.submit(item)
                if self._outbox.last_claimed < _RECOVER_BATCH:
                    break
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain(), name="outbox-leases")
        self._started = True
        for key in list(self._lanes):
            self._ensure_worker(key)

    async def _maintain(self) -> None:
        """Renew our leases and take over items whose owner stopped renewing, every third of a lease; drop
        parts kept for meeting-end transcripts once past retention."""
        assert self._outbox is not None
        while True:
            await asyncio.sleep(self._outbox.lease_seconds / 3)
            try:
                await self._outbox.renew()
                await self._outbox.expire_batched()
                queued = {
                    held.item.idempotency_key
                    for lane in self._lanes.values()
                    for entry in lane
                    for held in (entry.members or (entry,))
                }
                for item in await self._outbox.recover(self._destinations):
                    if item.idempotency_key not in queued:  # a lease of ours that lapsed: already here
                        self.submit(item)
            except Exception as exc:
                # leases lapse if this keeps failing: another replica takes the items over (at least once)
                log.warning("outbox.maintenance_failed", error=type(exc).__name__)

    # The timeout parameter is the contract shutdown code wants ("drain for at most N seconds").
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every submitted item has a result; False if ``timeout`` seconds passed first. Segments
        waiting for a batch to fill go at once."""
        self._draining += 1
        for wake in self._wakes.values():
            wake.set()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._draining -= 1
        return True

    async def close(self) -> None:
        """Stop the workers; unfinished items are reported dropped (``shutdown``): drain first to avoid it."""
        self._closed = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        for lane in self._lanes.values():
            for entry in lane:
                self._finish(entry, _result(entry, Status.DROPPED, "shutdown"))
        self._lanes.clear()
        if self._outbox is not None:
            await self._outbox.flush()
            try:
                await self._outbox.release()  # the next owner takes them over at once, not after the lease
            except Exception as exc:
                log.warning("outbox.release_failed", error=type(exc).__name__)

    def depth(self) -> int:
        """Items submitted and not yet finished (queued, in flight or in backoff)."""
        return self._pending

    def pending_for(self, meeting_id: str) -> bool:
        """Whether any item of the meeting is unfinished (queued, in flight or in backoff)."""
        return any(lane for (meeting, _), lane in self._lanes.items() if meeting == meeting_id)

    async def quiesce(self, meeting_id: str, participant_id: str, limit: float) -> None:
        """Wait (at most ``limit`` s) until no attempt carrying the participant's parts is on the wire, so
        that what was delivered to whom is known (deletion requests list it)."""
        deadline = time.monotonic() + limit
        # polling: the condition spans every lane, and it runs once per withdrawal, off the hot path
        while time.monotonic() < deadline and self.on_the_wire(meeting_id, participant_id):  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def on_the_wire(self, meeting_id: str, participant_id: str) -> list[tuple[str, str, str]]:
        """(destination, segment id, idempotency key) of each attempt carrying the participant's words that
        is on the wire now. One begun before a withdrawal cannot be recalled: it may still land after the
        withdrawal is acknowledged (what a deletion request is for); nothing of theirs starts after it."""
        return [
            (destination, part.segment_id, _sent_key(entry, part))
            for (meeting, destination), lane in self._lanes.items()
            if meeting == meeting_id
            for entry in lane
            if entry.sending
            for part in entry.last_sent
            if part.participant_id == participant_id
        ]

    def oldest_age(self) -> float:
        """Seconds since the oldest unfinished item was submitted (0 when there is none)."""
        oldest = min((lane[0].submitted for lane in self._lanes.values() if lane), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def running(self) -> bool:
        """Started and not closed: submitted items will be worked on (readiness)."""
        return self._started and not self._closed

    # -- lanes ----------------------------------------------------------------------------------------

    def _ensure_worker(self, key: LaneKey) -> None:
        if key not in self._workers:
            name = f"delivery:{key[1]}:{key[0]}"
            self._workers[key] = asyncio.get_running_loop().create_task(self._run_lane(key), name=name)

    async def _run_lane(self, key: LaneKey) -> None:
        lane = self._lanes[key]
        config = self._destinations[key[1]]
        while lane:
            if config.batch_max is not None and lane[0].item.kind == "segment":
                await self._fill(key, lane, config)
                if not lane:
                    break  # purged while it waited
                if lane[0].item.kind == "segment":
                    _group(lane, config.batch_max)
            entry = lane[0]
            entry.active = True
            result = await self._deliver_safely(entry)
            lane.popleft()
            self._finish(entry, result)
        # No await since the emptiness check: a submit after this point starts a fresh worker.
        del self._lanes[key]
        del self._workers[key]
        self._flushing.discard(key)

    async def _fill(self, key: LaneKey, lane: deque[_Entry], config: DestinationConfig) -> None:
        """Wait until the segments at the lane's head make a full batch, the oldest has waited the
        destination's ``batch_seconds``, or the meeting ended or a drain began."""
        assert config.batch_max is not None
        try:
            while lane and lane[0].item.kind == "segment":
                if key in self._flushing or self._draining:
                    return
                if _leading_segments(lane, config.batch_max) >= config.batch_max:
                    return
                delay = lane[0].submitted + config.batch_seconds - time.monotonic()
                if delay <= 0:
                    return
                wake = self._wakes[key] = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
        finally:
            self._wakes.pop(key, None)

    def _purge_entry(self, lane: deque[_Entry], entry: _Entry, participant_id: str) -> int:
        if entry.item.kind == "erasure":
            return 0  # a deletion request about the participant is exactly what must still go
        kept = tuple(part for part in entry.parts if part.participant_id != participant_id)
        removed = len(entry.parts) - len(kept)
        if not removed:
            return 0
        entry.parts = kept
        if entry.active:
            if not kept:
                entry.wake.set()  # its worker drops it as soon as it is out of flight or backoff
        elif not kept:
            lane.remove(entry)
            self._finish(entry, _result(entry, Status.DROPPED, "withdrawn"))
        return removed

    def _finish(self, entry: _Entry, result: Result) -> None:
        if entry.members:
            self._finish_batch(entry, result)
            return
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()
        # Delivered items are the common case: at info level they would double the log volume of a busy
        # gateway for no operational value; anything else stays visible.
        delivered = result.status is Status.DELIVERED
        if not delivered or _debugging():
            (log.debug if delivered else log.info)(
                f"delivery.{result.status}",
                **_ids(entry.item),
                reason=result.reason,
                attempts=result.attempts,
                http_status=result.http_status,
                parts_removed=result.parts_removed,
                latency_ms=round(result.latency * 1000, 1),
            )
        if self._outbox is not None:
            self._outbox.finished(entry.item, result, entry.last_sent)
        if self._on_result is not None:
            try:
                self._on_result(entry.item, result)
            except Exception as exc:
                # A broken observer must not stall the lane; its error type is enough to find it.
                log.error("delivery.on_result_failed", **_ids(entry.item), error=type(exc).__name__)

    def _finish_batch(self, batch: _Entry, result: Result) -> None:
        """A batch's outcome, recorded for each member item: what of it the last attempt carried."""
        sent = {id(_first(batch, p)) for p in batch.last_sent} if result.status is Status.DELIVERED else set()
        kept = {id(_first(batch, part)) for part in batch.parts}
        mine: dict[int, list[tuple[Part, Part]]] = {}
        for tagged in batch.item.parts:
            owner, own = batch.owners[id(tagged)]
            mine.setdefault(id(owner), []).append((tagged, own))
        for member in batch.members:
            parts = mine.get(id(member), [])
            member.parts = tuple(own for tagged, own in parts if id(tagged) in kept)
            member.last_sent = tuple(own for tagged, own in parts if id(tagged) in sent)
            member.attempts, member.last_status = batch.attempts, batch.last_status
            member.last_key = batch.last_key
            if id(member) in batch.expired:
                outcome = _result(member, Status.DROPPED, "expired")
            elif result.status is Status.DELIVERED and not member.last_sent:
                outcome = _result(member, Status.DROPPED, "withdrawn")
            else:
                outcome = _result(member, result.status, result.reason)
            self._finish(member, outcome)

    # -- one item -------------------------------------------------------------------------------------

    async def _deliver_safely(self, entry: _Entry) -> Result:
        try:
            return await self._deliver(entry)
        except Exception as exc:
            # Fail closed and keep the lane moving; no traceback, since locals could hold payloads.
            log.error("delivery.internal_error", **_ids(entry.item), error=type(exc).__name__)
            return _result(entry, Status.FAILED, "internal_error")

    async def _deliver(self, entry: _Entry) -> Result:
        config = self._destinations[entry.item.destination]
        # a deletion request goes to another endpoint (``erasure_url``): an outage of the one content goes
        # to must not hold it back, nor its failures count against content
        endpoint = f"{config.id} erasure" if entry.item.kind == "erasure" else config.id
        breaker = self._breakers.setdefault(endpoint, _Breaker())
        number = 0
        changed = 0  # attempts in a row stopped because consent or the names to scrub changed meanwhile
        while config.max_attempts is None or number < config.max_attempts:
            await self._wait_for_circuit(entry, breaker)
            if self._clock() >= entry.expires_at:
                return _result(entry, Status.DROPPED, "expired")
            if entry.members:
                _expire_members(entry, self._clock())
            number += 1
            attempt = await self._attempt(config, entry, number)
            if attempt is None:
                return _result(entry, Status.DROPPED, "withdrawn")
            if attempt.status is not None:
                verdict = classify(attempt.status)
                if verdict is Verdict.DELIVERED:
                    breaker.succeeded()
                    return _result(entry, Status.DELIVERED, None)
                if verdict is Verdict.REJECTED:
                    breaker.succeeded()  # the destination answered: it is up, it refused this item
                    return _result(entry, Status.FAILED, f"rejected_{attempt.status}")
            if attempt.error == CONSENT_CHANGED:
                # stopped before its first byte, because a withdrawal took a part of it or changed whose
                # names are scrubbed: not the destination's fault, and what is still allowed goes at once,
                # in a body built again. Not an attempt either, a few times in a row; beyond that (a
                # meeting whose consents keep changing) it waits its backoff like any failed attempt, so a
                # summariser's model is not asked again and again
                log.info("delivery.consent_changed_in_flight", **_ids(entry.item), attempt=number)
                changed += 1
                if changed <= CHANGED_AT_ONCE:
                    number -= 1
                    continue
            else:
                changed = 0
            if attempt.error not in ("allowed_check_failed", CONSENT_CHANGED):
                breaker.failed(config, time.monotonic())
            if config.max_attempts is None or number < config.max_attempts:
                delay = min(self._delay(config, attempt, number), max(entry.expires_at - self._clock(), 0.0))
                await self._pause(entry, delay)
        return _result(entry, Status.FAILED, "exhausted")

    async def _wait_for_circuit(self, entry: _Entry, breaker: _Breaker) -> None:
        """While the destination's circuit is open, wait (not an attempt); then let one probe through."""
        while (wait := breaker.open_until - time.monotonic()) > 0 and entry.parts:
            await self._pause(entry, min(wait, max(entry.expires_at - self._clock(), 0.0)))
            if self._clock() >= entry.expires_at:
                return

    async def _attempt(self, config: DestinationConfig, entry: _Entry, number: int) -> Attempt | None:
        """One try; None when no part is allowed any more. The in-memory consent check and the send are
        adjacent; the store's answer, where it is needed, is asked just before."""
        entry.attempts = number
        try:
            if entry.item.kind == "erasure":
                config = _erasure_config(config)  # consent is not asked: the request is about its absence
            else:
                if self._prepare is not None:
                    await self._prepare(entry.item.meeting_id)
                await self._note_attempt(config, entry)
                if not await self._keep_unblocked(config, entry) or not self._keep_allowed(entry):
                    return None
        except Exception as exc:
            # Fail closed: without an answer nothing is sent now; it counts as a failed attempt, retried.
            log.warning(
                "delivery.allowed_check_failed", **_ids(entry.item), attempt=number, error=type(exc).__name__
            )
            return Attempt(error="allowed_check_failed")
        key = idempotency_key(entry.item, entry.parts)
        payload = body(entry.item, entry.parts)
        entry.last_key = key
        debugging = _debugging()
        if debugging:
            log.debug(
                "delivery.attempt", **_ids(entry.item), sent_key=key, attempt=number, parts=len(entry.parts)
            )
        entry.last_sent, entry.sending = entry.parts, True
        still = always if entry.item.kind == "erasure" else self._still(entry, entry.parts)
        try:
            attempt = await self._send(config, key, payload, int(self._clock()), still)
        finally:
            entry.sending = False
        entry.last_status = attempt.status
        if debugging:
            log.debug(
                "delivery.response",
                **_ids(entry.item),
                attempt=number,
                status=attempt.status,
                error=attempt.error,
            )
        return attempt

    async def _note_attempt(self, config: DestinationConfig, entry: _Entry) -> None:
        """Before an attempt's consent checks, where a deletion request may have to list them (the
        destination declares an erasure endpoint): note the entry's parts as attempted now and wait until
        that is durable. Some may be taken out by the checks next; a request listing them asks too much,
        which is harmless, where one missing a part that arrived is not."""
        if self._outbox is None or config.erasure_url is None:
            return
        await self._outbox.attempting({(_stored_key(entry, part), part.segment_id) for part in entry.parts})

    async def _keep_unblocked(self, config: DestinationConfig, entry: _Entry) -> bool:
        """Where needed, drop the parts the store's latest consent refuses; False when none is left."""
        if self._blocked is None:
            return True
        held_here = self._holds is None or self._holds(entry.item.meeting_id)
        if held_here and not self._shared_store:
            return True
        participants = tuple(sorted({part.participant_id for part in entry.parts}))
        blocked = await self._blocked(entry.item.meeting_id, participants, self._purposes_of(config.id))
        if blocked:
            before = len(entry.parts)
            entry.parts = tuple(part for part in entry.parts if part.participant_id not in blocked)
            log.info("delivery.parts_withdrawn", **_ids(entry.item), parts=before - len(entry.parts))
        return bool(entry.parts)

    def _still(self, entry: _Entry, sent: tuple[Part, ...]) -> Still:
        """Asked by the transport right before the body's first byte (each waits first: a connection, the
        loop turn the body is written in, a dial, a completion): whether the body built from ``sent`` may
        still go. No purge took a part since (a withdrawal recorded here or replicated), the live view
        still allows each part, and the names in it were scrubbed under what is scrubbed now: someone only
        mentioned in it who withdrew meanwhile is not named by it (their name goes in the body built again).
        Made when the body is built, with no await since its parts were scrubbed; a failing check is a no
        (fail closed)."""
        meeting, destination = entry.item.meeting_id, entry.item.destination
        scrubbing = self._scrubbing
        try:
            scrubbed_under = scrubbing(meeting, destination) if scrubbing is not None else None
        except Exception:
            return lambda: False

        def still() -> bool:
            if entry.parts is not sent:
                return False
            try:
                if scrubbing is not None and scrubbing(meeting, destination) != scrubbed_under:
                    return False
                return all(self._allowed(destination, part) is not False for part in sent)
            except Exception:
                return False

        return still

    def _keep_allowed(self, entry: _Entry) -> bool:
        """Drop the parts ``allowed`` refuses now; False when none is left. Parts of a meeting not held here
        (None) were checked against the store just before."""
        if self._blocked is None:
            kept = tuple(part for part in entry.parts if self._allowed(entry.item.destination, part))
        else:
            kept = tuple(
                part for part in entry.parts if self._allowed(entry.item.destination, part) is not False
            )
        if len(kept) != len(entry.parts):
            log.info("delivery.parts_withdrawn", **_ids(entry.item), parts=len(entry.parts) - len(kept))
        if self._rewrite is not None:
            kept = self._rewritten(entry, kept)
        entry.parts = kept
        return bool(kept)

    def _rewritten(self, entry: _Entry, parts: tuple[Part, ...]) -> tuple[Part, ...]:
        """``parts`` as they may leave now (``Rewrite``); a batch learns which member a new part is of."""
        assert self._rewrite is not None
        out = []
        for part in parts:
            now = self._rewrite(entry.item.destination, part, entry.stamp)
            if now is not part and entry.owners:
                entry.owners[id(now)] = entry.owners[id(part)]
                entry.origin[id(now)] = entry.origin.get(id(part), part)
            out.append(now)
        return tuple(out)

    def _delay(self, config: DestinationConfig, attempt: Attempt, number: int) -> float:
        requested = retry_after(attempt.retry_after, self._clock(), config.backoff_max)
        if requested is not None:
            return requested
        return backoff(number, config.backoff_base, config.backoff_max, self._rng)

    async def _pause(self, entry: _Entry, delay: float) -> None:
        """Back off for ``delay`` seconds, or less if a purge leaves the entry with nothing to send."""
        if not entry.parts:
            return
        entry.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await entry.wake.wait()


def _result(entry: _Entry, status: Status, reason: str | None) -> Result:
    return Result(
        status=status,
        reason=reason,
        attempts=entry.attempts,
        latency=time.monotonic() - entry.submitted,
        http_status=entry.last_status,
        idempotency_key=entry.last_key,
        parts_removed=len(entry.item.parts) - len(entry.parts),
    )


def _leading_segments(lane: deque[_Entry], limit: int) -> int:
    """How many ``segment`` entries the lane starts with (counting stops at ``limit``)."""
    count = 0
    for entry in lane:
        if entry.item.kind != "segment" or count == limit:
            break
        count += 1
    return count


def _group(lane: deque[_Entry], limit: int) -> None:
    """Replace the segments at the lane's head (at most ``limit``) with one batch entry carrying them."""
    members = tuple(lane.popleft() for _ in range(_leading_segments(lane, limit)))
    owners: dict[int, tuple[_Entry, Part]] = {}
    parts: list[Part] = []
    for member in members:
        member.active = True
        for own in member.parts:
            payload = MappingProxyType({**own.payload, "idempotency_key": member.item.idempotency_key})
            tagged = Part(own.meeting_id, own.participant_id, own.segment_id, payload)
            owners[id(tagged)] = (member, own)
            parts.append(tagged)
    first = members[0].item
    keys = "\n".join(member.item.idempotency_key for member in members)
    key = "b" + hashlib.blake2b(keys.encode(), digest_size=16).hexdigest()
    expires = max(member.expires_at for member in members)
    item = Item(first.destination, key, first.meeting_id, "batch", tuple(parts), expires)
    batch = _Entry(item, item.parts, min(m.submitted for m in members), expires_at=expires, members=members)
    batch.owners = owners
    if all(member.stamp is members[0].stamp for member in members):
        batch.stamp = members[0].stamp
    lane.appendleft(batch)


def _first(batch: _Entry, part: Part) -> Part:
    """The part of the batch's item that ``part`` is, or stands for since it was rewritten."""
    return batch.origin.get(id(part), part)


def _expire_members(batch: _Entry, now: float) -> None:
    """Take out the parts of members whose retention ended (the batch lives until its newest member's)."""
    for member in batch.members:
        if id(member) not in batch.expired and now >= member.expires_at:
            batch.expired.add(id(member))
            batch.parts = tuple(part for part in batch.parts if batch.owners[id(part)][0] is not member)


def _stored_key(entry: _Entry, part: Part) -> str:
    """The key of the stored item ``part`` is of: in a batch, its member's."""
    if entry.members:
        return entry.owners[id(part)][0].item.idempotency_key
    return entry.item.idempotency_key


def _sent_key(entry: _Entry, part: Part) -> str:
    """The idempotency key under which a destination receives ``part``: in a batch, its own item's."""
    if entry.members:
        return entry.owners[id(part)][0].item.idempotency_key
    return entry.last_key or ""


def _debugging() -> bool:
    """Whether debug events are logged now. The hot path asks first: building a filtered event's fields
    (three calls a segment) cost more than the question."""
    return bool(log.is_enabled_for(logging.DEBUG))


def _ids(item: Item) -> dict[str, str]:
    return {
        "destination": item.destination,
        "meeting_id": item.meeting_id,
        "idempotency_key": item.idempotency_key,
    }


def _erasure_config(config: DestinationConfig) -> DestinationConfig:
    """Deletion requests are signed POSTs to the destination's erasure endpoint, whatever its kind."""
    assert config.erasure_url is not None, "erasure items are made only for destinations declaring one"
    return dataclasses.replace(config, url=config.erasure_url, kind="http")
