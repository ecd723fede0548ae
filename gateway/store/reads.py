"""The read half of the Store contract, shared by the SQL backends: ledger and decision-log queries.

Each backend supplies ``_fetch`` (run a query, errors become StorageError) and ``_where`` (a WHERE clause
from constant column names in its own placeholder style, values as parameters); the queries and their
decoding are the same everywhere.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from gateway.consent import standing
from gateway.model import ConsentRecord, Decision
from gateway.store import outbox, rows
from gateway.store.base import LedgerEntry, LedgerRow
from gateway.store.columns import unstored

SELECT_LEDGER = "SELECT seq, record_json, prev_hash, hash FROM ledger"
SELECT_LEDGER_COLUMNS = (
    "SELECT seq, record_json, prev_hash, hash, record_id, meeting_id, subject, at FROM ledger"
)
SELECT_DECISIONS = "SELECT id, record_json FROM decisions"
LEDGER_FILTERS = ("meeting_id", "subject")
DECISION_FILTERS = ("meeting_id", "participant_id")
_SUMMARY_STATUS = "CASE WHEN kind IN ('batched', 'held') AND status = 'pending' THEN kind ELSE status END"
"""``outbox status`` shows parts kept for a meeting-end transcript as ``batched`` and segments waiting for a
consent decision as ``held``, not as pending delivery."""
SELECT_SEALED_HEADERS = "SELECT substr(sealed, 1, 64) FROM outbox_parts WHERE sealed IS NOT NULL"
# The stored roster (gateway.roster_log), the same table on both backends; ``?`` placeholders
# (``outbox.numbered`` for PostgreSQL). Its insert differs per backend (how each serialises the numbering).
SELECT_ROSTER = "SELECT seq, change_id, platform, meeting_id, ordinal, sealed FROM roster_log"
SELECT_ROSTER_OF = SELECT_ROSTER + " WHERE meeting_id = ? AND platform = ? ORDER BY seq"
SELECT_ROSTER_HEADERS = "SELECT substr(sealed, 1, 64) FROM roster_log"
"""Roster rows are sealed with the outbox keys too: a key stays needed while either holds anything under it
(roster rows go when their meeting is forgotten)."""
SELECT_ROSTER_MEETINGS = "SELECT DISTINCT platform, meeting_id FROM roster_log ORDER BY 1, 2"
FORGET_ROSTER = "DELETE FROM roster_log WHERE meeting_id = ? AND platform = ?"
"""64 bytes is enough of a sealed blob for ``Keyring.key_id_of``: version, id length, a key id of up to 32
characters, nonce and tag (``gateway.sealing``'s layout), so its checks pass on the prefix as on the whole."""


class SQLReads(ABC):
    sealed_headers: tuple[str, ...] = (SELECT_SEALED_HEADERS,)
    """Queries for the first bytes of every blob sealed with the outbox keys (``sealed_key_ids``)."""

    @abstractmethod
    async def _fetch(self, sql: str, params: list[Any]) -> list[Any]: ...

    @abstractmethod
    def _where(self, columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]: ...

    async def ledger_rows(self) -> list[LedgerRow]:
        """Every row as stored, with its indexed columns, for ``verify``."""
        found = await self._fetch(SELECT_LEDGER_COLUMNS + " ORDER BY seq", [])
        return [rows.ledger_row(r) for r in found]

    async def ledger_entries(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[LedgerEntry]:
        where, params = self._where(LEDGER_FILTERS, (meeting_id, participant_id))
        found = await self._fetch(SELECT_LEDGER + where + " ORDER BY seq", params)
        entries = [rows.decode_entry(rows.ledger_row(r)) for r in found]
        # the filter ran on the indexed columns, which the hash does not cover: what it found must be what
        # was asked for (``verify`` reports a row whose columns disagree with its record)
        return [
            e
            for e in entries
            if (meeting_id is None or e.record.meeting_id == meeting_id)
            and (participant_id is None or e.record.subject == participant_id)
        ]

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

    async def blocked(
        self, meeting_id: str, participants: Sequence[str], purposes: Sequence[str]
    ) -> set[str]:
        """Participants whose latest accepted choice in the meeting refuses or withdraws one of these."""
        found = await self.blocked_pairs([(meeting_id, who) for who in participants], purposes)
        return {who for _, who in found}

    async def blocked_pairs(
        self, pairs: Sequence[tuple[str, str]], purposes: Sequence[str]
    ) -> set[tuple[str, str]]:
        """``blocked`` for many (meeting, participant) pairs in few queries: those refused or withdrawn, or
        whose grant has expired by now."""
        found: set[tuple[str, str]] = set()
        if not purposes or not pairs:
            return found
        original = {(self._column_of(m), self._column_of(p)): (m, p) for m, p in pairs}
        keys = list(original)
        for start in range(0, len(keys), outbox.PAIRS_PER_QUERY):
            chunk = keys[start : start + outbox.PAIRS_PER_QUERY]
            sql, params = outbox.blocked_pairs_query(chunk, tuple(purposes), time.time())
            for row in await self._fetch(self._placeholders(sql), list(params)):
                pair = original.get((str(row[0]), str(row[1])))
                if pair is not None:
                    found.add(pair)
        return found

    async def outbox_report(self, *, meeting_id: str | None = None) -> list[dict[str, object]]:
        """Outbox items as stored, without payloads: key, meeting, destination, status, reason, attempts."""
        where, params = self._where(("meeting_id",), (meeting_id,))
        sealed = (
            "SELECT COUNT(*) FROM outbox_parts p WHERE p.item_key = outbox.item_key AND p.sealed IS NOT NULL"
        )
        columns = "item_key, meeting_id, destination, kind, status, reason, attempts, http_status"
        found = await self._fetch(f"SELECT {columns}, ({sealed}) FROM outbox{where} ORDER BY id", params)  # noqa: S608
        names = ("key", "meeting_id", "destination", "kind", "status", "reason", "attempts", "http_status",
                 "sealed_parts")  # fmt: skip
        return [dict(zip(names, tuple(r), strict=True)) for r in found]

    async def outbox_parts(self, *, meeting_id: str, participant_id: str) -> list[dict[str, object]]:
        """A participant's outbox parts without payloads: item key, destination and segment id (as given,
        not as stored), digest, state, whether the sealed payload is still there, and when and by whom the
        latest attempt carrying it to a destination that declares an erasure endpoint began (else None)."""
        sql, params = (
            "SELECT p.item_key, o.destination, p.segment_id, p.digest, p.state, p.sealed IS NOT NULL,"
            " p.attempted_at, p.attempted_by FROM outbox_parts p JOIN outbox o ON o.item_key = p.item_key"
            " WHERE p.meeting_id = ? AND p.participant_id = ? ORDER BY o.id, p.ord",
            [self._column_of(meeting_id), self._column_of(participant_id)],
        )
        found = await self._fetch(self._placeholders(sql), params)
        return [
            {
                "key": str(r[0]),
                "destination": unstored(str(r[1])),
                "segment_id": unstored(str(r[2])),
                "digest": r[3],
                "state": r[4],
                "sealed": bool(r[5]),
                "attempted_at": None if r[6] is None else float(r[6]),
                "attempted_by": None if r[7] is None else str(r[7]),
            }
            for r in found
        ]

    def _column_of(self, value: str) -> str:
        """How an id is stored in an indexed column (PostgreSQL escapes a few characters)."""
        return value

    def _placeholders(self, sql: str) -> str:
        return sql

    # --- outbox reports for operators (``consent-gateway outbox status|keys``) ----------------------------

    async def outbox_summary(self, *, meeting_id: str | None = None) -> list[dict[str, object]]:
        """Outbox items counted by destination, status and reason, with how many parts still hold sealed
        text and the oldest item's creation time; ids and payloads stay out."""
        where, params = self._where(("meeting_id",), (meeting_id,))
        sealed = "SELECT COUNT(*) FROM outbox_parts p WHERE p.item_key = o.item_key AND p.sealed IS NOT NULL"
        found = await self._fetch(
            "SELECT destination, status, reason, COUNT(*), SUM(sealed), MIN(created_at) FROM"  # noqa: S608
            f" (SELECT destination, {_SUMMARY_STATUS} AS status, reason, created_at, ({sealed}) AS sealed"
            f" FROM outbox o{where}) t"
            " GROUP BY destination, status, reason",
            params,
        )
        found.sort(key=lambda r: (str(r[0]), str(r[1]), str(r[2] or "")))  # NULLs sort apart per backend
        names = ("destination", "status", "reason", "items", "sealed_parts", "oldest_created_at")
        return [
            dict(
                zip(names, (str(r[0]), str(r[1]), r[2], int(r[3]), int(r[4] or 0), float(r[5])), strict=True)
            )
            for r in found
        ]

    async def batched_items(self, meeting_id: str) -> list[outbox.OutboxItem]:
        """The meeting's batched items still pending (parts of its meeting-end transcripts), oldest first."""
        found = await self._fetch(self._placeholders(outbox.SELECT_BATCHED), [self._column_of(meeting_id)])
        return [outbox.batched_item(meeting_id, tuple(row)) for row in found]

    async def batched_expired(self, now: float) -> list[str]:
        """Keys of batched items whose retention ended before ``now`` (unix seconds)."""
        found = await self._fetch(self._placeholders(outbox.SELECT_BATCHED_EXPIRED), [now])
        return [str(row[0]) for row in found]

    async def sealed_key_ids(self, key_id_of: Callable[[bytes], str]) -> dict[str, int]:
        """How many outbox parts still hold sealed text, per the key that sealed them (``key_id_of``, e.g.
        ``Keyring.key_id_of``, reads it from the blob's header). Only each blob's first bytes are read."""
        counts: dict[str, int] = {}
        for query in self.sealed_headers:
            for row in await self._fetch(query, []):
                key_id = key_id_of(bytes(row[0]))
                counts[key_id] = counts.get(key_id, 0) + 1
        return counts
