"""Zoom recorded transcripts: ``recording.transcript_completed`` → download the VTT → segments for the core.

The webhook carries a short-lived ``download_token``; each ``TRANSCRIPT`` file's ``download_url`` is fetched
with it as a Bearer token, only from the app's configured ``download_base`` (the token never goes elsewhere).
The download runs in a background task so the webhook is answered at once; transient failures (network,
timeouts, 5xx) are retried a few times, refusals (401/403/404) are not. The cues' ``Name: `` prefixes are
matched against the meeting's roster as the core knows it (``vtt.speaker``): a name borne by no participant,
or by several, leaves the cue unattributed, and cues without a prefix are unattributed.

Segment ids are ``{meeting uuid}/vtt/{file}/{cue key}``, ``file`` being Zoom's id of the recording file (a
hash of its download URL when it has none). Every file numbers its cues from 1, and a meeting can have
several (a recording stopped and restarted, a second ``recording.transcript_completed``): without the file
the second file's ids would be the first's, and its segments taken for redeliveries of them. The same file
delivered again keeps its ids, so redeliveries still dedupe.

Speakers the roster does not know. A cue may be labelled with a name no participant bears: the join was
missed, or the speaker renamed themselves (no Zoom webhook tells a rename). That name must still be
scrubbed from what others say, so before the segments each such speaker joins the roster (``unknown_voices``)
under an id hashed from the name (``VOICE_PREFIX``), without a consent request (nobody to send it to). Their
own cues stay unattributed: words are never credited to anyone by a display name alone, and a voice is
never a cue's speaker. Such a label cannot be matched against the roster, so it is recognised by its shape
(``speaker_label``): the text before the first ``": "``, when it reads as a name. The rule leans towards
a name: a false one costs a word scrubbed needlessly, a missed one leaks a name.

The closed-caption file (``file_type: CC``) has no speakers and is ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gateway.events import MeetingEnded, ParticipantJoined, ParticipantRenamed, SegmentReceived
from gateway.instant import Instant
from gateway.meeting import MeetingState
from gateway.model import Participant, Segment
from gateway.platforms import vtt
from gateway.store.base import StorageError
from gateway.web.problems import Problem

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = structlog.get_logger("gateway.platforms.zoom")
MAX_VTT_BYTES = 32 * 1024 * 1024


def _id_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RecordingFile(_Wire):
    file_type: Annotated[str, Field(max_length=64)]
    id: Annotated[str, BeforeValidator(_id_text), Field(max_length=256)] | None = None
    download_url: Annotated[str, Field(max_length=4096)] | None = None
    status: str | None = None
    recording_start: Instant | None = None


class RecordingObject(_Wire):
    uuid: Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=256)]
    start_time: Instant | None = None
    recording_files: Annotated[list[RecordingFile], Field(max_length=1000)] = []


class CompletedPayload(_Wire):
    object: RecordingObject
    download_token: Annotated[str, Field(min_length=1, max_length=8192)] | None = None


@dataclass(frozen=True, slots=True)
class TranscriptFile:
    url: str
    recording_start: datetime | None
    file_id: str
    """Zoom's id of the file, or ``u`` and a hash of ``url`` when it has none: its part of segment ids."""


@dataclass(frozen=True, slots=True)
class TranscriptJob:
    meeting_id: str
    files: tuple[TranscriptFile, ...]
    token: str = field(repr=False)
    started_at: datetime


def parse_completed(payload: dict[str, Any], at: datetime, token: str | None) -> TranscriptJob:
    """The downloads a ``recording.transcript_completed`` asks for (``token``: the envelope's one)."""
    parsed = CompletedPayload.model_validate(payload)
    token = token or parsed.download_token
    if not token:
        raise Problem(400, "invalid-event", "Invalid event", detail="download_token: required")
    obj = parsed.object
    files = tuple(
        TranscriptFile(f.download_url, f.recording_start or obj.start_time, f.id or _url_id(f.download_url))
        for f in obj.recording_files
        if f.file_type == "TRANSCRIPT" and f.download_url and f.status in (None, "completed")
    )
    return TranscriptJob(obj.uuid, files, token, obj.start_time or at)


def one_per_person(state: MeetingState, now: datetime) -> dict[str, Participant]:
    """The roster to attribute cues against, with someone who rejoined counted once. Zoom gives a
    rejoiner a new id; both ids bear the name, which would leave every cue of theirs unattributed (lost).
    Ids are one person when they share an e-mail address and every choice (each purpose's consent and
    its notice version): their cues are then credited to the latest id, which decides them as either
    would. Otherwise (no address, other choices: perhaps another person, perhaps a changed mind) the
    name stays ambiguous and the cues unattributed."""
    roster = dict(state.participants)
    by_address: dict[str, list[Participant]] = {}
    for person in roster.values():
        if person.email and not person.id.startswith(VOICE_PREFIX):
            by_address.setdefault(person.email.lower(), []).append(person)
    for people in by_address.values():
        if len(people) < 2 or len({_choices(state, p.id, now) for p in people}) != 1:
            continue
        *earlier, latest = sorted(people, key=lambda p: p.ordinal)
        names = tuple(dict.fromkeys(n for p in earlier for n in p.names if n not in latest.names))
        for person in earlier:
            del roster[person.id]
        roster[latest.id] = replace(latest, former_names=(*latest.former_names, *names))
    return roster


