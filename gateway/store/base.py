"""The storage interface: consent ledger and decision log behind one contract.

SQLite (embedded default, ``sqlite.py``) and PostgreSQL (``postgres.py``) implement it. Every
method that writes returns only after the write is durable: the caller acts on a consent only once
``append_consent`` has returned (invariant 1). Any storage failure raises ``StorageError`` and the caller
fails closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.model import ConsentRecord, Decision
from gateway.roster_log import StoredChange
from gateway.store.outbox import Attempted, Finished, Lease, OutboxItem, OwedErasure, Purge


class StorageError(Exception):
    """Storage is unreachable or refused a write; nothing may be forwarded on the strength of it."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A consent record at its place in the hash chain."""

    seq: int
    record: ConsentRecord
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A ledger entry exactly as stored: the canonical record JSON, not yet decoded.

    Verification works on these so that a row an attacker made undecodable is still reported as a
    problem at its sequence number instead of stopping the audit.
    """

    seq: int
    record_json: str
    prev_hash: str
    hash: str
    columns: tuple[str, str, str, str] | None = None
    """The row's indexed columns (record id, meeting id, subject, time), decoded to the values the record
    holds, when read from a database: reads filter on them, so ``verify`` checks them against the record
    (the hash covers only the record). None for an export, which has no such columns."""


class Store(Protocol):
    shared: bool
    """Whether other processes may write the same store (PostgreSQL replicas): delivery then asks the
    store's latest consent before every send."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageError unless storage answers now (readiness)."""

    async def claim_delivery(self, key: str, now: float, until: float) -> bool:
        """Claim a signed delivery's key (``gateway.store.deliveries``) until ``until``; False while an
        earlier claim of it is live: a replay, whichever replica accepted it."""
        ...

    async def release_delivery(self, key: str) -> None:
        """Give a claim up: its delivery was not accepted, so the sender's retry of it is no replay."""
        ...

    async def extend_delivery(self, key: str, until: float) -> None:
        """Keep a claim until ``until``: its delivery was applied."""
        ...

    async def append_consent(self, record: ConsentRecord, purge: Purge | None = None) -> LedgerEntry:
        """Chain and durably write one record; returns once committed. With ``purge``, the participant's
        queued outbox parts for those destinations are withdrawn in the same transaction (invariant 4), and
        the deletion requests it owes (``Purge.erase``) are recorded there too."""

    async def append_decisions(
        self,
        decisions: Sequence[Decision],
        items: Sequence[OutboxItem] = (),
        lease: Lease | None = None,
        finished: Sequence[Finished] = (),
    ) -> None:
        """Durably write decision-log records and the outbox items they allowed (leased to ``lease``'s
        owner), and ``finished`` outcomes (batched items merged into a transcript item written here), in
        one transaction; concurrent calls may share one commit."""

    def finish_outbox(self, done: Sequence[Finished]) -> asyncio.Future[None]:
        """Record outcomes of outbox items (payloads are cleared); shares the next commit."""

    def attempt_outbox(self, marks: Sequence[Attempted]) -> asyncio.Future[None]:
        """Note parts as attempted (the first time is kept); shares the next commit: send once it resolves."""

    async def claim_erasures(self, lease: Lease, now: float, limit: int) -> list[OwedErasure]:
        """Take up to ``limit`` owed deletion requests whose lease ran out before ``now``."""

    async def claim_erasure(self, record_id: str, destination: str, lease: Lease, now: float) -> bool:
        """Take one owed deletion request (False: no longer owed, or another's lease on it is live at
        ``now``): whoever holds it stages it."""

    async def erasure_done(self, record_id: str, destination: str) -> None:
        """An owed deletion request is staged in the outbox (or cannot be any more): it is owed no longer."""

    async def append_roster(
        self, change_id: str, platform: str, meeting_id: str, participant_id: str, names: bool, sealed: bytes
    ) -> tuple[int, int]:
        """Append a roster change durably (``gateway.roster_log.RosterStore``)."""

    async def roster_of(self, platform: str, meeting_id: str) -> list[StoredChange]:
        """A meeting's roster changes in sequence order."""

    async def forget_roster(self, platform: str, meeting_id: str) -> None:
        """Delete a meeting's roster changes."""

    async def roster_meetings(self) -> list[tuple[str, str]]:
        """(platform, meeting id) of every meeting with roster changes."""

    async def claim_outbox(
        self, lease: Lease, now: float, limit: int, *, held: bool = False
    ) -> list[OutboxItem]:
        """Take up to ``limit`` pending items whose lease ran out before ``now`` (oldest first): items to
        deliver, or with ``held`` only held segments (``gateway.store.outbox.HELD``)."""

    async def renew_outbox(self, lease: Lease) -> None:
        """Extend the lease of every pending item the owner holds."""

    async def release_outbox(self, owner: str) -> None:
        """Give up the owner's pending items so that whoever asks next takes them over at once."""

    async def blocked(
        self, meeting_id: str, participants: Sequence[str], purposes: Sequence[str]
    ) -> set[str]:
        """Participants whose latest accepted choice refuses or withdraws one of ``purposes`` (any writer)."""

    async def blocked_pairs(
        self, pairs: Sequence[tuple[str, str]], purposes: Sequence[str]
    ) -> set[tuple[str, str]]:
        """``blocked`` for many (meeting, participant) pairs at once."""

    async def outbox_report(self, *, meeting_id: str | None = None) -> list[dict[str, object]]:
        """Outbox items without payloads (ids, statuses, counts)."""

    async def outbox_summary(self, *, meeting_id: str | None = None) -> list[dict[str, object]]:
        """Outbox items counted by destination, status and reason (``consent-gateway outbox status``)."""

    async def sealed_key_ids(self, key_id_of: Callable[[bytes], str]) -> dict[str, int]:
        """Parts still holding sealed text, per sealing key id (``consent-gateway outbox keys``)."""

    async def batched_items(self, meeting_id: str) -> list[OutboxItem]:
        """The meeting's pending batched items (``gateway.store.outbox.BATCHED``), oldest first."""

    async def batched_expired(self, now: float) -> list[str]:
        """Keys of pending batched items whose retention ended before ``now``."""

    async def outbox_parts(self, *, meeting_id: str, participant_id: str) -> list[dict[str, object]]:
        """One participant's outbox parts without payloads (ids, digests, states)."""

    async def ledger_entries(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[LedgerEntry]:
        """Ledger entries in chain order, optionally filtered."""

    async def standing_records(self, email: str) -> list[ConsentRecord]:
        """Standing consent records of a verified e-mail, in chain order (see gateway.consent.standing)."""

    async def ledger_rows(self) -> list[LedgerRow]:
        """Every ledger row as stored, in sequence order, for verification and export."""

    async def decision_records(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[Decision]:
        """Decision-log records in the order written, optionally filtered."""
