"""OpenAI-compatible summariser destination: the consented transcript in, a signed summary out.

Where it sits: for an ``openai_summary`` destination, one dispatcher attempt is two requests. First
``POST {base_url}/chat/completions`` with the policy's model and system prompt and, as the user message, the
transcript the gateway already scrubbed (one ``Speaker: text`` line per segment); then the summary, as
``{"type": "summary", "meeting_id", "summary", "model", "segment_ids"}``, signed with Standard Webhooks and
POSTed to ``summary_url`` under the attempt's idempotency key. Either failure becomes the attempt's outcome
(an HTTP status or an error class name), so the dispatcher's retries, backoff and ``Retry-After`` apply.

A summary whose POST failed is kept per (destination, meeting) and reused by the retry of the same body, so
an unreachable webhook does not buy a new completion every backoff. A different body (a withdrawal removed
parts) replaces it, a final outcome forgets it, and at most ``CACHE_SIZE`` are kept.

No transcript or summary text reaches a log or an error: logs carry ids, statuses and class names.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.delivery.http import CONSENT_CHANGED, Attempt, GatedBody, Still, always, post
from gateway.delivery.items import DestinationConfig
from gateway.delivery.retry import Verdict, classify

COMPLETION_LIMIT = 1024 * 1024
"""Bytes of a chat-completions answer read at most: a summary is small, a bigger answer is a broken peer."""
CACHE_SIZE = 32
"""Summaries kept for the retry of their POST, at most."""
UNUSABLE = 422
"""The HTTP-like status of a body that is no transcript or a completion with no text: retrying won't help."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a summary is made of: the user message and the segments it covers."""

    meeting_id: str
    segment_ids: tuple[str, ...]
    text: str = field(repr=False)


def transcript(body: bytes) -> Transcript | None:
    """The transcript in a delivery body (a ``transcript``, or one ``segment``); None if it is neither."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    segments = doc.get("segments") if doc.get("type") == "transcript" else [doc]
    if doc.get("type") not in ("transcript", "segment") or not isinstance(segments, list) or not segments:
        return None
    if not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in segments):
        return None
    meeting_id = doc.get("meeting_id", segments[0].get("meeting_id"))
    if not isinstance(meeting_id, str):
        return None
    ids = tuple(str(s.get("segment_id", "")) for s in segments)
    return Transcript(meeting_id, ids, "\n".join(_lines(segments)))


def _lines(segments: Sequence[Mapping[str, object]]) -> list[str]:
    """``Speaker: text`` per segment; a speaker without a name sent is ``Speaker N`` by first appearance."""
    numbers: dict[object, int] = {}
    lines = []
    for segment in segments:
        name = segment.get("speaker")
        if not isinstance(name, str) or not name.strip():
            number = numbers.setdefault(segment.get("participant_id"), len(numbers) + 1)
            name = f"Speaker {number}"
        label = " ".join(name.split())
        if segment.get("kind") == "chat":
            label += " (chat)"
        # One line per segment: a newline inside the text would read as another speaker's line.
        lines.append(f"{label}: {' '.join(str(segment['text']).split())}")
    return lines


def completion_request(config: DestinationConfig, text: str) -> bytes:
    """The chat-completions request body: the policy's prompt as system message, the transcript as user."""
    messages = [{"role": "system", "content": config.prompt}, {"role": "user", "content": text}]
    return json.dumps({"model": config.model, "messages": messages}, ensure_ascii=False).encode()


