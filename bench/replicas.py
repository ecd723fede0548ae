"""Withdrawal and roster propagation between two replicas on one PostgreSQL database, p50/p99.

    .venv/bin/python bench/replicas.py                       # 200 withdrawals
    .venv/bin/python bench/replicas.py --n 1000 --server postgresql://postgres@127.0.0.1:5432

Two real gateways (``create_app`` twice, each on its own loopback port) share a fresh database (created and
dropped here) and a loopback receiver. For each of ``n`` participants of one meeting: consent is given
through replica A, the benchmark waits until replica B would forward that participant's words, then posts
the withdrawal to A. From the moment A's ``200`` is read, B's ``still_allowed`` is polled on every turn of
the event loop:

- *refusal*: until B first stops answering yes (it answers no, or raises ``ConsentViewStale`` because a
  ledger notification is waiting to be applied; either way B sends nothing of the participant from then);
- *applied*: until B answers no (the withdrawal is folded into B's consent view and B's queue is purged).

Before that, each participant joins through A, and from A's ``200`` B's view of the meeting is polled the
same way:

- *roster*: until B's roster has the participant (B would scrub their name from what others say there).

Both gateways run in this one process on one event loop (B's state can then be read directly, with no
extra round trip in the figure); on separate machines the figure gains the network's latency to the
database, once. ``bench/run.py`` runs this through ``run`` (``--only replicas``, and in the full run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import SecretStr

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # `python bench/replicas.py` from a checkout without `make install`

import machine  # noqa: E402 - path set up above
import servers  # noqa: E402

from gateway import logs  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.runtime import ConsentViewStale, Gateway  # noqa: E402
from gateway.sealing import new_key_spec  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.web.keys import DISPATCHER, GATEWAY  # noqa: E402

TOKEN = "bench-replicas-token"  # noqa: S105 - a throwaway token for loopback servers
MEETING = "bench-replicas"
DEST = "summariser"
POLICY = """\
policy: bench-replicas
purposes:
  summary: {{description: Summaries., notice: Sent to the summariser., notice_version: b-1}}
pending: {{window_seconds: 0}}
destinations:
  - {{id: {dest}, url: "{url}", purposes: [summary], delivery: stream}}
"""


@asynccontextmanager
async def database(server: str) -> AsyncIterator[str]:
    """A fresh database on ``server`` (a URL without a database), dropped afterwards."""
    name = f"cg_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{server}/{name}"
    finally:
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def serve(stack: AsyncExitStack, app: web.Application) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "meeting_id": MEETING, "at": datetime.now(UTC).isoformat(), **fields}


def consent(pid: str, decision: str) -> dict[str, Any]:
    return event("consent", participant_id=pid, purposes=["summary"], decision=decision, indicated_by=pid,
                 channel="api")  # fmt: skip


def answer(gateway: Gateway, pid: str) -> bool | None:
    """B's delivery check: True (would send), False (would not), None (stale view: would not, retries)."""
    try:
        return gateway.still_allowed(MEETING, DEST, pid)
    except ConsentViewStale:
        return None


async def until(check: Any, limit: float = 10.0) -> None:
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("replica B did not follow")
        await asyncio.sleep(0)


async def measure(n: int, server: str) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(database(server))
        sink = servers.receiver_app()
        receiver = await serve(stack, sink)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY.format(dest=DEST, url=f"{receiver}/segments"))
        settings = Settings(
            port=0,
            database=url,
            policies=(policy,),
            ingest_token=SecretStr(TOKEN),
            signing_secret=SecretStr("whsec_" + "YmVuY2ggcmVwbGljYXMgc2lnbmluZyBzZWNyZXQh"),
            outbox_keys=(SecretStr(new_key_spec()),),
            secrets_file=tmp / "secrets.json",
            log_level="warning",
        )
        apps = [create_app(settings), create_app(settings)]
        url_a = await serve(stack, apps[0])
        url_b = await serve(stack, apps[1])
        b = apps[1][GATEWAY]
        http = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        )

        def poster(base: str) -> Post:
            async def post(doc: dict[str, Any]) -> None:
                async with http.post(f"{base}/v1/events", json=doc) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

            return post

        post_a, post_b = poster(url_a), poster(url_b)
        await post_a(event("participant.joined", participant={"id": "p-first", "name": "First Person"}))
        await post_b(event("meeting.started"))  # B now holds the meeting (it read its ledger once)
        result = await rounds(n, b, post_a, post_b)
        assert await apps[1][DISPATCHER].drain(timeout=10.0), "replica B did not settle"
        result["delivered_after_ack"] = sink[servers.COUNT][0]
        return result


