"""Recall.ai real-time events: ``POST /platforms/recall/webhook`` and ``GET /platforms/recall/ws``.

Recall signs every delivery with Standard Webhooks (``webhook-*`` headers, or ``svix-*`` on older accounts),
and signs the WebSocket upgrade request over an empty body. Both are verified on the raw bytes with
``gateway.signing`` before anything is parsed; a delivery id seen before within the timestamp window is a
replay (409). Messages on an accepted socket are trusted as the upgrade was.

Keys. The meeting id is the bot id (what the integration got back when it created the bot, so consent
channels can name it), or the recording id for recordings made without a bot. Recall's participant ids are
numbers scoped to one recording, so the participant key is ``"{recording id}:{participant id}"``.

Events: ``participant_events.join`` / ``leave`` become roster events; ``participant_events.chat_message`` a
chat segment; ``transcript.data`` one utterance (its words joined with single spaces).
``transcript.partial_data`` is acknowledged and ignored: partial results are superseded by the final
``transcript.data`` of the same words, and forwarding both would send words twice. ``speech_on`` /
``speech_off`` only name their participant (below); unknown events are acknowledged and ignored. Bot status
webhooks, if the operator points them here too, start (``bot.in_call_recording``) and end (``bot.done``)
the meeting, which flushes ``meeting_end`` destinations.

Whom a delivery names. An ``update`` (the e-mail arrives there, not on join, often with the name null), a
``leave``, a ``speech_on`` / ``speech_off``, an utterance and a chat message name their participant too. The
join may have been missed, or sent to another endpoint, and a name or e-mail the roster lacks is never
scrubbed from others' words. So what such a delivery tells is announced before its events (``announce``):
someone the roster lacks joins and is asked for consent like any joiner (except a leaver, who is gone: a
leave asks nobody); for someone known, only a new e-mail (a join that keeps the known name) or a new name
(a rename) is told, and nobody is asked again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from aiohttp import WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from gateway import signing
from gateway.events import (
    MeetingEnded,
    MeetingEvent,
    MeetingStarted,
    ParticipantJoined,
    ParticipantLeft,
    SegmentReceived,
)
from gateway.instant import Instant
from gateway.model import ContentKind, Segment
from gateway.platforms.backlog import Backlog
from gateway.platforms.config import PlatformsConfigError, RecallInstall, env_secret
from gateway.platforms.naming import announce
from gateway.platforms.naming import named as _named
from gateway.runtime import Result
from gateway.web.auth import Authenticator
from gateway.web.keys import GATEWAY, MAX_BODY, STORE
from gateway.web.problems import Problem, invalid

log = structlog.get_logger("gateway.platforms.recall")
PLATFORM = "recall"
WEBHOOK_PATH = "/platforms/recall/webhook"
WS_PATH = "/platforms/recall/ws"
RECALL_AUTH = web.AppKey("recall_auth", Authenticator)

Id = Annotated[str, Field(min_length=1, max_length=256)]
Seconds = Annotated[float, Field(ge=0, le=1e7)]
_BOT_EVENTS = frozenset({"bot.in_call_recording", "bot.done"})
"""Bot status webhooks (sent by Svix, signed alike) that start and end a meeting. The end is ``bot.done``,
not ``bot.call_ended``: real-time transcripts may still arrive minutes after the call ends."""
_PARTICIPANT_EVENTS = frozenset(
    f"participant_events.{n}" for n in ("join", "leave", "update", "speech_on", "speech_off", "chat_message")
)


class _Obj(BaseModel):
    # Platforms add fields without notice: unknown ones are ignored here, unlike in the generic API.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Ref(_Obj):
    id: Id


class Stamp(_Obj):
    absolute: Instant | None = None
    relative: Seconds | None = None


class RecallParticipant(_Obj):
    id: Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)] | Id
    name: Annotated[str, Field(max_length=512)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None


class Chat(_Obj):
    text: Annotated[str, Field(max_length=100_000)]
    to: Annotated[str, Field(max_length=256)] | None = None


class ParticipantData(_Obj):
    participant: RecallParticipant
    timestamp: Stamp | None = None
    data: Chat | None = None


class Word(_Obj):
    text: Annotated[str, Field(max_length=10_000)]
    start_timestamp: Stamp | None = None
    end_timestamp: Stamp | None = None


class TranscriptData(_Obj):
    words: Annotated[list[Word], Field(max_length=100_000)]
    participant: RecallParticipant | None = None


class _Envelope(_Obj):
    recording: Ref
    bot: Ref | None = None

    @property
    def meeting_id(self) -> str:
        return self.bot.id if self.bot else self.recording.id

    def key(self, participant: RecallParticipant) -> str:
        return f"{self.recording.id}:{participant.id}"


class ParticipantEnvelope(_Envelope):
    data: ParticipantData


class TranscriptEnvelope(_Envelope):
    data: TranscriptData


class ParticipantMessage(_Obj):
    event: str
    data: ParticipantEnvelope


class BotStatus(_Obj):
    updated_at: Instant | None = None


class BotEnvelope(_Obj):
    bot: Ref
    data: BotStatus | None = None


class BotMessage(_Obj):
    event: str
    data: BotEnvelope


class TranscriptMessage(_Obj):
    event: Literal["transcript.data"]
    data: TranscriptEnvelope


# --- parsing (pure) --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """One delivery: its events, and the participant it names (as a join), for ``announce``."""

    events: list[MeetingEvent] = field(default_factory=list)
    named: ParticipantJoined | None = None
    ask: bool = True
    """Whether ``named``, if the roster lacks them, is asked for consent: not as they leave."""


def parse(body: bytes, now: datetime) -> list[MeetingEvent]:
    """The internal events of one delivery (raises a 400 ``Problem`` naming the field), without what
    ``announce`` would add: that depends on the roster."""
    return read(body, now).events


def read(body: bytes, now: datetime) -> Parsed:
    """One delivery parsed (raises a 400 ``Problem`` naming the field)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise Problem(400, "invalid-event", "Invalid event", detail="event: required string")
    kind = doc["event"]
    try:
        if kind == "transcript.data":
            return _transcript(TranscriptMessage.model_validate(doc).data, now)
        if kind in _PARTICIPANT_EVENTS:
            return _participant(
                kind.removeprefix("participant_events."), ParticipantMessage.model_validate(doc).data, now
            )
        if kind in _BOT_EVENTS:
            return _bot(kind, BotMessage.model_validate(doc).data, now)
    except ValidationError as exc:
        raise invalid(exc) from None
    return Parsed()  # transcript.partial_data and events the gateway does not use


