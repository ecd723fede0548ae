"""Test-suite helpers shared across packages."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

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


POSTGRES = os.environ.get("CONSENT_GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
"""Server for PostgreSQL tests (user with CREATE DATABASE, trust auth); each test gets its own database."""


def require_postgres() -> str:
    """The PostgreSQL server URL (no database); skips when it does not answer (fails under
    CONSENT_GATEWAY_REQUIRE_ALL=1). ``.ci/run`` starts the local cluster."""
    parts = urlsplit(POSTGRES)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2):
            pass
    except OSError as exc:
        message = f"PostgreSQL at {parts.hostname}:{parts.port} is unreachable ({type(exc).__name__})"
        if os.environ.get("CONSENT_GATEWAY_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES.rstrip("/")


async def create_postgres_database() -> str:
    """A fresh, uniquely named database on the test server; returns its URL (drop it afterwards)."""
    import asyncpg

    server = require_postgres()
    name = f"cg_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{server}/{name}"


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, disconnecting whoever is still on it."""
    import asyncpg

    server, name = url.split("?", 1)[0].rsplit("/", 1)
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, uniquely named database on the test server, dropped afterwards; yields its URL."""
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


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
