"""``create_app(settings)``: the only wiring of the running service.

Startup order: policies load (or the process refuses to start), storage opens, delivery starts, the
ticker that expires held segments starts; cleanup runs in reverse and drains delivery. Handlers find their
collaborators through typed ``AppKey``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import aiohttp
import structlog
from aiohttp import web

from gateway.consent.links import consent_request
from gateway.delivery import Dispatcher
from gateway.delivery.consent_check import BatchedConsentCheck
from gateway.delivery.durable import LEASE_SECONDS, Outbox
from gateway.delivery.items import DestinationConfig, Item, Part
from gateway.delivery.transports import Transports
from gateway.engine import Emit
from gateway.meeting import Part as MeetingPart
from gateway.metrics import METRICS, Metrics, metrics_handler
from gateway.names import NameScrubber
from gateway.platforms import setup_platforms
from gateway.platforms.config import load_platforms
from gateway.policy.compiled import Destination, Policy
from gateway.policy.load import load_policy
from gateway.reload import POLICIES, PolicyManager
from gateway.replication import REPLICATION, Followers, Replication
from gateway.roster_log import SharedRoster
from gateway.runtime import Batched, ConsentViewStale, Gateway, PolicySet
from gateway.sealing import Keyring
from gateway.settings import Settings, SettingsError
from gateway.sinks import to_item
from gateway.store import open_store
from gateway.store.base import LedgerEntry, StorageError, Store
from gateway.store.outbox import Lease, OutboxItem
from gateway.web import admin, consent_api, dashboard, health, ingest, request_id, standing
from gateway.web.auth import Authenticator
from gateway.web.keys import AUTH, DISPATCHER, GATEWAY, LINKS, MAX_BODY, NOTIFIER, SETTINGS, STORE
from gateway.web.problems import problem_middleware

OUTBOX_KEYRING = web.AppKey("outbox_keyring", Keyring)
"""The keys that seal content at rest: the outbox's payloads and, with several replicas, the shared roster."""

log = structlog.get_logger("gateway.app")


