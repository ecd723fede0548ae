"""Transports: how one delivery attempt reaches a destination of any kind.

The dispatcher decides what to send and when (consent check, order, retries); a transport only carries one
attempt and reports its outcome as an ``Attempt``: an HTTP-like status (2xx delivered, 5xx/408/429 retry,
other 4xx final) or the class name of a retryable network failure. ``http`` is one signed POST
(``delivery.http``), ``websocket`` a frame on the destination's long-lived connection
(``delivery.websocket``), ``openai_summary`` a chat completion and a signed summary POST
(``delivery.summariser``). One ``Transports`` per dispatcher owns the WebSocket connections and closes them.
"""

from __future__ import annotations

import random

import aiohttp

from gateway.delivery.http import Attempt, Still, always, post
from gateway.delivery.items import DestinationConfig
from gateway.delivery.summariser import Summariser
from gateway.delivery.websocket import WebSocketLink


class Transports:
    """Owns long-lived connections (websocket clients) for all destinations; one per dispatcher."""

    def __init__(self, session: aiohttp.ClientSession, *, rng: random.Random | None = None) -> None:
        """``rng``: jitter of reconnect backoff (tests pass a seeded one)."""
        self._session = session
        self._rng = rng
        self._links: dict[str, WebSocketLink] = {}
        self._summariser = Summariser(session)
        self._closed = False

    async def send(
        self, config: DestinationConfig, key: str, body: bytes, timestamp: int, still: Still = always
    ) -> Attempt:
        """One attempt to deliver ``body`` under ``key``; never raises for network trouble (cancellation
        propagates). ``still``: asked right before the body's first byte."""
        if config.kind == "websocket":
            if self._closed:
                return Attempt(error="Closed")
            return await self.link(config).send(key, body, timestamp, still)
        if config.kind == "openai_summary":
            return await self._summariser.send(config, key, body, timestamp, still)
        return await post(self._session, config, key, body, timestamp, still)

    def forget(self, meeting_id: str) -> None:
        """Drop what is kept in memory for retries of the meeting's items (call it on a withdrawal purge)."""
        self._summariser.forget(meeting_id)

    def link(self, config: DestinationConfig) -> WebSocketLink:
        """The connection of a websocket destination (created on first use)."""
        link = self._links.get(config.id)
        if link is None:
            link = self._links[config.id] = WebSocketLink(config, rng=self._rng)
        return link

    async def close(self) -> None:
        """Close every connection; the session stays its owner's to close."""
        self._closed = True
        links = list(self._links.values())
        for link in links:
            await link.close()
