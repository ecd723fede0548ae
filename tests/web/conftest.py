"""Fixtures for tests through the real server: a gateway on loopback, its fake AI service, a client session.

The harness itself (``serving``, event builders, bounded waiting) lives in ``tests/web/harness.py`` so that
end-to-end tests outside this package can use it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.web.harness import LiveGateway, serving


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    """A gateway whose policy drops unknown speakers at once (pending window 0), one stream destination."""
    async with serving(tmp_path) as live:
        yield live


@pytest.fixture
async def small_body_gateway(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    """A gateway that accepts request bodies of at most 1024 bytes."""
    async with serving(tmp_path, max_body_bytes=1024) as live:
        yield live


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session with no credentials."""
    async with aiohttp.ClientSession() as session:
        yield session
