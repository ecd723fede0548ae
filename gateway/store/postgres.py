"""PostgreSQL storage: the ``Store`` contract on a server shared by several gateway processes.

Writes go through one writer task that drains a queue and commits everything pending in one transaction
(group commit, ``gateway.store.batching``): each caller's future resolves only after COMMIT, and with
``synchronous_commit=on`` a commit is durable, so "returned" means "durable" (invariant 1). The ledger chain
is extended inside that transaction after taking a transaction-level advisory lock, so two processes (two
replicas) appending at the same time still build one chain: the second waits for the first's commit and
then reads the head it wrote (READ COMMITTED takes a fresh snapshot per statement).

Reads use the pool's other connections and see only committed data. Every failure surfaces as
``StorageError`` naming the error class and SQLSTATE only, never a value from a record or the DSN.
Migrations run on open under an advisory lock, so replicas starting together do not apply a step twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from gateway.consent import ledger
from gateway.roster_log import StoredChange
from gateway.store import deliveries, outbox, reads, rows
from gateway.store.base import StorageError
from gateway.store.batching import DeliveryWrite, GroupCommit, Write, chain, consent_effects, split
from gateway.store.columns import stored as _column
from gateway.store.reads import SELECT_SEALED_HEADERS, SQLReads

log = structlog.get_logger("gateway.store.postgres")

# Advisory lock keys (any constants unique to this application): they serialise chain extension, schema
# migration and roster appends.
LEDGER_LOCK = 0x636F6E73656E7401
MIGRATION_LOCK = 0x636F6E73656E7402
ROSTER_LOCK = 0x636F6E73656E7403

# Each step list brings the schema from version N to N+1; append new steps, never edit applied ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE ledger (
            seq BIGINT PRIMARY KEY, record_id TEXT NOT NULL UNIQUE, meeting_id TEXT NOT NULL,
            subject TEXT NOT NULL, at TEXT NOT NULL, record_json TEXT NOT NULL,
            prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE INDEX ledger_meeting ON ledger (meeting_id, seq)",
        "CREATE INDEX ledger_subject ON ledger (subject, seq)",
        # Append-only in the schema too; an attacker with database access can disable these, `verify` still
        # sees what they did.
        """CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'ledger is append-only'; END $$""",
        """CREATE TRIGGER ledger_no_update BEFORE UPDATE OR DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_append_only()""",
        """CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()""",
        """CREATE TABLE decisions (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE,
            meeting_id TEXT NOT NULL, participant_id TEXT, destination TEXT NOT NULL,
            action TEXT NOT NULL, at TEXT NOT NULL, record_json TEXT NOT NULL)""",
        "CREATE INDEX decisions_meeting ON decisions (meeting_id, id)",
        "CREATE INDEX decisions_participant ON decisions (participant_id, id)",
    ),
    # 2: the durable outbox and the latest consent per meeting, participant and purpose (gateway.store.outbox)
    (
        """CREATE TABLE outbox (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_key TEXT NOT NULL UNIQUE,
            meeting_id TEXT NOT NULL, destination TEXT NOT NULL, kind TEXT NOT NULL, purposes TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', reason TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            http_status INTEGER, finished_at DOUBLE PRECISION, lease_owner TEXT,
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_pending ON outbox (status, lease_until, id)",
        "CREATE INDEX outbox_meeting ON outbox (meeting_id, status, destination)",
        """CREATE TABLE outbox_parts (
            item_key TEXT NOT NULL REFERENCES outbox (item_key), ord INTEGER NOT NULL,
            meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL, segment_id TEXT NOT NULL,
            digest TEXT NOT NULL, sealed BYTEA, state TEXT NOT NULL DEFAULT 'queued',
            PRIMARY KEY (item_key, ord))""",
        "CREATE INDEX outbox_parts_participant ON outbox_parts (meeting_id, participant_id)",
        """CREATE TABLE consent_now (
            meeting_id TEXT NOT NULL, subject TEXT NOT NULL, purpose TEXT NOT NULL, seq BIGINT NOT NULL,
            choice TEXT NOT NULL, expires_at DOUBLE PRECISION, PRIMARY KEY (meeting_id, subject, purpose))""",
    ),
    # 3: every ledger row notifies the other replicas at commit (gateway.replication, gateway.store.pg_listen)
    (
        """CREATE FUNCTION ledger_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('consent_gateway_ledger', NEW.seq::text); RETURN NULL; END $$""",
        """CREATE TRIGGER ledger_notify AFTER INSERT ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_notify()""",
    ),
    # 4: the shared roster (gateway.roster_log): each change sealed, numbered in commit order (its sequence
    # drawn under ROSTER_LOCK), and notified to the other replicas at commit like the ledger
    (
        """CREATE TABLE roster_log (
            seq BIGSERIAL PRIMARY KEY, change_id TEXT NOT NULL UNIQUE, platform TEXT NOT NULL,
            meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
            sealed BYTEA NOT NULL)""",
        "CREATE INDEX roster_log_meeting ON roster_log (meeting_id, platform, seq)",
        """CREATE FUNCTION roster_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('consent_gateway_roster', NEW.seq::text); RETURN NULL; END $$""",
        """CREATE TRIGGER roster_notify AFTER INSERT ON roster_log
            FOR EACH ROW EXECUTE FUNCTION roster_notify()""",
    ),
    # 5: signed delivery ids claimed while their signatures verify (gateway.store.deliveries): a delivery one
    # replica accepted is a replay on every other
    deliveries.POSTGRES_TABLE,
    # 6: the decision log is append-only in the schema too (nothing the gateway does changes a decision)
    (
        """CREATE FUNCTION decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the decision log is append-only'; END $$""",
        """CREATE TRIGGER decisions_no_update BEFORE UPDATE OR DELETE ON decisions
            FOR EACH ROW EXECUTE FUNCTION decisions_append_only()""",
        """CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
            FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only()""",
    ),
    # 7: when and by whom a part was last attempted to a destination that declares an erasure endpoint: a
    # deletion request lists it even if no 2xx came back, once no attempt can still be on the wire
    # (gateway.store.outbox)
    (
        "ALTER TABLE outbox_parts ADD COLUMN attempted_at DOUBLE PRECISION",
        "ALTER TABLE outbox_parts ADD COLUMN attempted_by TEXT",
    ),
    # 8: deletion requests a withdrawal owes, written with it, gone once staged in the outbox: a crash in
    # between does not lose them, and another replica takes over those of one that stopped
    (
        """CREATE TABLE erasures_owed (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, record_id TEXT NOT NULL,
            destination TEXT NOT NULL, meeting_id TEXT NOT NULL, participant_id TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, lease_owner TEXT,
            lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, UNIQUE (record_id, destination))""",
        "CREATE INDEX erasures_owed_lease ON erasures_owed (lease_until, id)",
    ),
)
_CLAIM_DELIVERY = outbox.numbered(deliveries.CLAIM)
_FORGET_EXPIRED_DELIVERIES = outbox.numbered(deliveries.FORGET_EXPIRED)
_RELEASE_DELIVERY = outbox.numbered(deliveries.RELEASE)
_EXTEND_DELIVERY = outbox.numbered(deliveries.EXTEND)