def _choices(state: MeetingState, participant_id: str, now: datetime) -> frozenset[tuple[str, str, str]]:
    """Each purpose the participant has a choice for: (purpose, state now, notice versions)."""
    return frozenset(
        (purpose, entry.at(now).value, entry.notice_version or "")
        for purpose in state.purposes_of(participant_id)
        for entry in (state.consent(participant_id, purpose),)
    )


def _url_id(url: str) -> str:
    return "u" + hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def allowed(url: str, base: str) -> bool:
    """Whether ``url`` is on ``base``'s scheme and host (or a subdomain of it) and port."""
    try:
        got, want = urlsplit(url), urlsplit(base)
        host, port, want_port = got.hostname or "", got.port, want.port
    except ValueError:
        return False
    base_host = want.hostname or ""
    same_host = host == base_host or host.endswith("." + base_host)
    return got.scheme == want.scheme and same_host and port == want_port and not got.username


class DownloadError(Exception):
    """A transcript that could not be fetched; the message names the reason, never content."""


class Fetcher:
    """Downloads transcripts with the download token, retrying transient failures."""

    def __init__(self, session: aiohttp.ClientSession, base: str, retry_seconds: Sequence[float]) -> None:
        self.session = session
        self.base = base
        self.retry_seconds = tuple(retry_seconds)

    async def fetch(self, url: str, token: str) -> str:
        if not allowed(url, self.base):
            raise DownloadError("download_url outside the app's download_base")
        for delay in (*self.retry_seconds, None):
            try:
                return await self._once(url, token)
            except (aiohttp.ClientError, TimeoutError, _Transient) as exc:
                if delay is None:
                    raise DownloadError(f"gave up: {type(exc).__name__}") from None
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _once(self, url: str, token: str) -> str:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/vtt"}
        async with self.session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status >= 500 or resp.status == 429:
                raise _Transient()
            if resp.status != 200:
                raise DownloadError(f"status {resp.status}")
            raw = await resp.content.read(MAX_VTT_BYTES + 1)
        if len(raw) > MAX_VTT_BYTES:
            raise DownloadError("transcript too large")
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DownloadError("transcript is not UTF-8") from None


class _Transient(Exception):
    pass


def segments(
    meeting_id: str,
    file: TranscriptFile,
    cues: Sequence[vtt.Cue],
    roster: dict[str, Participant],
    started_at: datetime,
    platform: str,
) -> list[SegmentReceived]:
    """The cues of one transcript file as segments, attributed by ``Name: `` prefix against ``roster``
    (``vtt.speaker``); never to a voice known only by its name (``unknown_voices``): nobody can consent
    for it."""
    roster = {pid: person for pid, person in roster.items() if not pid.startswith(VOICE_PREFIX)}
    origin = file.recording_start or started_at
    out = []
    for cue in cues:
        participant_id, text = vtt.speaker(roster, cue)
        if not text:
            continue
        segment = Segment(
            meeting_id=meeting_id,
            segment_id=f"{meeting_id}/vtt/{file.file_id}/{cue.key}",
            participant_id=participant_id,
            text=text,
            at=origin + timedelta(seconds=cue.start),
            start=cue.start,
            end=cue.end,
        )
        out.append(SegmentReceived(platform, segment))
    return out


LABEL_MAX_WORDS = 6
"""The most words a speaker label may have to count as a name: an honorific and a five-part name ("Dr.
María de la Cruz Fernández"); a longer run before a colon is a sentence."""
LABEL_MAX_CHARS = 128
"""The longest speaker label taken for a name."""
VOICE_PREFIX = "zoom-voice:"
"""The id of a speaker known only by the name a transcript labels their cues with."""


def speaker_label(text: str) -> str | None:
    """The speaker name a cue's text begins with when no roster name does: the text before the first
    ``": "``, if it reads as a name: one to ``LABEL_MAX_WORDS`` words, at most ``LABEL_MAX_CHARS``
    characters, at least one letter. Capitals are not required: Zoom's speech recognition capitalises
    sentences anyway, so they would not tell a sentence from a name, while a name typed in lower case would
    leak. A name with a colon ("Gwen Ap Rhys: Ops") gives its first part, the part others say."""
    head, colon, _ = text.partition(": ")
    label = " ".join(head.split())
    words = label.split(" ")
    if not colon or not label or len(words) > LABEL_MAX_WORDS or len(label) > LABEL_MAX_CHARS:
        return None
    return label if any(ch.isalpha() for ch in label) else None