Post = Callable[[dict[str, Any]], Awaitable[None]]


async def rounds(n: int, b: Gateway, post_a: Post, post_b: Post) -> dict[str, Any]:
    """Give then withdraw consent through A for ``n`` participants; time B's refusal after each ack, while a
    segment of the participant is posted to B at the same moment (none of them may reach the receiver)."""
    refusal: list[float] = []
    applied: list[float] = []
    roster: list[float] = []
    for i in range(n):
        pid = f"p{i:05d}"
        await post_a(event("participant.joined", participant={"id": pid, "name": f"Person {i}"}))
        joined = time.perf_counter()
        await until(lambda: pid in participants(b))  # noqa: B023 - awaited within the iteration
        roster.append((time.perf_counter() - joined) * 1000)
        await post_a(consent(pid, "given"))
        await until(lambda: answer(b, pid) is True)  # noqa: B023 - awaited within the iteration
        await post_a(consent(pid, "withdrawn"))
        acked = time.perf_counter()
        said = asyncio.create_task(post_b(event("segment", segment_id=f"s{i}", participant_id=pid, text="x")))
        refused: float | None = None
        while (now_answer := answer(b, pid)) is not False:
            if now_answer is None and refused is None:
                refused = time.perf_counter()
            if time.perf_counter() - acked > 10:
                raise TimeoutError("replica B did not apply the withdrawal")
            await asyncio.sleep(0)
        done = time.perf_counter()
        refusal.append(((refused or done) - acked) * 1000)
        applied.append((done - acked) * 1000)
        await said
    return {"n": n, "refusal": refusal, "applied": applied, "roster": roster}


def participants(gateway: Gateway) -> Mapping[str, object]:
    state = gateway.meeting("generic", MEETING)
    return state.participants if state is not None else {}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(
    *, quick: bool, n: int | None = None, server: str = "postgresql://postgres@127.0.0.1:5432"
) -> dict[str, Any]:
    """``bench/run.py``'s entry: the figures as a JSON-able summary (raw times kept for the record)."""
    n = n or (50 if quick else 500)
    logs.configure("json", "warning", stream=sys.stderr)
    print(f"[replicas] {n} withdrawals through replica A, replica B on the same PostgreSQL database")
    result = asyncio.run(measure(n, server))
    out: dict[str, Any] = {"n": n, "delivered_after_ack": result["delivered_after_ack"]}
    for name in ("refusal", "applied", "roster"):
        ms = result[name]
        out[name] = {"p50": round(percentile(ms, 0.5), 2), "p99": round(percentile(ms, 0.99), 2),
                     "max": round(max(ms), 2)}  # fmt: skip
        print(f"[replicas] {name:8s} p50 {out[name]['p50']:.2f} ms  p99 {out[name]['p99']:.2f} ms"
              f"  max {out[name]['max']:.2f} ms")  # fmt: skip
    print(f"[replicas] segments posted to B at each acknowledgement that reached the destination: "
          f"{out['delivered_after_ack']} of {n}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="withdrawals to measure (default 200)")
    parser.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without a database; a database is created and dropped",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    logs.configure("json", "warning", stream=sys.stderr)
    info = machine.describe()
    print(f"machine: {machine.line(info)}")
    result = asyncio.run(measure(args.n, args.server))
    for name in ("refusal", "applied", "roster"):
        ms = result[name]
        print(f"{name:8s} n={len(ms)}  p50 {percentile(ms, 0.5):.2f} ms  p99 {percentile(ms, 0.99):.2f} ms"
              f"  max {max(ms):.2f} ms")  # fmt: skip
    print(f"segments posted to B at each acknowledgement that reached the destination: "
          f"{result['delivered_after_ack']} of {result['n']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
