"""OAuth 2.0 token sources against a fake token endpoint on loopback, and the platforms file's ``oauth``
blocks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.platforms import oauth
from gateway.platforms.config import OAuthClient, PlatformsConfigError, parse_platforms
from tests.fakes.oauth import CLIENT_ID, CLIENT_SECRET, ERROR_BODY_MARK, REFRESH_TOKEN, FakeOAuth

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    server: FakeOAuth
    http: aiohttp.ClientSession
    clock: Clock

    def source(self, grant: str = "client_credentials", **kwargs: Any) -> oauth.OAuthToken:
        refresh = grant == "refresh_token"
        client = OAuthClient(
            token_url=self.server.url,
            grant=grant,  # type: ignore[arg-type]
            client_id=CLIENT_ID,
            client_secret_env="SECRET",
            refresh_token_env="REFRESH" if refresh else None,
            scope=None if refresh else GRAPH_SCOPE,
        )
        secret = kwargs.pop("secret", CLIENT_SECRET)
        return oauth.OAuthToken(
            client, secret, REFRESH_TOKEN if refresh else None, label="test", clock=self.clock, **kwargs
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeOAuth() as server, aiohttp.ClientSession() as http:
        yield World(server, http, Clock())


async def test_client_credentials_token_is_fetched_once_and_cached(world: World) -> None:
    """Grant ``client_credentials`` posts client id, secret and scope; the token is reused while fresh."""
    source = world.source()
    first = await source.token(world.http)
    world.clock.now += 3000
    assert await source.token(world.http) == first
    (request,) = world.server.requests
    assert (request.grant, request.client_id, request.scope, request.secret_ok) == (
        "client_credentials", CLIENT_ID, GRAPH_SCOPE, True,
    )  # fmt: skip
    assert world.server.valid(first)


async def test_refresh_token_grant_sends_the_refresh_token_and_keeps_a_rotated_one(world: World) -> None:
    """Grant ``refresh_token`` posts the refresh token with the client's; one the endpoint replaces is
    used from then on (RFC 6749 section 6)."""
    world.server.rotate = True
    source = world.source("refresh_token")
    await source.token(world.http)
    world.clock.now += 3500
    await source.token(world.http)
    assert [(r.grant, r.refresh_token_ok, r.scope) for r in world.server.requests] == [
        ("refresh_token", True, None), ("refresh_token", True, None),
    ]  # fmt: skip


@pytest.mark.parametrize(("lifetime", "kept_until"), [(3600, 3300), (5399, 5099), (600, 540), (60, 54)])
async def test_a_token_is_replaced_ahead_of_expiry(world: World, lifetime: int, kept_until: int) -> None:
    """Five minutes before expiry, or a tenth of a short lifetime, the next token is fetched."""
    world.server.expires_in = lifetime
    source = world.source()
    first = await source.token(world.http)
    world.clock.now += kept_until - 0.5
    assert await source.token(world.http) == first
    world.clock.now += 1
    assert await source.token(world.http) != first
    assert len(world.server.requests) == 2


async def test_a_response_without_expires_in_is_taken_to_live_an_hour(world: World) -> None:
    """``expires_in`` is optional (RFC 6749): the token is then kept for the default lifetime."""
    world.server.expires_in = None
    source = world.source()
    first = await source.token(world.http)
    world.clock.now += oauth.DEFAULT_LIFETIME - oauth.REFRESH_AHEAD - 1
    assert await source.token(world.http) == first


async def test_concurrent_callers_share_one_request(world: World) -> None:
    """Many fetches needing a token at once cause one token request, and all get its token."""
    world.server.delay = 0.05
    source = world.source()
    tokens = await asyncio.gather(*(source.token(world.http) for _ in range(25)))
    assert len(set(tokens)) == 1 and len(world.server.requests) == 1


async def test_concurrent_callers_share_one_failure(world: World) -> None:
    """When the endpoint is down, the waiting callers all get the one failure of one request."""
    world.server.delay, world.server.fail_next = 0.05, [503]
    source = world.source()
    results = await asyncio.gather(*(source.token(world.http) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, oauth.TokenUnavailable) for r in results)
    assert len(world.server.requests) == 1


async def test_a_caller_given_up_on_does_not_cancel_the_shared_request(world: World) -> None:
    """A caller cancelled while the token request is in flight leaves it to finish for the others."""
    world.server.delay = 0.1
    source = world.source()
    first = asyncio.create_task(source.token(world.http))
    await asyncio.sleep(0.02)
    second = asyncio.create_task(source.token(world.http))
    await asyncio.sleep(0)
    first.cancel()
    assert world.server.valid(await second)
    assert len(world.server.requests) == 1


async def test_invalidate_fetches_a_new_token_once(world: World) -> None:
    """A 401 from the API invalidates the token: the next call fetches another; a second caller's
    invalidation of the same, now stale, token does not discard the new one."""
    source = world.source()
    old = await source.token(world.http)
    assert source.invalidate(old)
    new = await source.token(world.http)
    assert new != old
    source.invalidate(old)
    assert await source.token(world.http) == new
    assert len(world.server.requests) == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_an_endpoint_that_may_recover_is_unavailable_then_used_again(world: World, status: int) -> None:
    """408, 429 and 5xx raise ``TokenUnavailable`` (callers retry); the next call asks again."""
    world.server.fail_next = [status]
    source = world.source()
    with pytest.raises(oauth.TokenUnavailable, match=str(status)):
        await source.token(world.http)
    assert world.server.valid(await source.token(world.http))


async def test_an_endpoint_that_is_unreachable_or_slow_is_unavailable(world: World) -> None:
    """A refused connection and a timeout are ``TokenUnavailable`` too, named by class only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/token"
    client = OAuthClient(token_url=closed, grant="client_credentials", client_id="c", client_secret_env="S")
    with pytest.raises(oauth.TokenUnavailable, match="ClientConnectorError"):
        await oauth.OAuthToken(client, "s", None, label="test").token(world.http)
    world.server.delay = 1.0
    slow = world.source(timeout=aiohttp.ClientTimeout(total=0.1))
    with pytest.raises(oauth.TokenUnavailable, match="Timeout"):
        await slow.token(world.http)