class DispatchSink:
    """Seals emissions for the outbox, hands them to the dispatcher once durable; on a withdrawal, purges
    only where consent no longer covers."""

    def __init__(
        self, dispatcher: Dispatcher, outbox: Outbox, configs: Mapping[str, DestinationConfig]
    ) -> None:
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.configs = configs
        self.gateway: Gateway | None = None
        self._purposes_for: PolicySet | None = None
        self._purposes: dict[str, tuple[str, ...]] = {}

    def stage(self, emits: Sequence[Emit]) -> tuple[Sequence[OutboxItem], Lease | None]:
        items = [
            self.outbox.seal(
                to_item(emit), self.configs[emit.destination], self.purposes_of(emit.destination)
            )
            for emit in emits
        ]
        return items, self.outbox.lease()

    def purposes_of(self, destination: str) -> tuple[str, ...]:
        """The destination's purposes in the live policies (all of them, where several name it)."""
        gateway = self.gateway
        if gateway is None:
            return self.configs[destination].purposes
        policies = gateway.policies  # swapped whole on reload: the answer is kept per policy set
        if policies is not self._purposes_for:
            self._purposes_for, self._purposes = policies, {}
        if destination not in self._purposes:
            found = {p for policy in policies.policies for d in policy.destinations if d.id == destination
                     for p in d.purposes}  # fmt: skip
            self._purposes[destination] = tuple(sorted(found)) or self.configs[destination].purposes
        return self._purposes[destination]

    def holds(self, meeting_id: str) -> bool:
        return self.gateway is not None and self.gateway.holds(meeting_id)

    def submit(self, emit: Emit) -> None:
        self.dispatcher.submit(to_item(emit), stamp=emit.scrubbed_with)

    def ended(self, meeting_id: str) -> None:
        self.dispatcher.flush(meeting_id)

    async def claim_held(self, *, everything: bool) -> list[Item]:
        return await self.outbox.claim_held(everything=everything)

    def purge(self, meeting_id: str, participant_id: str) -> None:
        for destination in self.dispatcher.destinations():
            try:
                covered = self.allowed(destination, meeting_id, participant_id)
            except ConsentViewStale:
                covered = True  # the view says yes; delivery asks it again, once confirmed, before sending
            if not covered:
                self.dispatcher.purge(meeting_id, participant_id, destination=destination)

    def pending(self, meeting_id: str) -> bool:
        return self.dispatcher.pending_for(meeting_id)

    async def delivered(
        self, meeting_id: str, participant_id: str, destination: str
    ) -> list[tuple[str, str]]:
        """What the destination may hold of the participant: each part delivered (2xx), and each that an
        attempt carried whatever its outcome (a timeout or a reset after the body went out may have
        arrived). Asking to delete a part that never arrived is harmless; missing one that did is not.

        Listed once no attempt carrying their words can still be on the wire, so that the request reaches
        the destination after them: this process's (``quiesce``), and another's (a replica, or a process
        that stopped) until its part is sent or the attempt's timeout has passed since it began."""
        config = self.configs[destination]
        await self.dispatcher.quiesce(meeting_id, participant_id, config.total_timeout + 1.0)
        await self.outbox.flush()
        while True:
            rows = await self.outbox.store.outbox_parts(meeting_id=meeting_id, participant_id=participant_id)
            rows = [row for row in rows if row["destination"] == destination]
            # polling: another process's attempt has no event here, and this runs once per withdrawal
            if not self._elsewhere_on_the_wire(rows, config.total_timeout + 1.0):
                break
            await asyncio.sleep(ELSEWHERE_POLL_SECONDS)
        return [
            (str(row["segment_id"]), str(row["key"]))
            for row in rows
            if row["state"] == "sent" or row["attempted_at"] is not None
        ]

    def _elsewhere_on_the_wire(self, rows: Sequence[Mapping[str, object]], longest: float) -> bool:
        """Whether a part of ``rows`` may be on the wire in another process's attempt now: it began less
        than ``longest`` seconds ago and its part is not known to be sent."""
        now = time.time()
        return any(
            row["state"] != "sent"
            and isinstance(at := row["attempted_at"], float)
            and at + longest > now
            and row["attempted_by"] != self.outbox.owner
            for row in rows
        )

    async def batched(self, meeting_id: str) -> Batched:
        parts: dict[str, list[MeetingPart]] = {}
        keys: dict[str, list[str]] = {}
        for item in await self.outbox.batched(meeting_id):
            for part in item.parts:
                kept = MeetingPart(part.segment_id, part.participant_id, part.payload)
                parts.setdefault(item.destination, []).append(kept)
            keys.setdefault(item.destination, []).append(item.idempotency_key)
        return Batched(
            {dest: tuple(kept) for dest, kept in parts.items()},
            {dest: tuple(held) for dest, held in keys.items()},
        )

    async def prepare(self, meeting_id: str) -> None:
        """Before an attempt: hold the meeting if this process does not yet (content recovered from the
        outbox at start, or taken over from a stopped replica), so its content is checked and scrubbed
        against the meeting's own consent and roster."""
        if self.gateway is not None:
            await self.gateway.hold_meeting(meeting_id)

    def scrubbing_now(self, meeting_id: str, destination: str) -> object:
        """What names are scrubbed for the destination now, as a value compared by equality (a join or
        leave that changes nobody's names or consent leaves it equal); None for a meeting not held here."""
        gateway = self.gateway
        if gateway is None or not gateway.holds(meeting_id):
            return None
        scrubber = gateway.scrubber_now(meeting_id, destination)
        return scrubber.signature if isinstance(scrubber, NameScrubber) else scrubber

    def scrubbed_now(self, destination: str, part: Part, stamp: object) -> Part:
        """The part as it may leave now: names of those who do not consent now scrubbed again (unchanged
        for a meeting this process does not hold)."""
        gateway = self.gateway
        if gateway is None or not gateway.holds(part.meeting_id):
            return part
        return gateway.scrubbed_now(part.meeting_id, destination, part, stamp)

    def allowed(self, destination: str, meeting_id: str, participant_id: str) -> bool | None:
        """The live consent view's answer; None for a meeting this process does not hold (recovered
        content), which the dispatcher then checks against the store's latest consent; False for one
        the stored roster has but no loaded policy covers."""
        gateway = self.gateway
        if gateway is None:
            return False
        if not gateway.holds(meeting_id):
            # a meeting no policy covers any more sends nothing; one merely not held: the store decides
            return False if gateway.ungoverned(meeting_id) else None
        return gateway.still_allowed(meeting_id, destination, participant_id)


ELSEWHERE_POLL_SECONDS = 0.05
"""How often a deletion request being prepared looks again at other processes' attempts still on the wire."""

_REACHED_BY = ("kind", "model", "prompt", "api_key_env", "summary_url", "erasure_url", "retention_hours",
               "timeout_seconds", "batch_max_segments", "batch_seconds")  # fmt: skip
"""Besides the URL, what two policies sharing a destination id must agree on."""