def summary_body(found: Transcript, summary: str, model: str) -> bytes:
    document = {
        "type": "summary",
        "meeting_id": found.meeting_id,
        "summary": summary,
        "model": model,
        "segment_ids": list(found.segment_ids),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    """The part of a chat-completions answer the gateway reads; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class _Summary:
    digest: str
    text: str = field(repr=False)
    model: str


class Summariser:
    """Summarises transcripts for every ``openai_summary`` destination, over the dispatcher's session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._kept: OrderedDict[tuple[str, str], _Summary] = OrderedDict()

    async def send(
        self, config: DestinationConfig, key: str, body: bytes, timestamp: int, still: Still = always
    ) -> Attempt:
        """One attempt; never raises for network trouble (cancellation still propagates). ``still`` is asked
        right before the completion request's first byte (the provider receives the words too) and right
        before the summary POST's: content withdrawn meanwhile does not reach the model, and a summary of
        content withdrawn while the model wrote it is not sent (``CONSENT_CHANGED``), and not kept."""
        found = transcript(body)
        if found is None:
            log.warning("delivery.summary_unusable_body", destination=config.id)
            return Attempt(status=UNUSABLE)
        slot = (config.id, found.meeting_id)
        digest = hashlib.sha256(body).hexdigest()
        summary = self._kept.get(slot)
        if summary is None or summary.digest != digest:
            self._kept.pop(slot, None)  # a summary of other content must not outlive it here
            outcome = await self._complete(config, found, digest, still)
            if isinstance(outcome, Attempt):
                return outcome
            summary = outcome
        target = replace(config, kind="http", url=config.summary_url)
        attempt = await post(
            self._session, target, key, summary_body(found, summary.text, summary.model), timestamp, still
        )
        if attempt.error == CONSENT_CHANGED:  # asked right before the POST's first byte
            self._kept.pop(slot, None)
            return attempt
        self._keep(slot, summary, attempt)
        return attempt

    def forget(self, meeting_id: str) -> None:
        """Drop kept summaries of a meeting (a withdrawal): derived content must not outlive its source."""
        for slot in [slot for slot in self._kept if slot[1] == meeting_id]:
            del self._kept[slot]

    def _keep(self, slot: tuple[str, str], summary: _Summary, attempt: Attempt) -> None:
        if attempt.status is not None and classify(attempt.status) is not Verdict.RETRY:
            self._kept.pop(slot, None)
            return
        self._kept[slot] = summary
        self._kept.move_to_end(slot)
        while len(self._kept) > CACHE_SIZE:
            self._kept.popitem(last=False)

    async def _complete(
        self, config: DestinationConfig, found: Transcript, digest: str, still: Still
    ) -> _Summary | Attempt:
        """Ask the model; the transcript leaves only if ``still`` says yes right before its first byte (the
        model's provider is a recipient of the words too)."""
        url = config.url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        timeout = aiohttp.ClientTimeout(total=config.completion_timeout, sock_connect=config.connect_timeout)
        gated = GatedBody(completion_request(config, found.text), still)
        try:
            async with self._session.post(
                url,
                data=gated,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                raw = await _read_limited(response, COMPLETION_LIMIT)
                if not 200 <= response.status < 300:
                    # The error body may quote the request: only the status is kept.
                    log.info(
                        "delivery.summary_completion_failed", destination=config.id, status=response.status
                    )
                    return Attempt(status=response.status, retry_after=response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if gated.stopped:
                return Attempt(error=CONSENT_CHANGED)
            log.info("delivery.summary_completion_failed", destination=config.id, error=type(exc).__name__)
            return Attempt(error=type(exc).__name__)
        return _summary(config, raw, digest)


def _summary(config: DestinationConfig, raw: bytes | None, digest: str) -> _Summary | Attempt:
    if raw is None:
        log.warning("delivery.summary_completion_invalid", destination=config.id, problem="too_large")
        return Attempt(error="CompletionTooLarge")
    try:
        completion = _Completion.model_validate_json(raw)
    except ValidationError:
        # Possibly a proxy's error page under 200: worth another try, like a network failure.
        log.warning("delivery.summary_completion_invalid", destination=config.id, problem="shape")
        return Attempt(error="InvalidCompletion")
    choice = completion.choices[0]
    text = (choice.message.content or "").strip()
    if not text:
        # A refusal or a content filter: the same transcript would get the same answer.
        reason = choice.finish_reason if choice.finish_reason in FINISH_REASONS else "other"
        log.warning("delivery.summary_empty", destination=config.id, finish_reason=reason)
        return Attempt(status=UNUSABLE)
    return _Summary(digest, text, completion.model or config.model)


FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls", "function_call"})
"""The documented ``finish_reason`` values, the only ones logged: the provider's free text could quote the
transcript ("blocked input: ...")."""


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds ``limit`` bytes (the rest is left unread)."""
    received = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        received += chunk
        if len(received) > limit:
            return None
    return bytes(received)