@pytest.mark.parametrize(("secret", "grant", "status"), [
    ("wrong-secret", "client_credentials", 401),
    (CLIENT_SECRET, "refresh_token", 400),
])  # fmt: skip
async def test_a_refused_client_is_a_configuration_error_logged_by_status(
    world: World, secret: str, grant: str, status: int
) -> None:
    """A wrong secret (401 ``invalid_client``) or a revoked refresh token (400 ``invalid_grant``) raises
    ``TokenRefused`` and is logged as an error with the status only."""
    if grant == "refresh_token":
        world.server.refresh_token = "revoked-and-replaced"
    source = world.source(grant, secret=secret)
    with capture_logs() as logs, pytest.raises(oauth.TokenRefused, match=str(status)):
        await source.token(world.http)
    (entry,) = [e for e in logs if e["event"] == "oauth.token_refused"]
    assert (entry["log_level"], entry["status"]) == ("error", status)


@pytest.mark.parametrize(
    ("respond", "error"),
    [
        ({"token_type": "Bearer", "expires_in": 3600}, oauth.TokenRefused),
        ({"access_token": "abc", "token_type": "mac", "expires_in": 3600}, oauth.TokenRefused),
        ({"access_token": "abc\r\nX-Injected: 1", "token_type": "Bearer"}, oauth.TokenRefused),
        ({"access_token": "abc", "token_type": "Bearer", "expires_in": -5}, oauth.TokenRefused),
        ("<html>502 Bad Gateway</html>", oauth.TokenUnavailable),
    ],
)
async def test_an_unusable_response_is_refused(
    world: World, respond: dict[str, Any] | str, error: type[Exception]
) -> None:
    """A response without a usable bearer token is a configuration error; one that is not JSON (a proxy's
    page) may pass."""
    world.server.respond = respond
    with pytest.raises(error):
        await world.source().token(world.http)


