"""A live gateway with platform adapters mounted (Recall.ai, Teams, Meet tests), and helpers around it.

Like ``tests.web.harness.serving`` (whose policy, settings and fake AI services it reuses), but an adapter's
``setup`` is called on the app before it starts, with an ``environ`` mapping instead of the process
environment, so that tests never set environment variables.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway.app import create_app
from gateway.events import ConsentSubmitted
from gateway.model import ConsentChoice
from gateway.settings import Settings
from gateway.web.keys import GATEWAY
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    INGEST_TOKEN,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Dest,
    LiveGateway,
    policy_yaml,
    until_fresh,
)

Setup = Callable[[web.Application], None]
T = TypeVar("T")


@asynccontextmanager
async def platform_gateway(
    tmp: Path, setup: Setup, dests: Sequence[Dest] = (Dest("summariser"),), *, window: float = 0
) -> AsyncIterator[LiveGateway]:
    """A gateway on 127.0.0.1 port 0 with ``setup(app)`` applied, one fake AI service per destination."""
    async with AsyncExitStack() as stack:
        fakes = {d.id: await stack.enter_async_context(FakeAIService(SIGNING_SECRET)) for d in dests}
        policy = tmp / "policy.yaml"
        policy.write_text(policy_yaml({d: f.url for d, f in fakes.items()}, dests, window=window))
        database = await database_for(tmp)
        settings = Settings(
            port=0,
            database=database,
            secrets_file=tmp / "secrets.json",  # a server database has no directory of its own
            policies=(policy,),
            ingest_token=SecretStr(INGEST_TOKEN),
            webhook_secrets=(SecretStr(WEBHOOK_SECRET),),
            signing_secret=SecretStr(SIGNING_SECRET),
            admin_tokens=(SecretStr("test-admin-token"),),
            tick_seconds=0.05,
        )
        app = create_app(settings)
        setup(app)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await until_fresh(app)
        yield LiveGateway(app, f"http://127.0.0.1:{port}", http, fakes, policy, database)


async def consent(
    live: LiveGateway, platform: str, meeting: str, pid: str, choice: ConsentChoice = ConsentChoice.GIVEN
) -> None:
    """A participant's own consent for ``summary``, as a consent channel would submit it."""
    event = ConsentSubmitted(platform, meeting, pid, ("summary",), choice, pid, "api", datetime.now(UTC))
    result = await live.app[GATEWAY].handle(platform, event)
    assert result.status == "accepted", result


def forwarded(live: LiveGateway) -> list[dict[str, Any]]:
    """Every segment payload the destinations accepted, in arrival order."""
    return [p for fake in live.fakes.values() for r in fake.received if r.ok for p in r.segment_payloads()]


@contextmanager
def in_thread(
    tmp: Path, setup: Setup, before: Callable[[], Awaitable[None]] | None = None
) -> Iterator[tuple[LiveGateway, asyncio.AbstractEventLoop]]:
    """The gateway served from a background thread's event loop, for synchronous Hypothesis tests;
    ``before`` runs on that loop first (to start a fake platform whose address ``setup`` needs)."""
    loop = asyncio.new_event_loop()
    ready: list[LiveGateway] = []
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        if before is not None:
            await before()
        async with platform_gateway(tmp, setup) as live:
            ready.append(live)
            loop.call_soon_threadsafe(started.set)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "the gateway did not start"
    try:
        yield ready[0], loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def post_sync(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, str, bytes]:
    """A blocking POST (for Hypothesis tests against ``in_thread``): status, content type and body."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the serving thread's loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(30)
