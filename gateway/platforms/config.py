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
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

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


class TeamsInstall(_Strict):
    """One Microsoft 365 tenant's Graph change-notification subscription for meeting transcripts."""

    id: InstallId
    client_state_env: EnvName
    """Variable holding the ``clientState`` secret given when the subscription was created."""
    token_env: EnvName
    """Variable holding a Graph bearer token (OnlineMeetingTranscript.Read.All); the operator refreshes it."""
    graph_base: str = "https://graph.microsoft.com/v1.0"
    meeting_platform: Annotated[str, Field(min_length=1, max_length=32)] = "generic"
    """The platform key of the meetings whose roster and consent apply: the integration sends them through
    the generic API (Teams transcripts carry display names only)."""


class MeetInstall(_Strict):
    """One Google Workspace whose Meet events arrive as Pub/Sub push deliveries."""

    id: InstallId
    push_token_env: EnvName
    """Variable holding the shared token the push subscription's URL carries (``?token=``)."""
    token_env: EnvName
    """Variable holding an OAuth bearer token for the Meet REST API (meetings.space.readonly)."""
    api_base: str = "https://meet.googleapis.com/v2"


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