async def test_a_lowercase_bearer_and_a_string_lifetime_are_accepted(world: World) -> None:
    """``token_type`` is case-insensitive and an ``expires_in`` sent as a string still counts."""
    world.server.respond = {"access_token": "abc.DEF-123_~+/==", "token_type": "bearer", "expires_in": "3599"}
    source = world.source()
    assert await source.token(world.http) == "abc.DEF-123_~+/=="
    world.clock.now += 3200
    assert await source.token(world.http) == "abc.DEF-123_~+/=="


async def test_a_failed_early_refresh_keeps_the_token_until_it_expires(world: World) -> None:
    """Inside the refresh-ahead window a failing endpoint does not take away a token still valid; past
    its expiry the failure reaches the caller."""
    source = world.source()
    first = await source.token(world.http)
    world.clock.now += 3400
    world.server.fail_next = [503, 400]
    assert await source.token(world.http) == first
    assert await source.token(world.http) == first
    world.clock.now += 200
    world.server.fail_next = [503]
    with pytest.raises(oauth.TokenUnavailable):
        await source.token(world.http)
    assert await source.token(world.http) != first


async def test_nothing_secret_reaches_the_logs_or_the_errors(world: World) -> None:
    """Across successes, refusals, outages and invalid responses, no secret, refresh token, access token or
    response body appears in a log entry or an exception's message."""
    world.server.rotate = True
    source = world.source("refresh_token")
    errors: list[str] = []
    with capture_logs() as logs:
        await source.token(world.http)
        source.invalidate(world.server.issued[-1])
        for status in (400, 401, 429, 503):
            world.server.fail_next = [status]
            try:
                await source.token(world.http)
            except (oauth.TokenRefused, oauth.TokenUnavailable) as exc:
                errors.append(repr(exc))
        world.server.respond = {"access_token": "ZQXLEAK bad", "token_type": "Bearer"}
        with pytest.raises(oauth.TokenRefused) as refused:
            await source.token(world.http)
        errors.append(repr(refused.value))
    assert {"oauth.token_issued", "oauth.token_refused", "oauth.token_unavailable"} <= {
        e["event"] for e in logs
    }
    said = repr(logs) + repr(errors) + repr(source)
    secrets = [CLIENT_SECRET, REFRESH_TOKEN, world.server.refresh_token, ERROR_BODY_MARK, "ZQXLEAK"]
    assert not [s for s in [*secrets, *world.server.issued] if s in said]


async def test_a_static_token_is_given_as_it_is() -> None:
    """The ``token_env`` source gives its value; invalidating it changes nothing, so nobody retries."""
    source = oauth.StaticToken("static-token")
    async with aiohttp.ClientSession() as http:
        assert await source.token(http) == "static-token"
        assert source.invalidate("static-token") is False
        assert await source.token(http) == "static-token"
    assert "static-token" not in repr(source)


@given(
    lifetime=st.floats(min_value=1, max_value=1e7),
    elapsed=st.floats(min_value=0, max_value=2e7),
)
def test_refresh_ahead_never_gives_an_expired_token_nor_refreshes_early(
    lifetime: float, elapsed: float
) -> None:
    """A token not yet due has not expired, and none is due before nine tenths of its lifetime."""
    issued = oauth.Issued("t", 0.0, lifetime)
    if not issued.due(elapsed):
        assert not issued.expired(elapsed)
    if elapsed < 0.9 * lifetime * (1 - 1e-9):  # clear of float rounding at the boundary
        assert not issued.due(elapsed)


# --- the platforms file ------------------------------------------------------------------------------------

GRAPH = {
    "token_url": "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
    "grant": "client_credentials",
    "client_id": CLIENT_ID,
    "client_secret_env": "TEAMS_SECRET",
    "scope": GRAPH_SCOPE,
}
GOOGLE = {
    "token_url": "https://oauth2.googleapis.com/token",
    "grant": "refresh_token",
    "client_id": "1234.apps.googleusercontent.com",
    "client_secret_env": "MEET_SECRET",
    "refresh_token_env": "MEET_REFRESH",
}
TEAMS = {"id": "contoso", "client_state_env": "STATE"}
MEET = {"id": "ws", "push_token_env": "PUSH"}


