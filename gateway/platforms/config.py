"""Per-installation platform configuration: the YAML file named by the ``platforms_file`` setting.

Several installations of one platform may point at one gateway (several Zoom apps, say), so each section is a
list of installations with an ``id``. Secrets are never written in the file: it names the environment
variables that hold them (``*_env`` fields), which are read once at startup. Validation is strict: unknown
keys are errors that name the key.

Example::

    zoom:
      - id: main
        webhook_secret_env: ZOOM_MAIN_WEBHOOK_SECRET
        client_id: AbCdEf
        client_secret_env: ZOOM_MAIN_CLIENT_SECRET   # only for RTMS
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

InstallId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
EnvName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class PlatformsConfigError(Exception):
    """A platforms file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_ids(items: Sequence[Any]) -> Sequence[Any]:
    ids = [item.id for item in items]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"installation ids must be unique, repeated: {', '.join(dupes)}")
    return items


# ----------------------------------------------------------------------------------------------------
# Zoom (engineer 4a)
# ----------------------------------------------------------------------------------------------------


class ZoomApp(_Strict):
    """One Zoom Marketplace app (webhooks, recorded transcripts, RTMS)."""

    id: InstallId
    webhook_secret_env: EnvName
    """Variable holding the app's webhook *secret token* (signs webhooks and URL validation)."""
    client_id: str | None = None
    """The app's client id (RTMS handshake); RTMS is off for this app when absent."""
    client_secret_env: EnvName | None = None
    """Variable holding the app's client secret (RTMS handshake signature)."""
    download_base: Annotated[str, Field(pattern=r"^https?://[^/?#]+$")] = "https://zoom.us"
    """Where recorded transcripts may be downloaded from: a ``download_url`` whose scheme differs, or whose
    host is neither this host nor a subdomain of it (``us06web.zoom.us``), is refused, so a forged or
    misrouted URL never receives the download token."""
    rtms: bool = True
    """Open RTMS streams on ``meeting.rtms_started`` (needs client_id and client_secret_env)."""


# ----------------------------------------------------------------------------------------------------
# Recall.ai, Microsoft Teams, Google Meet (engineer 4b): add models here and fields on PlatformsConfig below.
# ----------------------------------------------------------------------------------------------------


class RecallInstall(_Strict):
    """One Recall.ai workspace sending real-time events (webhook and/or WebSocket endpoint)."""

    id: InstallId
    webhook_secret_envs: Annotated[tuple[EnvName, ...], Field(min_length=1, max_length=8)]
    """Variables holding the workspace's ``whsec_`` verification secrets (several during a rotation)."""


TokenUrl = Annotated[
    str, Field(pattern=r"^(?:https://[^/?#@\s]+|http://127\.0\.0\.1(?::[0-9]{1,5})?)(?:/[^?#\s]*)?$")
]
"""Where the client secret is sent: https, or plain http to 127.0.0.1 only (a fake token server in tests)."""


class OAuthClient(_Strict):
    """An OAuth 2.0 client that gets the API's bearer tokens from a token endpoint and keeps them fresh
    (``gateway.platforms.oauth``): app-only ``client_credentials`` (Microsoft Graph) or ``refresh_token``
    (Google)."""

    token_url: TokenUrl
    """``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``; ``https://oauth2.googleapis.com/token``."""
    grant: Literal["client_credentials", "refresh_token"]
    client_id: Annotated[str, Field(min_length=1, max_length=256)]
    client_secret_env: EnvName
    """Variable holding the client secret."""
    refresh_token_env: EnvName | None = None
    """Variable holding the refresh token (grant ``refresh_token`` only, and required there)."""
    scope: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    """Sent as ``scope`` when set: ``https://graph.microsoft.com/.default`` for Graph app-only access."""

    @model_validator(mode="after")
    def _refresh_token_iff_grant(self) -> Self:
        if self.grant == "refresh_token" and self.refresh_token_env is None:
            raise ValueError("refresh_token_env is required when grant is refresh_token")
        if self.grant != "refresh_token" and self.refresh_token_env is not None:
            raise ValueError(f"refresh_token_env is only for grant refresh_token, not {self.grant}")
        return self


def _exactly_one_token_source(token_env: str | None, oauth: OAuthClient | None) -> None:
    if (token_env is None) == (oauth is None):
        found = "neither is set" if token_env is None else "both are set"
        raise ValueError(f"exactly one of token_env or oauth is required ({found})")


class TeamsInstall(_Strict):
    """One Microsoft 365 tenant's Graph change-notification subscription for meeting transcripts."""

    id: InstallId
    client_state_env: EnvName
    """Variable holding the ``clientState`` secret given when the subscription was created."""
    token_env: EnvName | None = None
    """Variable holding a static Graph bearer token (OnlineMeetingTranscript.Read.All), which the operator
    must replace before it expires; or, instead, ``oauth``."""
    oauth: OAuthClient | None = None
    """The app registration whose client-credentials tokens are fetched and refreshed (instead of
    ``token_env``)."""
    graph_base: str = "https://graph.microsoft.com/v1.0"
    meeting_platform: Annotated[str, Field(min_length=1, max_length=32)] = "generic"
    """The platform key of the meetings whose roster and consent apply: the integration sends them through
    the generic API (Teams transcripts carry display names only)."""

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        _exactly_one_token_source(self.token_env, self.oauth)
        return self


class MeetInstall(_Strict):
    """One Google Workspace whose Meet events arrive as Pub/Sub push deliveries."""

    id: InstallId
    push_token_env: EnvName
    """Variable holding the shared token the push subscription's URL carries (``?token=``)."""
    token_env: EnvName | None = None
    """Variable holding a static OAuth bearer token for the Meet REST API (meetings.space.readonly), which
    the operator must replace before it expires; or, instead, ``oauth``."""
    oauth: OAuthClient | None = None
    """The OAuth client and refresh token whose access tokens are fetched and refreshed (instead of
    ``token_env``)."""
    api_base: str = "https://meet.googleapis.com/v2"

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        _exactly_one_token_source(self.token_env, self.oauth)
        return self


class PlatformsConfig(_Strict):
    zoom: Annotated[tuple[ZoomApp, ...], AfterValidator(_unique_ids)] = ()
    recall: Annotated[tuple[RecallInstall, ...], AfterValidator(_unique_ids)] = ()
    teams: Annotated[tuple[TeamsInstall, ...], AfterValidator(_unique_ids)] = ()
    meet: Annotated[tuple[MeetInstall, ...], AfterValidator(_unique_ids)] = ()


def load_platforms(path: Path) -> PlatformsConfig:
    """Read and validate the platforms file (raises PlatformsConfigError naming file and key)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlatformsConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise PlatformsConfigError(f"{path}: not valid UTF-8 YAML") from None
    return parse_platforms(data or {}, str(path))


def parse_platforms(data: Any, name: str = "<platforms>") -> PlatformsConfig:
    try:
        return PlatformsConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        raise PlatformsConfigError(f"{name}: {key}: {err['msg']}") from None


def env_secret(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The value of a secret's environment variable (raises PlatformsConfigError naming it when unset)."""
    value = environ.get(name)
    if not value:
        raise PlatformsConfigError(f"{name}: environment variable is not set")
    return value
