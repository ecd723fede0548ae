"""The read half of the Store contract, shared by the SQL backends: ledger and decision-log queries.

Each backend supplies ``_fetch`` (run a query, errors become StorageError) and ``_where`` (a WHERE clause
from constant column names in its own placeholder style, values as parameters); the queries and their
decoding are the same everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from gateway.consent import standing
from gateway.model import ConsentRecord, Decision
from gateway.store import rows
from gateway.store.base import LedgerEntry, LedgerRow

SELECT_LEDGER = "SELECT seq, record_json, prev_hash, hash FROM ledger"
SELECT_DECISIONS = "SELECT id, record_json FROM decisions"
LEDGER_FILTERS = ("meeting_id", "subject")
DECISION_FILTERS = ("meeting_id", "participant_id")


class SQLReads(ABC):
    @abstractmethod
    async def _fetch(self, sql: str, params: list[str]) -> list[Any]: ...

    @abstractmethod
    def _where(self, columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]: ...

    async def ledger_rows(self) -> list[LedgerRow]:
        found = await self._fetch(SELECT_LEDGER + " ORDER BY seq", [])
        return [rows.ledger_row(r) for r in found]

    async def ledger_entries(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[LedgerEntry]:
        where, params = self._where(LEDGER_FILTERS, (meeting_id, participant_id))
        found = await self._fetch(SELECT_LEDGER + where + " ORDER BY seq", params)
        return [rows.decode_entry(rows.ledger_row(r)) for r in found]

    async def standing_records(self, email: str) -> list[ConsentRecord]:
        subject = standing.subject_for(email)
        entries = await self.ledger_entries(meeting_id=standing.STANDING_MEETING, participant_id=subject)
        return [entry.record for entry in entries]

    async def decision_records(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[Decision]:
        where, params = self._where(DECISION_FILTERS, (meeting_id, participant_id))
        found = await self._fetch(SELECT_DECISIONS + where + " ORDER BY id", params)
        return [rows.decode_decision(int(r[0]), str(r[1])) for r in found]
