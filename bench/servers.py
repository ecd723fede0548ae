"""The two stand-ins the ingest benchmark runs in processes of their own, on 127.0.0.1 only.

    python bench/servers.py receiver                  # the AI service: answers 200, counts what it got,
                                                      # and on request stamps each segment's arrival
    python bench/servers.py proxy --upstream URL      # the pass-through baseline: POST in, POST out
    python bench/servers.py gateway --profile-out F   # `consent-gateway serve` (settings from the
                                                      # environment), profiled between SIGUSR1 and SIGUSR2

Receiver and proxy bind port 0 and print ``PORT <n>`` on stdout once listening. All serve until SIGTERM or
until ``--max-seconds`` have passed (a bound, so that nothing outlives a benchmark that died).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import signal
import sys
import time

import aiohttp
from aiohttp import web

COUNT = web.AppKey("count", list[int])
STAMPS = web.AppKey("stamps", dict[str, float])
STAMPING = web.AppKey("stamping", list[bool])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    # CLOCK_MONOTONIC is one clock for every process on the machine, so the load generator can subtract
    # its own send time from this; read before parsing, so the parse is not part of the latency.
    arrived = time.monotonic()
    # segments, not requests (a batched destination gets several a request): a key outside any JSON string
    # (inside one its quotes would be escaped), once in each segment
    request.app[COUNT][0] += body.count(b'"segment_id"')
    if request.app[STAMPING][0]:
        for key in segment_keys(body):
            request.app[STAMPS].setdefault(key, arrived)
    return web.Response(status=200)


def segment_keys(body: bytes) -> list[str]:
    """``meeting_id/segment_id`` of each segment a body carries: a segment event (the pass-through sends the
    client's event on) or the gateway's ``segment``, ``batch`` or ``transcript`` delivery."""
    doc = json.loads(body)
    segments = doc.get("segments") or [doc]
    return [f"{s.get('meeting_id', doc.get('meeting_id'))}/{s.get('segment_id')}" for s in segments]


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"count": request.app[COUNT][0]})


async def start_stamps(request: web.Request) -> web.Response:
    """Forget earlier stamps and stamp every segment from now on (only then: parsing costs the receiver)."""
    request.app[STAMPS].clear()
    request.app[STAMPING][0] = True
    return web.json_response({"stamping": True})


async def read_stamps(request: web.Request) -> web.Response:
    """Arrival times (monotonic seconds) by ``meeting_id/segment_id`` since ``POST /stamps``."""
    return web.json_response(request.app[STAMPS])


async def stop_stamps(request: web.Request) -> web.Response:
    request.app[STAMPING][0] = False
    request.app[STAMPS].clear()
    return web.json_response({"stamping": False})


def receiver_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNT] = [0]
    app[STAMPS] = {}
    app[STAMPING] = [False]
    app.router.add_post("/segments", receive)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stamps", start_stamps)
    app.router.add_get("/stamps", read_stamps)
    app.router.add_delete("/stamps", stop_stamps)
    return app


async def forward(request: web.Request) -> web.Response:
    """The least a proxy can do: read the body, send it on, answer once the upstream has answered."""
    body = await request.read()
    headers = {"Content-Type": "application/json"}
    async with request.app[SESSION].post(request.app[UPSTREAM], data=body, headers=headers) as upstream:
        await upstream.read()
        return web.json_response({"status": upstream.status})


def proxy_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[UPSTREAM] = upstream

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession() as http:
            app[SESSION] = http
            yield

    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/events", forward)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["receiver", "proxy", "gateway"])
    parser.add_argument("--upstream", help="the receiver's URL (proxy only)")
    parser.add_argument("--profile-out", help="where the gateway's profile goes (gateway only)")
    parser.add_argument("--max-seconds", type=int, default=900)
    args = parser.parse_args(argv)
    signal.alarm(args.max_seconds)  # default action of SIGALRM ends the process
    if args.role == "gateway":
        return profiled_gateway(args.profile_out)
    app = receiver_app() if args.role == "receiver" else proxy_app(args.upstream)

    return _serve(app)


def profiled_gateway(out: str) -> int:
    """The real ``serve`` verb, with a profiler the load generator switches on only for measured phases."""
    from gateway.cli import main as gateway_main

    profiler = cProfile.Profile()

    def switch(signum: int, frame: object) -> None:
        del frame
        if signum == signal.SIGUSR1:
            profiler.enable()
        else:
            profiler.disable()
            profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, switch)
    signal.signal(signal.SIGUSR2, switch)
    return gateway_main(["serve"])


def _serve(app: web.Application) -> int:
    async def run() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"PORT {runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
