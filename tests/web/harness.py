"""A real gateway on 127.0.0.1 port 0 with real storage and fake AI services: the harness of end-to-end tests.

``serving()`` writes a policy file whose destinations point at ``FakeAIService`` instances (one per
destination, so what each destination received is known), starts ``create_app(settings)`` on loopback and
yields a ``LiveGateway`` that posts events the way a platform would. Waiting is bounded polling on a
condition, never a sleep whose length a test relies on. Storage is the backend the suite runs on
(``tests.conftest.database_for``: SQLite, or PostgreSQL under CONSENT_GATEWAY_TEST_DATABASE).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway import signing
from gateway.app import create_app
from gateway.delivery import Dispatcher
from gateway.model import Decision
from gateway.replication import REPLICATION
from gateway.settings import Settings
from gateway.store.base import LedgerEntry, Store
from gateway.web.keys import DISPATCHER, STORE
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService

INGEST_TOKEN = "test-ingest-token"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"platform webhook secret, 32 byte").decode()
SIGNING_SECRET = "whsec_" + base64.b64encode(b"gateway outbound secret, 32 byte").decode()
MEETING = "m-weekly"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Dest:
    """A destination of the test policy; each gets its own fake AI service."""

    id: str
    purposes: tuple[str, ...] = ("summary",)
    delivery: str = "stream"
    erasure: bool = False
    """Declare an erasure endpoint (the same fake, path ``/erase``)."""
    timeout: float | None = None
    """``timeout_seconds`` of the destination (None: the policy default)."""
    batch_seconds: float | None = None
    """``batch_seconds`` of a ``batched`` destination (None: the policy default)."""
    batch_max: int | None = None
    """``batch_max_segments`` of a ``batched`` destination (None: the policy default)."""


def policy_yaml(
    urls: Mapping[str, str],
    dests: Sequence[Dest],
    *,
    window: float = 0,
    mode: str = "per_speaker",
    name: str = "test",
) -> str:
    """A policy with purposes ``summary`` and ``training`` and the given destinations."""
    lines = [
        f"policy: {name}",
        f"mode: {mode}",
        "purposes:",
        "  summary: {description: Summaries., notice: Sent to the summariser., notice_version: s-1}",
        "  training: {description: Training., notice: Kept to train models., notice_version: t-1}",
        "pending:",
        f"  window_seconds: {window}",
        "destinations:",
    ]
    for dest in dests:
        lines += [
            f"  - id: {dest.id}",
            f"    url: {urls[dest.id]}",
            f"    purposes: [{', '.join(dest.purposes)}]",
            f"    delivery: {dest.delivery}",
        ]
        if dest.timeout is not None:
            lines.append(f"    timeout_seconds: {dest.timeout}")
        if dest.erasure:
            lines.append(f"    erasure_url: {urls[dest.id].rsplit('/', 1)[0]}/erase")
        if dest.batch_seconds is not None:
            lines.append(f"    batch_seconds: {dest.batch_seconds}")
        if dest.batch_max is not None:
            lines.append(f"    batch_max_segments: {dest.batch_max}")
    return "\n".join(lines) + "\n"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event(kind: str, meeting: str = MEETING, **fields: Any) -> dict[str, Any]:
    """A generic-API event of ``kind`` stamped now."""
    return {"type": kind, "meeting_id": meeting, "at": now_iso(), **fields}


def joined(pid: str, name: str, meeting: str = MEETING) -> dict[str, Any]:
    return event("participant.joined", meeting, participant={"id": pid, "name": name})


def consent(
    pid: str, decision: str, purposes: Sequence[str] = ("summary",), *, by: str | None = None,
    meeting: str = MEETING,
) -> dict[str, Any]:  # fmt: skip
    return event("consent", meeting, participant_id=pid, purposes=list(purposes), decision=decision,
                 indicated_by=by or pid, channel="api")  # fmt: skip


def segment(sid: str, pid: str | None, text: str, meeting: str = MEETING) -> dict[str, Any]:
    return event("segment", meeting, segment_id=sid, participant_id=pid, text=text)


def chat(mid: str, pid: str | None, text: str, meeting: str = MEETING) -> dict[str, Any]:
    return event("chat.message", meeting, message_id=mid, participant_id=pid, text=text)


def signed_headers(body: bytes, msg_id: str, *, timestamp: int | None = None, secret: str = WEBHOOK_SECRET
                   ) -> dict[str, str]:  # fmt: skip
    """Standard Webhooks headers a platform would send for ``body``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {**signing.headers(secret, msg_id, ts, body), "Content-Type": "application/json"}


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    doc: Any


