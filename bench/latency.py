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

``ingest`` runs the same open loop up a ladder of higher rates too, each server until its knee (``past_knee``:
too little of the offered rate arrived, or the p99 exploded); ``sweep_markdown`` and ``sweep_headline`` render
that ladder for docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
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


MAX_IN_FLIGHT = 512
"""Requests outstanding at once, at most: past the knee an open model would otherwise open connections without
bound (file descriptors, the server's accept backlog). When the cap is reached the schedule slips, which shows
as a sending rate below the offered one, so the step counts as past the knee."""
KNEE_SHARE = 0.95
"""A step is past the knee when less than this share of the offered rate reached the receiver..."""
KNEE_P99_MS = 250.0
"""...or when the p99 from POST to arrival exceeds this (queueing, not a segment's cost, dominates)."""


async def open_loop(
    name: str,
    url: str,
    token: str,
    receiver: str,
    sends: list[tuple[str, bytes]],
    rate: float,
    drain_limit: float = 30.0,
) -> dict[str, Any]:
    """Send ``sends`` at ``rate`` per second, then wait (bounded) until the receiver stamped every one."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    failures = 0
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(http: aiohttp.ClientSession, key: str, body: bytes) -> None:
        nonlocal failures
        try:
            sent[key] = time.monotonic()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200
            answered[key] = time.monotonic()
        except aiohttp.ClientError:
            failures += 1
        finally:
            slots.release()

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
            await slots.acquire()
            tasks.append(asyncio.create_task(one(http, key, body)))
        offered_seconds = time.monotonic() - start
        await asyncio.gather(*tasks)
        stamps = await wait_stamps(http, receiver, {k for k, _ in sends}, limit=drain_limit)
        async with http.delete(f"{receiver}/stamps") as resp:
            resp.raise_for_status()
    out = _summary(name, rate, len(sends) / offered_seconds, sent, answered, stamps, failures)
    out["delivered_rate"] = _delivered_rate(start, stamps.values())
    out["past_knee"] = past_knee(out)
    return out


def _delivered_rate(start: float, arrivals: Iterable[float]) -> float:
    """Segments that reached the receiver per second, from the first send to the last arrival: a server that
    falls behind stretches that span, so this drops below the offered rate at the knee."""
    times = list(arrivals)
    if not times:
        return 0.0
    return round(len(times) / max(max(times) - start, 1e-9), 1)


def past_knee(r: dict[str, Any]) -> bool:
    """Whether a step is at or past the knee: too little arrived, something failed, or the p99 exploded."""
    p99 = float(r["arrival_ms"]["p99"])
    return bool(
        r["delivered_rate"] < KNEE_SHARE * r["rate"]
        or r["arrived"] < r["requests"]
        or r["failures"] > 0
        or p99 != p99  # NaN: nothing arrived
        or p99 > KNEE_P99_MS
    )


async def wait_stamps(
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
        "arrival_ms": percentiles(arrival),
        "response_ms": percentiles(response),
    }


def percentiles(sorted_ms: list[float]) -> dict[str, float]:
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
        f"[latency] {r['name']:<10}: {r['rate']:.0f}/s offered ({r['achieved_rate']:.0f}/s sent, "
        f"{r.get('delivered_rate', float('nan')):.0f}/s delivered"
        f"{', PAST THE KNEE' if r.get('past_knee') else ''}), "
        f"POST->arrival p50 {a['p50']:.1f} ms p99 {a['p99']:.1f} ms max {a['max']:.1f} ms; "
        f"POST->response p50 {s['p50']:.1f} ms p99 {s['p99']:.1f} ms; "
        f"arrived {r['arrived']}/{r['requests']}, failures {r['failures']}; "
        f"waited {r.get('settle_seconds', 0):.1f} s for the server to go idle first"
    )


# ---------------------------------------------------------------------------------------- the sweep

SWEEP_METHOD = """\
**(b) Ingest, offered load up to the knee** (`bench/ingest.py`, `bench/latency.py`). After the latency phases
of issue 5, the same open model climbs a ladder of offered rates, every server at each step (the same
segments, round-robin over the meetings, on fresh segment ids), a server leaving the ladder after its first
step *past the knee*: less than {share:.0%} of the offered rate reached the receiver (delivered segments over
the time from the first send to the last arrival), a segment failed or never arrived, or the p99 from POST to
arrival exceeded {p99:.0f} ms. The load generator keeps at most {cap} requests in flight (past the knee an
open model would otherwise open connections without bound); when the cap is reached the schedule slips, which
shows as *sent* below *offered*. The load generator and the receiver share one core, so at the highest rates
the *sent* column also says whether the generator kept up (a pass-through knee where *sent* falls short is the
load generator's). Added latency is the gateway's percentile minus the pass-through's at the same rate, while
the pass-through holds that rate.
"""


def sweep_headline(i: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """Headline rows: each gateway's knee against the pass-through's, and its added latency just below it."""
    sweep = i.get("sweep")
    if not sweep or "proxy" not in sweep["servers"]:
        return []
    servers = sweep["servers"]
    proxy = servers["proxy"]
    rows = []
    for name, store in (("gateway", "SQLite"), ("gateway-pg", "PostgreSQL")):
        srv = servers.get(name)
        if srv is None:
            continue
        rows.append(
            (
                f"(b) ingest, open model: highest offered rate held, {store} (segments/s)",
                _held(srv["knee"]),
                "pass-through: " + _held(proxy["knee"]),
                _knee_ratio(srv["knee"], proxy["knee"]),
                "-",
                "-",
            )
        )
        below = [p for p in srv["points"] if p["added_ms"] and not p["past_knee"]]
        if below:
            top = below[-1]
            base = next(p for p in proxy["points"] if p["rate"] == top["rate"])
            a, g, b = top["added_ms"], top["arrival_ms"], base["arrival_ms"]
            rows.append(
                (
                    f"(b) ingest, added latency p50 / p99 at {top['rate']:,.0f}/s offered (its highest rate "
                    f"held), {store}",
                    f"{a['p50']:+.1f} / {a['p99']:+.1f} ms (gateway {g['p50']:.1f} / {g['p99']:.1f} ms)",
                    f"{b['p50']:.1f} / {b['p99']:.1f} ms (pass-through)",
                    f"{g['p99'] / b['p99']:.2f} (p99)",
                    "-",  # issue 5's target applies well below the knee: see its rows
                    "-",
                )
            )
    return rows


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} µs"


def _held(knee: dict[str, Any]) -> str:
    if knee["held"] is None:
        return f"none (past the knee at {knee['broke_at']:,.0f}/s)"
    if knee["broke_at"] is None:
        return f">= {knee['held']:,.0f}/s (no knee within the rates tried)"
    return f"{knee['held']:,.0f}/s (past the knee at {knee['broke_at']:,.0f}/s)"


def _knee_ratio(knee: dict[str, Any], base: dict[str, Any]) -> str:
    if not knee["held"] or not base["held"]:
        return "-"
    ratio = knee["held"] / base["held"]
    return f"<= {ratio:.2f}" if base["broke_at"] is None else f"{ratio:.2f}"


def sweep_markdown(i: dict[str, Any], plots: dict[str, str]) -> str:
    """The ladder of offered rates: one row per server and step, and the plots."""
    sweep = i.get("sweep")
    if not sweep:
        return ""
    lines = [
        "## (b) Ingest: offered load up to the knee\n",
        "| offered | server | seconds | sent | delivered | POST to arrival p50 / p99 / max | added p50 / p99 "
        "| server CPU per segment | arrived | past the knee? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_rate = sorted(
        ((p["rate"], name, p) for name, srv in sweep["servers"].items() for p in srv["points"]),
        key=lambda t: t[0],
    )
    for rate, name, p in by_rate:
        a, added_ms = p["arrival_ms"], p["added_ms"]
        added_text = f"{added_ms['p50']:+.1f} / {added_ms['p99']:+.1f} ms" if added_ms else "-"
        lines.append(
            f"| {rate:,.0f}/s | {name} | {p['seconds']:.0f} | {p['sent_rate']:,.0f}/s | "
            f"{p['delivered_rate']:,.0f}/s | {a['p50']:.1f} / {a['p99']:.1f} / {a['max']:.1f} ms | "
            f"{added_text} | {_us(p.get('cpu_us_per_segment'))} | {p['arrived']:,}/{p['requests']:,} | "
            f"{'**yes**' if p['past_knee'] else 'no'} |"
        )
    lines.append("")
    for key, alt in (
        ("ingest-rate", "Offered against delivered segments/s per server"),
        ("ingest-latency", "Latency and added latency against offered rate"),
    ):
        if key in plots:
            lines.append(f"![{alt}]({plots[key]})\n")
    lines.append(
        SWEEP_METHOD.format(share=sweep["knee_share"], p99=sweep["knee_p99_ms"], cap=sweep["max_in_flight"])
    )
    return "\n".join(lines)