_INSERT_LEDGER = (
    "INSERT INTO ledger (seq, record_id, meeting_id, subject, at, record_json, prev_hash, hash)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
# A decision id is a hash of the decision's inputs, so the same id is the same decision: writing it again
# (a redelivered event, or another replica deciding the same event) changes nothing.
# A commit's rows go in as parallel arrays (unnest: one execution instead of one per row, which with
# executemany cost PostgreSQL more CPU per segment than the gateway's own work; unnest keeps the arrays'
# order, so ids are assigned in batch order), and its decisions, outbox items and their parts in one
# statement: one round trip and one execution where there were three. The parts' foreign key is checked at
# the end of the statement, after the items' insert.
_INSERT_DECISIONS_AND_OUTBOX = (
    "WITH decided AS ("
    "INSERT INTO decisions (decision_id, meeting_id, participant_id, destination, action, at, record_json)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::text[]) ON CONFLICT (decision_id) DO NOTHING), "
    "queued AS ("
    "INSERT INTO outbox (item_key, meeting_id, destination, kind, purposes, created_at, expires_at,"
    " lease_owner, lease_until) SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[],"
    " $12::text[], $13::float8[], $14::float8[], $15::text[], $16::float8[])"
    " ON CONFLICT (item_key) DO NOTHING) "
    "INSERT INTO outbox_parts (item_key, ord, meeting_id, participant_id, segment_id, digest, sealed)"
    " SELECT * FROM unnest($17::text[], $18::int[], $19::text[], $20::text[], $21::text[], $22::text[],"
    " $23::bytea[]) ON CONFLICT (item_key, ord) DO NOTHING"
)

_INSERT_ROSTER = (
    "INSERT INTO roster_log (change_id, platform, meeting_id, participant_id, ordinal, sealed)"
    " VALUES ($1, $2, $3, $4, CASE WHEN $5::boolean THEN COALESCE("
    "(SELECT NULLIF(MAX(ordinal), 0) FROM roster_log WHERE meeting_id = $3 AND platform = $2"
    " AND participant_id = $4),"
    " (SELECT COALESCE(MAX(ordinal), 0) + 1 FROM roster_log WHERE meeting_id = $3 AND platform = $2))"
    " ELSE 0 END, $6) RETURNING seq, ordinal"
)
"""Under ROSTER_LOCK: the sequence is drawn in commit order (never MAX(seq) + 1, which would hand out again
the numbers of a forgotten meeting's rows, behind every follower's cursor), and a participant named for the
first time in the meeting takes the next ordinal, so that every replica gives them the same placeholder."""
_FORGET_ROSTER = outbox.numbered(reads.FORGET_ROSTER)
_SELECT_ROSTER_OF = outbox.numbered(reads.SELECT_ROSTER_OF)
SELECT_ROSTER = reads.SELECT_ROSTER

_UPSERT_CONSENT_NOW = outbox.numbered(outbox.UPSERT_CONSENT_NOW)

# Outcomes of a commit's finished items in one statement (SQLite runs ``outbox.finish_statements``, three,
# each of which here would cost a round trip and the driver's work per row): every item's outcome; then
# each of its parts that the delivered request carried becomes 'sent', and each other part still holding a
# payload gets the item's clearing state; either way the payload goes.
_FINISH = (
    "WITH finished AS ("
    "UPDATE outbox SET status = f.status, reason = f.reason, attempts = f.attempts,"
    " http_status = f.http_status, finished_at = f.at, lease_owner = NULL, lease_until = 0"
    " FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::float8[], $6::text[])"
    " AS f(status, reason, attempts, http_status, at, item_key)"
    " WHERE outbox.item_key = f.item_key AND outbox.status = 'pending'), "
    "sent AS (SELECT * FROM unnest($9::text[], $10::text[]) AS s(item_key, segment_id)) "
    "UPDATE outbox_parts AS p SET sealed = NULL, state = CASE WHEN EXISTS (SELECT 1 FROM sent"
    " WHERE sent.item_key = p.item_key AND sent.segment_id = p.segment_id) THEN 'sent' ELSE c.state END"
    " FROM unnest($7::text[], $8::text[]) AS c(state, item_key)"
    " WHERE p.item_key = c.item_key AND (p.sealed IS NOT NULL OR EXISTS (SELECT 1 FROM sent"
    " WHERE sent.item_key = p.item_key AND sent.segment_id = p.segment_id))"
)
# Several connections (the writer's transaction, lease upkeep, other replicas) update outbox rows at once:
# renewing and claiming skip the rows another transaction holds, instead of waiting for them in an order of
# their own (a renewal waiting on a row the writer is finishing, while the writer waits on a row the
# renewal took, deadlocked under load). A row skipped now is renewed or claimed on the next round.
_CLAIM = outbox.numbered(outbox.CLAIM.replace(" LIMIT ?)", " LIMIT ? FOR UPDATE SKIP LOCKED)"))
_CLAIM_HELD = outbox.numbered(outbox.CLAIM_HELD.replace(" LIMIT ?)", " LIMIT ? FOR UPDATE SKIP LOCKED)"))
_CLAIMED_PARTS = outbox.numbered(outbox.CLAIMED_PARTS)
_RENEW = (
    "UPDATE outbox SET lease_until = $1 WHERE id IN (SELECT id FROM outbox"
    " WHERE lease_owner = $2 AND status = 'pending' FOR UPDATE SKIP LOCKED)"
)
_RELEASE = outbox.numbered(outbox.RELEASE)
_CLAIM_OWED = outbox.numbered(outbox.CLAIM_OWED.replace(" LIMIT ?)", " LIMIT ? FOR UPDATE SKIP LOCKED)"))
_OWED_DONE = outbox.numbered(outbox.OWED_DONE)
_CLAIM_ONE_OWED = outbox.numbered(outbox.CLAIM_ONE_OWED)
_MARK_ATTEMPTED = (
    "UPDATE outbox_parts AS p SET attempted_at = a.at, attempted_by = a.owner"
    " FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[]) AS a(at, owner, item_key, segment_id)"
    " WHERE p.item_key = a.item_key AND p.segment_id = a.segment_id"
)
"""``outbox.MARK_ATTEMPTED`` for a commit's marks in one statement."""

# What a connection or server failure looks like from asyncpg: all of these become StorageError.
_COMMIT_ATTEMPTS = 3
"""Runs of a group commit that PostgreSQL aborts to break a deadlock, before its callers get StorageError."""

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


async def _deliveries(conn: asyncpg.Connection, writes: Sequence[DeliveryWrite]) -> None:
    now = max((write.now for write in writes if not write.release and not write.extend), default=None)
    if now is not None:  # claims that can no longer matter go as new ones come: the table stays small
        await conn.execute(_FORGET_EXPIRED_DELIVERIES, now)
    for write in writes:
        if write.release:
            await conn.execute(_RELEASE_DELIVERY, write.key)
            write.claimed = True
        elif write.extend:
            await conn.execute(_EXTEND_DELIVERY, write.until, write.key)
            write.claimed = True
        else:
            write.claimed = (
                await conn.fetchval(_CLAIM_DELIVERY, write.key, write.until, write.now) is not None
            )


def _error_name(exc: BaseException) -> str:
    # the class and SQLSTATE are precise and never contain a bound value (messages and details may)
    sqlstate = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"{name} {sqlstate}" if isinstance(sqlstate, str) else name


def _where(columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]:
    """A WHERE clause from constant column names; only (escaped) values are parameters."""
    used = [(column, value) for column, value in zip(columns, values, strict=True) if value is not None]
    if not used:
        return "", []
    clauses = [f"{column} = ${n}" for n, (column, _) in enumerate(used, start=1)]
    return " WHERE " + " AND ".join(clauses), [_column(value) for _, value in used]


async def _schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring the schema up to this build's version; replicas opening together take turns on a lock."""
    async with conn.transaction(isolation="read_committed"):
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await _schema_version(conn)
        if version > len(MIGRATIONS):
            raise StorageError(f"storage schema version {version} is newer than this build supports")
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in steps:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)


