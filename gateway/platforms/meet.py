"""Google Meet: a puller driven by Workspace Events pushed through Pub/Sub (``POST /platforms/meet/events``).

A push delivery is authenticated by the shared token its subscription URL carries (``?token=...``, or the
``X-Push-Token`` header), compared in constant time with every installation's before the body is parsed.
(Pub/Sub's OIDC-signed push, a JWT to verify against Google's keys, is not implemented.) The envelope's
base64 ``message.data`` is a Workspace Events payload that names resources only (``conferenceRecord.name``,
``participantSession.name``, ``transcript.name``); any of them names a conference, which is then
synchronised before the delivery is answered:

1. ``conferenceRecords/{c}`` tells whether the conference has ended (``endTime``);
2. ``conferenceRecords/{c}/participants`` (every page) become ``ParticipantJoined`` with the participant's
   resource name as the participant key and its display name; one whose ``latestEndTime`` is set and who
   has no open ``participantSessions`` (all of them have left when the conference has ended) leaves;
3. the transcripts (those the events name, else ``conferenceRecords/{c}/transcripts``) have their
   ``entries`` listed (every page) and fed in as segments whose id is the entry's resource name, in the
   order they were said, with the roster as it was then (``plan``);
4. an ended conference then ends the meeting; entries that come after that (Meet makes a transcript ready
   after the conference) bring the meeting back (``Gateway.bring_back``) and end it again.

Requests bear the installation's bearer token: a static one, or one its OAuth client keeps fresh (``oauth``);
a 401 invalidates the token and the request is made once more at once with a new one.

Answering after the sync is how a failed one is retried: a sync that fails for a reason that may pass (the
Meet API's 5xx, 401/403/429, a timeout, a page that is not JSON, no token from the token endpoint, storage
unavailable) is answered 503, and Pub/Sub delivers the message again under the subscription's retry policy
(exponential backoff, a dead-letter topic), which outlives this process; a retry loop in the process would
be lost on a restart while the last event of a conference (``transcript.fileGenerated``) would never come
again. So a token endpoint that refuses the client is answered 503 too: the redelivery meets the restart
with the configuration mended. A failure that will not pass (400, 404: the conference or transcript is
gone) is acknowledged and logged. The subscription's acknowledgement deadline must cover a sync (set it to
a minute or more): a delivery answered late is delivered again, which costs a sync that feeds nothing new.
Pushes for a conference that arrive while it is being synchronised share one next sync (``synchronise``),
so a burst of events costs two.

The meeting id is the conference record name (``conferenceRecords/{c}``). What was fed in is remembered per
process, so repeated events feed only what is new; segment ids are stable, so a restart's repeats are
deduplicated downstream by idempotency key. An entry whose participant is not of this conference is
unattributed. An item of a listing that is invalid is skipped (and counted in the log); one listed twice is
fed once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import aiohttp
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from gateway.events import MeetingEnded, MeetingEvent, ParticipantJoined, ParticipantLeft, SegmentReceived
from gateway.instant import Instant
from gateway.model import Segment
from gateway.platforms import oauth
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
_FINAL = frozenset({400, 404})
"""Meet API statuses a later attempt would get again: the delivery is acknowledged, not retried."""
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
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
    latestEndTime: Instant | None = None
    """When they last left; set too while they are back in a session of theirs that is still open."""

    @property
    def display_name(self) -> str:
        users = (self.signedinUser, self.anonymousUser, self.phoneUser)
        return next((u.displayName for u in users if u and u.displayName), "")


class Session(_Obj):
    name: Name
    startTime: Instant | None = None
    endTime: Instant | None = None


class ConferenceRecord(_Obj):
    name: Name
    startTime: Instant | None = None
    endTime: Instant | None = None


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


class Outcome(enum.Enum):
    """How a sync went, and so how its push delivery is answered."""

    DONE = "done"
    FINAL = "final"
    """Failed for a reason a retry would meet again: acknowledged, logged."""
    RETRY = "retry"
    """Failed for a reason that may pass: answered 503, so that Pub/Sub delivers it again."""


Planned = tuple[MeetingEvent, bool]
"""An event to feed in, and whether a join in it sends the participant a consent request (their first)."""


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


def unique(items: Iterable[_T]) -> list[_T]:
    """The first item of each resource name, in order (a listing may repeat one across its pages)."""
    seen: dict[str, _T] = {}
    for item in items:
        seen.setdefault(getattr(item, "name", ""), item)
    return list(seen.values())


def plan(
    conference: str,
    people: Sequence[MeetParticipant],
    left: Mapping[str, datetime],
    entries: Sequence[Entry],
    known: Mapping[str, bool],
    now: datetime,
) -> list[Planned]:
    """The events that feed ``entries`` in, each with the roster as it was when it was said, and leave the
    roster as it is now. ``left``: participant -> when they left, for those gone; ``known``: participant
    -> whether the gateway counts them present.

    A decision counts who is present when it is made, and Meet's entries come after the fact (after
    someone left, often after the end): one who left is brought back for the entries said before they
    left, then leaves again. Someone is taken as present from the meeting's start until they last left,
    which over-counts them, never under-counts (in all-party mode, an extra person only holds more back)."""
    present, out = dict(known), list[Planned]()
    for person in people:
        joined = participant_event(conference, person, now)
        if joined is not None and person.name not in present:
            out.append((joined, True))
            present[person.name] = True
    for entry in sorted(entries, key=lambda e: e.startTime or _EARLIEST):
        out += _presence(conference, people, left, present, entry.startTime or _EARLIEST, now)
        segment = entry_event(conference, entry, now)
        out += [(segment, False)] if segment is not None else []
    return out + _presence(conference, people, left, present, _LATEST, now)


def _presence(
    conference: str,
    people: Sequence[MeetParticipant],
    left: Mapping[str, datetime],
    present: dict[str, bool],
    at: datetime,
    now: datetime,
) -> list[Planned]:
    """Joins and leaves that make ``present`` (updated) who was there at ``at``."""
    out = list[Planned]()
    for person in people:
        gone = left.get(person.name)
        there = gone is None or at < gone
        if person.name not in present or present[person.name] == there:
            continue
        present[person.name] = there
        joined = participant_event(conference, person, now)
        if there and joined is not None:
            out.append((joined, False))  # back: asked when first seen
        elif gone is not None:
            out.append((ParticipantLeft(PLATFORM, conference, person.name, gone), False))
    return out


# --- the puller (I/O) ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Install:
    config: MeetInstall
    push_token: bytes
    tokens: oauth.TokenSource


class FetchError(Exception):
    """The Meet API answered with an error or something that is not a page; the message has no content."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(slots=True)