def _participant(kind: str, env: ParticipantEnvelope, now: datetime) -> Parsed:
    data, mid = env.data, env.meeting_id
    who = data.participant
    pid = env.key(who)
    at = (data.timestamp.absolute if data.timestamp else None) or now
    joined = ParticipantJoined(PLATFORM, mid, pid, who.name or "", at, who.email)
    if kind == "join":
        return Parsed([joined])
    if kind == "update":
        return Parsed(named=joined)
    if kind in ("speech_on", "speech_off"):
        return Parsed(named=_named(joined))
    if kind == "leave":
        return Parsed([ParticipantLeft(PLATFORM, mid, pid, at)], _named(joined), ask=False)
    if kind == "chat_message" and data.data is not None:
        stamp = data.timestamp.model_dump_json() if data.timestamp else ""
        sid = "chat-" + _digest(env.recording.id, pid, stamp)
        # "everyone", or "only_bot": a direct message to the bot, which is not meeting content
        private = data.data.to not in (None, "everyone")
        segment = Segment(mid, sid, pid, data.data.text, at, kind=ContentKind.CHAT, private=private)
        return Parsed([SegmentReceived(PLATFORM, segment)], _named(joined))
    return Parsed()


def _bot(kind: str, env: BotEnvelope, now: datetime) -> Parsed:
    at = (env.data.updated_at if env.data else None) or now
    if kind == "bot.in_call_recording":
        return Parsed([MeetingStarted(PLATFORM, env.bot.id, at)])
    return Parsed([MeetingEnded(PLATFORM, env.bot.id, at)])


def _transcript(env: TranscriptEnvelope, now: datetime) -> Parsed:
    words = env.data.words
    if not words:
        return Parsed()
    first, last = words[0].start_timestamp, words[-1].end_timestamp
    start = first.relative if first else None
    end = last.relative if last else None
    who = env.data.participant
    pid = env.key(who) if who is not None else None
    at = (first.absolute if first else None) or now
    # The id is stable across redeliveries, so downstream idempotency keys dedupe them; it carries no text.
    sid = "utt-" + _digest(env.recording.id, pid or "", repr(start), repr(end), str(len(words)))
    text = " ".join(w.text.strip() for w in words if w.text.strip())
    segment = SegmentReceived(PLATFORM, Segment(env.meeting_id, sid, pid, text, at, start, end))
    if who is None or pid is None:
        return Parsed([segment])
    joined = ParticipantJoined(PLATFORM, env.meeting_id, pid, who.name or "", at, who.email)
    return Parsed([segment], _named(joined))


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()


