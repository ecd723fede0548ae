"""The PostgreSQL end of replication: a dedicated connection that LISTENs for commits to a log and reads them.

Two logs are followed, each on its own connection: the consent ledger (``LedgerListener``) and the shared
roster (``RosterListener``, ``gateway.roster_log``). A trigger on each (migrations 3 and 4 in
``gateway.store.postgres``) sends ``pg_notify(channel, seq)`` for every row; PostgreSQL delivers
notifications at commit, in commit order, to every listening connection. This module is the driver-specific
half of ``gateway.replication.Feed``: it connects, listens, reports the connection's loss, and reads rows
after a sequence number. Errors surface as ``StorageError`` naming the error class and SQLSTATE only, never
the DSN or a value from a row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

import asyncpg

from gateway import roster_log
from gateway.replication import OnLost, OnNotify
from gateway.roster_log import RosterChange
from gateway.sealing import Keyring
from gateway.store import rows
from gateway.store.base import LedgerEntry, StorageError
from gateway.store.postgres import _DRIVER_ERRORS, SELECT_ROSTER, _error_name, roster_row
from gateway.store.reads import SELECT_LEDGER

CHANNEL = "consent_gateway_ledger"
ROSTER_CHANNEL = "consent_gateway_roster"
APPLICATION_NAME = "consent-gateway-replication"
"""Shown in ``pg_stat_activity``, so an operator can tell the listening connections from the pool's."""

E = TypeVar("E")


class _Listener(ABC, Generic[E]):
    """``Feed`` of one log on a PostgreSQL database: one connection, outside the store's pool."""

    channel = ""
    table = ""
    head_sql = ""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0, command_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._conn: asyncpg.Connection | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"  # never the DSN: it may carry a password

    async def connect(self, on_notify: OnNotify, on_lost: OnLost) -> None:
        await self.close()

        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            on_notify(int(payload) if payload.isdigit() else None)

        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings={"application_name": APPLICATION_NAME},
            )
        except (*_DRIVER_ERRORS, ValueError) as exc:
            raise StorageError(f"cannot open the ledger listener ({_error_name(exc)})") from exc
        self._conn = conn
        try:
            await conn.add_listener(self.channel, notified)
        except _DRIVER_ERRORS as exc:
            await self.close()
            raise StorageError(f"cannot listen for {self.table} commits ({_error_name(exc)})") from exc

        def terminated(_conn: object) -> None:
            if self._conn is conn:  # not a connection this listener closed itself
                on_lost()

        conn.add_termination_listener(terminated)

    async def head(self) -> int:
        found = await self._query(self.head_sql)
        return int(found[0][0])

    @abstractmethod
    async def after(self, seq: int, limit: int) -> list[E]:
        """Up to ``limit`` committed entries after ``seq``, in sequence order."""

    def backend_pid(self) -> int | None:
        """The server process of the listening connection (what ``pg_terminate_backend`` takes)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await conn.close(timeout=self._command_timeout)
        except _DRIVER_ERRORS:
            conn.terminate()

    async def _query(self, sql: str, *params: int) -> list[asyncpg.Record]:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise StorageError(f"{self.table} listener is not connected")
        try:
            return list(await conn.fetch(sql, *params))
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "read", _error_name) from exc


class LedgerListener(_Listener[LedgerEntry]):
    """Follows the consent ledger."""

    channel = CHANNEL
    table = "ledger"
    head_sql = "SELECT COALESCE(MAX(seq), 0) FROM ledger"

    async def after(self, seq: int, limit: int) -> list[LedgerEntry]:
        found = await self._query(SELECT_LEDGER + " WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit)
        return [rows.decode_entry(rows.ledger_row(row)) for row in found]


class RosterListener(_Listener[RosterChange]):
    """Follows the shared roster, opening each change with the outbox keys. A change no configured key opens
    raises (``SealingError``): the follower then retries and its view stays unconfirmed, so the replica holds
    instead of forwarding on a roster it knows to be incomplete."""

    channel = ROSTER_CHANNEL
    table = "roster_log"
    head_sql = "SELECT COALESCE(MAX(seq), 0) FROM roster_log"

    def __init__(self, dsn: str, keyring: Keyring, **timeouts: float) -> None:
        super().__init__(dsn, **timeouts)
        self._keyring = keyring

    async def after(self, seq: int, limit: int) -> list[RosterChange]:
        found = await self._query(SELECT_ROSTER + " WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit)
        return [roster_log.opened(self._keyring, roster_row(row)) for row in found]
