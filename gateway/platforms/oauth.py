"""Bearer tokens for the platform APIs the pullers read (Graph for Teams, the Meet REST API).

A ``TokenSource`` gives the bearer token to send, and is told when the API refused it (``invalidate``).
Two kinds exist. ``StaticToken``: the ``token_env`` value read at start, which the operator must replace
before it expires. ``OAuthToken``: an OAuth 2.0 client (RFC 6749) that gets access tokens from a token
endpoint, with grant ``client_credentials`` (section 4.4: Microsoft Graph's app-only access) or
``refresh_token`` (section 6: Google), sending the client credentials in the form body.

An ``OAuthToken`` caches its token and fetches the next one ahead of expiry (``Issued.due``), one request
at a time however many callers ask (the others await it). A caller whose request the API answered 401
invalidates the token, so the next call fetches a new one (unless another caller did already). A token
endpoint that cannot be reached, times out or answers 408, 429 or 5xx raises ``TokenUnavailable``, which
callers retry like any failure that may pass; one that refuses the client (400, 401: a wrong or expired
secret, a revoked refresh token) or answers something unusable raises ``TokenRefused`` and is logged as a
configuration error. While the cached token has not expired yet, a failed early refresh still returns it.

Logs carry statuses, class names and field names only: never a token, a secret or a response body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Protocol

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.platforms.capped import read_capped
from gateway.platforms.config import OAuthClient, env_secret

log = structlog.get_logger("gateway.platforms.oauth")

TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=5)
"""A token request's limits: a token endpoint that takes longer is unavailable, and the fetch is retried."""
REFRESH_AHEAD = 300.0
"""Seconds before expiry at which a token is replaced; less for a short-lived one (``Issued.due``)."""
DEFAULT_LIFETIME = 3600
"""Seconds a token is taken to live when the response has no ``expires_in`` (RFC 6749 makes it optional;
Microsoft and Google send it). Too long is safe: the API's 401 invalidates the token."""
MAX_RESPONSE = 64 * 1024
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


class TokenUnavailable(Exception):
    """No token now, for a reason that may pass (network, timeout, 408, 429, 5xx); the message is a status
    or a class name only."""


class TokenRefused(Exception):
    """The token endpoint refused the client or answered something unusable: a configuration error (a wrong
    or expired client secret, a revoked refresh token, a wrong ``token_url``); the message has no content."""


class TokenSource(Protocol):
    async def token(self, session: aiohttp.ClientSession) -> str:
        """The bearer token to send now (raises ``TokenUnavailable`` or ``TokenRefused``)."""
        ...

    def invalidate(self, token: str) -> bool:
        """The API answered 401 to ``token``; True if the next ``token()`` may give another one."""
        ...

    async def aclose(self) -> None:
        """Stop a token request in flight (shutdown, before the session closes)."""
        ...


class StaticToken:
    """A token read from the environment at start: invalidating it changes nothing."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "StaticToken(<withheld>)"

    async def token(self, session: aiohttp.ClientSession) -> str:
        return self._value

    def invalidate(self, token: str) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class TokenResponse(BaseModel):
    """A successful token response (RFC 6749 section 5.1); other fields (``scope``, ``ext_expires_in``,
    ``id_token``) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    # RFC 6750's b64token: nothing that could break out of the Authorization header
    access_token: Annotated[str, Field(min_length=1, max_length=16384, pattern=r"^[A-Za-z0-9._~+/-]+=*$")]
    token_type: str
    expires_in: Annotated[int, Field(gt=0, le=10**7)] | None = None
    refresh_token: Annotated[str, Field(min_length=1, max_length=16384)] | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.casefold() != "bearer":  # case-insensitive (RFC 6749 section 5.1)
            raise ValueError("only Bearer tokens are supported")
        return value


@dataclass(frozen=True, slots=True)
class Issued:
    """A cached access token, and when (on the monotonic clock) it was requested and expires."""

    value: str
    at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"Issued(<withheld>, at={self.at}, expires_at={self.expires_at})"

    def due(self, now: float) -> bool:
        """Time to fetch the next one: less than ``REFRESH_AHEAD`` or a tenth of the lifetime is left,
        whichever is shorter, so a short-lived token is not fetched again on every call."""
        return now >= self.expires_at - min(REFRESH_AHEAD, (self.expires_at - self.at) / 10)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