class _Next:
    """The sync of a conference that waits for the running one; pushes that arrive meanwhile join it."""

    conference: str
    transcripts: set[str] | None = field(default_factory=set)
    """The transcripts the pushes named; None: one named none, so every transcript is listed."""
    task: asyncio.Task[Outcome] | None = None

    def add(self, target: Target) -> None:
        if target.transcript is None:
            self.transcripts = None
        elif self.transcripts is not None:
            self.transcripts.add(target.transcript)


class Meet:
    def __init__(self, installs: Sequence[MeetInstall], environ: Mapping[str, str]) -> None:
        self.installs = [
            _Install(
                i,
                env_secret(i.push_token_env, environ).encode(),
                oauth.token_source(i.token_env, i.oauth, environ, label=f"meet:{i.id}"),
            )
            for i in installs
        ]
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[Outcome]] = set()
        self.fed: set[str] = set()
        """Entry resource names already fed in by this process."""
        self.ended: set[str] = set()
        """Conferences this process has ended the meeting of."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._next: dict[tuple[str, str], _Next] = {}

    def install_for(self, token: str | None) -> _Install | None:
        offered = (token or "").encode()
        found = None
        for install in self.installs:
            if hmac.compare_digest(offered, install.push_token) and found is None:
                found = install
        return found

    def synchronise(self, app: web.Application, install: _Install, target: Target) -> asyncio.Task[Outcome]:
        """The sync that will cover ``target``: the conference's next one, shared with every push that
        arrives before it starts (it reads the Meet API after they arrived, so it sees what they announce)."""
        key = (install.config.id, target.conference)
        waiting = self._next.get(key)
        if waiting is None:
            waiting = self._next[key] = _Next(target.conference)
            waiting.task = asyncio.create_task(self._run(app, install, key, waiting))
            self.tasks.add(waiting.task)
            waiting.task.add_done_callback(self.tasks.discard)
        waiting.add(target)
        assert waiting.task is not None
        return waiting.task

    async def _run(
        self, app: web.Application, install: _Install, key: tuple[str, str], job: _Next
    ) -> Outcome:
        async with self._locks.setdefault(job.conference, asyncio.Lock()):
            self._next.pop(key, None)  # from now on, a push waits for the sync after this one
            transcripts = None if job.transcripts is None else sorted(job.transcripts)
            return await self.sync(app, install, job.conference, transcripts)

    async def idle(self) -> None:
        """Wait for every background synchronisation that has started (tests and shutdown)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def sync(
        self, app: web.Application, install: _Install, conference: str, transcripts: Sequence[str] | None
    ) -> Outcome:
        fields = {"install": install.config.id, "meeting_id": conference}
        try:
            await self._sync(app, install, conference, transcripts)
        except FetchError as exc:
            log.warning("meet.fetch_failed", reason=str(exc), retry=exc.retry, **fields)
            return Outcome.RETRY if exc.retry else Outcome.FINAL
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("meet.fetch_failed", reason=type(exc).__name__, retry=True, **fields)
            return Outcome.RETRY
        except StorageError:
            log.error("meet.storage_unavailable", **fields)
            return Outcome.RETRY
        return Outcome.DONE

    async def _sync(
        self, app: web.Application, install: _Install, conference: str, transcripts: Sequence[str] | None
    ) -> None:
        record = _valid(ConferenceRecord, await self.fetch(install, conference, {}, "conferenceRecord"))
        listed = await self.fetch_all(install, f"{conference}/participants", "participants", MeetParticipant)
        people = [p for p in unique(listed) if p.name.startswith(conference + "/participants/")]
        left = await self.departures(install, record, people)
        if transcripts is None:
            found = await self.fetch_all(install, f"{conference}/transcripts", "transcripts", Transcript)
            transcripts = [t.name for t in unique(found) if _TRANSCRIPT.match(t.name)]
        entries: list[Entry] = []
        for name in transcripts:
            entries += await self.fetch_all(install, f"{name}/entries", "transcriptEntries", Entry)
        fresh = [e for e in unique(entries) if e.name not in self.fed and e.text.strip()]
        await self.feed(app, conference, record.endTime, people, left, fresh)

    async def departures(
        self, install: _Install, record: ConferenceRecord, people: Sequence[MeetParticipant]
    ) -> dict[str, datetime]:
        """Participant -> when they left, for those who have: ``latestEndTime`` is set and no session of
        theirs is open (one who came back has an open session; nobody has once the conference has ended)."""
        left: dict[str, datetime] = {}
        for person in people:
            if person.latestEndTime is None:
                continue
            if record.endTime is None:
                path = f"{person.name}/participantSessions"
                sessions = await self.fetch_all(install, path, "participantSessions", Session)
                if any(s.endTime is None for s in sessions):
                    continue
            left[person.name] = person.latestEndTime
        return left

    async def feed(
        self,
        app: web.Application,
        conference: str,
        ended_at: datetime | None,
        people: Sequence[MeetParticipant],
        left: Mapping[str, datetime],
        entries: Sequence[Entry],
    ) -> None:
        """Feed the plan in; an ended conference ends the meeting after it. Entries of a conference this
        process ended already (a transcript Meet makes ready after the end) bring the meeting back first,
        with its roster (the gateway may have forgotten it), and end it again after them."""
        gateway, now = app[GATEWAY], datetime.now(UTC)
        # entries after the end go in one late transcript, however long a slow store makes them take
        async with gateway.late_transcript(PLATFORM, conference):
            state = gateway.meeting(PLATFORM, conference)
            if ended_at is not None and conference in self.ended:
                if not entries:
                    return  # nothing new since the end
                joins = [j for p in people if (j := participant_event(conference, p, now))]
                state, _ = await gateway.bring_back(PLATFORM, conference, now, joins)
            known = {pid: p.present for pid, p in state.participants.items()} if state else {}
            planned = plan(conference, people, left, entries, known, now)
            log.info("meet.sync", meeting_id=conference, events=len(planned), ended=ended_at is not None)
            for event, ask in planned:
                await gateway.handle(PLATFORM, event, ask=ask)
                if isinstance(event, SegmentReceived):
                    self.fed.add(event.segment.segment_id)
            if ended_at is not None and (entries or conference not in self.ended):
                await gateway.handle(PLATFORM, MeetingEnded(PLATFORM, conference, ended_at))
                self.ended.add(conference)

    async def fetch(
        self, install: _Install, path: str, params: Mapping[str, str], key: str
    ) -> dict[str, Any]:
        """One JSON object from the Meet API; a ``FetchError`` (naming ``key``, never content) otherwise."""
        url = URL(install.config.api_base.rstrip("/") + "/" + path)
        token = await self._token(install, key)
        status, doc = await self._get(url, params, token, key)
        if status == 401 and install.tokens.invalidate(token):  # expired or revoked: once more, at once
            status, doc = await self._get(url, params, await self._token(install, key), key)
        if status != 200:
            raise FetchError(f"{key}: HTTP {status}", retry=status not in _FINAL)
        if not isinstance(doc, dict):
            raise FetchError(f"{key}: not an object")
        return doc

    async def _token(self, install: _Install, key: str) -> str:
        assert self.session is not None, "the cleanup context opens the session"
        try:
            return await install.tokens.token(self.session)
        except (oauth.TokenUnavailable, oauth.TokenRefused) as exc:
            raise FetchError(f"{key}: {exc}") from None

    async def _get(self, url: URL, params: Mapping[str, str], token: str, key: str) -> tuple[int, Any]:
        """The status, and the JSON document of a 200."""
        assert self.session is not None, "the cleanup context opens the session"
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.get(url, params=params, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                return resp.status, None
            try:
                return 200, await resp.json(content_type=None)
            except (ValueError, UnicodeDecodeError):  # a proxy's error page, a truncated body
                raise FetchError(f"{key}: not JSON") from None

    async def fetch_all(self, install: _Install, path: str, key: str, model: type[_T]) -> list[_T]:
        """Every valid item of a paginated Meet list (``pageToken`` / ``nextPageToken``); an invalid one is
        skipped and counted in the log, so that it does not hold back the rest on every retry."""
        items: list[_T] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {"pageSize": "100", **({"pageToken": token} if token else {})}
            page = await self.fetch(install, path, params, key)
            raw = page.get(key) or []
            if not isinstance(raw, list):
                raise FetchError(f"{key}: not a page")
            valid = [item for item in (_parsed(model, r) for r in raw) if item is not None]
            if len(valid) < len(raw):
                log.warning("meet.invalid_items", key=key, skipped=len(raw) - len(valid), kept=len(valid))
            items += valid
            token = page.get("nextPageToken") or None
            if not isinstance(token, str | None):
                raise FetchError(f"{key}: invalid nextPageToken")
            if token is None:
                return items
        raise FetchError(f"{key}: more than {MAX_PAGES} pages", retry=False)


def _parsed(model: type[_T], raw: Any) -> _T | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _valid(model: type[_T], raw: Any) -> _T:
    item = _parsed(model, raw)
    if item is None:
        raise FetchError(f"{model.__name__}: invalid")
    return item


MEET = web.AppKey("meet", Meet)


async def events(request: web.Request) -> web.Response:
    """Answered once the conference is synchronised: 503 if that failed for a reason that may pass, so
    that Pub/Sub delivers the message again (its push treats any status but 102, 200, 201, 202 and 204 as
    a failure)."""
    meet = request.app[MEET]
    install = meet.install_for(request.query.get("token") or request.headers.get("X-Push-Token"))
    if install is None:
        log.warning("meet.unauthenticated")
        raise Problem(401, "unauthenticated", "Missing or invalid credentials", detail="token")
    target = parse_push(await request.read())
    if target is None:
        return web.json_response({"status": "ignored"})
    # shielded: a delivery given up on by Pub/Sub does not stop a sync that other deliveries share
    outcome = await asyncio.shield(meet.synchronise(request.app, install, target))
    if outcome is Outcome.RETRY:
        raise Problem(503, "upstream-unavailable", "The conference could not be synchronised; deliver again")
    return web.json_response({"status": "accepted"})


def _lifecycle(meet: Meet) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            meet.session = session
            yield
            for task in list(meet.tasks):
                task.cancel()
            await meet.idle()
            for install in meet.installs:
                await install.tokens.aclose()

    return ctx


def setup(
    app: web.Application, installs: Sequence[MeetInstall], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Add the push route; all installations share it (the push token tells them apart)."""
    meet = app[MEET] = Meet(installs, environ)
    app.cleanup_ctx.append(_lifecycle(meet))
    app.router.add_post(PATH, events)
