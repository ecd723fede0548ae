"""Latency per segment at a constant arrival rate (an open model), from the client's POST to the receiver.

The throughput rounds in ``ingest`` are a closed model: each client sends its next segment when the last one
was answered, so the server always has a queue and the latency figures there are mostly queueing. Here
segments are sent on a fixed schedule (segment ``i`` at ``start + i / rate``, whatever became of the earlier
ones), round-robin over the meetings, at a rate well below what the server sustains, so the figure is what
one segment costs on its way through rather than how long it waited behind others.

Two times per segment, both from the moment the client starts its POST (``time.monotonic``, one clock for
every process on the machine): *arrival*, when the receiver read the segment (the receiver stamps it), and
*response*, when the client read the answer. The pass-through answers after the receiver has answered it;
the gateway answers once the segment is durable and delivers afterwards, so only *arrival* compares like
with like. The added latency is the gateway's percentile minus the pass-through's percentile at the same
rate (segments are not paired, so this is a difference of percentiles, not a percentile of differences).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

TARGET_ADDED_P99_MS = 25.0


def schedule(per_client: list[list[bytes]]) -> list[tuple[str, bytes]]:
    """Round-robin over the meetings: ``(meeting_id/segment_id, body)`` in sending order."""
    out = []
    for n in range(max((len(b) for b in per_client), default=0)):
        for bodies in per_client:
            if n < len(bodies):
                doc = json.loads(bodies[n])
                out.append((f"{doc['meeting_id']}/{doc['segment_id']}", bodies[n]))
    return out


async def open_loop(
    name: str, url: str, token: str, receiver: str, sends: list[tuple[str, bytes]], rate: float
) -> dict[str, Any]:
    """Send ``sends`` at ``rate`` per second, then wait (bounded) until the receiver stamped every one."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    failures = 0

    async def one(http: aiohttp.ClientSession, key: str, body: bytes) -> None:
        nonlocal failures
        sent[key] = time.monotonic()
        async with http.post(url, data=body, headers=headers) as resp:
            await resp.read()
            failures += resp.status != 200
        answered[key] = time.monotonic()

    connector = aiohttp.TCPConnector(limit=0)  # an open model: never wait for a free connection
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(f"{receiver}/stamps") as resp:
            resp.raise_for_status()
        tasks = []
        start = time.monotonic()
        for i, (key, body) in enumerate(sends):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http, key, body)))
        offered_seconds = time.monotonic() - start
        await asyncio.gather(*tasks)
        stamps = await _stamps(http, receiver, {k for k, _ in sends}, limit=30.0)
        async with http.delete(f"{receiver}/stamps") as resp:
            resp.raise_for_status()
    return _summary(name, rate, len(sends) / offered_seconds, sent, answered, stamps, failures)


async def _stamps(
    http: aiohttp.ClientSession, receiver: str, keys: set[str], limit: float
) -> dict[str, float]:
    """The receiver's arrival stamps once it has every key (or ``limit`` seconds have passed)."""
    deadline = time.monotonic() + limit
    while True:
        async with http.get(f"{receiver}/stamps") as resp:
            stamps: dict[str, float] = await resp.json()
        if keys <= stamps.keys() or time.monotonic() > deadline:
            return stamps
        await asyncio.sleep(0.05)


def _summary(
    name: str,
    rate: float,
    achieved: float,
    sent: dict[str, float],
    answered: dict[str, float],
    stamps: dict[str, float],
    failures: int,
) -> dict[str, Any]:
    arrival = sorted((stamps[k] - t) * 1000 for k, t in sent.items() if k in stamps)
    response = sorted((answered[k] - t) * 1000 for k, t in sent.items() if k in answered)
    return {
        "name": name,
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "requests": len(sent),
        "failures": failures,
        "arrived": sum(1 for k in sent if k in stamps),
        "arrival_ms": _percentiles(arrival),
        "response_ms": _percentiles(response),
    }


def _percentiles(sorted_ms: list[float]) -> dict[str, float]:
    if not sorted_ms:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}

    def pick(q: float) -> float:
        return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)

    return {"p50": pick(0.50), "p99": pick(0.99), "max": round(sorted_ms[-1], 2)}


def added(gateway: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """The gateway's arrival percentiles minus the pass-through's, in ms."""
    g, b = gateway["arrival_ms"], baseline["arrival_ms"]
    return {"p50": round(g["p50"] - b["p50"], 2), "p99": round(g["p99"] - b["p99"], 2)}


def print_phase(r: dict[str, Any]) -> None:
    a, s = r["arrival_ms"], r["response_ms"]
    print(
        f"[latency] {r['name']:<10}: {r['rate']:.0f}/s offered ({r['achieved_rate']:.0f}/s achieved), "
        f"POST->arrival p50 {a['p50']:.1f} ms p99 {a['p99']:.1f} ms max {a['max']:.1f} ms; "
        f"POST->response p50 {s['p50']:.1f} ms p99 {s['p99']:.1f} ms; "
        f"arrived {r['arrived']}/{r['requests']}, failures {r['failures']}; "
        f"waited {r.get('settle_seconds', 0):.1f} s for the server to go idle first"
    )
