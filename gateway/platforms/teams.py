"""Microsoft Teams transcripts through Graph change notifications: ``POST /platforms/teams/notifications``.

Graph validates the subscription by posting ``?validationToken=...``: the URL-decoded token is echoed as
``text/plain``. Notifications carry no signature, only the ``clientState`` secret given at subscription time:
it is compared in constant time with every installation's, and a request with any notification that matches
none is refused whole (401, logged without its body). Accepted notifications are answered 202 at once; the
transcript is then fetched in the background as ``text/vtt`` with the installation's bearer token (a static
one, or one its OAuth client keeps fresh: ``oauth``); a 401 invalidates the token and is tried once more at
once with a new one.

Teams transcripts carry display names only (``<v Name>`` voice tags), and display names are not identity.
So a Teams meeting is keyed the way the integration keys it: the roster and the consent come through the
generic API (platform ``generic`` by default, see ``TeamsInstall.meeting_platform``) under the Graph
online-meeting id, and each cue's voice is resolved against that roster by ``vtt.by_name``: a name that
matches no participant, or several, leaves the cue unattributed, which the core never forwards.

A tenant that disables speaker attribution answers 403: then nothing can be attributed and nothing is fed in
at all (logged). So are other failures: a transcript that cannot be fetched or parsed is logged and skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import aiohttp
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from gateway.events import MeetingEnded, ParticipantJoined, SegmentReceived
from gateway.model import Participant, Segment
from gateway.platforms import oauth, vtt
from gateway.platforms.capped import read_capped
from gateway.platforms.config import TeamsInstall, env_secret
from gateway.store.base import StorageError
from gateway.web.keys import GATEWAY
from gateway.web.problems import Problem, invalid

log = structlog.get_logger("gateway.platforms.teams")
PATH = "/platforms/teams/notifications"
MAX_TOKEN = 4096
MAX_TRANSCRIPT_BYTES = 32 * 1024 * 1024
_ID = r"[A-Za-z0-9_\-=.@+]{1,512}"
_RESOURCE = re.compile(
    rf"^/?(?:users(?:\('(?P<u1>{_ID})'\)|/(?P<u2>{_ID}))/|communications/)"
    rf"onlineMeetings(?:\('(?P<m1>{_ID})'\)|/(?P<m2>{_ID}))/"
    rf"transcripts(?:\('(?P<t1>{_ID})'\)|/(?P<t2>{_ID}))$"
)


class _Obj(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Notification(_Obj):
    clientState: Annotated[str, Field(max_length=512)] | None = None
    changeType: Annotated[str, Field(max_length=64)] | None = None
    resource: Annotated[str, Field(max_length=2048)]


class Notifications(_Obj):
    value: Annotated[list[Notification], Field(min_length=1, max_length=1000)]


@dataclass(frozen=True, slots=True)
class TranscriptRef:
    """A transcript named by a notification: where its content is, and which meeting it belongs to."""

    user_id: str | None
    meeting_id: str
    transcript_id: str

    def content_url(self, graph_base: str) -> URL:
        owner = ("users", self.user_id) if self.user_id else ("communications",)
        parts = (*owner, "onlineMeetings", self.meeting_id, "transcripts", self.transcript_id, "content")
        return URL(graph_base.rstrip("/")).joinpath(*parts).with_query({"$format": "text/vtt"})


# --- parsing (pure) --------------------------------------------------------------------------------------


def parse_notifications(body: bytes) -> Notifications:
    """The notifications of one request (raises a 400 ``Problem`` naming the field)."""
    try:
        return Notifications.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
        raise invalid(exc) from None


def transcript_ref(resource: str) -> TranscriptRef | None:
    """The transcript a notification's ``resource`` names, or None for anything else (ignored)."""
    match = _RESOURCE.match(resource)
    if match is None:
        return None
    g = match.groupdict()
    return TranscriptRef(g["u1"] or g["u2"], g["m1"] or g["m2"], g["t1"] or g["t2"])


def segments(
    cues: Sequence[vtt.Cue],
    roster: Mapping[str, Participant],
    platform: str,
    ref: TranscriptRef,
    at: datetime,
) -> list[SegmentReceived]:
    """One segment per non-empty cue, credited to the one roster participant bearing its voice name; never
    to a voice known only by its name (``unknown_voices``): nobody can consent for it."""
    roster = {pid: person for pid, person in roster.items() if not pid.startswith(VOICE_PREFIX)}
    out = []
    for cue in cues:
        # Graph escapes ``&``, ``<`` and ``>`` in cue text and voice names as WebVTT requires; the parser
        # leaves the character references as they are.
        text = html.unescape(cue.text)
        if not text:
            continue
        pid = vtt.by_name(roster, html.unescape(cue.voice)) if cue.voice else None
        sid = f"{ref.transcript_id}:{cue.key}"
        out.append(SegmentReceived(platform, Segment(ref.meeting_id, sid, pid, text, at, cue.start, cue.end)))
    return out


