"""Zoom webhooks at ``POST /platforms/zoom/webhook``: verify, parse into internal events, answer at once.

Order per request: the ``x-zm-signature`` is checked on the raw bytes against every configured Zoom app's
secret token (one route serves several apps; the app whose secret matches is the one that sent it), the
timestamp must be within 300 s, then the JSON is parsed and the event validated, and only then is anything
applied. Refusals are logged without the body. Meeting and participant events and chat messages go through
the core before the answer (a storage failure answers 503 so Zoom retries); a recorded transcript is
downloaded in a background task (``zoom_transcript``) and RTMS streams are opened by ``zoom_rtms``, so the
answer is immediate either way. Zoom redelivers slow or failed deliveries: a delivery already accepted
(same event, ``event_ts``, meeting uuid, participant and message) is acknowledged and not applied again.
A chat message or a leave names its participant; what that tells the roster (someone it lacks, a new name
or e-mail) is applied before the delivery's own events (``naming.announce``).

The wire schemas and parsing are in ``zoom_wire``; recorded transcripts in ``zoom_transcript``; RTMS in
``zoom_rtms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from pydantic import ValidationError

from gateway.events import MeetingEvent, ParticipantJoined, ParticipantRenamed
from gateway.platforms import zoom_rtms, zoom_transcript
from gateway.platforms.config import ZoomApp, env_secret
from gateway.platforms.naming import announce
from gateway.platforms.zoom_wire import (
    PLATFORM,
    Apply,
    Deliveries,
    Envelope,
    UrlValidation,
    Work,
    dedup_key,
    parse,
)
from gateway.web.keys import GATEWAY, STORE
from gateway.web.problems import Problem, invalid
from gateway.web.replays import DeliveryClaims, Replays

log = structlog.get_logger("gateway.platforms.zoom")
TOLERANCE_SECONDS = 300
REDELIVERY_WINDOW = 2 * 3600.0
"""How long an accepted delivery's key stays claimed in the shared store: Zoom retries a delivery it
thinks failed 5, 25 and 85 minutes after the first attempt."""


# --- signatures (published formulas, PLATFORMS.md) -------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``x-zm-signature``: ``v0=`` + hex HMAC-SHA256(secret, ``v0:{timestamp}:{raw body}``)."""
    message = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def encrypted_token(secret: str, plain_token: str) -> str:
    """The URL-validation answer: hex HMAC-SHA256(secret, plainToken)."""
    return hmac.new(secret.encode(), plain_token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Install:
    """A configured Zoom app with its secrets read from the environment."""

    app: ZoomApp
    webhook_secret: str = field(repr=False)
    client_secret: str | None = field(default=None, repr=False)


def installs_from(apps: Sequence[ZoomApp], environ: Mapping[str, str] | None = None) -> tuple[Install, ...]:
    """Read each app's secrets once, at startup (raises PlatformsConfigError naming a missing variable)."""
    env: Mapping[str, str] = environ if environ is not None else os.environ
    return tuple(
        Install(
            app,
            env_secret(app.webhook_secret_env, env),
            env_secret(app.client_secret_env, env) if app.client_secret_env else None,
        )
        for app in apps
    )


def verify(installs: Sequence[Install], headers: Mapping[str, str], body: bytes, now: float) -> Install:
    """The app whose secret signed ``body``, or a 401 Problem (every secret is tried, in constant time)."""
    offered = headers.get("x-zm-signature", "")
    stamp = headers.get("x-zm-request-timestamp", "")
    if not offered or not stamp:
        raise _refuse("missing_signature")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise _refuse("bad_timestamp")
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise _refuse("stale_timestamp")
    matched = None
    for install in installs:
        expected = signature(install.webhook_secret, stamp, body)
        if hmac.compare_digest(expected.encode(), offered.encode("utf-8", "replace")) and matched is None:
            matched = install
    if matched is None:
        raise _refuse("bad_signature")
    return matched


def _refuse(reason: str) -> Problem:
    log.warning("zoom.webhook.refused", reason=reason)
    return Problem(401, "unauthenticated", "Webhook signature not valid", detail=reason)


# --- the service: state, route, background work ----------------------------------------------------------


class ZoomWebhooks:
    """Everything the Zoom route needs: installations, seen deliveries, background tasks, RTMS streams."""

    def __init__(
        self,
        installs: Sequence[Install],
        clock: Callable[[], float] = time.time,
        store: DeliveryClaims | None = None,
    ) -> None:
        """``store``: where accepted deliveries are claimed for every replica (None: this process only)."""
        self.installs = tuple(installs)
        self.clock = clock
        self.deliveries = Deliveries()
        self.replays = Replays("zoom", REDELIVERY_WINDOW, store, clock)
        """The deliveries' keys in the shared store: one accepted by another replica (or before a restart)
        is a duplicate here too."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.rtms: zoom_rtms.RtmsStreams | None = None
        self.rosters = zoom_transcript.Rosters()
        self.download_retry_seconds = (1.0, 4.0)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task that shutdown waits for (or cancels)."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def idle(self, limit: float = 10.0) -> bool:
        """Wait until no background task runs; False after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while self.tasks:
            if time.monotonic() > deadline:
                return False
            await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - time.monotonic()))
        return True


