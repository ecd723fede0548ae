"""Settings: flags over ``CONSENT_GATEWAY_*`` environment variables over defaults, validated once.

Secrets the operator did not provide (the ingest token, the outbound signing secret, the outbox key) are
generated on first start and kept in ``secrets.json`` beside the database with mode 0600, so a quick start
works and restarts keep the same credentials. They are never logged.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from gateway.sealing import Keyring, new_key_spec

PREFIX = "CONSENT_GATEWAY_"
_LIST_FIELDS = {
    "policies",
    "webhook_secrets",
    "admin_tokens",
    "auditor_tokens",
    "shadow_policies",
    "outbox_keys",
}


class SettingsError(Exception):
    """Settings that cannot be used; the message names the setting."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    database: str = "sqlite:///consent-gateway.db"
    policies: tuple[Path, ...] = (Path("policies/default.yaml"),)
    ingest_token: SecretStr | None = None
    """Bearer token for ``/v1/events`` and ``/v1/stream``."""
    webhook_secrets: tuple[SecretStr, ...] = ()
    """``whsec_`` secrets accepted on Standard Webhooks-signed ingest requests."""
    signing_secret: SecretStr | None = None
    """``whsec_`` secret that signs what the gateway sends to destinations."""
    admin_tokens: tuple[SecretStr, ...] = ()
    """Admin API and dashboard bearer tokens with write access (policy reload); never the ingest token."""
    auditor_tokens: tuple[SecretStr, ...] = ()
    """Read-only bearer tokens for the admin API and dashboard (auditors)."""
    shadow_policies: tuple[Path, ...] = ()
    """Candidate policy files evaluated beside the active ones; differing decisions logged, not applied."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tick_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    secrets_file: Path | None = None
    link_secret: SecretStr | None = None
    """Key (any text) that signs personal consent links; generated if unset."""
    receipt_key: SecretStr | None = None
    """Ed25519 private key (base64 of the 32-byte seed) that signs consent receipts; generated if unset."""
    notify_url: str | None = Field(default=None, pattern=r"^https?://")
    """Where notices to participants (consent links, chat replies) are POSTed, Standard Webhooks-signed."""
    public_url: str | None = Field(default=None, pattern=r"^https?://")
    """Base URL of the consent links participants receive (default ``http://{host}:{port}``)."""
    platforms_file: Path | None = None
    """YAML file of platform installations (Zoom apps, ...); see gateway.platforms.config."""
    consent_view_max_age_ms: Annotated[int, Field(ge=100, le=60_000)] = 2000
    """Several replicas (PostgreSQL): how long a replica's consent view counts as fresh after it last
    confirmed it had read the whole ledger; past it, the replica holds instead of forwarding."""
    outbox_keys: tuple[SecretStr, ...] = ()
    """``KEYID:BASE64URL`` AES-256 keys sealing outbox text at rest; the first seals, all open (rotation)."""

    @property
    def links_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def sqlite_path(self) -> str:
        if not self.database.startswith("sqlite:///"):
            raise SettingsError(f"database: only sqlite:/// URLs are supported so far, got {self.database!r}")
        return self.database.removeprefix("sqlite:///")

    def keyring(self) -> Keyring | None:
        """The outbox keyring, or None when no key is configured (``with_generated_secrets`` fills one)."""
        if not self.outbox_keys:
            return None
        try:
            return Keyring.parse([key.get_secret_value() for key in self.outbox_keys])
        except ValueError as exc:  # names the key's position, never its value
            raise SettingsError(f"outbox_keys ({PREFIX}OUTBOX_KEYS): {exc}") from None

    def secret_for(self, env_name: str | None, environ: Mapping[str, str] = os.environ) -> str:
        """A destination's signing secret: its own variable if it names one, else the gateway's."""
        if env_name:
            value = environ.get(env_name)
            if not value:
                raise SettingsError(f"{env_name}: destination signing secret is not set")
            return value
        assert self.signing_secret is not None, "with_generated_secrets() fills this"
        return self.signing_secret.get_secret_value()


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Settings:
    """Flags (None means not given) override environment variables, which override defaults."""
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = raw.split(",") if name in _LIST_FIELDS else raw
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SettingsError(f"{PREFIX}{field.upper()} / --{field.replace('_', '-')}: {err['msg']}") from None


def with_generated_secrets(settings: Settings) -> Settings:
    """Fill missing secrets from (or into) the secrets file, created 0600 on first start."""
    if (
        settings.ingest_token
        and settings.signing_secret
        and settings.admin_tokens
        and settings.link_secret
        and settings.receipt_key
        and settings.outbox_keys
    ):
        return settings
    path = settings.secrets_file or _default_secrets_path(settings)
    stored = _read_secrets(path)
    changed = False
    if "ingest_token" not in stored:
        stored["ingest_token"], changed = secrets.token_urlsafe(32), True
    if "signing_secret" not in stored:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        stored["signing_secret"], changed = f"whsec_{key}", True
    if "admin_token" not in stored:
        stored["admin_token"], changed = secrets.token_urlsafe(32), True
    if "link_secret" not in stored:
        stored["link_secret"], changed = secrets.token_urlsafe(32), True
    if "receipt_key" not in stored:
        stored["receipt_key"], changed = base64.b64encode(secrets.token_bytes(32)).decode(), True
    if "outbox_key" not in stored:
        stored["outbox_key"], changed = new_key_spec(), True
    if changed:
        _write_secrets(path, stored)
    return settings.model_copy(
        update={
            "ingest_token": settings.ingest_token or SecretStr(stored["ingest_token"]),
            "signing_secret": settings.signing_secret or SecretStr(stored["signing_secret"]),
            "admin_tokens": settings.admin_tokens or (SecretStr(stored["admin_token"]),),
            "link_secret": settings.link_secret or SecretStr(stored["link_secret"]),
            "receipt_key": settings.receipt_key or SecretStr(stored["receipt_key"]),
            "outbox_keys": settings.outbox_keys or (SecretStr(stored["outbox_key"]),),
            "secrets_file": path,
        }
    )


def _default_secrets_path(settings: Settings) -> Path:
    if not settings.database.startswith("sqlite:///"):
        return Path("secrets.json")  # a server database has no directory of its own: the working directory
    db = settings.sqlite_path
    base = Path(db).parent if db != ":memory:" else Path()
    return base / "secrets.json"


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"secrets file {path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SettingsError(f"secrets file {path}: expected a JSON object of strings")
    return data


def _write_secrets(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)


def redacted_url(url: str) -> str:
    """A database URL fit for a log line: any password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username or ''}:***@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))