def test_oauth_blocks_parse_and_read_their_secrets_at_start() -> None:
    """Teams and Meet take an ``oauth`` block instead of ``token_env``; its secrets come from the variables
    it names, and an unset one is named."""
    config = parse_platforms({"teams": [{**TEAMS, "oauth": GRAPH}], "meet": [{**MEET, "oauth": GOOGLE}]})
    teams_oauth, meet_oauth = config.teams[0].oauth, config.meet[0].oauth
    assert teams_oauth is not None and meet_oauth is not None
    assert (teams_oauth.grant, meet_oauth.refresh_token_env) == ("client_credentials", "MEET_REFRESH")
    source = oauth.token_source(None, meet_oauth, {"MEET_SECRET": "s", "MEET_REFRESH": "r"}, label="meet:ws")
    assert isinstance(source, oauth.OAuthToken)
    with pytest.raises(PlatformsConfigError, match="MEET_REFRESH"):
        oauth.token_source(None, meet_oauth, {"MEET_SECRET": "s"}, label="meet:ws")
    static = oauth.token_source("TOKEN", None, {"TOKEN": "t"}, label="teams:contoso")
    assert isinstance(static, oauth.StaticToken)


@pytest.mark.parametrize(
    ("doc", "key", "message"),
    [
        ({"teams": [TEAMS]}, "teams.0", "exactly one of token_env or oauth.*neither"),
        ({"meet": [MEET]}, "meet.0", "exactly one of token_env or oauth.*neither"),
        ({"teams": [{**TEAMS, "token_env": "T", "oauth": GRAPH}]}, "teams.0", "exactly one.*both"),
        ({"meet": [{**MEET, "token_env": "T", "oauth": GOOGLE}]}, "meet.0", "exactly one.*both"),
        ({"meet": [{**MEET, "oauth": {**GOOGLE, "refresh_token_env": None}}]}, "meet.0.oauth",
         "refresh_token_env is required"),
        ({"teams": [{**TEAMS, "oauth": {**GRAPH, "refresh_token_env": "R"}}]}, "teams.0.oauth",
         "refresh_token_env is only for grant refresh_token"),
        ({"teams": [{**TEAMS, "oauth": {**GRAPH, "grant": "password"}}]}, "teams.0.oauth.grant", ""),
        ({"teams": [{**TEAMS, "oauth": {**GRAPH, "client_secret": "inline"}}]},
         "teams.0.oauth.client_secret", ""),
        ({"teams": [{**TEAMS, "oauth": {**GRAPH, "token_url": "http://login.example/token"}}]},
         "teams.0.oauth.token_url", ""),
        ({"teams": [{**TEAMS, "oauth": {**GRAPH, "token_url": "https://user@login.example/token"}}]},
         "teams.0.oauth.token_url", ""),
        ({"meet": [{**MEET, "oauth": {k: v for k, v in GOOGLE.items() if k != "token_url"}}]},
         "meet.0.oauth.token_url", ""),
    ],
)  # fmt: skip
def test_invalid_token_configuration_names_the_key(doc: object, key: str, message: str) -> None:
    """Neither or both of ``token_env`` and ``oauth``, a refresh token without its grant or the reverse, an
    unknown grant or key, and a token URL that is not https (or loopback http) are errors naming the key."""
    with pytest.raises(PlatformsConfigError, match=f"platforms.yaml: {key}: .*{message}"):
        parse_platforms(doc, "platforms.yaml")


def test_loopback_http_is_accepted_for_a_test_token_endpoint() -> None:
    """``http://127.0.0.1:port`` is the one plain-http token URL allowed (a fake endpoint in tests)."""
    doc = {"teams": [{**TEAMS, "oauth": {**GRAPH, "token_url": "http://127.0.0.1:8080/token"}}]}
    assert parse_platforms(doc).teams[0].oauth is not None
