"""SQLite storage: the embedded default behind the ``Store`` contract (consent ledger + decision log).

Writes go through one writer task that drains a queue and commits everything pending in one transaction
(group commit, ``gateway.store.batching``): with ``synchronous=FULL`` every commit is an fsync, so sharing
commits is what makes durability affordable. Each caller's future resolves only after COMMIT, so "returned"
means "durable" (invariant 1). The ledger chain is extended inside that transaction from the head read in
it, so seq and prev_hash cannot be raced, not even by another process writing the same file.

Reads use a second, query-only connection: in WAL mode it sees only committed data, never a batch in flight,
and another process (the CLI's ``log show`` while the server runs) can read the same file. Every failure
surfaces as ``StorageError`` with the SQLite error *name* only, never a value from a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.consent import ledger
from gateway.roster_log import StoredChange
from gateway.store import deliveries, outbox, reads, rows
from gateway.store.base import StorageError
from gateway.store.batching import DeliveryWrite, GroupCommit, Write, chain, consent_effects, split
from gateway.store.columns import stored, unstored
from gateway.store.reads import SELECT_SEALED_HEADERS, SQLReads

_T = TypeVar("_T")

# Each step list brings the schema from version N to N+1; append new steps, never edit applied ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE ledger (
            seq INTEGER PRIMARY KEY, record_id TEXT NOT NULL UNIQUE, meeting_id TEXT NOT NULL,
            subject TEXT NOT NULL, at TEXT NOT NULL, record_json TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE INDEX ledger_meeting ON ledger (meeting_id, seq)",
        "CREATE INDEX ledger_subject ON ledger (subject, seq)",
        # Append-only in the schema too; an attacker with file access can drop these, `verify` still sees it.
        """CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END""",
        """CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END""",
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL UNIQUE,
            meeting_id TEXT NOT NULL, participant_id TEXT, destination TEXT NOT NULL,
            action TEXT NOT NULL, at TEXT NOT NULL, record_json TEXT NOT NULL)""",
        "CREATE INDEX decisions_meeting ON decisions (meeting_id, id)",
        "CREATE INDEX decisions_participant ON decisions (participant_id, id)",
    ),
    # 2: the durable outbox and the latest consent per meeting, participant and purpose (gateway.store.outbox)
    (
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, item_key TEXT NOT NULL UNIQUE, meeting_id TEXT NOT NULL,
            destination TEXT NOT NULL, kind TEXT NOT NULL, purposes TEXT NOT NULL, created_at REAL NOT NULL,
            expires_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending', reason TEXT,
            attempts INTEGER NOT NULL DEFAULT 0, http_status INTEGER, finished_at REAL, lease_owner TEXT,
            lease_until REAL NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_pending ON outbox (status, lease_until, id)",
        "CREATE INDEX outbox_meeting ON outbox (meeting_id, status, destination)",
        """CREATE TABLE outbox_parts (
            item_key TEXT NOT NULL REFERENCES outbox (item_key), ord INTEGER NOT NULL,
            meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL, segment_id TEXT NOT NULL,
            digest TEXT NOT NULL, sealed BLOB, state TEXT NOT NULL DEFAULT 'queued',
            PRIMARY KEY (item_key, ord))""",
        "CREATE INDEX outbox_parts_participant ON outbox_parts (meeting_id, participant_id)",
        """CREATE TABLE consent_now (
            meeting_id TEXT NOT NULL, subject TEXT NOT NULL, purpose TEXT NOT NULL, seq INTEGER NOT NULL,
            choice TEXT NOT NULL, expires_at REAL, PRIMARY KEY (meeting_id, subject, purpose))""",
    ),
    # 3: the roster (gateway.roster_log), as on PostgreSQL: a restart must not forget who is in a meeting,
    # whose names it scrubs and whose presence gates an all-party meeting. AUTOINCREMENT: a forgotten
    # meeting's sequence numbers are never handed out again.
    (
        """CREATE TABLE roster_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, change_id TEXT NOT NULL UNIQUE, platform TEXT NOT NULL,
            meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
            sealed BLOB NOT NULL)""",
        "CREATE INDEX roster_log_meeting ON roster_log (meeting_id, platform, seq)",
    ),
    # 4: signed delivery ids claimed while their signatures verify (gateway.store.deliveries): a replay is
    # refused after a restart too
    deliveries.SQLITE_TABLE,
    # 5: the decision log is append-only in the schema too (nothing the gateway does changes a decision)
    (
        """CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
            BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END""",
        """CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
            BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END""",
    ),
    # 6: when and by whom a part was last attempted to a destination that declares an erasure endpoint: a
    # deletion request lists it even if no 2xx came back, once no attempt can still be on the wire
    # (gateway.store.outbox)
    (
        "ALTER TABLE outbox_parts ADD COLUMN attempted_at REAL",
        "ALTER TABLE outbox_parts ADD COLUMN attempted_by TEXT",
    ),
    # 7: deletion requests a withdrawal owes, written with it, gone once staged in the outbox: a crash in
    # between does not lose them (gateway.store.outbox)
    (
        """CREATE TABLE erasures_owed (
            id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, destination TEXT NOT NULL,
            meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL, created_at REAL NOT NULL,
            lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0, UNIQUE (record_id, destination))""",
        "CREATE INDEX erasures_owed_lease ON erasures_owed (lease_until, id)",
    ),
)

