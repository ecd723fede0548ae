"""Benchmark (c): many concurrent WebSocket streams (``GET /v1/stream``): the gateway's memory and latency.

    .venv/bin/python bench/streams.py                 # 1,000 streams against 10 (bench/run.py runs it too)
    .venv/bin/python bench/streams.py --n 200 --seconds 5

Processes as in ``ingest``: the real gateway (``consent-gateway serve``, SQLite in a temporary directory,
durable outbox, one ``delivery: stream`` destination) alone on one core, and this load generator beside the
loopback receiver on the other. Each stream is one meeting (an Earnings-21 call, as in ``ingest``): it opens
with a bearer token, sends its joins and consents as one batch, then carries that meeting's segments. The
segments flow as an open model over all streams together: segment ``i`` leaves at ``start + i / (n * rate)``
on stream ``i mod n``, so every stream carries ``rate`` segments per second whatever became of the earlier
ones. A segment's latency runs from just before it is written to its stream to its arrival at the receiver
(``time.monotonic`` in both processes: one clock for the machine); the reply on the stream is timed too.

The gateway's resident memory (``VmRSS`` from /proc) is read when it is idle, once every stream is open and
set up, every 0.2 s while segments flow (the peak), and after every stream has closed. The baseline is the
same run with 10 streams, each on a fresh gateway process, so both start from an idle gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # `python bench/streams.py` from a checkout without `make install`

import ingest  # noqa: E402 - path set up above
import latency  # noqa: E402

STREAMS = 1000
QUICK_STREAMS = 200
BASELINE_STREAMS = 10
RATE = 0.2
"""Segments per second on each stream: a finished speaker turn every five seconds, in every meeting."""
CONNECTING = 50
"""Streams opened (and set up) at once: the gateway's accept backlog is aiohttp's default of 128."""
SAMPLE_SECONDS = 0.2
IDLE_WINDOW = 2.0
"""Seconds over which the gateway's CPU is read with every stream open and nothing flowing."""


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard one, in this process and so in the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (VmRSS from /proc; NaN once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Sampler:
    """Reads a process's RSS every ``SAMPLE_SECONDS`` while running; ``peak`` is the highest reading."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(SAMPLE_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> float:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, rss_mb(self.pid))
        return self.peak


class Stream:
    """One meeting's WebSocket: the replies are read as they come and counted by status."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.statuses: dict[str, int] = {}
        self.replied: list[float] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            self.replied.append(time.monotonic())
            if msg.type is not aiohttp.WSMsgType.TEXT:
                self.statuses["non-text"] = self.statuses.get("non-text", 0) + 1
                continue
            doc = json.loads(msg.data)
            for r in doc.get("results") or [{"status": "error"}]:
                self.statuses[r["status"]] = self.statuses.get(r["status"], 0) + 1


async def open_streams(
    http: aiohttp.ClientSession, url: str, token: str, meetings: list[ingest.Script]
) -> list[Stream]:
    """Every meeting's stream, open and set up (joins and consents answered), ``CONNECTING`` at a time."""
    gate = asyncio.Semaphore(CONNECTING)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(script: ingest.Script) -> Stream:
        async with gate:
            ws = await http.ws_connect(url, headers=headers, max_msg_size=0)
            stream = Stream(ws)
            await ws.send_str(json.dumps({"events": ingest.setup_events(script)}, ensure_ascii=False))
            while not stream.replied:  # noqa: ASYNC110 - a poll keeps the reader free of signalling
                await asyncio.sleep(0.01)
            return stream

    return list(await asyncio.gather(*(one(m) for m in meetings)))


async def flow(
    streams: list[Stream], bodies: list[list[str]], keys: list[list[str]], rate: float
) -> tuple[dict[str, float], float]:
    """Segments on schedule over all streams (open model); send times by key, and the seconds it took."""
    n = len(streams)
    sent: dict[str, float] = {}
    pending: set[asyncio.Task[None]] = set()

    async def send(stream: Stream, key: str, body: str) -> None:
        sent[key] = time.monotonic()
        await stream.ws.send_str(body)

    per_stream = len(bodies[0])
    start = time.monotonic()
    for i in range(n * per_stream):
        s, k = i % n, i // n
        delay = start + i / (n * rate) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(streams[s], keys[s][k], bodies[s][k]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return sent, time.monotonic() - start


async def phase(n: int, seconds: float, rate: float, tmp: Path, log_level: str = "info") -> dict[str, Any]:
    """One fresh gateway, ``n`` streams, ``seconds`` of segments at ``rate`` per stream."""
    meetings, text_source = ingest.scripts(n)
    per_stream = max(1, round(seconds * rate))
    # segment 0 of each meeting warms it up (its name scrubber is compiled then), untimed
    bodies = [ingest.segment_bodies(m, 0, 1 + per_stream) for m in meetings]
    keys = [[f"{m.meeting_id}/s{k}" for k in range(1, 1 + per_stream)] for m in meetings]
    texts = [[b.decode() for b in bs[1:]] for bs in bodies]
    token = secrets.token_urlsafe(24)
    py = sys.executable
    server_cpus, client_cpus = ingest.cpu_plan() or (None, None)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)  # the load generator (this process) beside the receiver
    receiver_cmd = [py, str(BENCH / "servers.py"), "receiver"]
    folder = tmp / f"streams-{n}"
    folder.mkdir()
    with ingest.process(receiver_cmd, announces_port=True, cpus=client_cpus) as (_, recv_port):
        receiver = f"http://127.0.0.1:{recv_port}"
        policy = folder / "bench-streams.yaml"
        policy.write_text(ingest.POLICY.format(url=f"{receiver}/segments", delivery="stream"))
        port = ingest.free_port()
        database = f"sqlite:///{folder}/gateway.db"
        env = ingest.gateway_env(log_level, port, database, policy, token, folder / "secrets.json")
        log = folder / "gateway.log"
        with ingest.process(ingest.gateway_command(py), env=env, log=log, cpus=server_cpus) as (gw, _):
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                await ingest.wait_ready(http, f"{base}/readyz", seconds=60)
                await ingest.settle((gw.pid,))
                idle = rss_mb(gw.pid)
                opened_at = time.monotonic()
                streams = await open_streams(http, f"{base}/v1/stream", token, meetings)
                open_seconds = time.monotonic() - opened_at
                await _warm_up(http, receiver, streams, [bs[0].decode() for bs in bodies])
                await ingest.settle((gw.pid,))
                opened = rss_mb(gw.pid)
                idle_cpu = await _cpu_share(gw.pid, IDLE_WINDOW)
                async with http.post(f"{receiver}/stamps") as resp:
                    resp.raise_for_status()
                sampler = Sampler(gw.pid)
                sampler.start()
                cpu0 = ingest.cpu_seconds(gw.pid)
                sent, send_seconds = await flow(streams, texts, keys, rate)
                stamps = await latency.wait_stamps(http, receiver, set(sent), limit=30.0)
                cpu = ingest.cpu_seconds(gw.pid) - cpu0
                peak = await sampler.stop()
                replies_due = 2 + per_stream  # setup, warm-up, segments
                await _replies(streams, replies_due, limit=10.0)
                await asyncio.gather(*(s.ws.close() for s in streams))
                await asyncio.gather(*(s.reader for s in streams), return_exceptions=True)
                await ingest.settle((gw.pid,))
                after = rss_mb(gw.pid)
    return _summary(
        n, rate, per_stream, text_source, sent, stamps, streams, send_seconds, open_seconds,
        {"idle": idle, "streams_open": opened, "peak": peak, "after_close": after}, cpu, idle_cpu,
    )  # fmt: skip


async def _cpu_share(pid: int, seconds: float) -> float:
    """The share of one core ``pid`` used over ``seconds`` (the streams open, nothing flowing)."""
    before = ingest.cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (ingest.cpu_seconds(pid) - before) / seconds


async def _warm_up(
    http: aiohttp.ClientSession, receiver: str, streams: list[Stream], first: list[str]
) -> None:
    """Each stream's first segment, then wait (bounded) until the receiver has them all."""
    before = await ingest.received(http, receiver)
    await asyncio.gather(*(s.ws.send_str(body) for s, body in zip(streams, first, strict=True)))
    deadline = time.monotonic() + 60
    while await ingest.received(http, receiver) - before < len(streams):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)


