"""The storage interface: consent ledger and decision log behind one contract.

SQLite (embedded default, ``sqlite.py``) and PostgreSQL (``postgres.py``) implement it. Every
method that writes returns only after the write is durable: the caller acts on a consent only once
``append_consent`` has returned (invariant 1). Any storage failure raises ``StorageError`` and the caller
fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.model import ConsentRecord, Decision


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


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageError unless storage answers now (readiness)."""

    async def append_consent(self, record: ConsentRecord) -> LedgerEntry:
        """Chain and durably write one record; returns once committed."""

    async def append_decisions(self, decisions: Sequence[Decision]) -> None:
        """Durably write decision-log records; concurrent calls may share one commit."""

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