# --- HTTP and WebSocket ----------------------------------------------------------------------------------


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    auth = request.app[RECALL_AUTH]
    caller = await auth.check(request.headers, body)
    try:
        results = await _apply(request.app, read(body, datetime.now(UTC)))
    except BaseException:
        auth.release(caller)  # not accepted: Recall's retry of this delivery is not a replay
        raise
    auth.accepted(caller)
    return web.json_response({"results": [_result_json(r) for r in results]})


async def stream(request: web.Request) -> web.WebSocketResponse:
    """Recall connects here; the upgrade is signed over an empty body. One event per text message."""
    caller = await request.app[RECALL_AUTH].check(request.headers, b"")
    ws = web.WebSocketResponse(max_msg_size=request.app[MAX_BODY], heartbeat=30)
    await ws.prepare(request)
    request.app[RECALL_AUTH].accepted(caller)
    # Recall does not send a message on the socket again: one storage cannot take waits, and so does
    # everything after it, until it can be applied (a "/optout" in the chat is never lost to an outage)
    backlog: Backlog[Parsed] = Backlog(
        functools.partial(_apply_message, request.app), name="recall", keep=_never_given_up
    )
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                log.warning("recall.ws.not_text", kind=msg.type.name)
                continue
            try:
                parsed = read(msg.data.encode(), datetime.now(UTC))
            except Problem as exc:
                log.warning("recall.ws.invalid", detail=exc.detail)
                continue
            await backlog.put(parsed)
        await backlog.drain()
    finally:
        await backlog.close()
    return ws


def _never_given_up(parsed: Parsed) -> bool:
    """A message that names someone (whose name must reach the roster) or holds a chat message (which may
    be a withdrawal) waits however long storage is down; an utterance alone may be given up."""
    speech = all(
        isinstance(event, SegmentReceived) and event.segment.kind is ContentKind.SPEECH
        for event in parsed.events
    )
    return parsed.named is not None or not speech


async def _apply_message(app: web.Application, parsed: Parsed) -> None:
    """One message of the socket; StorageError is raised (the backlog keeps the message), bad input logged."""
    try:
        await _apply(app, parsed)
    except Problem as exc:
        log.warning("recall.ws.invalid", detail=exc.detail)


async def _apply(app: web.Application, parsed: Parsed) -> list[Result]:
    gateway = app[GATEWAY]
    events: list[tuple[MeetingEvent, bool]] = [(event, True) for event in parsed.events]
    if parsed.named is not None:
        # the roster as stored, if this process has not read the meeting back yet (another replica took its
        # joins, or a restart): someone known there is not new here, nor asked again, nor made present
        await gateway.hold_meeting(parsed.named.meeting_id)
        # Read outside the meeting's lock: two deliveries racing for someone new may both ask them, which
        # sends a second link and changes no consent; the roster change itself folds in twice harmlessly.
        told, ask = announce(gateway.meeting(PLATFORM, parsed.named.meeting_id), parsed.named)
        events[:0] = [(told, ask and parsed.ask)] if told is not None else []
    results = []
    for event, ask in events:
        log.info("recall.event", kind=type(event).__name__, meeting_id=event.meeting_id)
        results.append(await gateway.handle(PLATFORM, event, ask=ask))
    return results


def _result_json(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.status}
    if result.reason:
        out["reason"] = result.reason
    return out


def secrets_of(installs: Sequence[RecallInstall], environ: Mapping[str, str]) -> list[str]:
    """Every installation's verification secrets, checked to be ``whsec_`` keys (errors name the variable)."""
    secrets = []
    for install in installs:
        for name in install.webhook_secret_envs:
            value = env_secret(name, environ)
            try:
                signing.decode_secret(value)
            except ValueError as exc:
                raise PlatformsConfigError(f"{name}: {exc}") from None
            secrets.append(value)
    return secrets


def setup(
    app: web.Application,
    installs: Sequence[RecallInstall],
    *,
    environ: Mapping[str, str] = os.environ,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add the Recall.ai routes; all installations share them (any installation's secret verifies)."""
    app[RECALL_AUTH] = Authenticator(
        None, secrets_of(installs, environ), clock, store=app.get(STORE), scope="recall"
    )
    app.router.add_post(WEBHOOK_PATH, webhook)
    app.router.add_get(WS_PATH, stream)