async def _replies(streams: list[Stream], due: int, limit: float) -> None:
    """Wait (bounded) until every stream has had a reply to each of its messages."""
    deadline = time.monotonic() + limit
    while any(len(s.replied) < due for s in streams):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)


def _summary(
    n: int,
    rate: float,
    per_stream: int,
    text_source: str,
    sent: dict[str, float],
    stamps: dict[str, float],
    streams: list[Stream],
    send_seconds: float,
    open_seconds: float,
    rss: dict[str, float],
    cpu: float,
    idle_cpu: float,
) -> dict[str, Any]:
    arrival = sorted((stamps[k] - t) * 1000 for k, t in sent.items() if k in stamps)
    statuses: dict[str, int] = {}
    for s in streams:
        for status, count in s.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    start = min(sent.values())
    last = max(stamps.values(), default=start)
    return {
        "streams": n,
        "rate_per_stream": rate,
        "offered_rate": n * rate,
        "segments": len(sent),
        "segments_per_stream": per_stream,
        "text": text_source,
        "arrived": len(arrival),
        "delivered_rate": round(len(arrival) / max(last - start, 1e-9), 1),
        "sent_rate": round(len(sent) / send_seconds, 1),
        "open_seconds": round(open_seconds, 2),
        "replies": statuses,
        "arrival_ms": latency.percentiles(arrival),
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_per_stream_kb": round((rss["streams_open"] - rss["idle"]) * 1024 / n, 1),
        "gateway_cpu_us_per_segment": round(cpu / max(1, len(sent)) * 1e6),
        "gateway_cpu_share_streams_open_idle": round(idle_cpu, 3),
        "complete": len(arrival) == len(sent),
    }


