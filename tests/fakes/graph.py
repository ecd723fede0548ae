"""A fake Microsoft Graph: serves meeting transcripts as ``text/vtt`` and posts change notifications.

It is a real aiohttp server on 127.0.0.1 that answers
``GET /v1.0/users/{u}/onlineMeetings/{m}/transcripts/{t}/content?$format=text/vtt`` (and the
``communications/onlineMeetings`` form) for the bearer token it was given (or any of ``tokens``: a set, or a
predicate such as ``FakeOAuth.valid``), 401 for any other token, 404 for an unknown transcript, and 403 for
every transcript when ``attribution_disabled`` is set (what a tenant that turned speaker attribution off
answers). As Graph, it also sends the subscription validation request and
change notifications ``{"value": [...]}`` to a gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from tests.fakes.loopback import serve

TOKEN = "graph-test-token"
USER = "ba321e0d-79ee-478d-8e28-85a19507f456"


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    authorization: str | None


@dataclass
class FakeGraph:
    token: str = TOKEN
    tokens: Collection[str] | Callable[[str], bool] | None = None
    """Valid bearer tokens instead of ``token`` alone (a set, or a predicate asked on every request)."""
    transcripts: dict[tuple[str, str], str] = field(default_factory=dict)
    """(meeting id, transcript id) -> VTT text."""
    attribution_disabled: bool = False
    fail_next: list[int] = field(default_factory=list)
    """Statuses to answer the next content requests with, in order (a transcript not ready: 404; 503...)."""
    requests: list[Request] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1.0"

    async def __aenter__(self) -> Self:
        app = web.Application()
        prefix = "/v1.0/{owner:users/[^/]+|communications}/onlineMeetings/{m}/transcripts/{t}/content"
        app.router.add_get(prefix, self._content)
        self._runner, self._port = await serve(app)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _content(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        self.requests.append(Request(request.path, dict(request.query), auth))
        if self.fail_next:
            return web.json_response({"error": {"code": "Unavailable"}}, status=self.fail_next.pop(0))
        if not self._authorized(auth):
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        if self.attribution_disabled:
            return web.json_response(
                {"error": {"code": "Forbidden", "message": "attribution off"}}, status=403
            )
        vtt = self.transcripts.get((request.match_info["m"], request.match_info["t"]))
        if vtt is None:
            return web.json_response({"error": {"code": "NotFound"}}, status=404)
        return web.Response(text=vtt, content_type="text/vtt")

    def _authorized(self, auth: str | None) -> bool:
        token = auth.removeprefix("Bearer ") if auth and auth.startswith("Bearer ") else None
        if token is None or self.tokens is None:
            return token is not None and token == self.token
        return self.tokens(token) if callable(self.tokens) else token in self.tokens

    # --- Graph as a client of the gateway ---------------------------------------------------------------

    @staticmethod
    def notification(
        meeting: str, transcript: str, client_state: str, *, user: str | None = USER
    ) -> dict[str, Any]:
        """A ``created`` notification for a new transcript (getAllTranscripts subscription)."""
        owner = f"users('{user}')" if user else "communications"
        resource = f"{owner}/onlineMeetings('{meeting}')/transcripts('{transcript}')"
        return {
            "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
            "subscriptionExpirationDateTime": "2026-11-28T11:00:00.0000000Z",
            "changeType": "created",
            "resource": resource,
            "resourceData": {
                "id": transcript,
                "@odata.type": "#Microsoft.Graph.callTranscript",
                "@odata.id": resource,
            },
            "clientState": client_state,
            "tenantId": "cd6cee19-2d76-4ee0-8f47-9ed12ee44331",
        }

    @staticmethod
    async def notify(http: aiohttp.ClientSession, url: str, *notes: dict[str, Any]) -> tuple[int, str]:
        async with http.post(url, json={"value": list(notes)}) as resp:
            return resp.status, await resp.text()

    @staticmethod
    async def validate(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str, str]:
        """What Graph sends when a subscription is created: the token in the query, an empty body."""
        async with http.post(
            url, params={"validationToken": token}, headers={"Content-Type": "text/plain"}
        ) as r:
            return r.status, r.content_type, await r.text()
