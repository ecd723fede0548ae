"""What the delivery stage moves: items of allowed content, destination settings and delivery results.

The transform stage hands the dispatcher ``Item``s whose ``Part``s the decision core allowed and scrubbed.
An item is the unit of one HTTP request and of idempotency; a part is one segment of one participant, the unit
of withdrawal: purging a participant removes their parts and keeps everyone else's. A ``Result`` reports the
outcome with counts and timings only, never content.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.model import DestinationId


@dataclass(frozen=True, slots=True)
class Part:
    """One segment's forwardable content: ``payload`` is JSON-able and already scrubbed."""

    meeting_id: str
    participant_id: str
    segment_id: str
    payload: Mapping[str, object] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Item:
    """One request to one destination: a single segment, or a transcript batch of segments. A ``batch`` is
    made by the dispatcher alone, of queued ``segment`` items of a ``batched`` destination (each part's
    payload carries its own item's key); it is never stored."""

    destination: DestinationId
    idempotency_key: str
    meeting_id: str
    kind: Literal["segment", "transcript", "erasure", "batched", "batch", "held"]
    parts: tuple[Part, ...]
    expires_at: float | None = None
    """Wall time after which the item is dropped (``expired``); None: submit time + destination retention."""
    written: tuple[tuple[str, str], ...] = ()
    """``(participant id, segment id)`` of the parts the item was stored with, when some of those are gone
    (withdrawn before a restart read it back): its keys are derived against them. Empty: ``parts``."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"item {self.idempotency_key} has no parts")
        if self.kind in ("segment", "erasure") and len(self.parts) != 1:
            raise ValueError(f"segment item {self.idempotency_key} has {len(self.parts)} parts, expected 1")
        if any(part.meeting_id != self.meeting_id for part in self.parts):
            raise ValueError(f"item {self.idempotency_key} mixes parts of other meetings")


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """An AI service endpoint. Timeouts are per request; backoff values in seconds."""

    id: DestinationId
    url: str = field(repr=False)
    secret: str = field(repr=False)
    connect_timeout: float = 2.0
    total_timeout: float = 10.0
    max_attempts: int | None = None
    """None: retry until ``retention_seconds`` (consented content is not given up while it may still go)."""
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    purposes: tuple[str, ...] = ()
    """The destination's purposes: a part goes only while its speaker's consent covers all of them."""
    retention_seconds: float = 86_400.0
    """How long an undelivered item is kept; after it, the item is dropped with reason ``expired``."""
    breaker_failures: int = 5
    """Consecutive failed attempts (any lane) after which the destination's circuit opens."""
    breaker_cooldown: float = 5.0
    """Seconds an open circuit waits before letting one probe through."""
    erasure_url: str | None = field(default=None, repr=False)
    """Where deletion requests go (signed POST) after a withdrawal; None: the destination declares none."""
    kind: Literal["http", "websocket", "openai_summary"] = "http"
    """How ``url`` is reached: a signed POST (``http``), frames on one WebSocket (``websocket``), or an
    OpenAI-compatible API root whose summary is POSTed to ``summary_url`` (``openai_summary``)."""
    window: int = 64
    """websocket: frames sent and not yet acknowledged, at most; a further send waits (bounded memory)."""
    model: str = ""
    """openai_summary: the model named in each chat-completions request."""
    prompt: str = field(default="", repr=False)
    """openai_summary: the system prompt."""
    api_key: str = field(default="", repr=False)
    """openai_summary: sent as ``Authorization: Bearer`` (none sent when empty)."""
    summary_url: str = field(default="", repr=False)
    """openai_summary: where the summary is POSTed, signed like any delivery."""
    completion_timeout: float = 120.0
    """openai_summary: seconds one chat-completions request may take in total (models are slow)."""
    batch_max: int | None = None
    """``batched`` delivery: queued segments go several to a request, at most this many (None: each item
    is a request of its own)."""
    batch_seconds: float = 0.0
    """``batched`` delivery: how long the oldest queued segment waits for others before its request goes."""

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"destination {self.id}: max_attempts must be >= 1, got {self.max_attempts}")
        for name in (
            "connect_timeout",
            "total_timeout",
            "backoff_max",
            "retention_seconds",
            "breaker_cooldown",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"destination {self.id}: {name} must be > 0, got {getattr(self, name)}")
        if self.breaker_failures < 1:
            raise ValueError(
                f"destination {self.id}: breaker_failures must be >= 1, got {self.breaker_failures}"
            )
        if self.batch_max is not None and self.batch_max < 1:
            raise ValueError(f"destination {self.id}: batch_max must be >= 1, got {self.batch_max}")
        if self.batch_seconds < 0:
            raise ValueError(f"destination {self.id}: batch_seconds must be >= 0, got {self.batch_seconds}")
        if self.backoff_base < 0:
            raise ValueError(f"destination {self.id}: backoff_base must be >= 0, got {self.backoff_base}")
        self._check_kind()

    def _check_kind(self) -> None:
        # Only the scheme: a URL's text may embed credentials, so it is never echoed.
        if self.kind == "websocket" and not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"destination {self.id}: a websocket url must start with ws:// or wss://")
        if self.window < 1:
            raise ValueError(f"destination {self.id}: window must be >= 1, got {self.window}")
        if self.kind != "openai_summary":
            return
        if not (self.model and self.prompt and self.summary_url):
            raise ValueError(f"destination {self.id}: openai_summary needs model, prompt and summary_url")
        if self.completion_timeout <= 0:
            raise ValueError(f"destination {self.id}: completion_timeout must be > 0")


class Status(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up: rejected by the destination or retries exhausted."""
    DROPPED = "dropped"
    """Not sent on purpose: every part was withdrawn, or the dispatcher shut down."""


@dataclass(frozen=True, slots=True)
class Result:
    """How one item ended. ``idempotency_key`` is the key last sent (None if nothing was sent)."""

    status: Status
    reason: str | None
    attempts: int
    latency: float
    """Seconds from submit to this result."""
    http_status: int | None = None
    idempotency_key: str | None = None
    parts_removed: int = 0


def body(item: Item, parts: tuple[Part, ...]) -> bytes:
    """The JSON request body for ``item`` carrying only ``parts`` (those still allowed)."""
    document: dict[str, object]
    if item.kind == "segment":
        document = {"type": "segment", **parts[0].payload}
    elif item.kind == "erasure":
        document = {"type": "erasure", **parts[0].payload}
    else:
        segments = [dict(part.payload) for part in parts]
        kind = "batch" if item.kind == "batch" else "transcript"
        document = {"type": kind, "meeting_id": item.meeting_id, "segments": segments}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def idempotency_key(item: Item, parts: tuple[Part, ...]) -> str:
    """The key for sending ``parts`` of ``item``: the item's own key unless parts were removed.

    A destination that honours idempotency keys keeps the first body it saw under a key (or refuses a
    different body under it). Once a withdrawal removed parts, the remaining content gets a key of its own,
    derived deterministically from the item's key and what remains, so that every retry of the same content
    shares it, before a restart and after (``Item.written``: what the item had before it was read back).
    """
    if parts == item.parts and not item.written:
        return item.idempotency_key
    names = _names((part.participant_id, part.segment_id) for part in parts)
    whole = (
        _names(item.written) if item.written else _names((p.participant_id, p.segment_id) for p in item.parts)
    )
    if names == whole:
        return item.idempotency_key  # the same segments, a name in them scrubbed since: the same item
    return f"{item.idempotency_key}.{hashlib.sha256(names.encode()).hexdigest()[:16]}"


def _names(ids: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"{participant}\t{segment}" for participant, segment in ids)