def run(
    *, quick: bool, n: int | None = None, seconds: float | None = None, rate: float = RATE
) -> dict[str, Any]:
    n = n or (QUICK_STREAMS if quick else STREAMS)
    seconds = seconds or (5.0 if quick else 30.0)
    limit = raise_fd_limit()
    print(
        f"[streams] {n} concurrent WebSocket streams against {BASELINE_STREAMS}, {rate} segments/s each for "
        f"{seconds:.0f} s, each on a fresh gateway (SQLite, durable outbox); RLIMIT_NOFILE {limit[0]}; "
        f"{ingest.cpu_words()}"
    )
    with tempfile.TemporaryDirectory(prefix="consent-gateway-streams-") as tmp:
        base = asyncio.run(phase(BASELINE_STREAMS, seconds, rate, Path(tmp)))
        print_phase(base)
        many = asyncio.run(phase(n, seconds, rate, Path(tmp)))
        print_phase(many)
    result = {"seconds": seconds, "baseline": base, "many": many, "rlimit_nofile": limit[0]}
    result["p99_ratio"] = many["arrival_ms"]["p99"] / base["arrival_ms"]["p99"]
    result["peak_rss_ratio"] = many["rss_mb"]["peak"] / base["rss_mb"]["peak"]
    print(
        f"[streams] {n} streams vs {BASELINE_STREAMS}: p99 {many['arrival_ms']['p99']:.1f} vs "
        f"{base['arrival_ms']['p99']:.1f} ms ({result['p99_ratio']:.2f}x), peak RSS "
        f"{many['rss_mb']['peak']:.0f} vs {base['rss_mb']['peak']:.0f} MiB "
        f"({result['peak_rss_ratio']:.2f}x), "
        f"{many['rss_per_stream_kb']:.0f} KiB per open stream"
    )
    return result


def print_phase(r: dict[str, Any]) -> None:
    a, m = r["arrival_ms"], r["rss_mb"]
    print(
        f"[streams] {r['streams']:>5} streams: gateway CPU with the streams open, nothing flowing: "
        f"{r['gateway_cpu_share_streams_open_idle']:.0%} of a core"
    )
    print(
        f"[streams] {r['streams']:>5} streams: opened in {r['open_seconds']:.1f} s; "
        f"{r['offered_rate']:.0f}/s "
        f"offered, {r['sent_rate']:.0f}/s sent, {r['delivered_rate']:.0f}/s delivered, arrived "
        f"{r['arrived']}/{r['segments']}; send->arrival p50 {a['p50']:.1f} ms p99 {a['p99']:.1f} ms max "
        f"{a['max']:.1f} ms; gateway CPU {r['gateway_cpu_us_per_segment']} µs/segment; "
        f"RSS idle {m['idle']:.0f} MiB, streams open {m['streams_open']:.0f}, "
        f"peak {m['peak']:.0f}, after close {m['after_close']:.0f}; replies {r['replies']}"
    )


Row = tuple[str, str, str, str, str, str]
"""A headline row of docs/benchmarks.md: figure, value, baseline, ratio, target, met."""

