"""A fake AI service: the destination end of delivery, as a real aiohttp server on 127.0.0.1.

It verifies Standard Webhooks signatures with the ``standardwebhooks`` reference package (not our own
``gateway.signing``, so that a bug shared by our signer and verifier cannot pass unnoticed), records every
request it receives, and can be told to fail, hang or reject the next requests.

Segment payloads are expected to carry ``participant_id`` and ``text`` keys (what the tests put in them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.fakes.loopback import serve


@dataclass(frozen=True)
class Received:
    """One request as it arrived (header names lowercased); ``status`` is the fake's answer (None: hung)."""

    key: str | None
    body: Any
    raw: bytes = field(repr=False)
    headers: dict[str, str]
    status: int | None
    seq: int
    """Arrival order, 0-based, across all requests."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def segment_payloads(self) -> list[dict[str, Any]]:
        if not isinstance(self.body, dict):
            return []
        if self.body.get("type") == "segment":
            return [{k: v for k, v in self.body.items() if k != "type"}]
        return list(self.body.get("segments", []))


@dataclass(frozen=True)
class _Plan:
    status: int = 200
    retry_after: str | None = None
    hang: float = 0.0


@dataclass
class FakeAIService:
    secret: str
    received: list[Received] = field(default_factory=list)
    _plans: deque[_Plan] = field(default_factory=deque)
    in_flight: int = 0
    """Requests being held by ``delay_next`` right now."""
    _runner: web.AppRunner | None = None
    _port: int = 0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, self._port = await serve(app)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()  # ends any hang now rather than after its full duration
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/ingest"

    # -- programming failures --------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503, retry_after: float | str | None = None) -> None:
        """Answer the next ``n`` verified requests with ``status`` (and ``Retry-After`` if given)."""
        header = None if retry_after is None else str(retry_after)
        self._plans.extend(_Plan(status, header) for _ in range(n))

    def hang_next(self, n: int, seconds: float) -> None:
        """Hold the next ``n`` verified requests for ``seconds`` without answering (then answer 504)."""
        self._plans.extend(_Plan(504, None, seconds) for _ in range(n))

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the next ``n`` verified requests for ``seconds``, then accept them (200): a request that is
        on the wire for that long and arrives."""
        self._plans.extend(_Plan(200, None, seconds) for _ in range(n))

    def reject_next(self, n: int, status: int = 400) -> None:
        """Answer the next ``n`` verified requests with a final client error."""
        self._plans.extend(_Plan(status) for _ in range(n))

    def recover(self) -> None:
        """Forget the failures planned and not met yet: the next requests are answered normally."""
        self._plans.clear()

    # -- what arrived ----------------------------------------------------------------------------------

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, first per idempotency key."""
        seen: set[str | None] = set()
        unique = []
        for request in self.received:
            if request.ok and request.key not in seen:
                seen.add(request.key)
                unique.append(request)
        return unique

    def segments(self) -> list[dict[str, Any]]:
        """Every segment payload accepted (2xx), counting each idempotency key once."""
        return [payload for request in self.accepted() for payload in request.segment_payloads()]

    def texts_by_participant(self) -> dict[str, list[str]]:
        texts: dict[str, list[str]] = {}
        for payload in self.segments():
            texts.setdefault(str(payload.get("participant_id")), []).append(str(payload.get("text")))
        return texts

    # -- the endpoint ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            body = Webhook(self.secret).verify(raw, headers)
        except (WebhookVerificationError, ValueError):
            self._record(headers, raw, None, 401)
            return web.Response(status=401)
        plan = self._plans.popleft() if self._plans else _Plan()
        if plan.hang and plan.status == 200:  # delayed, then accepted: recorded when answered
            self.in_flight += 1
            await self._hang(plan.hang)
            self.in_flight -= 1
            self._record(headers, raw, body, plan.status)
            return web.Response(status=plan.status)
        if plan.hang:
            self._record(headers, raw, body, None)
            await self._hang(plan.hang)
            return web.Response(status=plan.status)
        self._record(headers, raw, body, plan.status)
        extra = {} if plan.retry_after is None else {"Retry-After": plan.retry_after}
        return web.Response(status=plan.status, headers=extra)

    async def _hang(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _record(self, headers: dict[str, str], raw: bytes, body: Any, status: int | None) -> None:
        key = headers.get("idempotency-key") or headers.get("webhook-id")
        self.received.append(Received(key, body, raw, headers, status, len(self.received)))
