"""A fake OAuth 2.0 token endpoint (RFC 6749): Microsoft identity platform's client credentials, Google's
refresh token.

A real aiohttp server on 127.0.0.1 answering ``POST /token`` (form-encoded). It issues an access token to
its client (``client_id`` and ``client_secret`` in the body) for grant ``client_credentials``, or for grant
``refresh_token`` with its refresh token; a wrong secret is answered 401 ``invalid_client`` and a wrong
refresh token 400 ``invalid_grant``, as the real endpoints do. Each token lives ``expires_in`` seconds by
the response (the fake does not expire them by itself: ``revoke`` does, as a token past its time would be
refused). ``valid(token)`` is what a fake API asks (``FakeGraph(tokens=oauth.valid)``). ``fail_next``
answers the next requests with those statuses; ``delay`` holds each answer back (timeouts); ``respond``
replaces the success body (invalid responses); ``rotate`` issues a new refresh token with each answer.
Requests are recorded without their secrets (``TokenRequest``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from tests.fakes.loopback import serve

CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_SECRET = "fake-client-secret-ZQXSECRET-0123456789"
REFRESH_TOKEN = "1//fake-refresh-token-ZQXREFRESH-0123456789"
ERROR_BODY_MARK = "ZQXBODY"
"""In every error body the fake sends: a log that holds it holds a response body."""


@dataclass(frozen=True)
class TokenRequest:
    """What one token request asked for; secrets are only checked, never kept."""

    grant: str | None
    client_id: str | None
    scope: str | None
    secret_ok: bool
    refresh_token_ok: bool | None
    """For grant ``refresh_token``: whether it was the current one."""


@dataclass
class FakeOAuth:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    refresh_token: str = REFRESH_TOKEN
    expires_in: int | None = 3600
    token_type: str = "Bearer"
    fail_next: list[int] = field(default_factory=list)
    """Statuses to answer the next requests with, in order (503: down; 429: throttled; 400: refused)."""
    delay: float = 0.0
    respond: dict[str, Any] | str | None = None
    """Answer 200 with this instead of a token (a JSON object, or raw text)."""
    rotate: bool = False
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/token"

    def valid(self, token: str) -> bool:
        """Whether an API should accept ``token``: issued here and not revoked."""
        return token in self.issued and token not in self.revoked

    def revoke(self, token: str | None = None) -> str:
        """Revoke ``token`` (the latest issued by default), as its expiry or an administrator would."""
        token = token or self.issued[-1]
        self.revoked.add(token)
        return token

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner, self._port = await serve(app)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant, refresh = form.get("grant_type"), form.get("refresh_token")
        seen = TokenRequest(
            grant=str(grant) if grant is not None else None,
            client_id=str(form["client_id"]) if "client_id" in form else None,
            scope=str(form["scope"]) if "scope" in form else None,
            secret_ok=form.get("client_secret") == self.client_secret,
            refresh_token_ok=None if grant != "refresh_token" else refresh == self.refresh_token,
        )
        self.requests.append(seen)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            return _error(self.fail_next.pop(0), "temporarily_unavailable")
        if seen.client_id != self.client_id or not seen.secret_ok:
            return _error(401, "invalid_client")
        if grant not in ("client_credentials", "refresh_token"):
            return _error(400, "unsupported_grant_type")
        if seen.refresh_token_ok is False:
            return _error(400, "invalid_grant")
        return self._issue()

    def _issue(self) -> web.Response:
        if isinstance(self.respond, str):
            return web.Response(text=self.respond, content_type="text/html")
        if self.respond is not None:
            return web.json_response(self.respond)
        token = f"fake-access-{next(self._serial)}-{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        doc: dict[str, Any] = {"access_token": token, "token_type": self.token_type}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        if self.rotate:
            self.refresh_token = f"1//fake-refresh-{secrets.token_urlsafe(16)}"
            doc["refresh_token"] = self.refresh_token
        return web.json_response(doc, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _error(status: int, code: str) -> web.Response:
    doc = {"error": code, "error_description": f"{ERROR_BODY_MARK}: {code}"}
    return web.json_response(doc, status=status)
