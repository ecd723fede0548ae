"""PostgresStore on a real server: schema guard, migrations, replicas, failure mapping, tamper evidence.

The contract both backends share is in test_contract.py; these are what only PostgreSQL has (or has
differently): triggers, advisory locks, several processes, connections the server drops.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent import ledger
from gateway.model import ConsentChoice, ConsentRecord
from gateway.store import outbox
from gateway.store.base import StorageError
from gateway.store.postgres import MIGRATIONS, PostgresStore
from tests.conftest import create_postgres_database, drop_postgres_database, require_postgres
from tests.strategies import consent_record, consent_records

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("SECRET-meeting", "SECRET-subject", "SECRET-record")


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(pg_url)
    await opened.open()
    yield opened
    await opened.close()


def secret_record(record_id: str = "SECRET-record") -> ConsentRecord:
    return consent_record(record_id=record_id, meeting_id="SECRET-meeting", subject="SECRET-subject")


def assert_no_content(error: BaseException) -> None:
    assert not any(secret in str(error) for secret in SECRETS)


async def as_attacker(url: str, *sql: str) -> None:
    """Run statements on a raw connection, as someone with database access would."""
    conn = await asyncpg.connect(url)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


# --- schema guard and migrations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement", ["UPDATE ledger SET subject = 'x'", "DELETE FROM ledger", "TRUNCATE ledger"]
)
async def test_ledger_is_append_only_in_the_schema(store: PostgresStore, pg_url: str, statement: str) -> None:
    """UPDATE, DELETE and TRUNCATE on the ledger are refused by triggers."""
    await store.append_consent(consent_record())
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await as_attacker(pg_url, statement)
    assert len(await store.ledger_rows()) == 1


@pytest.mark.parametrize(
    "statement", ["UPDATE decisions SET action = 'drop'", "DELETE FROM decisions", "TRUNCATE decisions"]
)
async def test_the_decision_log_is_append_only_in_the_schema(
    store: PostgresStore, pg_url: str, statement: str
) -> None:
    """UPDATE, DELETE and TRUNCATE on the decision log are refused by triggers (migration 6)."""
    from tests.store.test_contract import decision

    await store.append_decisions([decision(1)])
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await as_attacker(pg_url, statement)
    assert len(await store.decision_records()) == 1


async def test_migrations_are_recorded_once(pg_url: str) -> None:
    """Opening twice applies each migration step once and records its version."""
    for _ in range(2):
        store = PostgresStore(pg_url)
        await store.open()
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        setting = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert setting == "on"


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    """Eight stores opening a fresh database at the same moment all open; the schema is created once."""
    stores = [PostgresStore(pg_url, pool_size=1) for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        entries = await asyncio.gather(
            *(s.append_consent(consent_record(record_id=f"r{n}")) for n, s in enumerate(stores))
        )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert sorted(e.seq for e in entries) == list(range(1, 9))


async def test_a_newer_schema_is_refused(store: PostgresStore, pg_url: str) -> None:
    """A database migrated by a newer build is not opened by this one, for writing or for audit."""
    await as_attacker(pg_url, "INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StorageError, match="newer"):
        await PostgresStore(pg_url).open()
    with pytest.raises(StorageError, match="schema version 99"):
        await PostgresStore(pg_url, read_only=True).open()


async def test_an_unmigrated_database_is_not_opened_for_audit(pg_url: str) -> None:
    """A read-only store refuses an empty database instead of creating anything in it."""
    with pytest.raises(StorageError, match="schema version 0"):
        await PostgresStore(pg_url, read_only=True).open()


# --- several replicas ----------------------------------------------------------------------------------


async def test_two_replicas_appending_concurrently_keep_one_chain(pg_url: str) -> None:
    """Two stores with their own pools (two replicas), each appending 150 records concurrently, build one
    contiguous, valid chain, and each caller got the entry that was stored."""
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    try:
        calls = [(a, b)[n % 2].append_consent(consent_record(record_id=f"r{n}")) for n in range(300)]
        entries = await asyncio.gather(*calls)
        rows = await b.ledger_rows()
    finally:
        await a.close()
        await b.close()
    report = ledger.verify_rows(rows)
    assert report.ok
    assert report.count == 300
    assert sorted(e.seq for e in entries) == list(range(1, 301))
    stored = {row.seq: row.hash for row in rows}
    assert all(stored[e.seq] == e.hash for e in entries)
    assert a.commits + b.commits < 300  # each replica still groups its callers' writes


APPENDER = """
import asyncio, sys
from gateway.store.postgres import PostgresStore
from tests.strategies import consent_record