class PostgresStore(GroupCommit, SQLReads):
    """The ``Store`` on a PostgreSQL database. ``read_only`` opens for audit: no migration, no writer."""

    shared = True
    """Whether other processes may write the same store (several replicas may share it)."""
    sealed_headers = (SELECT_SEALED_HEADERS, reads.SELECT_ROSTER_HEADERS)

    def __init__(
        self,
        dsn: str,
        *,
        read_only: bool = False,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        super().__init__(duplicate=asyncpg.UniqueViolationError, error_name=_error_name, column=_column)
        self.dsn = dsn
        self.read_only = read_only
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore(read_only={self.read_only})"  # never the DSN: it may carry a password

    # --- lifecycle -----------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                # durability of a commit is what append_consent promises; never inherit a weaker default
                server_settings={"synchronous_commit": "on"} if not self.read_only else {},
            )
            async with self._pool.acquire() as conn:
                if self.read_only:
                    await self._check_schema(conn)
                else:
                    await migrate(conn)
        except BaseException as exc:
            await self._close_pool()
            if isinstance(exc, StorageError):
                raise
            if isinstance(exc, (*_DRIVER_ERRORS, ValueError)):
                raise StorageError(f"cannot open PostgreSQL storage ({_error_name(exc)})") from exc
            raise
        if not self.read_only:
            self._start_writer("postgres-writer")

    async def close(self) -> None:
        """Flush every write queued so far, then close."""
        await self._stop_writer()
        await self._close_pool()

    async def ping(self) -> None:
        if not self.read_only and not self._writer_running():
            raise StorageError("storage writer is not running")
        await self._fetch("SELECT 1", [])

    @staticmethod
    async def _check_schema(conn: asyncpg.Connection) -> None:
        version = await _schema_version(conn)
        if version != len(MIGRATIONS):
            raise StorageError(f"storage schema version {version}, this build expects {len(MIGRATIONS)}")

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self._command_timeout)
            except _DRIVER_ERRORS:
                pool.terminate()

    def _pool_or_fail(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("storage is not open")
        return self._pool

    # --- writes --------------------------------------------------------------------------------------

    async def _commit(self, writes: list[Write]) -> None:
        """One transaction; one that PostgreSQL ended to break a deadlock (or a serialisation failure) is
        run again whole, as PostgreSQL advises: nothing of it was written, and the ledger's head is read
        again inside the new one."""
        pool = self._pool_or_fail()
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                    await self._insert(conn, writes)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                if attempt == _COMMIT_ATTEMPTS:
                    raise
                log.warning("storage.commit_retried", error=_error_name(exc), attempt=attempt)
                continue
            break
        self.commits += 1

    async def _insert(self, conn: asyncpg.Connection, writes: list[Write]) -> None:
        batch = split(writes)
        if batch.deliveries:
            await _deliveries(conn, batch.deliveries)
        if batch.consents:
            # held until COMMIT: another process extending the chain waits here, then reads our head
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
            head = await self._ledger_head(conn)
            await conn.executemany(_INSERT_LEDGER, chain(batch.consents, head, _column))
            upserts, purges = consent_effects(batch.consents, _column, time.time())
            if upserts:
                await conn.executemany(_UPSERT_CONSENT_NOW, upserts)
            for sql, params in purges:
                await conn.execute(outbox.numbered(sql), *params)
        if batch.decisions or batch.items:
            await conn.execute(
                _INSERT_DECISIONS_AND_OUTBOX,
                *_arrays(batch.decisions, 7),
                *_arrays(batch.items, 9),
                *_arrays(batch.parts, 7),
            )
        if batch.attempted:
            await conn.execute(_MARK_ATTEMPTED, *_arrays(outbox.attempt_rows(batch.attempted, _column), 4))
        if batch.outcomes:
            await conn.execute(_FINISH, *_finish_arrays(batch.outcomes))

    # --- the shared roster (gateway.roster_log) ---------------------------------------------------------

    async def append_roster(
        self, change_id: str, platform: str, meeting_id: str, participant_id: str, names: bool, sealed: bytes
    ) -> tuple[int, int]:
        """Numbered under a lock held to COMMIT: sequence order is commit order, so a follower reading
        "after the last one I applied" never skips a row that commits late."""
        pool = self._pool_or_fail()
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", ROSTER_LOCK)
                row = await conn.fetchrow(
                    _INSERT_ROSTER, change_id, platform, meeting_id, participant_id, names, sealed
                )
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc
        assert row is not None
        return int(row[0]), int(row[1])

    async def roster_of(self, platform: str, meeting_id: str) -> list[StoredChange]:
        found = await self._fetch(_SELECT_ROSTER_OF, [meeting_id, platform])
        return [roster_row(row) for row in found]

    async def forget_roster(self, platform: str, meeting_id: str) -> None:
        await self._execute(_FORGET_ROSTER, meeting_id, platform)

    async def roster_meetings(self) -> list[tuple[str, str]]:
        found = await self._fetch(reads.SELECT_ROSTER_MEETINGS, [])
        return [(str(r[0]), str(r[1])) for r in found]

    # --- outbox leases -------------------------------------------------------------------------------

    async def claim_outbox(
        self, lease: outbox.Lease, now: float, limit: int, *, held: bool = False
    ) -> list[outbox.OutboxItem]:
        pool = self._pool_or_fail()
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                claim = _CLAIM_HELD if held else _CLAIM
                heads = await conn.fetch(claim, lease.owner, lease.until, now, lease.owner, limit)
                items = []
                for head in sorted(heads, key=lambda h: int(h[0])):
                    parts = await conn.fetch(_CLAIMED_PARTS, head[1])
                    items.append(outbox.claimed_item(tuple(head), [tuple(p) for p in parts]))
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc
        return items

    async def renew_outbox(self, lease: outbox.Lease) -> None:
        await self._execute(_RENEW, lease.until, lease.owner)

    async def release_outbox(self, owner: str) -> None:
        await self._execute(_RELEASE, owner)

    async def claim_erasures(self, lease: outbox.Lease, now: float, limit: int) -> list[outbox.OwedErasure]:
        pool = self._pool_or_fail()
        try:
            found = await pool.fetch(_CLAIM_OWED, lease.owner, lease.until, now, limit)
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc
        return [outbox.owed_erasure(tuple(row)) for row in found]

    async def claim_erasure(self, record_id: str, destination: str, lease: outbox.Lease, now: float) -> bool:
        pool = self._pool_or_fail()
        params = (lease.owner, lease.until, _column(record_id), _column(destination), lease.owner, now)
        try:
            return await pool.fetchval(_CLAIM_ONE_OWED, *params) is not None
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc

    async def erasure_done(self, record_id: str, destination: str) -> None:
        await self._execute(_OWED_DONE, _column(record_id), _column(destination))

    async def _execute(self, sql: str, *params: object) -> None:
        pool = self._pool_or_fail()
        try:
            await pool.execute(sql, *params)
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "write", _error_name) from exc

    @staticmethod
    async def _ledger_head(conn: asyncpg.Connection) -> ledger.Head:
        row = await conn.fetchrow("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        return ledger.EMPTY_HEAD if row is None else (int(row[0]), str(row[1]))

    # --- reads ---------------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: list[Any]) -> list[Any]:
        pool = self._pool_or_fail()
        try:
            return list(await pool.fetch(sql, *params))
        except _DRIVER_ERRORS as exc:
            raise rows.storage_error(exc, "read", _error_name) from exc

    def _where(self, columns: Sequence[str], values: Sequence[str | None]) -> tuple[str, list[str]]:
        return _where(columns, values)

    def _column_of(self, value: str) -> str:
        return _column(value)

    def _placeholders(self, sql: str) -> str:
        return outbox.numbered(sql)


def roster_row(row: Any) -> StoredChange:
    return StoredChange(int(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), bytes(row[5]))


def _finish_arrays(done: Sequence[outbox.Finished]) -> list[list[object]]:
    """The parameters of ``_FINISH``. Run one after another (``outbox.finish_statements``), an item's first
    outcome is the one that counts: the next finds it no longer pending and its payloads cleared, while the
    parts a delivered request carried are marked sent whichever outcome reported them."""
    first: dict[str, outbox.Finished] = {}
    for d in done:
        first.setdefault(d.key, d)
    finish = [(d.status, d.reason, d.attempts, d.http_status, d.at, d.key) for d in first.values()]
    clear = [(outbox.clearing_state(d), d.key) for d in first.values()]
    sent = [(d.key, _column(segment)) for d in done for segment in d.sent]
    return [*_arrays(finish, 6), *_arrays(clear, 2), *_arrays(sent, 2)]


def _arrays(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as ``width`` parallel column arrays (the parameters of an ``unnest`` insert)."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row of {len(row)} values for {width} columns")
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