def destination_configs(policies: Sequence[Policy], settings: Settings) -> dict[str, DestinationConfig]:
    """One delivery config per destination id; two policies may share an id only for the same URL, kind and
    summariser settings."""
    configs: dict[str, DestinationConfig] = {}
    urls: dict[str, Destination] = {}
    for policy in policies:
        for dest in policy.destinations:
            known = urls.setdefault(dest.id, dest)
            if known.url != dest.url:
                raise SettingsError(f"destination {dest.id!r} has two URLs in the loaded policies")
            for name in _REACHED_BY:
                if getattr(known, name) != getattr(dest, name):
                    raise SettingsError(
                        f"destination {dest.id!r} has two {name} values in the loaded policies"
                    )
            summariser = dest.kind == "openai_summary"  # the policy schema requires its model, prompt, url
            configs[dest.id] = DestinationConfig(
                dest.id,
                dest.url,
                settings.secret_for(dest.secret_env),
                purposes=dest.purposes,
                retention_seconds=dest.retention_hours * 3600,
                total_timeout=dest.timeout_seconds,
                erasure_url=dest.erasure_url,
                kind=dest.kind,
                model=dest.model or "",
                prompt=dest.prompt or "",
                api_key=_api_key(dest) if summariser else "",
                summary_url=dest.summary_url or "",
                batch_max=dest.batch_max_segments,
                batch_seconds=dest.batch_seconds,
            )
    return configs


def _api_key(dest: Destination) -> str:
    """An ``openai_summary`` destination's API key, from the environment variable its policy names."""
    value = os.environ.get(dest.api_key_env) if dest.api_key_env else None
    if not value:
        raise SettingsError(f"{dest.api_key_env}: API key of destination {dest.id!r} is not set")
    return value


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    policies = PolicySet([load_policy(p) for p in settings.policies])
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[problem_middleware])
    app[SETTINGS] = settings
    app[STORE] = store or open_store(settings.database)
    app[MAX_BODY] = settings.max_body_bytes
    token = settings.ingest_token.get_secret_value() if settings.ingest_token else None
    app[AUTH] = Authenticator(
        token, [s.get_secret_value() for s in settings.webhook_secrets], store=app[STORE], scope="events"
    )
    configs = destination_configs(policies.policies, settings)
    _operations(app, settings, configs)
    app.cleanup_ctx.append(_storage)
    consent_api.setup(app, settings)  # links, receipts, notices: before delivery, which uses them
    app.cleanup_ctx.append(_delivery(policies, configs))
    app.cleanup_ctx.append(_ticker)
    if settings.database.startswith(("postgresql://", "postgres://")):
        app.cleanup_ctx.append(_replication)
    app.on_startup.append(_recover)  # after every cleanup context has started
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
            store = app[STORE]
            keyring = app[SETTINGS].keyring()
            if keyring is None:
                # `serve` always has a key (generated into the secrets file); an embedding without one gets a
                # key that dies with the process: what it leaves in the outbox is unreadable after a restart
                log.warning("outbox.ephemeral_key")
                keyring = Keyring.generate()
            app[OUTBOX_KEYRING] = keyring
            outbox = Outbox(store, keyring)
            transports = Transports(session)
            dispatcher = Dispatcher(
                session,
                configs,
                allowed=lambda dest, part: sink_ref[0].allowed(dest, part.meeting_id, part.participant_id),
                on_result=app[METRICS].on_delivery,
                outbox=outbox,
                blocked=BatchedConsentCheck(store),
                shared_store=store.shared,
                purposes_of=lambda destination: sink_ref[0].purposes_of(destination),
                send=transports.send,
                holds=lambda meeting_id: sink_ref[0].holds(meeting_id),
                on_purge=transports.forget,
                rewrite=lambda dest, part, stamp: sink_ref[0].scrubbed_now(dest, part, stamp),
                prepare=lambda meeting_id: sink_ref[0].prepare(meeting_id),
                scrubbing=lambda meeting_id, destination: sink_ref[0].scrubbing_now(meeting_id, destination),
            )
            sink = DispatchSink(dispatcher, outbox, configs)
            sink_ref.append(sink)
            sink.gateway = app[GATEWAY] = Gateway(policies, app[STORE], sink, notify=app[NOTIFIER])
            # the roster is stored (sealed) whatever the store: a restart must still know who is in a meeting
            app[GATEWAY].roster = SharedRoster(store, keyring)
            app[GATEWAY].consent_request = functools.partial(consent_request, app[LINKS])
            app[DISPATCHER] = dispatcher
            app[GATEWAY].observers.append(app[METRICS])
            if app[SETTINGS].shadow_policies:
                app[POLICIES].set_shadow(app[GATEWAY], app[SETTINGS].shadow_policies)
            app[METRICS].track_outbox(dispatcher.depth, dispatcher.oldest_age)
            await dispatcher.start()
            yield
            await app[GATEWAY].settle()
            await dispatcher.drain(timeout=5.0)
            await dispatcher.close()
            await transports.close()
            if REPLICATION in app:
                await app[REPLICATION].stop()

    return ctx


