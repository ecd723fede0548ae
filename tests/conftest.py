"""Test-suite helpers shared across packages, and the database backend the whole suite runs on.

CONSENT_GATEWAY_TEST_DATABASE chooses it: unset is SQLite; ``postgresql://USER@HOST:PORT/DB`` runs every
test that stores anything on that server, each in a database of its own (``database_for``). Tests about
SQLite itself (its file, WAL, permissions, the CLI reading a ``.db`` file) use ``sqlite_url`` and say so.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.store import open_store
from gateway.store.base import Store

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""The shared data next to the checkout (``../shared``): corpus, platform fixtures."""


def require_shared(relative: str) -> Path:
    """``../shared/<relative>``; skips the test when absent (fails under CONSENT_GATEWAY_REQUIRE_ALL=1)."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is absent (the shared data is not checked out here)"
        if os.environ.get("CONSENT_GATEWAY_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def shared_dir(relative: str = "corpus") -> Path:
    """The shared corpus directory (``../shared/corpus`` by default): skip, or fail when all is required."""
    return require_shared(relative)


CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> Path:
    """Debian's Chromium for browser tests; skips when absent (fails under CONSENT_GATEWAY_REQUIRE_ALL=1).

    Launch it through Playwright with ``executable_path`` and the flags in ``CHROMIUM_ARGS``; nothing is
    downloaded."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent: `make browser` (apt-get install chromium) installs it"
        if os.environ.get("CONSENT_GATEWAY_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DATABASE_VARIABLE = "CONSENT_GATEWAY_TEST_DATABASE"
TEST_DATABASE = os.environ.get(DATABASE_VARIABLE, "").strip()
"""The backend the whole suite runs on: unset (or ``sqlite``) is SQLite, a ``postgresql://`` URL is that
server (the database in the URL is only where test databases are created from; it is never written to)."""
ON_POSTGRES = TEST_DATABASE.startswith(POSTGRES_SCHEMES)


def _server_and_admin_db() -> tuple[str, str]:
    """The PostgreSQL server URL without a database, and the database to connect to for CREATE DATABASE."""
    if ON_POSTGRES:
        parts = urlsplit(TEST_DATABASE)
        return f"{parts.scheme}://{parts.netloc}", parts.path.strip("/") or "postgres"
    server = os.environ.get("CONSENT_GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    return server.rstrip("/"), "postgres"


POSTGRES, ADMIN_DATABASE = _server_and_admin_db()
"""Server for PostgreSQL tests (user with CREATE DATABASE, trust auth); each test gets its own database.
Taken from CONSENT_GATEWAY_TEST_DATABASE when the suite runs on PostgreSQL, else from
CONSENT_GATEWAY_TEST_POSTGRES (default the local server)."""


def _require_all() -> bool:
    return os.environ.get("CONSENT_GATEWAY_REQUIRE_ALL") == "1"


def _postgres_unreachable() -> str | None:
    """Why the PostgreSQL server does not answer (host and port only: the URL may carry a password)."""
    parts = urlsplit(POSTGRES)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2):
            return None
    except OSError as exc:
        return f"PostgreSQL at {parts.hostname}:{parts.port} is unreachable ({type(exc).__name__})"


def require_postgres() -> str:
    """The PostgreSQL server URL (no database); skips when it does not answer (fails under
    CONSENT_GATEWAY_REQUIRE_ALL=1). ``.ci/run`` starts the local cluster."""
    message = _postgres_unreachable()
    if message is not None:
        if _require_all():
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES


async def _admin(*statements: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(f"{POSTGRES}/{ADMIN_DATABASE}")
    try:
        for sql in statements:
            await admin.execute(sql)
    finally:
        await admin.close()


async def create_postgres_database(template: str | None = None) -> str:
    """A fresh, uniquely named database on the test server (a copy of ``template`` when given); returns its
    URL (drop it afterwards)."""
    server = require_postgres()
    name = f"cg_test_{uuid.uuid4().hex[:16]}"
    await _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"{server}/{name}"


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, disconnecting whoever is still on it."""
    name = url.split("?", 1)[0].rsplit("/", 1)[1]
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty, uniquely named database on the test server, dropped afterwards; yields its URL."""
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


# --- the backend under test --------------------------------------------------------------------------------
#
# On PostgreSQL every test database is a copy of one template migrated once per session by the gateway's
# own migrations: CREATE DATABASE ... TEMPLATE takes about as long as creating an empty one, and opening a
# migrated copy skips the migration. Like a SQLite file, a database belongs to a path, so a test that serves
# twice from the same directory (a restart) finds its data again; it is dropped when the test ends.

_template: str | None = None
_databases: dict[Path, str] = {}


async def _migrated_template() -> str:
    global _template
    if _template is None:
        from gateway.store.postgres import PostgresStore

        url = await create_postgres_database()
        try:
            store = PostgresStore(url)
            await store.open()
            await store.close()
        except BaseException:
            await drop_postgres_database(url)
            raise
        _template = url.rsplit("/", 1)[1]
    return _template


async def database_for(tmp: Path, name: str = "gateway.db") -> str:
    """The URL of the test's database at ``tmp/name`` on the backend under test: a SQLite file there, or
    a PostgreSQL database made for that path on first use (fresh, migrated) and dropped when the test ends."""
    path = tmp / name
    if not ON_POSTGRES:
        return sqlite_url(tmp, name)
    if path not in _databases:
        _databases[path] = (
            _spare.pop() if _spare else await create_postgres_database(template=await _migrated_template())
        )
    return _databases[path]


# A test's database is emptied for the next test rather than dropped and copied from the template again
# (each copy and drop costs about 0.13 s, on a few thousand databases a run): every connection to it is
# ended, every table emptied with its identities restarted, database settings reset. One whose schema is no
# longer the migrated one (a test altered it) is dropped instead.
_spare: list[str] = []
_SPARE_MAX = 8
_schema_signature: tuple[int, ...] | None = None
_SIGNATURE = (
    "SELECT (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal),"
    " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),"
    " (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    "  WHERE n.nspname = 'public'),"
    " (SELECT coalesce(max(version), 0) FROM schema_version)"
)


async def _give_back(urls: list[str]) -> None:
    for url in urls:
        if len(_spare) < _SPARE_MAX and await _emptied(url):
            _spare.append(url)
        else:
            await drop_postgres_database(url)


async def _emptied(url: str) -> bool:
    """Whether ``url`` is now as a fresh copy of the template would be."""
    import asyncpg

    global _schema_signature
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        signature = tuple(await conn.fetchrow(_SIGNATURE))
        if _schema_signature is None:
            template = await asyncpg.connect(f"{POSTGRES}/{await _migrated_template()}")
            try:
                _schema_signature = tuple(await template.fetchrow(_SIGNATURE))
            finally:
                await template.close()
        if signature != _schema_signature:
            return False
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
        )
        await conn.execute("SET session_replication_role = replica")  # the append-only triggers
        await conn.execute(
            "TRUNCATE " + ", ".join(f'"{row[0]}"' for row in tables) + " RESTART IDENTITY CASCADE"
        )
        name = url.split("?", 1)[0].rsplit("/", 1)[1]
        await conn.execute(f'ALTER DATABASE "{name}" RESET ALL')
        return True
    except (OSError, asyncpg.PostgresError):
        return False
    finally:
        await conn.close()