async def main(url, name, count):
    store = PostgresStore(url)
    await store.open()
    try:
        await asyncio.gather(*(store.append_consent(consent_record(record_id=f"{name}-{n}"))
                               for n in range(count)))
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_appending_concurrently_keep_one_chain(pg_url: str) -> None:
    """Two OS processes appending to one database at the same time produce a single valid chain."""
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", APPENDER, pg_url, name, "100", cwd=REPO)
        for name in ("a", "b")
    ]
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout=60)
    assert codes == [0, 0]
    reader = PostgresStore(pg_url, read_only=True)
    await reader.open()
    try:
        report = ledger.verify_rows(await reader.ledger_rows())
        ids = {e.record.record_id for e in await reader.ledger_entries()}
    finally:
        await reader.close()
    assert report.ok
    assert report.count == 200
    assert ids == {f"{name}-{n}" for name in ("a", "b") for n in range(100)}


async def test_the_cli_reads_and_verifies_a_postgresql_ledger(store: PostgresStore, pg_url: str) -> None:
    """`consent-gateway log verify` and `log show` work on a postgresql:// database."""
    entry = await store.append_consent(consent_record(record_id="seen-by-cli"))
    script = "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
    base = [sys.executable, "-c", script, "log", "--database", pg_url]
    verify = await asyncio.to_thread(
        subprocess.run, [*base, "verify", "--expect-head", entry.hash], cwd=REPO, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    show = await asyncio.to_thread(
        subprocess.run, [*base, "show", "--format", "json"], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert show.returncode == 0, show.stderr
    assert "seen-by-cli" in show.stdout


# --- ids PostgreSQL text cannot hold -----------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(records=st.lists(consent_records(), min_size=1, max_size=4, unique_by=lambda r: r.record_id))
def test_any_platform_id_round_trips_and_filters(
    pg_schema: Callable[[], str], records: list[ConsentRecord]
) -> None:
    """Records with any opaque ids (NUL, backslashes, any unicode) read back equal and filter exactly."""

    url = pg_schema()

    async def run() -> None:
        store = PostgresStore(url, pool_size=2)
        await store.open()
        try:
            entries = [await store.append_consent(record) for record in records]
            assert await store.ledger_entries() == entries
            for entry in entries:
                record = entry.record
                want = [e for e in entries if (e.record.meeting_id, e.record.subject) == (record.meeting_id,
                        record.subject)]  # fmt: skip
                got = await store.ledger_entries(meeting_id=record.meeting_id, participant_id=record.subject)
                assert got == want
        finally:
            await store.close()

    asyncio.run(run())


# --- failures ----------------------------------------------------------------------------------------


async def test_an_unreachable_server_raises_storage_error_without_the_password() -> None:
    """A server that does not answer fails open() with StorageError that does not echo the DSN."""
    store = PostgresStore("postgresql://gw:hunter2@127.0.0.1:1/gw", connect_timeout=2)
    with pytest.raises(StorageError, match="cannot open PostgreSQL storage") as caught:
        await store.open()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)


async def test_a_missing_database_raises_storage_error(pg_url: str) -> None:
    """A database that does not exist fails open() with StorageError naming the error class."""
    with pytest.raises(StorageError, match="InvalidCatalogNameError"):
        await PostgresStore(pg_url + "_absent").open()


async def test_a_broken_schema_raises_storage_error(store: PostgresStore, pg_url: str) -> None:
    """A write the database refuses (table gone) surfaces as StorageError without content."""
    from tests.store.test_contract import decision

    await as_attacker(pg_url, "DROP TABLE decisions")
    with pytest.raises(StorageError, match="write failed") as caught:
        await store.append_decisions([decision(1, meeting_id="SECRET-meeting")])
    assert_no_content(caught.value)
    with pytest.raises(StorageError, match="read failed"):
        await store.decision_records(meeting_id="SECRET-meeting")


async def test_an_undecodable_row_raises_storage_error(store: PostgresStore, pg_url: str) -> None:
    """A ledger row that no longer decodes raises StorageError naming its seq only."""
    await store.append_consent(secret_record())
    await as_attacker(
        pg_url,
        "ALTER TABLE ledger DISABLE TRIGGER USER",
        'UPDATE ledger SET record_json = \'{"subject": "SECRET-subject"}\'',
    )
    with pytest.raises(StorageError, match="row 1 cannot be decoded") as caught:
        await store.ledger_entries()
    assert_no_content(caught.value)
    assert not ledger.verify_rows(await store.ledger_rows()).ok


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, attempts: int = 200) -> None:
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def test_dropped_connections_fail_closed_then_recover(store: PostgresStore, pg_url: str) -> None:
    """When the server drops every connection (a restart, a failover), callers get StorageError or a durable
    write, never a wrong chain; the store recovers by itself once connections can be made again."""
    await store.append_consent(consent_record(record_id="before"))
    await as_attacker(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    outcomes = await asyncio.gather(
        *(store.append_consent(secret_record(f"SECRET-record-{n}")) for n in range(5)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, StorageError), repr(outcome)
            assert_no_content(outcome)

    async def healthy() -> bool:
        try:
            await store.ping()
            await store.append_consent(consent_record(record_id=f"after-{uuid.uuid4()}"))
        except StorageError:
            return False
        return True

    await wait_until(healthy, "the store to recover")
    report = ledger.verify_rows(await store.ledger_rows())
    assert report.ok


# --- tamper evidence (DESIGN invariant 8), as an attacker with database access would do it ------------


Attack = Callable[[asyncpg.Connection, int, st.DataObject], Awaitable[None]]


async def edit_field(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    seq = data.draw(st.integers(1, n), label="seq")
    record = json.loads(await db.fetchval("SELECT record_json FROM ledger WHERE seq = $1", seq))
    key = data.draw(st.sampled_from(["subject", "choice", "purposes", "at", "indicated_by"]), label="field")
    changes = {
        "choice": "refused" if record["choice"] == "given" else "given",
        "purposes": [*record["purposes"], "training-forged"],
        "at": "2001-01-01T00:00:00Z" if record["at"] != "2001-01-01T00:00:00Z" else "2002-01-01T00:00:00Z",
    }
    record[key] = changes.get(key, str(record.get(key)) + "x")
    await db.execute("UPDATE ledger SET record_json = $1 WHERE seq = $2", ledger.canonical_dumps(record), seq)


async def delete_middle(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    await db.execute("DELETE FROM ledger WHERE seq = $1", data.draw(st.integers(2, n - 1), label="seq"))


async def delete_first(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    await db.execute("DELETE FROM ledger WHERE seq = 1")


async def swap_rows(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    i, j = data.draw(st.lists(st.integers(1, n), min_size=2, max_size=2, unique=True), label="seqs")
    await db.execute(
        "UPDATE ledger AS l SET record_json = o.record_json, prev_hash = o.prev_hash, hash = o.hash"
        " FROM ledger AS o WHERE (l.seq, o.seq) IN (($1, $2), ($2, $1))",
        i,
        j,
    )


async def insert_forged(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    """A forged row at position k, correctly chained to k-1 and hashed, without re-chaining the rest."""
    k = data.draw(st.integers(1, n), label="position")
    forged = data.draw(consent_records(record_id=st.just("forged")), label="forged")
    prev = await db.fetchval("SELECT hash FROM ledger WHERE seq = $1", k - 1)
    row = ledger.next_row((k - 1, prev or ledger.GENESIS), ledger.canonical_json(forged))
    await db.execute("UPDATE ledger SET seq = -seq WHERE seq >= $1", k)  # two steps: seq is a primary key
    await db.execute("UPDATE ledger SET seq = 1 - seq WHERE seq < 0")
    await db.execute(
        "INSERT INTO ledger VALUES ($1, 'forged', 'm', 's', 'at', $2, $3, $4)",
        row.seq,
        row.record_json,
        row.prev_hash,
        row.hash,
    )


async def move_columns(db: asyncpg.Connection, n: int, data: st.DataObject) -> None:
    """Reads filter on the indexed columns: moving a row's meeting or subject hides it from them."""
    seq = data.draw(st.integers(1, n), label="seq")
    column = data.draw(st.sampled_from(["meeting_id", "subject", "record_id", "at"]), label="column")
    await db.execute(f"UPDATE ledger SET {column} = {column} || '-moved' WHERE seq = $1", seq)  # noqa: S608


ATTACKS: dict[str, tuple[int, Attack]] = {
    "edit_field": (1, edit_field),
    "move_columns": (1, move_columns),
    "delete_middle": (3, delete_middle),
    "delete_first": (2, delete_first),
    "swap_rows": (2, swap_rows),
    "insert_forged": (1, insert_forged),
}


@pytest.fixture
def pg_schema() -> Iterator[Callable[[], str]]:
    """Makes empty schemas in one fresh database (one per Hypothesis example: faster than databases).

    Deliberately shared by a test's examples: each example asks it for a schema of its own."""
    require_postgres()
    url = asyncio.run(create_postgres_database())

    def fresh() -> str:
        name = f"ex_{uuid.uuid4().hex[:12]}"
        asyncio.run(as_attacker(url, f'CREATE SCHEMA "{name}"'))
        return f"{url}?search_path={name}"

    try:
        yield fresh
    finally:
        asyncio.run(drop_postgres_database(url))


chains = st.lists(consent_records(), min_size=1, max_size=6, unique_by=lambda r: r.record_id)
tamper_settings = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


async def write_and_tamper(
    url: str, records: list[ConsentRecord], attack: Attack, data: st.DataObject
) -> None:
    store = PostgresStore(url, pool_size=2)
    await store.open()
    try:
        entries = [await store.append_consent(record) for record in records]
        report = ledger.verify_rows(await store.ledger_rows(), expect_head=entries[-1].hash)
        assert report.ok
        assert report.count == len(records)
        db = await asyncpg.connect(url)
        try:
            await db.execute("ALTER TABLE ledger DISABLE TRIGGER USER")  # no obstacle to an attacker
            async with db.transaction():
                await attack(db, len(records), data)
        finally:
            await db.close()
        assert not ledger.verify_rows(await store.ledger_rows()).ok
    finally:
        await store.close()


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@tamper_settings
@given(records=chains, data=st.data())
def test_any_single_tampering_of_the_database_is_detected(
    pg_schema: Callable[[], str], attack_name: str, records: list[ConsentRecord], data: st.DataObject
) -> None:
    """A stored chain verifies; any one edit, deletion, swap or forged insertion made through a raw
    connection with the triggers disabled makes it fail."""
    min_rows, attack = ATTACKS[attack_name]
    if len(records) < min_rows:
        records = [*records, *(consent_record(record_id=f"pad{n}") for n in range(min_rows))]
    asyncio.run(write_and_tamper(pg_schema(), records, attack, data))


# --- concurrent updates of outbox rows -------------------------------------------------------------------


def _item(key: str) -> outbox.OutboxItem:
    return outbox.OutboxItem(key, "m1", "d1", "segment", ("summary",), 0.0, 4_000_000_000.0, ())


async def test_lease_renewal_skips_rows_another_transaction_holds(store: PostgresStore, pg_url: str) -> None:
    """Renewal must not wait for a row the writer is finishing (it waited while the writer waited on a row
    the renewal held: a deadlock under load). The row it skipped is renewed on the next round."""
    lease = outbox.Lease("me", 100.0)
    await store.append_decisions([], [_item("k1"), _item("k2")], lease)
    admin = await asyncpg.connect(pg_url)
    try:
        holding = admin.transaction()
        await holding.start()
        await admin.execute("SELECT 1 FROM outbox WHERE item_key = 'k1' FOR UPDATE")
        await asyncio.wait_for(store.renew_outbox(outbox.Lease("me", 200.0)), timeout=5)
        leases = dict(await admin.fetch("SELECT item_key, lease_until FROM outbox ORDER BY item_key"))
        assert leases == {"k1": 100.0, "k2": 200.0}
        await holding.rollback()
        await store.renew_outbox(outbox.Lease("me", 300.0))
        leases = dict(await admin.fetch("SELECT item_key, lease_until FROM outbox ORDER BY item_key"))
        assert leases == {"k1": 300.0, "k2": 300.0}
    finally:
        await admin.close()


async def test_a_group_commit_ended_to_break_a_deadlock_runs_again(store: PostgresStore, pg_url: str) -> None:
    """A real deadlock: another transaction holds item k1 and then inserts k2, while the writer's transaction
    has inserted k2 and waits to finish k1. PostgreSQL ends the writer's (the other waits longer before it
    checks); the writer runs the whole transaction again, and its caller sees success, not StorageError."""
    lease = outbox.Lease("me", 100.0)
    await store.append_decisions([], [_item("k1")], lease)
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("SET deadlock_timeout = '20s'")  # the writer's session (1 s) checks first
        other = admin.transaction()
        await other.start()
        await admin.execute("UPDATE outbox SET attempts = 7 WHERE item_key = 'k1'")
        done = outbox.Finished("k1", outbox.DELIVERED, None, 1, 200, (), 1.0)
        writing = asyncio.create_task(store.append_decisions([], [_item("k2")], lease, [done]))
        await asyncio.sleep(0.3)  # the writer has inserted k2 and waits for k1
        await admin.execute(
            "INSERT INTO outbox (item_key, meeting_id, destination, kind, purposes, created_at, expires_at)"
            " VALUES ('k2', 'm1', 'd1', 'segment', 'summary', 0, 0)"
        )  # waited for the writer's k2 until the writer's transaction was ended
        await other.rollback()  # the writer's second run, waiting on this k2, goes ahead
        await asyncio.wait_for(writing, timeout=10)
        rows = dict(await admin.fetch("SELECT item_key, status FROM outbox ORDER BY item_key"))
        assert rows == {"k1": "delivered", "k2": "pending"}
    finally:
        await admin.close()


# --- the server's defaults -----------------------------------------------------------------------------


async def test_concurrent_writers_keep_working_whatever_the_servers_default_isolation(pg_url: str) -> None:
    """A server (or database) whose default isolation is REPEATABLE READ made concurrent consent writes of
    two replicas fail with serialisation errors (503s); the store names READ COMMITTED, which its chain
    lock is written for, on every transaction."""
    name = pg_url.rsplit("/", 1)[1].split("?", 1)[0]
    await as_attacker(
        pg_url, f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
    )
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    results: list[object] = []

    async def replica(store: PostgresStore, who: str) -> None:
        for chunk in range(0, 150, 30):
            writes = [store.append_consent(_record(who, n)) for n in range(chunk, chunk + 30)]
            results.extend(await asyncio.gather(*writes, return_exceptions=True))

    try:
        await asyncio.gather(replica(a, "a"), replica(b, "b"))
        report = ledger.verify_rows(await a.ledger_rows())
    finally:
        await a.close()
        await b.close()
    assert [type(r).__name__ for r in results if isinstance(r, BaseException)] == []
    assert report.ok and report.count == 300


def _record(who: str, n: int) -> ConsentRecord:
    choice = ConsentChoice.WITHDRAWN if n % 3 == 0 else ConsentChoice.GIVEN
    return consent_record(record_id=f"{who}{n}", meeting_id=f"m{n % 7}", subject=f"{who}{n}", choice=choice)