HELD_RECOVERY_SECONDS = LEASE_SECONDS / 3
"""With several replicas, how often each looks for held segments whose replica stopped renewing their lease
(as often as delivery looks for items to take over); as often, on any store, for owed deletion requests
whose lease ran out (their writer stopped, or staging them failed)."""


class _StartRecovery:
    """Whether the start's recovery (``_recover``) ran: None not yet, False it failed (the ticker retries)."""

    def __init__(self) -> None:
        self.done: bool | None = None


START_RECOVERY = web.AppKey("start_recovery", _StartRecovery)


async def _recover(app: web.Application) -> None:
    """At start, after every context (the consent view's replication too): hold the meetings the stored
    roster has (who is in them, verified identities included, so that a standing choice recorded now
    reaches them), then hold again what a stopped process held (a single-process store: everything its
    last process left). If storage fails, the ticker tries again until it has run."""
    app[START_RECOVERY].done = await _start_recovery(app)


async def _start_recovery(app: web.Application) -> bool:
    gateway = app[GATEWAY]
    try:
        loaded = await gateway.load_meetings()
        if loaded:
            log.info("meetings.loaded", meetings=loaded)
        await gateway.recover_held(everything=not app[STORE].shared)
        await _erase_owed(app, everything=not app[STORE].shared)
    except StorageError:
        log.error("start.recovery_storage_unavailable")
        return False
    return True


async def _erase_owed(app: web.Application, *, everything: bool = False) -> None:
    """Stage the deletion requests that withdrawals owe and nobody staged: a process that stopped after
    acknowledging a withdrawal (``everything``: all of them, for a single-process store at start), or
    whose staging failed. Those of a live writer are left to it until their lease runs out."""
    owed = await app[GATEWAY].erase_owed(everything=everything)
    if owed:
        log.info("erasure.owed_claimed", requests=owed)


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    start = app[START_RECOVERY] = _StartRecovery()

    async def run() -> None:
        gateway = app[GATEWAY]
        shared = app[STORE].shared
        loop = asyncio.get_running_loop()
        recovered = loop.time()  # at start by _recover, once everything (replication too) runs
        while True:
            if start.done is False:
                start.done = await _start_recovery(app)
            elif start.done and loop.time() - recovered >= HELD_RECOVERY_SECONDS:
                try:
                    if shared:
                        await gateway.recover_held()
                    await _erase_owed(app)
                    recovered = loop.time()
                except StorageError:
                    log.error("recovery.storage_unavailable")
            await asyncio.sleep(app[SETTINGS].tick_seconds)
            try:
                await gateway.tick()
            except StorageError:
                log.error("tick.storage_unavailable")
            except Exception as exc:  # the ticker ends holds and forgets meetings: it must never die
                log.error("tick.failed", error=type(exc).__name__)

    task = asyncio.create_task(run())
    app[health.TICKER] = task
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _replication(app: web.Application) -> AsyncIterator[None]:
    """Several replicas on one PostgreSQL: fold in what the others record, and forward only while this
    replica's consent view is confirmed fresh (gateway.replication)."""
    # imports the PostgreSQL driver: only when used
    from gateway.store.pg_listen import LedgerListener, RosterListener
    from gateway.store.postgres import PostgresStore

    settings, gateway, store = app[SETTINGS], app[GATEWAY], app[STORE]
    if not isinstance(store, PostgresStore):
        raise SettingsError("database: replication needs the PostgreSQL store")
    max_age = settings.consent_view_max_age_ms / 1000
    keyring = app[OUTBOX_KEYRING]  # replicas share the outbox keys, which seal the roster's names too

    async def apply_record(entry: LedgerEntry) -> None:
        await gateway.apply_remote(entry.record)

    followers = Followers(
        Replication(LedgerListener(settings.database), apply_record, max_age=max_age),
        Replication(RosterListener(settings.database, keyring), gateway.apply_roster, max_age=max_age),
    )
    gateway.wrote = followers.ledger.wrote
    gateway.wrote_roster = followers.roster.wrote
    gateway.roster = SharedRoster(store, keyring)
    await followers.start()
    app[REPLICATION] = followers
    gateway.fresh = followers.fresh
    yield
    # stopped by the delivery context once it has drained: without a fresh view nothing could leave then