class OAuthToken:
    """Access tokens from an OAuth 2.0 token endpoint, cached and refreshed ahead of expiry."""

    def __init__(
        self,
        client: OAuthClient,
        secret: str,
        refresh_token: str | None,
        *,
        label: str,
        clock: Callable[[], float] = time.monotonic,
        timeout: aiohttp.ClientTimeout = TIMEOUT,
    ) -> None:
        self.client, self.label = client, label
        self._secret, self._refresh_token = secret, refresh_token
        self._clock, self._timeout = clock, timeout
        self._cached: Issued | None = None
        self._pending: asyncio.Task[Issued] | None = None

    def __repr__(self) -> str:
        return f"OAuthToken({self.label!r}, {self.client.token_url!r})"

    async def token(self, session: aiohttp.ClientSession) -> str:
        cached = self._cached
        if cached is not None and not cached.due(self._clock()):
            return cached.value
        if self._pending is None:
            self._pending = asyncio.create_task(self._fetch(session))
            self._pending.add_done_callback(self._settled)
        try:
            # shielded: a caller given up on does not stop the request the others await
            return (await asyncio.shield(self._pending)).value
        except (TokenUnavailable, TokenRefused) as exc:
            if cached is None or cached is not self._cached or cached.expired(self._clock()):
                raise
            log.warning("oauth.early_refresh_failed", source=self.label, error=type(exc).__name__)
            return cached.value

    def invalidate(self, token: str) -> bool:
        if self._cached is not None and self._cached.value == token:
            self._cached = None
            log.info("oauth.token_invalidated", source=self.label)
        return True

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)

    def _settled(self, task: asyncio.Task[Issued]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled():
            task.exception()  # retrieved, so an outcome nobody awaited any more is not reported as lost

    async def _fetch(self, session: aiohttp.ClientSession) -> Issued:
        at = self._clock()  # the lifetime counts from the request, not the answer
        issued = await self._request(session)
        self._cached = Issued(issued.access_token, at, at + (issued.expires_in or DEFAULT_LIFETIME))
        if issued.refresh_token is not None and issued.refresh_token != self._refresh_token:
            # RFC 6749 section 6: a new refresh token replaces the old one (kept in memory only)
            self._refresh_token = issued.refresh_token
            log.warning("oauth.refresh_token_rotated", source=self.label)
        log.info("oauth.token_issued", source=self.label, expires_in=issued.expires_in)
        return self._cached

    async def _request(self, session: aiohttp.ClientSession) -> TokenResponse:
        where = {"source": self.label}
        try:
            async with session.post(
                self.client.token_url,
                data=self._form(),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await read_capped(resp, MAX_RESPONSE) if status == 200 else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("oauth.token_unavailable", error=type(exc).__name__, **where)
            raise TokenUnavailable(type(exc).__name__) from None
        if status in TRANSIENT:
            log.warning("oauth.token_unavailable", status=status, **where)
            raise TokenUnavailable(f"token endpoint status {status}")
        if status != 200:
            log.error("oauth.token_refused", status=status, hint="check the oauth configuration", **where)
            raise TokenRefused(f"token endpoint status {status}")
        return _parsed(raw, where)

    def _form(self) -> dict[str, str]:
        form = {"grant_type": self.client.grant, "client_id": self.client.client_id}
        if self._refresh_token is not None:
            form["refresh_token"] = self._refresh_token
        form["client_secret"] = self._secret
        if self.client.scope is not None:
            form["scope"] = self.client.scope
        return form


def _parsed(raw: bytes | None, where: Mapping[str, str]) -> TokenResponse:
    if raw is None:
        log.error("oauth.invalid_response", reason="too large", **where)
        raise TokenRefused("token response too large")
    try:
        return TokenResponse.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):  # a proxy's error page: may pass
            log.warning("oauth.token_unavailable", reason="not JSON", **where)
            raise TokenUnavailable("token response not JSON") from None
        invalid = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        log.error("oauth.invalid_response", fields=invalid, **where)
        raise TokenRefused("invalid token response") from None


def token_source(
    token_env: str | None, client: OAuthClient | None, environ: Mapping[str, str], *, label: str
) -> TokenSource:
    """The source an installation configures: its ``oauth`` client, else its static ``token_env``
    (secrets read now; an unset variable raises ``PlatformsConfigError`` naming it)."""
    if client is None:
        assert token_env is not None, "the configuration has exactly one of token_env and oauth"
        return StaticToken(env_secret(token_env, environ))
    refresh = env_secret(client.refresh_token_env, environ) if client.refresh_token_env else None
    return OAuthToken(client, env_secret(client.client_secret_env, environ), refresh, label=label)
