"""Graceful shutdown and request ids, on a real ``consent-gateway serve`` process.

SIGTERM arrives while deliveries to a (fake) AI service are still retrying: the process stops accepting,
drains delivery, every item ends delivered (or reported), and it exits 0. Its JSON log lines carry the
request id each request was given.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    INGEST_TOKEN,
    SIGNING_SECRET,
    Dest,
    consent,
    joined,
    policy_yaml,
    segment,
    wait_for,
)

CLI = Path(sys.executable).parent / "consent-gateway"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    url: str
    http: aiohttp.ClientSession

    async def post(self, *events: dict[str, Any], request_id: str = "") -> int:
        headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        if request_id:
            headers["X-Request-Id"] = request_id
        async with self.http.post(
            f"{self.url}/v1/events", json={"events": list(events)}, headers=headers
        ) as r:
            return r.status

    async def depth(self) -> float:
        async with self.http.get(f"{self.url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("gateway_outbox_depth "):
                    return float(line.split()[1])
        return -1.0


async def ready(url: str, http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get(f"{url}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


@asynccontextmanager
async def served(tmp: Path, fake: FakeAIService, **env_extra: str) -> AsyncIterator[Served]:
    """``consent-gateway serve`` in a subprocess, JSON logs on stderr, configured by flags and environment."""
    policy = tmp / "policy.yaml"
    policy.write_text(policy_yaml({"summariser": fake.url}, [Dest("summariser")]))
    port = free_port()
    env = {
        **os.environ,
        "CONSENT_GATEWAY_INGEST_TOKEN": INGEST_TOKEN,
        "CONSENT_GATEWAY_SIGNING_SECRET": SIGNING_SECRET,
        "CONSENT_GATEWAY_LOG_FORMAT": "json",
        "CONSENT_GATEWAY_LOG_LEVEL": "debug",  # delivered items are logged at debug
        "CONSENT_GATEWAY_SECRETS_FILE": str(tmp / "secrets.json"),  # PostgreSQL has no directory of its own
        **env_extra,
    }
    database = await database_for(tmp)
    args = ["serve", "--port", str(port), "--database", database, "--policy", str(policy)]
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}"
            await wait_for(lambda: ready(url, http), "the gateway to be ready", limit=20)
            yield Served(proc, url, http)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_drains_pending_deliveries_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM while three deliveries wait on retries: all three arrive, none is dropped, exit code 0."""
    async with FakeAIService(SIGNING_SECRET) as fake, served(tmp_path, fake) as gw:
        fake.fail_next(2, status=503, retry_after=1)
        status = await gw.post(
            joined("p-ada", "Ada"),
            consent("p-ada", "given"),
            *(segment(f"s{i}", "p-ada", f"Sentence {i}.") for i in range(3)),
            request_id="req-shutdown-1",
        )
        assert status == 200

        async def pending() -> bool:
            return await gw.depth() > 0

        await wait_for(pending, "deliveries to be pending")
        gw.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = await asyncio.wait_for(gw.proc.communicate(), 30)
        assert gw.proc.returncode == 0, stderr.decode()[-2000:]
        assert time.monotonic() - started < 30
    assert sorted(p["segment_id"] for p in fake.segments()) == ["s0", "s1", "s2"]
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.count("delivery.delivered") == 3, stderr.decode()[-3000:]
    assert "delivery.dropped" not in events
    consent_lines = [line for line in lines if line["event"] == "consent.recorded"]
    assert consent_lines and consent_lines[0]["request_id"] == "req-shutdown-1"


async def test_readiness_fails_when_a_worker_has_stopped(tmp_path: Path) -> None:
    """When the held-segment ticker is no longer running, /readyz answers 503 naming the workers check."""
    from gateway.web.health import TICKER
    from tests.web.harness import serving

    async with serving(tmp_path) as gw:
        ticker = gw.app[TICKER]
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        async with gw.http.get(f"{gw.url}/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["workers"] == "stopped"
