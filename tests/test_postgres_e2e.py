"""The end-to-end core on PostgreSQL: the real app with ``database=postgresql://...``, fake AI services on
loopback, a consent / segment / withdrawal flow, and ``log verify`` on the resulting ledger.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import SecretStr

from gateway.app import create_app
from gateway.consent import ledger
from gateway.settings import Settings
from gateway.store.postgres import PostgresStore
from tests.conftest import postgres_database
from tests.fakes.ai_service import FakeAIService
from tests.test_e2e import NAMES, assert_consent_preceded_every_forward, assert_signed_and_keyed, payloads
from tests.web.harness import (
    INGEST_TOKEN,
    PROBLEM_JSON,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Dest,
    LiveGateway,
    consent,
    joined,
    policy_yaml,
    segment,
    wait_for,
)

ADA, WEN = "p-ada", "p-wen"
REPO = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def serving_on_postgres(tmp: Path) -> AsyncIterator[tuple[LiveGateway, str]]:
    """``tests.web.harness.serving`` with the gateway's database on a fresh PostgreSQL database."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_database())
        fake = await stack.enter_async_context(FakeAIService(SIGNING_SECRET))
        dests = (Dest("summariser"),)
        policy = tmp / "policy.yaml"
        policy.write_text(policy_yaml({"summariser": fake.url}, dests))
        config = Settings(
            port=0,
            database=url,
            policies=(policy,),
            ingest_token=SecretStr(INGEST_TOKEN),
            webhook_secrets=(SecretStr(WEBHOOK_SECRET),),
            signing_secret=SecretStr(SIGNING_SECRET),
            tick_seconds=0.05,
            secrets_file=tmp / "secrets.json",
        )
        app = create_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield LiveGateway(app, f"http://127.0.0.1:{port}", http, {"summariser": fake}, policy, url), url


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = "import sys; from gateway.cli import main; sys.exit(main(sys.argv[1:]))"
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


async def test_consent_segments_and_withdrawal_on_postgresql(tmp_path: Path) -> None:
    """On PostgreSQL, only consenting speakers' words arrive, nothing of a withdrawer's after the withdrawal,
    every forward cites durable consent, and `log verify` passes on the stored chain."""
    async with serving_on_postgres(tmp_path) as (gw, url):
        await gw.send(joined(ADA, NAMES[ADA]), joined(WEN, NAMES[WEN]))
        await gw.send(consent(ADA, "given"), consent(WEN, "given"))
        await gw.send(segment("s1", ADA, "Ada's first words."), segment("s2", WEN, "Wen's first words."))
        await gw.settle()  # s2 delivered before the withdrawal (queued then, it would be withdrawn too)
        await gw.send(consent(WEN, "withdrawn"))
        await gw.send(segment("s3", WEN, "After withdrawing."), segment("s4", ADA, "Ada wraps up."))
        await gw.settle()
        assert [p["segment_id"] for p in payloads(gw.fake)] == ["s1", "s2", "s4"]
        assert "After withdrawing" not in b"".join(r.raw for r in gw.fake.received).decode()
        assert_signed_and_keyed(gw.fake)
        await assert_consent_preceded_every_forward(gw, {"summariser": ("summary",)})
        entries = await gw.ledger()
        assert [(e.record.subject, e.record.choice.value) for e in entries] == [
            (ADA, "given"), (WEN, "given"), (WEN, "withdrawn")
        ]  # fmt: skip
        async with gw.http.get(f"{gw.url}/readyz") as resp:
            assert resp.status == 200
        verified = await cli("log", "--database", url, "verify", "--expect-head", entries[-1].hash)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        exported = await cli("log", "--database", url, "export", "--what", "decisions")
        assert exported.returncode == 0, exported.stderr
        assert "Wen's first words" not in exported.stdout  # the decision log holds no transcript text


async def test_dropped_database_connections_fail_closed_and_recover(tmp_path: Path) -> None:
    """When PostgreSQL drops the gateway's connections, each event is either recorded (200) or refused (503),
    nothing is forwarded without durable consent, and the gateway serves again by itself."""
    async with serving_on_postgres(tmp_path) as (gw, url):
        await gw.send(joined(ADA, NAMES[ADA]), consent(ADA, "given"), segment("s1", ADA, "Before."))
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        for n, sent in enumerate(
            [consent(WEN, "given"), segment("s2", WEN, "Maybe."), segment("s3", ADA, "?")]
        ):
            reply = await gw.post(sent)
            assert reply.status in (200, 503), (n, reply)
            if reply.status == 503:
                assert reply.content_type == PROBLEM_JSON

        async def accepted_again() -> bool:
            return (await gw.post(segment("s9", ADA, "After recovery."))).status == 200

        await wait_for(accepted_again, "the gateway to accept events again")

        async def s9_delivered() -> bool:  # held until the replica's consent view is confirmed fresh again
            return "s9" in {p["segment_id"] for p in payloads(gw.fake)}

        await wait_for(s9_delivered, "s9 to be delivered")
        await gw.settle()
        await assert_consent_preceded_every_forward(gw, {"summariser": ("summary",)})
        assert "s9" in {p["segment_id"] for p in payloads(gw.fake)}
        store = gw.store
        assert isinstance(store, PostgresStore)
        assert ledger.verify_rows(await store.ledger_rows()).ok