ZOOM = web.AppKey("zoom", ZoomWebhooks)


def setup(app: web.Application, apps: Sequence[ZoomApp]) -> None:
    """Add the Zoom webhook route and its background work (transcript downloads, RTMS streams)."""
    app[ZOOM] = ZoomWebhooks(installs_from(apps), store=app.get(STORE))
    app.router.add_post("/platforms/zoom/webhook", webhook)
    app.cleanup_ctx.append(_background)


async def _background(app: web.Application) -> AsyncIterator[None]:
    zoom = app[ZOOM]
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        zoom.session = session
        zoom.rtms = zoom_rtms.RtmsStreams(
            lambda event: app[GATEWAY].handle(PLATFORM, event), lambda uuid: _roster(app, uuid)
        )
        yield
        await zoom.rtms.close()
        await zoom.idle(limit=5.0)
        for task in list(zoom.tasks):
            task.cancel()
        for task in list(zoom.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _roster(app: web.Application, meeting_uuid: str) -> Iterable[str]:
    state = app[GATEWAY].meeting(PLATFORM, meeting_uuid)
    return tuple(state.participants) if state is not None else ()


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    zoom = request.app[ZOOM]
    install = verify(zoom.installs, request.headers, body, zoom.clock())
    envelope = _envelope(body)
    if envelope.event == "endpoint.url_validation":
        return _url_validation(envelope, install)
    try:
        work = parse(envelope)
    except ValidationError as exc:
        raise invalid(exc, ("payload",)) from None
    if work is None:
        return web.json_response({"status": "ignored"})
    key = (install.app.id, *dedup_key(envelope))
    if not zoom.deliveries.reserve(key):
        return web.json_response({"status": "duplicate"})
    shared = "\x1f".join(key)
    try:
        fresh = await zoom.replays.claim(shared)
    except BaseException:
        zoom.deliveries.release(key)
        raise
    if not fresh:  # accepted by another replica, or before a restart: it stays reserved here too
        return web.json_response({"status": "duplicate"})
    try:
        await _perform(request.app, install, work)
    except BaseException:
        zoom.deliveries.release(key)
        zoom.replays.release(shared)
        raise
    zoom.replays.confirm(shared)
    return web.json_response({"status": "accepted"})


def _envelope(body: bytes) -> Envelope:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
    if not isinstance(doc, dict):
        raise Problem(400, "invalid-event", "Invalid event", detail="body: expected an object")
    try:
        return Envelope.model_validate(doc)
    except ValidationError as exc:
        raise invalid(exc) from None


def _url_validation(envelope: Envelope, install: Install) -> web.Response:
    try:
        token = UrlValidation.model_validate(envelope.payload).plainToken
    except ValidationError as exc:
        raise invalid(exc, ("payload",)) from None
    answer = {"plainToken": token, "encryptedToken": encrypted_token(install.webhook_secret, token)}
    return web.json_response(answer)


async def _perform(app: web.Application, install: Install, work: Work) -> None:
    zoom = app[ZOOM]
    if isinstance(work, Apply):
        for event, ask in await _announced(app, work):
            await app[GATEWAY].handle(PLATFORM, event, ask=ask)
            if isinstance(event, ParticipantJoined | ParticipantRenamed):
                zoom.rosters.add(event)
    elif isinstance(work, zoom_transcript.TranscriptJob):
        session = zoom.session
        assert session is not None, "the cleanup context opens it"
        fetcher = zoom_transcript.Fetcher(session, install.app.download_base, zoom.download_retry_seconds)
        zoom.spawn(
            zoom_transcript.run(work, fetcher, app[GATEWAY], PLATFORM, zoom.rosters), "zoom-transcript"
        )
    elif isinstance(work, zoom_rtms.RtmsStart):
        if zoom.rtms is not None and install.app.client_id and install.client_secret and install.app.rtms:
            zoom.rtms.start(work, install.app.client_id, install.client_secret)
        else:
            log.info("zoom.rtms.not_configured", app=install.app.id)
    elif zoom.rtms is not None:
        await zoom.rtms.stop(work.rtms_stream_id, reason="rtms_stopped")


async def _announced(app: web.Application, work: Apply) -> list[tuple[MeetingEvent, bool]]:
    """The delivery's events (each with whether a join asks for consent), after what the participant it
    names tells the roster: a name or e-mail the roster lacks is scrubbed from the words that follow."""
    events = [(event, True) for event in work.events]
    if work.named is None:
        return events
    gateway = app[GATEWAY]
    # the roster as stored, if this process has not read the meeting back yet (a restart, another replica)
    await gateway.hold_meeting(work.named.meeting_id)
    # Read outside the meeting's lock: two deliveries racing for someone new may both ask them, which sends
    # a second link and changes no consent; the roster change itself folds in twice harmlessly.
    told, ask = announce(gateway.meeting(PLATFORM, work.named.meeting_id), work.named)
    return [(told, ask), *events] if told is not None else events
