"""The two stand-ins the ingest benchmark runs in processes of their own, on 127.0.0.1 only.

    python bench/servers.py receiver                  # the AI service: answers 200, counts what it got
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
import signal
import sys

import aiohttp
from aiohttp import web

COUNT = web.AppKey("count", list[int])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def receive(request: web.Request) -> web.Response:
    await request.read()
    request.app[COUNT][0] += 1
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"count": request.app[COUNT][0]})


def receiver_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNT] = [0]
    app.router.add_post("/segments", receive)
    app.router.add_get("/stats", stats)
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
