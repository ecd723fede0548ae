"""The notifier: hands notices to the platform side, and remembers each participant's latest consent link.

``Gateway.notify`` is a ``Notifier``. Calling it never blocks: the notice is queued, and a worker POSTs it
as JSON signed with Standard Webhooks headers (the gateway's outbound signing secret) to ``notify_url``,
retrying a few times on 5xx, 408, 429 and network errors. Whether or not a callback is configured, the
latest ``consent_request`` per participant is kept, so an integration can fetch the link with
``GET /v1/meetings/{meeting_id}/participants/{participant_id}/consent-link``. Bounded: a full queue drops
the callback (logged; the link stays fetchable) and the oldest links are forgotten beyond ``max_links``.
Notices carry links and gateway text only, so nothing here can log transcript text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import OrderedDict
from datetime import datetime

import aiohttp
import structlog

from gateway import signing
from gateway.consent.ledger import parse_time
from gateway.delivery import retry
from gateway.notify import Notice

log = structlog.get_logger("gateway.notifier")
_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=5)


class Notifier:
    def __init__(
        self,
        url: str | None,
        secret: str,
        *,
        attempts: int = 4,
        base_delay: float = 0.25,
        max_links: int = 100_000,
        queue_size: int = 10_000,
    ) -> None:
        self.url = url
        self._secret = secret
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_links = max_links
        self._links: OrderedDict[tuple[str, str, str], Notice] = OrderedDict()
        """(platform, meeting id, participant id) -> the latest consent request: the same ids on two
        platforms are two people."""
        self._platforms: set[str] = set()
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None
        self._rng = random.Random()  # noqa: S311 -- jitter, not cryptography
        self.delivered = 0
        self.failed = 0

    # --- the Notify callable -----------------------------------------------------------------------

    def __call__(self, notice: Notice) -> None:
        if notice.kind == "consent_request":
            key = (notice.platform, notice.meeting_id, notice.participant_id)
            self._platforms.add(notice.platform)
            self._links[key] = notice
            self._links.move_to_end(key)
            while len(self._links) > self._max_links:
                self._links.popitem(last=False)
        if self.url is None:
            return
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.failed += 1
            log.warning("notice.dropped", reason="queue_full", meeting_id=notice.meeting_id, kind=notice.kind)

    def latest_links(
        self, meeting_id: str, participant_id: str, now: datetime, platform: str | None = None
    ) -> list[Notice]:
        """The participant's latest consent request on ``platform`` (on each platform that has one for
        these ids, if None), unless its link has expired."""
        platforms = sorted(self._platforms) if platform is None else [platform]
        found = (self._links.get((p, meeting_id, participant_id)) for p in platforms)
        return [n for n in found if n is not None and parse_time(str(n.data["expires_at"])) > now]

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        if self.url is not None:
            self._worker = asyncio.create_task(self._run())

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every queued notice had its outcome; False if ``timeout`` came first."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    # --- delivery ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                await self._deliver(notice)
            finally:
                self._queue.task_done()

    async def _deliver(self, notice: Notice) -> None:
        msg_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "type": notice.kind,
                "platform": notice.platform,
                "meeting_id": notice.meeting_id,
                "participant_id": notice.participant_id,
                "data": dict(notice.data),
            }
        ).encode()
        for attempt in range(1, self._attempts + 1):
            status = await self._post(msg_id, body)
            verdict = retry.Verdict.RETRY if status is None else retry.classify(status)
            if verdict is not retry.Verdict.RETRY or attempt == self._attempts:
                break
            await asyncio.sleep(retry.backoff(attempt, self._base_delay, 5.0, self._rng))
        if verdict is retry.Verdict.DELIVERED:
            self.delivered += 1
            return
        self.failed += 1
        log.warning("notice.undelivered", meeting_id=notice.meeting_id, kind=notice.kind, status=status)

    async def _post(self, msg_id: str, body: bytes) -> int | None:
        assert self._session is not None and self.url is not None, "started with a URL"
        headers = {
            **signing.headers(self._secret, msg_id, int(time.time()), body),
            "Content-Type": "application/json",
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, timeout=_TIMEOUT, allow_redirects=False
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("notice.attempt_failed", error=type(exc).__name__)
            return None
