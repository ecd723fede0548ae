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

from gateway import signing
from gateway.delivery.items import DestinationConfig


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one request: an HTTP status, or the class name of the error that prevented one."""

    status: int | None = None
    retry_after: str | None = None
    error: str | None = None


Still = Callable[[], bool]
"""Whether the body of an attempt may still go: asked by a transport that waits between the dispatcher's
consent check and its first byte (a WebSocket dial, a chat completion before the summary POST), right
before that byte, with no await between. False: a withdrawal took a part of it meanwhile."""
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


async def post(
    session: aiohttp.ClientSession,
    config: DestinationConfig,
    key: str,
    body: bytes,
    timestamp: int,
    still: Still = always,
) -> Attempt:
    """Send ``body`` once; never raises for network trouble (cancellation still propagates). ``still`` is
    not asked: nothing is awaited between the dispatcher's check and this request."""
    sent_headers = {
        **signing.headers(config.secret, key, timestamp, body),
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }
    try:
        async with session.post(
            config.url, data=body, headers=sent_headers, timeout=timeouts(config), allow_redirects=False
        ) as response:
            # Read the (discarded) answer: an unread body makes aiohttp close the connection instead of
            # returning it to the pool, and a TCP connect per segment cost 3x the CPU of the rest.
            await response.read()
            return Attempt(status=response.status, retry_after=response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Only the error's type: its message may carry the URL, which can embed credentials.
        return Attempt(error=type(exc).__name__)