def sqlite_url(tmp: Path, name: str = "gateway.db") -> str:
    """A SQLite database at ``tmp/name`` whatever the backend under test: for tests about SQLite itself."""
    return f"sqlite:///{tmp / name}"


@asynccontextmanager
async def fresh_database(tmp: Path, name: str = "gateway.db") -> AsyncIterator[str]:
    """``database_for``, dropped on leaving (PostgreSQL): for a store per Hypothesis example."""
    url = await database_for(tmp, name)
    try:
        yield url
    finally:
        if _databases.pop(tmp / name, None) is not None:
            await _give_back([url])


@asynccontextmanager
async def fresh_store(tmp: Path, name: str = "gateway.db") -> AsyncIterator[Store]:
    """An open store on a fresh database of the backend under test; closed and dropped on leaving."""
    async with fresh_database(tmp, name) as url:
        store = open_store(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def tamper(url: str, *statements: str) -> None:
    """Run SQL on a database behind the gateway's back with the ledger's append-only triggers out of the way,
    as an attacker with access to the database would (SQLite: drop them; PostgreSQL: a session that fires no
    triggers)."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.execute("DROP TRIGGER IF EXISTS ledger_no_update")
            db.execute("DROP TRIGGER IF EXISTS ledger_no_delete")
            for sql in statements:
                db.execute(sql)
            db.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _drop_the_tests_databases() -> Iterator[None]:
    """Drop the PostgreSQL databases a test made (those of module-scoped fixtures live to the session end)."""
    before = set(_databases)
    yield
    made = [_databases.pop(path) for path in set(_databases) - before]
    if made:
        asyncio.run(_give_back(made))


async def _drop_all(urls: list[str]) -> None:
    for url in urls:
        await drop_postgres_database(url)


_UNREACHABLE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if TEST_DATABASE and TEST_DATABASE != "sqlite" and not ON_POSTGRES:
        raise pytest.UsageError(f"{DATABASE_VARIABLE} must be unset, sqlite or a postgresql:// URL")
    if ON_POSTGRES and (message := _postgres_unreachable()) is not None:
        if _require_all():
            raise pytest.UsageError(f"{DATABASE_VARIABLE} names a server that does not answer: {message}")
        config.stash[_UNREACHABLE] = message


# `make test` runs the suite twice, on SQLite and then on PostgreSQL. Everything that stores anything runs in
# both runs, on the backend under test; what is about one backend only, or about no storage at all, runs in
# one of them (``ONE_RUN``), so that the pair covers everything once, not twice. Run one run alone (`make
# test-sqlite`) and those are still selected (RUN_ONCE unset): see ``_other_run``.
ONE_RUN_SQLITE = (
    # no storage at all: the pure core, parsers, names, policy compilation, signing, docs
    "tests/bench/test_scrub_baseline.py",
    "tests/consent/test_ledger.py",
    "tests/consent/test_links.py",
    "tests/consent/test_receipts.py",
    "tests/delivery/test_batches.py",
    "tests/delivery/test_dispatcher.py",
    "tests/delivery/test_dispatcher_properties.py",
    "tests/delivery/test_http.py",
    "tests/delivery/test_retry.py",
    "tests/names/",
    "tests/platforms/test_backlog.py",
    "tests/platforms/test_zoom_signatures.py",
    "tests/platforms/test_zoom_vtt.py",
    "tests/policy/",
    "tests/store/test_rows.py",
    "tests/test_decision_log.py",
    "tests/test_deploy.py",
    "tests/test_docs.py",
    "tests/test_engine.py",
    "tests/test_held.py",
    "tests/test_names.py",
    "tests/test_names_corpus.py",
    "tests/test_roster_log.py",
    "tests/test_sealing.py",
    "tests/test_signing.py",
    "tests/web/test_ingest_parse.py",
    # about SQLite itself, whatever the backend under test
    "tests/store/test_sqlite.py",
)
"""Run only in the SQLite run of `make test`."""
ONE_RUN_POSTGRES = ("tests/store/test_postgres.py", "tests/test_outbox_faults.py::test_postgres_restart")
"""Run only in the PostgreSQL run (PostgreSQL-only tests, which need the server in either run)."""
_BOTH_BACKEND_PARAMS = ("tests/test_outbox_faults.py", "tests/test_cli.py")
"""Modules whose fixtures are parametrised over both backends: each run keeps its own backend's cases."""


def _other_run(item: pytest.Item) -> bool:
    """Whether ``item`` belongs to the other run of `make test` (only when it says both runs happen)."""
    if os.environ.get("CONSENT_GATEWAY_BOTH_RUNS") != "1":
        return False
    node = item.nodeid
    theirs = ONE_RUN_SQLITE if ON_POSTGRES else ONE_RUN_POSTGRES
    if node.startswith(theirs):
        return True
    if node.startswith(_BOTH_BACKEND_PARAMS) and "[" in node:
        other = "[sqlite" if ON_POSTGRES else "[postgres"
        return other in node
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL with no server (and not everything required), every test skips saying why. In one run of
    `make test`'s pair, what the other run covers is deselected (``_other_run``)."""
    other = [item for item in items if _other_run(item)]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if not _other_run(item)]
    message = config.stash.get(_UNREACHABLE, None)
    if message is not None:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=f"{DATABASE_VARIABLE}: {message}"))


def pytest_report_header() -> str:
    if not ON_POSTGRES:
        return "database backend: SQLite (set CONSENT_GATEWAY_TEST_DATABASE=postgresql://... for PostgreSQL)"
    parts = urlsplit(TEST_DATABASE)
    return f"database backend: PostgreSQL at {parts.hostname}:{parts.port or 5432}, a fresh database per test"


def pytest_sessionfinish() -> None:
    leftovers = [*_databases.values(), *_spare, *([f"{POSTGRES}/{_template}"] if _template else [])]
    _databases.clear()
    _spare.clear()
    if leftovers:
        asyncio.run(_drop_all(leftovers))


@pytest.fixture(autouse=True)
def _logs_to_a_stream_that_outlives_the_test() -> Iterator[None]:
    """structlog binds its stream when configured; pytest closes each test's captured stdout afterwards.

    Every test starts and ends with logs going to the process's real stderr at every level (tests that
    capture logs see them all), so a logger configured by one test (CLI verbs configure logging) can never
    write into a closed stream in the next.
    """
    from gateway import logs

    logs.configure("json", "debug", stream=sys.__stderr__)
    yield
    logs.configure("json", "debug", stream=sys.__stderr__)
