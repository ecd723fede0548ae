"""SQLite storage: the embedded default behind the ``Store`` contract (consent ledger + decision log).

Writes go through one writer task that drains a queue and commits everything pending in one transaction
(group commit): with ``synchronous=FULL`` every commit is an fsync, so sharing commits is what makes
durability affordable. Each caller's future resolves only after COMMIT, so "returned" means "durable"
(invariant 1). The ledger chain is extended inside that transaction from the head read in it, so seq and
prev_hash cannot be raced, not even by another process writing the same file.

Reads use a second, query-only connection: in WAL mode it sees only committed data, never a batch in flight,
and another process (the CLI's ``log show`` while the server runs) can read the same file. Every failure
surfaces as ``StorageError`` with the SQLite error *name* only, never a value from a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from gateway.consent import ledger, standing
from gateway.decision_log import decision_from_dict, decision_to_dict
from gateway.model import ConsentRecord, Decision
from gateway.store.base import LedgerEntry, LedgerRow, StorageError

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
)

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
_SELECT_LEDGER = "SELECT seq, record_json, prev_hash, hash FROM ledger"
_SELECT_DECISIONS = "SELECT id, record_json FROM decisions"
_LEDGER_FILTERS = ("meeting_id = ?", "subject = ?")
_DECISION_FILTERS = ("meeting_id = ?", "participant_id = ?")


@dataclass(slots=True)
class _ConsentWrite:
    record: ConsentRecord
    record_json: str
    future: asyncio.Future[LedgerEntry]
    entry: LedgerEntry | None = None
    """Set inside the transaction, handed to the caller only after COMMIT."""

    def resolve(self) -> None:
        if self.entry is not None and not self.future.done():
            self.future.set_result(self.entry)


@dataclass(slots=True)
class _DecisionsWrite:
    rows: list[tuple[str | None, ...]]
    future: asyncio.Future[None] = field(repr=False)

    def resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


_Write = _ConsentWrite | _DecisionsWrite


def _error_name(exc: BaseException) -> str:
    # sqlite_errorname is e.g. SQLITE_BUSY: precise, and never contains a bound value
    return getattr(exc, "sqlite_errorname", None) or type(exc).__name__


def _storage_error(exc: BaseException, doing: str) -> StorageError:
    if isinstance(exc, StorageError):
        return StorageError(str(exc))
    error = StorageError(f"storage {doing} failed ({_error_name(exc)})")
    error.__cause__ = exc
    return error


def _where(filters: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]:
    """A WHERE clause from constant fragments; only values are parameters."""
    used = [(clause, value) for clause, value in zip(filters, values, strict=True) if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def _decision_row(decision: Decision) -> tuple[str | None, ...]:
    data = decision_to_dict(decision)
    return (
        decision.decision_id,
        decision.meeting_id,
        decision.participant_id,
        decision.destination,
        decision.action.value,
        data["at"],
        ledger.canonical_dumps(data),
    )


def _decode_entry(row: LedgerRow) -> LedgerEntry:
    try:
        record = ledger.record_from_dict(json.loads(row.record_json))
    except (ValueError, TypeError, OverflowError):
        raise StorageError(f"ledger row {row.seq} cannot be decoded") from None
    return LedgerEntry(row.seq, record, row.prev_hash, row.hash)


def _decode_decision(row_id: int, record_json: str) -> Decision:
    try:
        return decision_from_dict(json.loads(record_json))
    except (ValueError, TypeError, OverflowError):
        raise StorageError(f"decision row {row_id} cannot be decoded") from None


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


class SQLiteStore:
    """The ``Store`` on one SQLite file. ``read_only`` opens for audit: no migration, no writer."""

    def __init__(self, path: str | Path, *, read_only: bool = False, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.commits = 0
        """Transactions committed by the writer (a metric; fewer than writes means group commit works)."""
        self._busy_timeout = busy_timeout
        self._writer_db: aiosqlite.Connection | None = None
        self._reader_db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
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
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run_writer(), name=f"sqlite-writer:{self.path.name}")

    async def close(self) -> None:
        """Flush every write queued so far, then close."""
        task, self._task = self._task, None
        if task is not None:
            self._queue.put_nowait(None)
            await task
        await self._close_connections()

    async def ping(self) -> None:
        self._check_identity()
        if not self.read_only and (self._task is None or self._task.done()):
            raise StorageError("storage writer is not running")
        await self._fetch("SELECT 1", [])

    async def _open_connections(self) -> None:
        if self.read_only:
            self._reader_db = await self._connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            await self._check_schema(self._reader_db)
        else:
            self._writer_db = await self._connect(str(self.path))
            await self._writer_db.execute("PRAGMA journal_mode=WAL")
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

    async def append_consent(self, record: ConsentRecord) -> LedgerEntry:
        # serialise here so a malformed record fails its own caller, not the batch it would have joined
        record_json = ledger.canonical_json(record)
        future: asyncio.Future[LedgerEntry] = asyncio.get_running_loop().create_future()
        self._submit(_ConsentWrite(record, record_json, future))
        return await future

    async def append_decisions(self, decisions: Sequence[Decision]) -> None:
        rows = [_decision_row(decision) for decision in decisions]
        if not rows:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_DecisionsWrite(rows, future))
        await future

    def _submit(self, write: _Write) -> None:
        if self._task is None or self._task.done():
            raise StorageError("storage is not open for writing")
        self._queue.put_nowait(write)

    async def _run_writer(self) -> None:
        try:
            while await self._write_next_batch():
                pass
        finally:
            self._fail_queued()  # nothing may wait forever on a writer that is gone

    async def _write_next_batch(self) -> bool:
        batch = [await self._queue.get()]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        writes = [write for write in batch if write is not None]
        if writes:
            await self._flush(writes)
        return None not in batch

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            write = self._queue.get_nowait()
            if write is not None and not write.future.done():
                write.future.set_exception(StorageError("storage closed before the write"))

    async def _flush(self, writes: list[_Write]) -> None:
        try:
            await self._commit(writes)
        except sqlite3.IntegrityError:
            if len(writes) == 1:
                self._fail(writes, StorageError("storage write refused (duplicate id)"))
                return
            # one caller's duplicate id must not fail the writes it happened to share a commit with
            for write in writes:
                await self._flush([write])
            return
        except Exception as exc:
            self._fail(writes, exc)
            return
        for write in writes:
            write.resolve()

    def _fail(self, writes: list[_Write], exc: BaseException) -> None:
        for write in writes:
            if not write.future.done():
                write.future.set_exception(_storage_error(exc, "write"))

    async def _commit(self, writes: list[_Write]) -> None:
        self._check_identity()
        db = self._writer()
        # The whole transaction runs in the connection's own thread in one hop. Statement by statement, each
        # await is a hop between threads, and with the small batches of a steadily loaded server those
        # hops cost more CPU than the writes (measured: ~370 us a segment, most of the gateway's overhead
        # over a plain proxy). aiosqlite has no public call for "run this function in your thread".
        await db._execute(self._transaction, db, writes)  # type: ignore[no-untyped-call]
        self.commits += 1

    def _transaction(self, db: aiosqlite.Connection, writes: list[_Write]) -> None:
        """BEGIN ... COMMIT on the writer's thread; rolls back on any error."""
        conn: sqlite3.Connection = db._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            ledger_rows, decision_rows = self._rows(conn, writes)
            if ledger_rows:
                conn.executemany(_INSERT_LEDGER, ledger_rows)
            if decision_rows:
                conn.executemany(_INSERT_DECISION, decision_rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _rows(
        self, conn: sqlite3.Connection, writes: list[_Write]
    ) -> tuple[list[tuple[object, ...]], list[tuple[str | None, ...]]]:
        """Insert parameters; consent records are chained onto the head read inside this transaction."""
        ledger_rows: list[tuple[object, ...]] = []
        decision_rows: list[tuple[str | None, ...]] = []
        head: ledger.Head | None = None
        for write in writes:
            if isinstance(write, _DecisionsWrite):
                decision_rows.extend(write.rows)
                continue
            if head is None:
                found = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
                head = ledger.EMPTY_HEAD if found is None else (int(found[0]), str(found[1]))
            row = ledger.next_row(head, write.record_json)
            head = (row.seq, row.hash)
            write.entry = LedgerEntry(row.seq, write.record, row.prev_hash, row.hash)
            ledger_rows.append(self._ledger_params(row, write.record))
        return ledger_rows, decision_rows

    @staticmethod
    def _ledger_params(row: LedgerRow, record: ConsentRecord) -> tuple[object, ...]:
        at = ledger.format_time(record.at)
        return (row.seq, record.record_id, record.meeting_id, record.subject, at, row.record_json,
                row.prev_hash, row.hash)  # fmt: skip

    def _writer(self) -> aiosqlite.Connection:
        if self._writer_db is None:
            raise StorageError("storage is not open for writing")
        return self._writer_db

    # --- reads ---------------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: list[str]) -> list[sqlite3.Row]:
        if self._reader_db is None:
            raise StorageError("storage is not open")
        try:
            async with self._reader_db.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except (sqlite3.Error, ValueError) as exc:
            raise _storage_error(exc, "read") from exc

    async def ledger_rows(self) -> list[LedgerRow]:
        rows = await self._fetch(_SELECT_LEDGER + " ORDER BY seq", [])
        return [LedgerRow(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def ledger_entries(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[LedgerEntry]:
        where, params = _where(_LEDGER_FILTERS, (meeting_id, participant_id))
        rows = await self._fetch(_SELECT_LEDGER + where + " ORDER BY seq", params)
        return [_decode_entry(LedgerRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]))) for r in rows]

    async def standing_records(self, email: str) -> list[ConsentRecord]:
        subject = standing.subject_for(email)
        entries = await self.ledger_entries(meeting_id=standing.STANDING_MEETING, participant_id=subject)
        return [entry.record for entry in entries]

    async def decision_records(
        self, *, meeting_id: str | None = None, participant_id: str | None = None
    ) -> list[Decision]:
        where, params = _where(_DECISION_FILTERS, (meeting_id, participant_id))
        rows = await self._fetch(_SELECT_DECISIONS + where + " ORDER BY id", params)
        return [_decode_decision(int(r[0]), str(r[1])) for r in rows]