@dataclass
class LiveGateway:
    app: web.Application
    url: str
    http: aiohttp.ClientSession
    fakes: dict[str, FakeAIService]
    policy_path: Path
    database: str
    """The store's URL: a SQLite file, or a PostgreSQL database (see ``tests.conftest.database_for``)."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every event the gateway answered 200 to, in order (what a replay file of this run holds)."""

    @property
    def db_path(self) -> Path:
        """The SQLite file, for a test about SQLite itself (served with ``database=sqlite_url(tmp)``)."""
        assert self.database.startswith("sqlite:///"), "a test reading the file must serve on sqlite_url()"
        return Path(self.database.removeprefix("sqlite:///"))

    @property
    def store(self) -> Store:
        return self.app[STORE]

    @property
    def dispatcher(self) -> Dispatcher:
        return self.app[DISPATCHER]

    @property
    def fake(self) -> FakeAIService:
        """The only fake, when the policy has one destination."""
        (only,) = self.fakes.values()
        return only

    async def post_raw(self, body: bytes, headers: Mapping[str, str] | None = None, *, auth: bool = True
                       ) -> Reply:  # fmt: skip
        sent = {"Content-Type": "application/json", **(headers or {})}
        if auth:
            sent.setdefault("Authorization", f"Bearer {INGEST_TOKEN}")
        async with self.http.post(f"{self.url}/v1/events", data=body, headers=sent) as resp:
            raw = await resp.read()
            doc = json.loads(raw) if raw else None
            return Reply(resp.status, resp.content_type, doc)

    async def post(self, *events: dict[str, Any]) -> Reply:
        """Post one event, or several as a batch; remembers the events of a 200."""
        doc: Any = events[0] if len(events) == 1 else {"events": list(events)}
        reply = await self.post_raw(json.dumps(doc).encode())
        if reply.status == 200:
            self.sent.extend(events)
        return reply

    async def send(self, *events: dict[str, Any]) -> list[dict[str, Any]]:
        """Post events one by one, each of which must be accepted; returns the results."""
        results = []
        for one in events:
            reply = await self.post(one)
            assert reply.status == 200, (one["type"], reply)
            results.extend(reply.doc["results"])
        return results

    async def settle(self) -> None:
        """Wait until everything handed to delivery has an outcome."""
        assert await self.dispatcher.drain(timeout=15.0), "delivery did not settle"

    async def ledger(self) -> list[LedgerEntry]:
        return await self.store.ledger_entries()

    async def decisions(self) -> list[Decision]:
        return await self.store.decision_records()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_fresh(app: web.Application) -> None:
    """On PostgreSQL, wait until the replica's consent view is fresh, as a load balancer waits for /readyz
    (until then the gateway holds segments instead of forwarding them, see gateway.replication)."""
    replication = app.get(REPLICATION)
    if replication is not None:
        await wait_for(_async(replication.fresh), "the consent view to be fresh")


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


@asynccontextmanager
async def serving(
    tmp: Path,
    dests: Sequence[Dest] = (Dest("summariser"),),
    *,
    window: float = 0,
    mode: str = "per_speaker",
    max_body_bytes: int = 1024 * 1024,
    tick_seconds: float = 0.05,
    database: str | None = None,
    **settings: Any,
) -> AsyncIterator[LiveGateway]:
    """A gateway serving on loopback, with one fake AI service per destination, on the test's database at
    ``tmp`` unless ``database`` names another; ``settings`` adds any other ``Settings`` field (admin tokens,
    shadow policies...)."""
    async with AsyncExitStack() as stack:
        fakes = {d.id: await stack.enter_async_context(FakeAIService(SIGNING_SECRET)) for d in dests}
        text = policy_yaml({d: f.url for d, f in fakes.items()}, dests, window=window, mode=mode)
        served = serving_policy(
            tmp, text, fakes=fakes, max_body_bytes=max_body_bytes, tick_seconds=tick_seconds,
            database=database, **settings,
        )  # fmt: skip
        yield await stack.enter_async_context(served)


@asynccontextmanager
async def serving_policy(
    tmp: Path,
    policy_text: str,
    *,
    fakes: Mapping[str, FakeAIService] | None = None,
    max_body_bytes: int = 1024 * 1024,
    tick_seconds: float = 0.05,
    database: str | None = None,
    also: Sequence[Path] = (),
    **settings: Any,
) -> AsyncIterator[LiveGateway]:
    """A gateway serving on loopback under the policy ``policy_text`` (destinations the test runs itself),
    and the policy files ``also``, on the test's database at ``tmp`` unless ``database`` names another."""
    async with AsyncExitStack() as stack:
        policy = tmp / "policy.yaml"
        policy.write_text(policy_text)
        url = database or await database_for(tmp)
        settings.setdefault("secrets_file", tmp / "secrets.json")  # PostgreSQL has no directory of its own
        config = Settings(
            port=0,
            database=url,
            policies=(policy, *also),
            ingest_token=SecretStr(INGEST_TOKEN),
            webhook_secrets=(SecretStr(WEBHOOK_SECRET),),
            signing_secret=SecretStr(SIGNING_SECRET),
            max_body_bytes=max_body_bytes,
            tick_seconds=tick_seconds,
            **settings,
        )
        app = create_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await until_fresh(app)
        yield LiveGateway(app, f"http://127.0.0.1:{port}", http, dict(fakes or {}), policy, url)
