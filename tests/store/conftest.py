"""Store fixtures: every contract test runs on a fresh SQLite file and on a fresh, empty PostgreSQL database
(so that opening it runs the migrations), in both runs of the suite whatever CONSENT_GATEWAY_TEST_DATABASE
says; tests/store/test_sqlite.py and test_postgres.py are about one backend each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.store.base import Store
from tests.conftest import postgres_database

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of each backend (PostgreSQL: skipped when the server is absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(database_url)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """An empty PostgreSQL database, for PostgreSQL-only tests."""
    async with postgres_database() as url:
        yield url
