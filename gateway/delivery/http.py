"""One HTTP delivery attempt: POST a signed JSON body to a destination and report what happened.

The only module of the delivery stage that touches the network. It signs with Standard Webhooks headers
(``webhook-id`` is the idempotency key, also sent as ``Idempotency-Key``), applies explicit connect and total
timeouts, and turns every outcome, including connection errors and timeouts, into an ``Attempt`` value for the
dispatcher's retry decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload

from gateway import signing
from gateway.delivery.items import DestinationConfig


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one request: an HTTP status, or the class name of the error that prevented one."""

    status: int | None = None
    retry_after: str | None = None
    error: str | None = None


Still = Callable[[], bool]
"""Whether the body of an attempt may still go: asked by every transport right before the first byte of the
body, with no await between, since each waits after the dispatcher's consent check (a connect, a free pooled
connection, the loop turn aiohttp writes the body in, a WebSocket dial, a chat completion before the summary
POST). False: a withdrawal took a part of it meanwhile."""
CONSENT_CHANGED = "ConsentChanged"
"""The error of an attempt a transport stopped because ``Still`` said no: nothing was sent (the dispatcher
builds the body again from what is still allowed, at once)."""


def always() -> bool:
    """The ``Still`` of a body whose consent is not asked (an erasure request)."""
    return True


_TIMEOUTS: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
"""Made once per pair of values (ClientTimeout is immutable): every attempt asks for one."""


def timeouts(config: DestinationConfig) -> aiohttp.ClientTimeout:
    # sock_connect rather than connect: "connect" also counts waiting for a free pooled connection,
    # which under load is not the destination's fault. total bounds the whole request either way.
    key = (config.total_timeout, config.connect_timeout)
    made = _TIMEOUTS.get(key)
    if made is None:
        made = _TIMEOUTS[key] = aiohttp.ClientTimeout(total=key[0], sock_connect=key[1])
    return made


class _Stopped(Exception):
    """``Still`` said no as the body was about to be written."""


class GatedBody(BytesPayload):
    """A request body that asks ``still`` as aiohttp is about to write it, after the connection is made and
    with the request's headers still buffered, and writes nothing at all if it says no. aiohttp writes a
    body in a task of its own, a loop turn after the request starts (and after a connect, or a wait for a
    free pooled connection), so a withdrawal acknowledged in between must be asked about there. A retry on
    a fresh connection (aiohttp's, after a dropped pooled one) asks again."""

    def __init__(self, body: bytes, still: Still) -> None:
        super().__init__(body, content_type="application/json")
        self._still = still
        self.stopped = False

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        if not self._still():
            self.stopped = True
            raise _Stopped  # aiohttp closes the connection: its buffered headers never leave either
        await super().write_with_length(writer, content_length)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)


async def post(
    session: aiohttp.ClientSession,
    config: DestinationConfig,
    key: str,
    body: bytes,
    timestamp: int,
    still: Still = always,
) -> Attempt:
    """Send ``body`` once; never raises for network trouble (cancellation still propagates). ``still`` is
    asked right before the body's first byte; if it says no, nothing of the request is sent and the attempt
    is ``CONSENT_CHANGED``."""
    sent_headers = {
        **signing.headers(config.secret, key, timestamp, body),
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }
    gated = GatedBody(body, still)
    try:
        async with session.post(
            config.url, data=gated, headers=sent_headers, timeout=timeouts(config), allow_redirects=False
        ) as response:
            # Read the (discarded) answer: an unread body makes aiohttp close the connection instead of
            # returning it to the pool, and a TCP connect per segment cost 3x the CPU of the rest.
            await response.read()
            return Attempt(status=response.status, retry_after=response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        if gated.stopped:
            return Attempt(error=CONSENT_CHANGED)
        # Only the error's type: its message may carry the URL, which can embed credentials.
        return Attempt(error=type(exc).__name__)
