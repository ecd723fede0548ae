"""Test-suite helpers shared across packages."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

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