def unknown_voices(
    cues: Sequence[vtt.Cue], roster: Mapping[str, Participant], platform: str, meeting_id: str, at: datetime
) -> list[ParticipantJoined]:
    """Joins for the voices no roster participant bears (the roster missed them: a dial-in, a join the
    gateway never heard of). Their own cues stay unattributed; joined, they are named on the roster, so
    what others say about them is scrubbed like the name of anyone who has not consented. The id is a
    hash of the name: nobody can consent for it, and the same voice is the same participant again."""
    voices: dict[str, str] = {}
    for cue in cues:
        voice = " ".join(html.unescape(cue.voice).split()) if cue.voice else ""
        if voice and not vtt.bears_name(roster, voice):
            voices.setdefault(voice.casefold(), voice)
    return [ParticipantJoined(platform, meeting_id, _voice_id(voice), voice, at) for voice in voices.values()]


VOICE_PREFIX = "teams-voice:"
"""The id of a voice known only by its name."""


def _voice_id(voice: str) -> str:
    digest = hashlib.sha256(voice.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{VOICE_PREFIX}{digest}"


# --- the adapter (I/O) -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Install:
    config: TeamsInstall
    client_state: bytes
    tokens: oauth.TokenSource


class Teams:
    """Matches notifications to installations and fetches their transcripts in the background."""

    def __init__(self, installs: Sequence[TeamsInstall], environ: Mapping[str, str]) -> None:
        self.installs = [
            _Install(
                i,
                env_secret(i.client_state_env, environ).encode(),
                oauth.token_source(i.token_env, i.oauth, environ, label=f"teams:{i.id}"),
            )
            for i in installs
        ]
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: set[tuple[str, str]] = set()
        """(installation, transcript id) already fed in (or being fed): Graph redelivers notifications."""
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS
        """Waits before each new attempt at a transcript whose fetch or feed failed for a reason that may
        pass: Graph does not send a notification again once it was answered 202."""

    def install_for(self, client_state: str | None) -> _Install | None:
        offered = (client_state or "").encode()
        found = None
        for install in self.installs:
            if hmac.compare_digest(offered, install.client_state) and found is None:
                found = install
        return found

    def schedule(self, app: web.Application, install: _Install, ref: TranscriptRef) -> None:
        task = asyncio.create_task(self.feed(app, install, ref))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def idle(self) -> None:
        """Wait for every background fetch that has started (tests and shutdown)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def feed(self, app: web.Application, install: _Install, ref: TranscriptRef) -> None:
        """Fetch and feed one transcript; a failure that may pass (the transcript not ready yet, Graph
        throttling or down, storage unavailable) is tried again after each of ``retry_delays``."""
        key = (install.config.id, ref.transcript_id)
        if key in self.done:
            return
        self.done.add(key)
        fields = {
            "install": install.config.id,
            "meeting_id": ref.meeting_id,
            "transcript_id": ref.transcript_id,
        }
        for delay in (0.0, *self.retry_delays):
            await asyncio.sleep(delay)
            try:
                await self._feed_once(app, install, ref, fields)
                return
            except _Transient as exc:
                log.warning("teams.transcript_retry", reason=str(exc), **fields)
            except StorageError:
                log.error("teams.storage_unavailable", **fields)
            except Exception as exc:  # never a task dying silently; the transcript may come again
                log.error("teams.transcript_failed", error=type(exc).__name__, **fields)
                break
        self.done.discard(key)  # a redelivered notification may try again
        log.error("teams.transcript_given_up", **fields)

    async def _feed_once(
        self, app: web.Application, install: _Install, ref: TranscriptRef, fields: dict[str, str]
    ) -> None:
        text = await self.fetch(install, ref, fields)
        if text is None:
            return
        try:
            cues = vtt.parse(text)
        except vtt.VttError:
            log.warning("teams.transcript_unparsable", **fields)
            return
        platform = install.config.meeting_platform
        gateway = app[GATEWAY]
        # Graph has a transcript ready minutes after the meeting ends, often after the gateway forgot
        # the meeting: its roster is announced again (who spoke; whose names to scrub), and a meeting
        # that had ended is ended again after, so meeting-end destinations get the transcript too
        async with gateway.late_transcript(platform, ref.meeting_id):  # one transcript, however slow
            state, ended = await gateway.bring_back(platform, ref.meeting_id, datetime.now(UTC))
            roster = state.participants if state else {}
            found = segments(cues, roster, platform, ref, datetime.now(UTC))
            unattributed = sum(1 for s in found if s.segment.participant_id is None)
            log.info("teams.transcript", cues=len(found), unattributed=unattributed, **fields)
            for voice in unknown_voices(cues, roster, platform, ref.meeting_id, datetime.now(UTC)):
                await gateway.handle(platform, voice, ask=False)  # nobody to ask: no way to reach them
            for event in found:
                await gateway.handle(platform, event)
            if ended and found:
                await gateway.handle(platform, MeetingEnded(platform, ref.meeting_id, datetime.now(UTC)))

    async def fetch(self, install: _Install, ref: TranscriptRef, fields: dict[str, str]) -> str | None:
        url = ref.content_url(install.config.graph_base)
        token = await self._token(install)
        status, raw = await self._get(url, token)
        if status == 401 and install.tokens.invalidate(token):  # expired or revoked: once more, at once
            status, raw = await self._get(url, await self._token(install))
        if status == 403:
            # Speaker attribution is disabled for the tenant: nothing can be attributed, so
            # nothing at all is fed in (not even as unattributed text).
            log.warning("teams.attribution_unavailable", **fields)
            return None
        if status in TRANSIENT:
            raise _Transient(f"status {status}")
        if status != 200:
            log.warning("teams.fetch_failed", status=status, **fields)
            return None
        if raw is None:
            log.warning("teams.transcript_too_large", **fields)
            return None
        return raw.decode("utf-8", errors="replace")

    async def _token(self, install: _Install) -> str:
        assert self.session is not None, "the cleanup context opens the session"
        try:
            return await install.tokens.token(self.session)
        except (oauth.TokenUnavailable, oauth.TokenRefused) as exc:
            # a refusal too: the identity platform may not know a secret minutes old yet, and what is
            # retried here is a consenting participant's words (logged as a configuration error there)
            raise _Transient(f"token: {exc}") from None

    async def _get(self, url: URL, token: str) -> tuple[int, bytes | None]:
        """The status, and the body of a 200 (None when over ``MAX_TRANSCRIPT_BYTES``)."""
        assert self.session is not None, "the cleanup context opens the session"
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/vtt"}
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    return resp.status, None
                return 200, await read_capped(resp, MAX_TRANSCRIPT_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Transient(type(exc).__name__) from None


RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0)
"""Seconds before each new attempt at a transcript (about 45 minutes in all)."""
TRANSIENT = frozenset({404, 408, 429, 500, 502, 503, 504})
"""Graph statuses a later attempt may not get: 404 too, since a transcript is announced before its content
can always be read. 401 after a fresh token (the app lacks the permission) and 403 (attribution off) are
final; so is 401 to a static ``token_env`` token, which only a restart changes."""


class _Transient(Exception):
    """A fetch that failed for a reason that may pass; the message is a status or class name only."""


TEAMS = web.AppKey("teams", Teams)


async def notifications(request: web.Request) -> web.Response:
    token = request.query.get("validationToken")
    if token is not None:
        if not 0 < len(token) <= MAX_TOKEN:
            raise Problem(
                400, "invalid-validation-token", "Invalid validationToken", detail="validationToken"
            )
        resp = web.Response(text=token, content_type="text/plain")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp
    body = await request.read()
    batch = parse_notifications(body)
    teams = request.app[TEAMS]
    matched = [(teams.install_for(n.clientState), n) for n in batch.value]
    foreign = sum(1 for install, _ in matched if install is None)
    if foreign:
        # each notification carries its own proof: one that matches no installation (a guess, another
        # subscription on this URL) is discarded, as Graph advises, and the authentic ones are still applied
        log.warning("teams.client_state_mismatch", notifications=len(batch.value), discarded=foreign)
    if foreign == len(matched):
        raise Problem(401, "unauthenticated", "Missing or invalid credentials", detail="clientState")
    for install, note in matched:
        ref = transcript_ref(note.resource)
        if install is None or ref is None or note.changeType not in (None, "created"):
            log.info("teams.notification_ignored", change=note.changeType)
            continue
        teams.schedule(request.app, install, ref)
    return web.Response(status=202)


def _lifecycle(teams: Teams) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            teams.session = session
            yield
            for task in list(teams.tasks):
                task.cancel()
            await teams.idle()
            for install in teams.installs:
                await install.tokens.aclose()

    return ctx


def setup(
    app: web.Application, installs: Sequence[TeamsInstall], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Add the Graph notification route; all installations share it (``clientState`` tells them apart)."""
    teams = app[TEAMS] = Teams(installs, environ)
    app.cleanup_ctx.append(_lifecycle(teams))
    app.router.add_post(PATH, notifications)
