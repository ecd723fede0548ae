"""Liveness and readiness: ``/healthz`` says the process answers, ``/readyz`` that it can decide safely.

Ready means storage answers, a policy is loaded and the workers run (the ticker that expires held segments,
and the delivery dispatcher), and, with several replicas on PostgreSQL, that this replica's consent view is
confirmed fresh (``gateway.replication``); a load balancer stops sending events to a replica that is not
ready, because such a replica could only hold or drop them.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.replication import REPLICATION
from gateway.store.base import StorageError
from gateway.web.keys import DISPATCHER, GATEWAY, STORE

TICKER = web.AppKey("ticker", asyncio.Task[None])


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
        checks["storage"] = "ok"
    except StorageError:
        checks["storage"] = "unavailable"
    gateway = request.app.get(GATEWAY)
    checks["policy"] = "ok" if gateway is not None and gateway.policies.policies else "missing"
    ticker = request.app.get(TICKER)
    dispatcher = request.app.get(DISPATCHER)
    ticking = ticker is not None and not ticker.done()
    checks["workers"] = "ok" if ticking and dispatcher is not None and dispatcher.running() else "stopped"
    replication = request.app.get(REPLICATION)
    if replication is not None:
        checks["consent_view"] = "ok" if replication.fresh() else "stale"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