def unknown_voices(
    cues: Sequence[vtt.Cue], roster: Mapping[str, Participant], platform: str, meeting_id: str, at: datetime
) -> list[ParticipantJoined]:
    """Joins for the speaker labels no roster participant bears, on cues no roster name prefixes. Joined,
    they are named on the roster, so what others say about them is scrubbed like the name of anyone who has
    not consented; the id is a hash of the name, so nobody can consent for it, and the same label is the
    same participant again. A cue that names several participants (``vtt.speaker`` finds no one) may give
    a label the roster lacks too ("Ann" of "Ann: Lee" and "Ann: Lee: Ops"): it joins, which only scrubs.
    So may a cue whose name lost markup ("Bob<Ops>" as "Bob"): the label as written joins too."""
    voices: dict[str, str] = {}
    for cue in cues:
        if vtt.speaker(roster, cue)[0] is not None:
            continue
        for label in (speaker_label(cue.written), speaker_label(cue.text)):
            if label and not vtt.bears_name(roster, label):
                voices.setdefault(label.casefold(), label)
    return [ParticipantJoined(platform, meeting_id, _voice_id(v), v, at) for v in voices.values()]


def _voice_id(label: str) -> str:
    digest = hashlib.sha256(label.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{VOICE_PREFIX}{digest}"


class Rosters:
    """Who joined each recent meeting, as the webhooks said (bounded: the oldest meetings are forgotten).

    A recorded transcript often completes long after the meeting ended, when the core may have forgotten the
    meeting's roster; without it no cue could be attributed and, worse, no name could be scrubbed. The joins
    remembered here are announced again before such a transcript's segments."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._joins: OrderedDict[str, dict[str, ParticipantJoined]] = OrderedDict()

    def add(self, event: ParticipantJoined | ParticipantRenamed) -> None:
        """Remember a join, or a participant's newer name or e-mail (the latest of each is announced)."""
        joins = self._joins.pop(event.meeting_id, {})
        joins[event.participant_id] = _latest(joins.get(event.participant_id), event)
        self._joins[event.meeting_id] = joins
        while len(self._joins) > self.capacity:
            self._joins.popitem(last=False)

    def joins(self, meeting_id: str) -> tuple[ParticipantJoined, ...]:
        return tuple(self._joins.get(meeting_id, {}).values())


def _latest(
    known: ParticipantJoined | None, event: ParticipantJoined | ParticipantRenamed
) -> ParticipantJoined:
    """``known`` with what ``event`` tells; an empty name or e-mail (an e-mail-only announcement) keeps
    the known one."""
    if isinstance(event, ParticipantRenamed):
        if known is None:
            return ParticipantJoined(
                event.platform, event.meeting_id, event.participant_id, event.name, event.at
            )
        return replace(known, name=event.name or known.name)
    if known is None:
        return event
    if event.email:
        return replace(event, name=event.name or known.name)
    return replace(
        event, name=event.name or known.name, email=known.email, email_verified=known.email_verified
    )


async def run(
    job: TranscriptJob, fetcher: Fetcher, gateway: Gateway, platform: str, rosters: Rosters
) -> None:
    """Download, parse and apply every transcript file of ``job``; failures are logged, never raised."""
    for file in job.files:
        try:
            text = await fetcher.fetch(file.url, job.token)
            cues = vtt.parse(text)
        except (DownloadError, vtt.VttError) as exc:
            log.warning("zoom.transcript.failed", meeting_id=job.meeting_id, reason=str(exc))
            continue
        try:
            await _apply(job, file, cues, gateway, platform, rosters)
        except StorageError:
            log.error("zoom.transcript.storage_unavailable", meeting_id=job.meeting_id)
            return


async def _apply(
    job: TranscriptJob,
    file: TranscriptFile,
    cues: Sequence[vtt.Cue],
    gateway: Gateway,
    platform: str,
    rosters: Rosters,
) -> None:
    """The segments of one file; a meeting that had ended is ended again afterwards, so destinations that
    receive the transcript at meeting end get the recorded one too."""
    # the gateway's roster (with former names, and joins from before a restart), then any join the
    # webhooks told this process that it lacks
    joins = rosters.joins(job.meeting_id)
    async with gateway.late_transcript(platform, job.meeting_id):  # one transcript, however slow the store
        state, ended = await gateway.bring_back(platform, job.meeting_id, datetime.now(UTC), joins)
        roster = one_per_person(state, datetime.now(UTC)) if state is not None else {}
        voices = unknown_voices(cues, roster, platform, job.meeting_id, datetime.now(UTC))
        for voice in voices:
            await gateway.handle(platform, voice, ask=False)  # known only by a name: nobody to ask
        events = segments(job.meeting_id, file, cues, roster, job.started_at, platform)
        for event in events:
            await gateway.handle(platform, event)
        if ended:
            await gateway.handle(platform, MeetingEnded(platform, job.meeting_id, datetime.now(UTC)))
    attributed = sum(1 for e in events if e.segment.participant_id is not None)
    log.info(
        "zoom.transcript.applied",
        meeting_id=job.meeting_id,
        cues=len(events),
        attributed=attributed,
        unknown_speakers=len(voices),
    )
