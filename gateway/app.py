"""``create_app(settings)``: the only wiring of the running service.

Startup order: policies load (or the process refuses to start), storage opens, delivery starts, the
ticker that expires held segments starts; cleanup runs in reverse and drains delivery. Handlers find their
collaborators through typed ``AppKey``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
import structlog
from aiohttp import web

from gateway.consent.links import consent_request
from gateway.delivery import Dispatcher
from gateway.delivery.items import DestinationConfig
from gateway.engine import Emit
from gateway.metrics import METRICS, Metrics, metrics_handler
from gateway.platforms import setup_platforms
from gateway.platforms.config import load_platforms
from gateway.policy.compiled import Destination, Policy
from gateway.policy.load import load_policy
from gateway.reload import POLICIES, PolicyManager
from gateway.runtime import Gateway, PolicySet
from gateway.settings import Settings, SettingsError
from gateway.sinks import to_item
from gateway.store import open_store
from gateway.store.base import StorageError, Store
from gateway.web import admin, consent_api, dashboard, health, ingest, request_id, standing
from gateway.web.auth import Authenticator
from gateway.web.keys import AUTH, DISPATCHER, GATEWAY, LINKS, MAX_BODY, NOTIFIER, SETTINGS, STORE
from gateway.web.problems import problem_middleware

log = structlog.get_logger("gateway.app")


class DispatchSink:
    """Hands emissions to the dispatcher; on a withdrawal, purges only where consent no longer covers."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.gateway: Gateway | None = None

    def submit(self, emit: Emit) -> None:
        self.dispatcher.submit(to_item(emit))

    def purge(self, meeting_id: str, participant_id: str) -> None:
        for destination in self.dispatcher.destinations():
            if not self.allowed(destination, meeting_id, participant_id):
                self.dispatcher.purge(meeting_id, participant_id, destination=destination)

    def pending(self, meeting_id: str) -> bool:
        return self.dispatcher.pending_for(meeting_id)

    def allowed(self, destination: str, meeting_id: str, participant_id: str) -> bool:
        gateway = self.gateway
        return gateway is not None and gateway.still_allowed(meeting_id, destination, participant_id)


def destination_configs(policies: Sequence[Policy], settings: Settings) -> dict[str, DestinationConfig]:
    """One delivery config per destination id; two policies may share an id only for the same URL."""
    configs: dict[str, DestinationConfig] = {}
    urls: dict[str, Destination] = {}
    for policy in policies:
        for dest in policy.destinations:
            known = urls.setdefault(dest.id, dest)
            if known.url != dest.url:
                raise SettingsError(f"destination {dest.id!r} has two URLs in the loaded policies")
            configs[dest.id] = DestinationConfig(dest.id, dest.url, settings.secret_for(dest.secret_env))
    return configs


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    policies = PolicySet([load_policy(p) for p in settings.policies])
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[problem_middleware])
    app[SETTINGS] = settings
    app[STORE] = store or open_store(settings.database)
    app[MAX_BODY] = settings.max_body_bytes
    token = settings.ingest_token.get_secret_value() if settings.ingest_token else None
    app[AUTH] = Authenticator(token, [s.get_secret_value() for s in settings.webhook_secrets])
    configs = destination_configs(policies.policies, settings)
    _operations(app, settings, configs)
    app.cleanup_ctx.append(_storage)
    consent_api.setup(app, settings)  # links, receipts, notices: before delivery, which uses them
    app.cleanup_ctx.append(_delivery(policies, configs))
    app.cleanup_ctx.append(_ticker)
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_get("/v1/stream", ingest.stream)
    app.router.add_post("/v1/standing-consents", standing.post_standing)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    if settings.platforms_file is not None:
        setup_platforms(app, load_platforms(settings.platforms_file))
    return app


def _operations(app: web.Application, settings: Settings, configs: dict[str, DestinationConfig]) -> None:
    """Metrics, request ids, the admin API and dashboard, policy reload and shadow candidates."""
    for path in settings.shadow_policies:
        load_policy(path)  # a broken candidate refuses to start, like a broken policy
    app[METRICS] = metrics = Metrics()
    app[POLICIES] = PolicyManager(
        settings.policies,
        lambda ps: destination_configs(ps, settings),
        configs,
        on_difference=metrics.on_shadow_difference,
        on_reload=metrics.on_reload,
    )
    request_id.setup(app)
    tokens = [s.get_secret_value() for s in (*settings.admin_tokens, *settings.auditor_tokens)]
    if settings.ingest_token and settings.ingest_token.get_secret_value() in tokens:
        raise SettingsError("admin_tokens / auditor_tokens: must differ from the ingest token")
    admin.setup(
        app,
        admin.AdminAuth(
            [s.get_secret_value() for s in settings.admin_tokens],
            [s.get_secret_value() for s in settings.auditor_tokens],
        ),
    )
    dashboard.setup(app)
    app.router.add_get("/metrics", metrics_handler)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await app[STORE].close()


def _delivery(
    policies: PolicySet, configs: dict[str, DestinationConfig]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            sink_ref: list[DispatchSink] = []
            dispatcher = Dispatcher(
                session,
                configs,
                allowed=lambda dest, part: sink_ref[0].allowed(dest, part.meeting_id, part.participant_id),
                on_result=app[METRICS].on_delivery,
            )
            sink = DispatchSink(dispatcher)
            sink_ref.append(sink)
            sink.gateway = app[GATEWAY] = Gateway(policies, app[STORE], sink, notify=app[NOTIFIER])
            app[GATEWAY].consent_request = functools.partial(consent_request, app[LINKS])
            app[DISPATCHER] = dispatcher
            app[GATEWAY].observers.append(app[METRICS])
            if app[SETTINGS].shadow_policies:
                app[POLICIES].set_shadow(app[GATEWAY], app[SETTINGS].shadow_policies)
            app[METRICS].track_outbox(dispatcher.depth, dispatcher.oldest_age)
            await dispatcher.start()
            yield
            await dispatcher.drain(timeout=5.0)
            await dispatcher.close()

    return ctx


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].tick_seconds)
            try:
                await app[GATEWAY].tick()
            except StorageError:
                log.error("tick.storage_unavailable")

    task = asyncio.create_task(run())
    app[health.TICKER] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
