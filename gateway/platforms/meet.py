"""Google Meet: a puller driven by Workspace Events pushed through Pub/Sub (``POST /platforms/meet/events``).

A push delivery is authenticated by the shared token its subscription URL carries (``?token=...``, or the
``X-Push-Token`` header), compared in constant time with every installation's before the body is parsed.
(Pub/Sub's OIDC-signed push, a JWT to verify against Google's keys, is not implemented.) The envelope's
base64 ``message.data`` is a Workspace Events payload that names resources only (``conferenceRecord.name``,
``participantSession.name``, ``transcript.name``); any of them names a conference, and the delivery is
answered 200 at once while the conference is synchronised in the background:

1. ``conferenceRecords/{c}/participants`` (every page) become ``ParticipantJoined`` with the participant's
   resource name as the participant key and its display name;
2. the transcripts (the one the event names, else ``conferenceRecords/{c}/transcripts``) have their
   ``entries`` listed (every page) and fed in as segments whose id is the entry's resource name.

The meeting id is the conference record name (``conferenceRecords/{c}``). What was fed in is remembered per
process, so repeated events feed only what is new; segment ids are stable, so a restart's repeats are
deduplicated downstream by idempotency key. An entry whose participant is not of this conference is
unattributed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import aiohttp
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from gateway.events import MeetingEvent, ParticipantJoined, SegmentReceived
from gateway.instant import Instant
from gateway.model import Segment
from gateway.platforms.config import MeetInstall, env_secret
from gateway.store.base import StorageError
from gateway.web.keys import GATEWAY
from gateway.web.problems import Problem, invalid

log = structlog.get_logger("gateway.platforms.meet")
PLATFORM = "meet"
PATH = "/platforms/meet/events"
MAX_PAGES = 10_000
_CONFERENCE = re.compile(r"^conferenceRecords/[A-Za-z0-9_-]{1,256}(?=/|$)")
_TRANSCRIPT = re.compile(r"^conferenceRecords/[A-Za-z0-9_-]{1,256}/transcripts/[A-Za-z0-9_-]{1,256}$")
Name = Annotated[str, Field(max_length=1024)]


class _Obj(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_T = TypeVar("_T", bound=_Obj)


class PushMessage(_Obj):
    data: Annotated[str, Field(max_length=64 * 1024)]


class Push(_Obj):
    message: PushMessage


class User(_Obj):
    displayName: Name | None = None  # Meet's field name


class MeetParticipant(_Obj):
    name: Name
    signedinUser: User | None = None
    anonymousUser: User | None = None
    phoneUser: User | None = None
    earliestStartTime: Instant | None = None

    @property
    def display_name(self) -> str:
        users = (self.signedinUser, self.anonymousUser, self.phoneUser)
        return next((u.displayName for u in users if u and u.displayName), "")


class Entry(_Obj):
    name: Name
    participant: Name | None = None
    text: Annotated[str, Field(max_length=100_000)] = ""
    startTime: Instant | None = None
    endTime: Instant | None = None


class Transcript(_Obj):
    name: Name


@dataclass(frozen=True, slots=True)
class Target:
    """What a Workspace Event asks the puller to synchronise."""

    conference: str
    transcript: str | None = None


# --- parsing (pure) --------------------------------------------------------------------------------------


def parse_push(body: bytes) -> Target | None:
    """The conference a push delivery names, or None when it names none (raises a 400 ``Problem``)."""
    try:
        push = Push.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
        raise invalid(exc) from None
    try:
        doc = json.loads(base64.b64decode(push.message.data, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "invalid-event", "Invalid event", detail="message.data: not base64 JSON") from None
    return target_of(doc)


def target_of(doc: Any) -> Target | None:
    if not isinstance(doc, dict):
        return None
    for key in ("transcript", "conferenceRecord", "participantSession", "participant"):
        resource = doc.get(key)
        name = resource.get("name") if isinstance(resource, dict) else None
        match = _CONFERENCE.match(name) if isinstance(name, str) else None
        if match:
            transcript = name if isinstance(name, str) and _TRANSCRIPT.match(name) else None
            return Target(match.group(0), transcript)
    return None


def participant_event(conference: str, p: MeetParticipant, now: datetime) -> ParticipantJoined | None:
    if not p.name.startswith(conference + "/participants/"):
        return None
    return ParticipantJoined(PLATFORM, conference, p.name, p.display_name, p.earliestStartTime or now)


def entry_event(conference: str, e: Entry, now: datetime) -> SegmentReceived | None:
    if not e.text.strip():
        return None
    pid = e.participant if e.participant and e.participant.startswith(conference + "/participants/") else None
    # Meet gives absolute times only; they stay in ``at`` (start/end are offsets into a recording)
    return SegmentReceived(PLATFORM, Segment(conference, e.name, pid, e.text, e.startTime or now))


# --- the puller (I/O) ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Install:
    config: MeetInstall
    push_token: bytes
    token: str


class FetchError(Exception):
    """The Meet API answered with an error or something that is not a page; the message has no content."""


class Meet:
    def __init__(self, installs: Sequence[MeetInstall], environ: Mapping[str, str]) -> None:
        self.installs = [
            _Install(i, env_secret(i.push_token_env, environ).encode(), env_secret(i.token_env, environ))
            for i in installs
        ]
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.fed: set[str] = set()
        """Resource names (participants, entries) already fed in by this process."""
        self._locks: dict[str, asyncio.Lock] = {}

    def install_for(self, token: str | None) -> _Install | None:
        offered = (token or "").encode()
        found = None
        for install in self.installs:
            if hmac.compare_digest(offered, install.push_token) and found is None:
                found = install
        return found

    def schedule(self, app: web.Application, install: _Install, target: Target) -> None:
        task = asyncio.create_task(self.sync(app, install, target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def idle(self) -> None:
        """Wait for every background synchronisation that has started (tests and shutdown)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def sync(self, app: web.Application, install: _Install, target: Target) -> None:
        fields = {"install": install.config.id, "meeting_id": target.conference}
        async with self._locks.setdefault(target.conference, asyncio.Lock()):
            try:
                await self._sync(app, install, target)
            except FetchError as exc:
                log.warning("meet.fetch_failed", reason=str(exc), **fields)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("meet.fetch_failed", reason=type(exc).__name__, **fields)
            except StorageError:
                log.error("meet.storage_unavailable", **fields)

    async def _sync(self, app: web.Application, install: _Install, target: Target) -> None:
        conference, now = target.conference, datetime.now(UTC)
        people = await self.fetch_all(install, f"{conference}/participants", "participants", MeetParticipant)
        events: list[MeetingEvent | None] = [participant_event(conference, p, now) for p in people]
        if target.transcript:
            transcripts = [target.transcript]
        else:
            found = await self.fetch_all(install, f"{conference}/transcripts", "transcripts", Transcript)
            transcripts = [t.name for t in found if _TRANSCRIPT.match(t.name)]
        for name in transcripts:
            entries = await self.fetch_all(install, f"{name}/entries", "transcriptEntries", Entry)
            events += [entry_event(conference, e, now) for e in entries]
        await self.feed(app, [e for e in events if e is not None])

    async def feed(self, app: web.Application, events: Sequence[MeetingEvent]) -> None:
        gateway = app[GATEWAY]
        fresh = [e for e in events if _resource(e) not in self.fed]
        log.info("meet.sync", meeting_id=fresh[0].meeting_id if fresh else None, events=len(fresh))
        for event in fresh:
            await gateway.handle(PLATFORM, event)
            self.fed.add(_resource(event))

    async def fetch_all(self, install: _Install, path: str, key: str, model: type[_T]) -> list[_T]:
        """Every item of a paginated Meet list (``pageToken`` / ``nextPageToken``)."""
        assert self.session is not None, "the cleanup context opens the session"
        url = URL(install.config.api_base.rstrip("/") + "/" + path)
        headers = {"Authorization": f"Bearer {install.token}"}
        items: list[_T] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {"pageSize": "100", **({"pageToken": token} if token else {})}
            async with self.session.get(url, params=params, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise FetchError(f"{key}: HTTP {resp.status}")
                page = await resp.json(content_type=None)
            if not isinstance(page, dict):
                raise FetchError(f"{key}: not a page")
            try:
                items += [model.model_validate(raw) for raw in page.get(key) or []]
            except ValidationError:
                raise FetchError(f"{key}: invalid item") from None
            token = page.get("nextPageToken") or None
            if not isinstance(token, str | None):
                raise FetchError(f"{key}: invalid nextPageToken")
            if token is None:
                return items
        raise FetchError(f"{key}: more than {MAX_PAGES} pages")


def _resource(event: MeetingEvent) -> str:
    if isinstance(event, SegmentReceived):
        return event.segment.segment_id
    assert isinstance(event, ParticipantJoined)
    return event.participant_id


MEET = web.AppKey("meet", Meet)


async def events(request: web.Request) -> web.Response:
    meet = request.app[MEET]
    install = meet.install_for(request.query.get("token") or request.headers.get("X-Push-Token"))
    if install is None:
        log.warning("meet.unauthenticated")
        raise Problem(401, "unauthenticated", "Missing or invalid credentials", detail="token")
    target = parse_push(await request.read())
    if target is None:
        return web.json_response({"status": "ignored"})
    meet.schedule(request.app, install, target)
    return web.json_response({"status": "accepted"})


def _lifecycle(meet: Meet) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            meet.session = session
            yield
            for task in list(meet.tasks):
                task.cancel()
            await meet.idle()

    return ctx


def setup(
    app: web.Application, installs: Sequence[MeetInstall], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Add the push route; all installations share it (the push token tells them apart)."""
    meet = app[MEET] = Meet(installs, environ)
    app.cleanup_ctx.append(_lifecycle(meet))
    app.router.add_post(PATH, events)
