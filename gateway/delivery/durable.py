"""The delivery stage's side of the durable outbox: sealing items for storage, recording outcomes, leases.

The runtime writes what ``seal`` makes in the transaction that logs the decisions (``append_decisions``),
so content is durable before its event is acknowledged; the dispatcher then delivers the in-memory copy and
reports each outcome here, where it is recorded (payloads cleared) in a later group commit. A process that
dies leaves its items pending in the store: their leases run out and ``recover`` hands them to whichever
process asks next (or, on SQLite, to the next start), opened again with the outbox keyring.

Sealed plaintext is the part's ids and payload as JSON; the associated data binds it to its item key and
segment, so a sealed payload moved to another row does not open.

For deletion requests the dispatcher notes here (``attempting``) which parts it is about to send to a
destination that declares an erasure endpoint, when and as whom, and waits until that is durable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Literal

import structlog

from gateway.delivery.items import DestinationConfig, Item, Part, Result, Status
from gateway.sealing import Keyring, SealingError
from gateway.store import outbox as stored
from gateway.store.base import StorageError, Store

log = structlog.get_logger(__name__)


LEASE_SECONDS = stored.LEASE_SECONDS
"""How long an item stays its writer's without a renewal; the owner renews every third of it."""


def new_owner() -> str:
    """A lease owner id unique to this process run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Outbox:
    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        *,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._unrecorded: set[asyncio.Future[None]] = set()
        self._done: list[stored.Finished] = []
        self.last_claimed = 0
        """How many items the latest ``recover`` claimed (readable or not)."""

    def lease(self) -> stored.Lease:
        return stored.Lease(self.owner, self._clock() + self.lease_seconds)

    # --- items in and out of storage -----------------------------------------------------------------

    def seal(
        self, item: Item, config: DestinationConfig, purposes: tuple[str, ...] | None = None
    ) -> stored.OutboxItem:
        """The item as the store keeps it; ``purposes``: the destination's now (default: its config's)."""
        now = self._clock()
        parts = tuple(self._seal_part(item.idempotency_key, part) for part in item.parts)
        return stored.OutboxItem(
            key=item.idempotency_key,
            meeting_id=item.meeting_id,
            destination=item.destination,
            kind=item.kind,
            purposes=config.purposes if purposes is None else purposes,
            created_at=now,
            expires_at=item.expires_at if item.expires_at is not None else now + config.retention_seconds,
            parts=parts,
        )

    def _seal_part(self, key: str, part: Part) -> stored.SealedPart:
        # ASCII JSON: platform ids are opaque text and may hold lone surrogates, which UTF-8 cannot encode
        ids_and_payload = [part.meeting_id, part.participant_id, part.segment_id, dict(part.payload)]
        plain = json.dumps(ids_and_payload, separators=(",", ":")).encode()
        digest = hashlib.sha256(plain).hexdigest()
        sealed = self.keyring.seal(plain, _aad(key, part.segment_id))
        return stored.SealedPart(part.participant_id, part.segment_id, digest, sealed)

    def open(self, item: stored.OutboxItem) -> Item:
        """The deliverable item again; SealingError if a part cannot be opened (unknown key, tampered)."""
        parts = []
        for part in item.parts:
            plain = self.keyring.open(part.sealed, _aad(item.key, part.segment_id))
            meeting_id, participant_id, segment_id, payload = json.loads(plain)
            parts.append(Part(meeting_id, participant_id, segment_id, MappingProxyType(payload)))
        meeting = parts[0].meeting_id if parts else item.meeting_id
        written = item.written if len(item.written) > len(parts) else ()
        kind = _KINDS.get(item.kind, "segment")
        return Item(item.destination, item.key, meeting, kind, tuple(parts), item.expires_at, written)

    # --- parts kept for meeting-end transcripts (``stored.BATCHED``) -------------------------------------

    async def batched(self, meeting_id: str) -> list[Item]:
        """The meeting's pending batched items, opened, oldest first. One that cannot be opened (its key
        removed, or altered at rest) is left out and logged: it stays pending until it expires."""
        opened = []
        for row in await self.store.batched_items(meeting_id):
            try:
                item = self.open(row)
            except (SealingError, ValueError, TypeError):
                log.error("outbox.batched_unreadable", meeting_id=meeting_id, item=row.key)
                continue
            opened.append(Item(item.destination, item.idempotency_key, item.meeting_id, "batched",
                               item.parts, item.expires_at))  # fmt: skip
        return opened

    async def expire_batched(self) -> int:
        """Drop (``expired``) batched items past their destination's retention, payloads cleared: a meeting
        that never ended keeps nothing at rest for longer than the policy says."""
        now = self._clock()
        keys = await self.store.batched_expired(now)
        if keys:
            await self.store.finish_outbox(
                [stored.Finished(k, stored.DROPPED, "expired", 0, None, (), now) for k in keys]
            )
            log.warning("outbox.batched_expired", items=len(keys))
        return len(keys)

    # --- outcomes ------------------------------------------------------------------------------------

    def finished(self, item: Item, result: Result, sent: tuple[Part, ...]) -> None:
        """Record an outcome (a shutdown is not one: the item stays pending for the next owner)."""
        if result.status is Status.DROPPED and result.reason == "shutdown":
            return
        done = stored.Finished(
            key=item.idempotency_key,
            status=str(result.status),
            reason=result.reason,
            attempts=result.attempts,
            http_status=result.http_status,
            sent=tuple(part.segment_id for part in sent)
            if result.status is Status.DELIVERED and item.kind != "erasure"
            else (),
            at=self._clock(),
        )
        self._record(done)

    async def attempting(self, parts: Iterable[tuple[str, str]]) -> None:
        """Note ``(item key, segment id)`` parts as attempted now by this process, durably, before they are
        sent: a deletion request lists them whatever the attempt's outcome, once it cannot be on the wire
        any more. Raises StorageError (then nothing is sent)."""
        at = self._clock()
        marks = [stored.Attempted(key, segment, at, self.owner) for key, segment in sorted(parts)]
        await self.store.attempt_outbox(marks)

    def _record(self, done: stored.Finished) -> None:
        # outcomes of one loop iteration share one write (and with it the writer's next commit)
        if not self._done:
            asyncio.get_running_loop().call_soon(self._record_done)
        self._done.append(done)

    def _record_done(self) -> None:
        done, self._done = self._done, []
        try:
            future = self.store.finish_outbox(done)
        except StorageError:
            # at least once: the items stay pending and are delivered again, under the same keys
            log.warning("outbox.outcome_not_recorded", items=len(done))
            return
        self._unrecorded.add(future)
        future.add_done_callback(self._recorded)

    def _recorded(self, future: asyncio.Future[None]) -> None:
        self._unrecorded.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("outbox.outcome_not_recorded", error=type(future.exception()).__name__)

    async def flush(self) -> None:
        """Wait until every outcome handed over so far is recorded (or failed)."""
        if self._done:
            self._record_done()
        if self._unrecorded:
            await asyncio.gather(*list(self._unrecorded), return_exceptions=True)

    # --- leases --------------------------------------------------------------------------------------

    async def renew(self) -> None:
        await self.store.renew_outbox(self.lease())

    async def release(self) -> None:
        await self.store.release_outbox(self.owner)

    async def claim_held(self, *, everything: bool = False, limit: int = 500) -> list[Item]:
        """Claim held segments whose lease ran out (``everything``: all pending, for a single-process store
        at start), opened; one that cannot be opened is recorded as failed here."""
        now = float("inf") if everything else self._clock()
        items: list[Item] = []
        while True:
            claimed = await self.store.claim_outbox(self.lease(), now, limit, held=True)
            items += self._opened(claimed)
            if len(claimed) < limit:
                return items

    async def recover(
        self, configs: Mapping[str, DestinationConfig], *, everything: bool = False, limit: int = 500
    ) -> list[Item]:
        """Claim items whose lease ran out (``everything``: all pending, for a single-process store at start)
        and open them; items that cannot be delivered any more are recorded as failed here."""
        now = float("inf") if everything else self._clock()
        claimed = await self.store.claim_outbox(self.lease(), now, limit)
        items = self._opened(claimed, configs)
        if claimed:
            log.info("outbox.recovered", items=len(items), unrecoverable=len(claimed) - len(items))
        self.last_claimed = len(claimed)
        return items

    def _opened(
        self, claimed: list[stored.OutboxItem], configs: Mapping[str, DestinationConfig] | None = None
    ) -> list[Item]:
        """The claimed items opened; each that cannot be (``configs``: nor delivered any more) is recorded as
        failed, with the reason logged."""
        items: list[Item] = []
        for row in claimed:
            reason = None
            if configs is not None and row.destination not in configs:
                reason = "destination_removed"
            elif not row.parts:
                reason = "nothing_left"
            else:
                try:
                    items.append(self.open(row))
                    continue
                except (SealingError, ValueError, TypeError):
                    reason = "unreadable"  # a key removed too early, or a row altered at rest
            log.error(
                "outbox.unrecoverable", idempotency_key=row.key, destination=row.destination, reason=reason
            )
            self._record(stored.Finished(row.key, str(Status.FAILED), reason, 0, None, (), self._clock()))
        return items


_KINDS: dict[str, Literal["segment", "transcript", "erasure", "held"]] = {
    "transcript": "transcript",
    "erasure": "erasure",
    stored.HELD: "held",
}
"""Stored kinds opened as items of their own kind; any other is a segment."""


def _aad(key: str, segment_id: str) -> bytes:
    return json.dumps([key, segment_id]).encode()