_WAL_CHECKPOINT_PAGES = 8192
_WRITER_PRAGMAS = (
    # Checkpoint every 32 MiB of WAL rather than every 4 MiB (SQLite's default of 1000 pages): a page
    # changed again before the next checkpoint is copied into the database file once, not once per change.
    # The ingest benchmark's writer thread wrote 55 kB per segment before, 44 kB after.
    f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}",
    # after a checkpoint the WAL file is cut back to this size, so the disk gets its space back
    f"PRAGMA journal_size_limit={2 * _WAL_CHECKPOINT_PAGES * 4096}",
)

_INSERT_ROSTER = (
    "INSERT INTO roster_log (change_id, platform, meeting_id, participant_id, ordinal, sealed)"
    " VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN COALESCE("
    "(SELECT NULLIF(MAX(ordinal), 0) FROM roster_log WHERE meeting_id = ?3 AND platform = ?2"
    " AND participant_id = ?4),"
    " (SELECT COALESCE(MAX(ordinal), 0) + 1 FROM roster_log WHERE meeting_id = ?3 AND platform = ?2))"
    " ELSE 0 END, ?6) RETURNING seq, ordinal"
)
"""As on PostgreSQL (``gateway.store.postgres``); the writer connection's own transaction serialises it."""

_INSERT_LEDGER = (
    "INSERT INTO ledger (seq, record_id, meeting_id, subject, at, record_json, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# A decision id is a hash of the decision's inputs, so the same id is the same decision (an event redelivered
# with its original time, as platforms do and replays of them do): writing it again changes nothing.
_INSERT_DECISION = (
    "INSERT OR IGNORE INTO decisions"
    " (decision_id, meeting_id, participant_id, destination, action, at, record_json)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _deliveries(conn: sqlite3.Connection, writes: Sequence[DeliveryWrite]) -> None:
    now = max((write.now for write in writes if not write.release and not write.extend), default=None)
    if now is not None:  # claims that can no longer matter go as new ones come: the table stays small
        conn.execute(deliveries.FORGET_EXPIRED, (now,))
    for write in writes:
        if write.release:
            conn.execute(deliveries.RELEASE, (write.key,))
            write.claimed = True
        elif write.extend:
            conn.execute(deliveries.EXTEND, (write.until, write.key))
            write.claimed = True
        else:
            write.claimed = bool(
                conn.execute(deliveries.CLAIM, (write.key, write.until, write.now)).fetchall()
            )


def _error_name(exc: BaseException) -> str:
    # sqlite_errorname is e.g. SQLITE_BUSY: precise, and never contains a bound value
    return getattr(exc, "sqlite_errorname", None) or type(exc).__name__


def _where(columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]:
    """A WHERE clause from constant column names; only values are parameters."""
    used = [(column, value) for column, value in zip(columns, values, strict=True) if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{c} = ?" for c, _ in used), [stored(v) for _, v in used]


def _file_identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


async def _rollback(db: aiosqlite.Connection) -> None:
    # best effort: when BEGIN itself failed there is no transaction to roll back
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.execute("ROLLBACK")


async def _schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    # IMMEDIATE: two processes opening a fresh file must not both apply the same step
    await db.execute("BEGIN IMMEDIATE")
    try:
        await _apply_migrations(db, await _schema_version(db))
        await db.execute("COMMIT")
    except BaseException:
        await _rollback(db)
        raise


async def _apply_migrations(db: aiosqlite.Connection, version: int) -> None:
    if version > len(MIGRATIONS):
        raise StorageError(f"storage schema version {version} is newer than this build supports")
    for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
        for sql in steps:
            await db.execute(sql)
        await db.execute(
            "INSERT INTO schema_version VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", (number,)
        )


class SQLiteStore(GroupCommit, SQLReads):
    """The ``Store`` on one SQLite file. ``read_only`` opens for audit: no migration, no writer."""

    shared = False
    """Whether other processes may write the same store (one process per file)."""
    sealed_headers = (SELECT_SEALED_HEADERS, reads.SELECT_ROSTER_HEADERS)

    def __init__(self, path: str | Path, *, read_only: bool = False, busy_timeout: float = 5.0) -> None:
        super().__init__(duplicate=sqlite3.IntegrityError, error_name=_error_name, column=stored)
        self.path = Path(path)
        self.read_only = read_only
        self._busy_timeout = busy_timeout
        self._writer_db: aiosqlite.Connection | None = None
        self._reader_db: aiosqlite.Connection | None = None
        self._identity: tuple[int, int] | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._open_connections()
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, sqlite3.Error | OSError | ValueError):
                raise StorageError(f"cannot open storage at {self.path} ({_error_name(exc)})") from exc
            raise
        if not self.read_only:
            self._start_writer(f"sqlite-writer:{self.path.name}")

    async def close(self) -> None:
        """Flush every write queued so far, then close."""
        await self._stop_writer()
        await self._close_connections()

    async def ping(self) -> None:
        self._check_identity()
        if not self.read_only and not self._writer_running():
            raise StorageError("storage writer is not running")
        await self._fetch("SELECT 1", [])

    async def _open_connections(self) -> None:
        if self.read_only:
            self._reader_db = await self._connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            await self._check_schema(self._reader_db)
        else:
            self._writer_db = await self._connect(str(self.path))
            await self._writer_db.execute("PRAGMA journal_mode=WAL")
            for pragma in _WRITER_PRAGMAS:
                await self._writer_db.execute(pragma)
            await _migrate(self._writer_db)
            self._reader_db = await self._connect(str(self.path))
        await self._reader_db.execute("PRAGMA query_only=ON")
        self._identity = _file_identity(self.path)

    async def _connect(self, target: str, *, uri: bool = False) -> aiosqlite.Connection:
        pending = aiosqlite.connect(target, uri=uri, isolation_level=None, timeout=self._busy_timeout)
        try:
            db = await pending
        except BaseException:
            # aiosqlite stops its worker thread on a failed connect without waiting for it; wait here so the
            # thread never reports into an event loop that has closed meanwhile
            await asyncio.to_thread(pending._thread.join, 5.0)
            raise
        try:
            # FULL: a commit is on disk before the caller is told it is (the ledger's durability)
            await db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            await db.close()
            raise
        return db

    async def _check_schema(self, db: aiosqlite.Connection) -> None:
        version = await _schema_version(db)
        if version != len(MIGRATIONS):
            raise StorageError(f"storage schema version {version}, this build expects {len(MIGRATIONS)}")

    async def _close_connections(self) -> None:
        for name in ("_writer_db", "_reader_db"):
            db: aiosqlite.Connection | None = getattr(self, name)
            setattr(self, name, None)
            if db is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.close()

    def _check_identity(self) -> None:
        """Fail when the file was deleted or replaced under us: writes would land in an unlinked inode."""
        try:
            same = self._identity is not None and _file_identity(self.path) == self._identity
        except OSError:
            same = False
        if not same:
            raise StorageError("storage file was removed or replaced")

    # --- writes --------------------------------------------------------------------------------------

    async def _commit(self, writes: list[Write]) -> None:
        self._check_identity()
        db = self._writer()
        # The whole transaction runs in the connection's own thread in one hop. Statement by statement, each
        # await is a hop between threads, and with the small batches of a steadily loaded server those
        # hops cost more CPU than the writes (measured: ~370 us a segment, most of the gateway's overhead
        # over a plain proxy). aiosqlite has no public call for "run this function in your thread".
        await db._execute(self._transaction, db, writes)  # type: ignore[no-untyped-call]
        self.commits += 1

    def _transaction(self, db: aiosqlite.Connection, writes: list[Write]) -> None:
        """BEGIN ... COMMIT on the writer's thread; rolls back on any error."""
        conn: sqlite3.Connection = db._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            batch = split(writes)
            if batch.deliveries:
                _deliveries(conn, batch.deliveries)
            if batch.consents:
                conn.executemany(_INSERT_LEDGER, chain(batch.consents, self._ledger_head(conn), stored))
                upserts, purges = consent_effects(batch.consents, stored, time.time())
                conn.executemany(outbox.UPSERT_CONSENT_NOW, upserts)
                for sql, params in purges:
                    conn.execute(sql, params)
            if batch.decisions:
                conn.executemany(_INSERT_DECISION, batch.decisions)
            if batch.items:
                conn.executemany(outbox.INSERT_ITEM, batch.items)
                conn.executemany(outbox.INSERT_PART, batch.parts)
            if batch.attempted:
                conn.executemany(outbox.MARK_ATTEMPTED, outbox.attempt_rows(batch.attempted, stored))
            for sql, many in outbox.finish_statements(batch.outcomes, stored):
                conn.executemany(sql, many)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- the roster (gateway.roster_log) --------------------------------------------------------------

    async def append_roster(
        self, change_id: str, platform: str, meeting_id: str, participant_id: str, names: bool, sealed: bytes
    ) -> tuple[int, int]:
        params = (change_id, stored(platform), stored(meeting_id), stored(participant_id), names, sealed)
        return await self._on_writer(self._append_roster, params)

    @staticmethod
    def _append_roster(conn: sqlite3.Connection, params: tuple[object, ...]) -> tuple[int, int]:
        with conn:  # its own transaction, committed (durably: synchronous=FULL) before the change applies
            [row] = conn.execute(_INSERT_ROSTER, params).fetchall()  # all: the statement ends, and commits
        return int(row[0]), int(row[1])

    async def roster_of(self, platform: str, meeting_id: str) -> list[StoredChange]:
        found = await self._fetch(reads.SELECT_ROSTER_OF, [stored(meeting_id), stored(platform)])
        return [
            StoredChange(int(r[0]), str(r[1]), platform, meeting_id, int(r[4]), bytes(r[5])) for r in found
        ]

    async def forget_roster(self, platform: str, meeting_id: str) -> None:
        await self._on_writer(self._run, reads.FORGET_ROSTER, (stored(meeting_id), stored(platform)))

    async def roster_meetings(self) -> list[tuple[str, str]]:
        found = await self._fetch(reads.SELECT_ROSTER_MEETINGS, [])
        return [(unstored(str(r[0])), unstored(str(r[1]))) for r in found]

    # --- outbox leases (on the writer's connection, between its transactions) -----------------------

    async def claim_outbox(
        self, lease: outbox.Lease, now: float, limit: int, *, held: bool = False
    ) -> list[outbox.OutboxItem]:
        claim = outbox.CLAIM_HELD if held else outbox.CLAIM
        return await self._on_writer(self._claim, claim, lease, now, limit)

    async def renew_outbox(self, lease: outbox.Lease) -> None:
        await self._on_writer(self._run, outbox.RENEW, (lease.until, lease.owner))

    async def release_outbox(self, owner: str) -> None:
        await self._on_writer(self._run, outbox.RELEASE, (owner,))

    async def claim_erasures(self, lease: outbox.Lease, now: float, limit: int) -> list[outbox.OwedErasure]:
        params = (lease.owner, lease.until, now, limit)
        return await self._on_writer(self._claim_owed, params)

    async def claim_erasure(self, record_id: str, destination: str, lease: outbox.Lease, now: float) -> bool:
        params = (lease.owner, lease.until, stored(record_id), stored(destination), lease.owner, now)
        return await self._on_writer(self._claim_one_owed, params)

    @staticmethod
    def _claim_one_owed(conn: sqlite3.Connection, params: tuple[object, ...]) -> bool:
        with conn:
            return bool(conn.execute(outbox.CLAIM_ONE_OWED, params).fetchall())

    async def erasure_done(self, record_id: str, destination: str) -> None:
        await self._on_writer(self._run, outbox.OWED_DONE, (stored(record_id), stored(destination)))

    @staticmethod
    def _claim_owed(conn: sqlite3.Connection, params: tuple[object, ...]) -> list[outbox.OwedErasure]:
        with conn:
            found = conn.execute(outbox.CLAIM_OWED, params).fetchall()  # all: the statement ends, and commits
        return [outbox.owed_erasure(row) for row in found]

    async def _on_writer(self, fn: Callable[..., _T], *args: object) -> _T:
        self._check_identity()
        db = self._writer()
        try:
            result: _T = await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
        except (sqlite3.Error, ValueError) as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc
        return result

    @staticmethod
    def _run(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
        with conn:  # its own transaction, committed (or rolled back) here
            conn.execute(sql, params)

    @staticmethod
    def _claim(
        conn: sqlite3.Connection, claim: str, lease: outbox.Lease, now: float, limit: int
    ) -> list[outbox.OutboxItem]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            heads = conn.execute(claim, (lease.owner, lease.until, now, lease.owner, limit)).fetchall()
            items = [
                outbox.claimed_item(head, conn.execute(outbox.CLAIMED_PARTS, (head[1],)).fetchall())
                for head in sorted(heads, key=lambda h: int(h[0]))
            ]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return items

    @staticmethod
    def _ledger_head(conn: sqlite3.Connection) -> ledger.Head:
        """The chain's head as this transaction sees it (``BEGIN IMMEDIATE`` holds the write lock)."""
        found = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return ledger.EMPTY_HEAD if found is None else (int(found[0]), str(found[1]))

    def _writer(self) -> aiosqlite.Connection:
        if self._writer_db is None:
            raise StorageError("storage is not open for writing")
        return self._writer_db

    # --- reads ---------------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: list[Any]) -> list[sqlite3.Row]:
        if self._reader_db is None:
            raise StorageError("storage is not open")
        try:
            async with self._reader_db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except (sqlite3.Error, ValueError) as exc:
            raise rows.storage_error(exc, "read", _error_name) from exc

    def _where(self, columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]:
        return _where(columns, values)

    def _column_of(self, value: str) -> str:
        return stored(value)