METHOD = """\
**(c) Streams** (`bench/streams.py`). The real gateway (`consent-gateway serve`, SQLite, durable outbox, one
`delivery: stream` destination: the loopback receiver of (b)) alone on one core; the load generator and the
receiver on the other. Each WebSocket stream (`GET /v1/stream`, bearer token) is one meeting (an Earnings-21
call, as in (b)): it opens, sends its joins and consents as one batch and waits for the answer (50 streams
opening at a time), then sends one untimed warm-up segment (its name scrubber is compiled then). Segments
then flow as an open model over all streams together: segment *i* leaves on stream *i mod n* at
*start + i / (n x rate)*, so each stream carries *rate* segments per second. A segment's latency is from just
before it is written to its stream to its arrival at the receiver (`time.monotonic` in both processes).
The gateway's RSS (`VmRSS`) is read idle (after start-up), with every stream open and warmed, every 0.2 s
while segments flow (peak), and after every stream closed. The baseline is the same run with 10 streams;
each run starts a fresh gateway, so both start from the same idle process.
"""


def headline(result: dict[str, Any]) -> list[Row]:
    """The figures for the table at the top of docs/benchmarks.md."""
    many, base = result["many"], result["baseline"]
    m, b = many["rss_mb"], base["rss_mb"]
    a, ab = many["arrival_ms"], base["arrival_ms"]
    n, nb = f"{many['streams']:,}", f"{base['streams']:,}"
    return [
        (
            f"(c) streams: gateway peak RSS, {n} streams open",
            f"{m['peak']:.0f} MiB (idle {m['idle']:.0f}, {many['rss_per_stream_kb']:.0f} KiB per stream)",
            f"{b['peak']:.0f} MiB ({nb} streams)",
            f"{m['peak'] / b['peak']:.2f}",
            "-",
            "-",
        ),
        (
            f"(c) streams: per-segment latency p50 / p99, {n} streams (sent to arrival)",
            f"{a['p50']:.1f} / {a['p99']:.1f} ms",
            f"{ab['p50']:.1f} / {ab['p99']:.1f} ms ({nb} streams)",
            f"{a['p99'] / ab['p99']:.2f} (p99)",
            "-",
            "-",
        ),
        (
            f"(c) streams: delivered, {n} streams (segments/s)",
            f"{many['delivered_rate']:,.0f}/s of {many['offered_rate']:,.0f}/s offered "
            f"({many['arrived']:,}/{many['segments']:,} arrived)",
            f"{base['delivered_rate']:,.0f}/s of {base['offered_rate']:,.0f}/s ({nb} streams)",
            f"{many['delivered_rate'] / many['offered_rate']:.2f} of offered",
            "all arrive",
            "yes" if many["complete"] and base["complete"] else "**no**",
        ),
    ]


def markdown(result: dict[str, Any], plot: str | None = None) -> str:
    """The streams section of docs/benchmarks.md."""
    lines = [
        "## (c) Streams: details\n",
        f"{result['many']['rate_per_stream']} segments/s on each stream for {result['seconds']:.0f} s; text: "
        f"{result['many']['text']}; load generator RLIMIT_NOFILE {result['rlimit_nofile']:,}.\n",
        "| streams | opened in | offered | delivered | arrived | sent to arrival p50 / p99 / max "
        "| gateway CPU while segments flow, per segment (idle with streams open) "
        "| RSS idle / open / peak / closed | replies on the streams |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (result["baseline"], result["many"]):
        a, m = r["arrival_ms"], r["rss_mb"]
        replies = ", ".join(f"{k} {v:,}" for k, v in sorted(r["replies"].items()))
        lines.append(
            f"| {r['streams']:,} | {r['open_seconds']:.1f} s | {r['offered_rate']:,.0f}/s | "
            f"{r['delivered_rate']:,.0f}/s | {r['arrived']:,}/{r['segments']:,} | {a['p50']:.1f} / "
            f"{a['p99']:.1f} / {a['max']:.1f} ms | {r['gateway_cpu_us_per_segment']:,} µs "
            f"({r.get('gateway_cpu_share_streams_open_idle', float('nan')):.0%} of a core) | "
            f"{m['idle']:.0f} / {m['streams_open']:.0f} / {m['peak']:.0f} / {m['after_close']:.0f} MiB | "
            f"{replies} |"
        )
    lines.append("")
    if plot:
        lines.append(f"![Gateway RSS and per-segment latency, many streams against few]({plot})\n")
    lines.append(METHOD)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=STREAMS)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=RATE, help="segments per second on each stream")
    args = parser.parse_args(argv)
    print(json.dumps(run(quick=False, n=args.n, seconds=args.seconds, rate=args.rate), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
