"""Personal consent links: a signed, expiring token bound to one participant of one meeting.

The gateway mints a link for each participant who joins and hands it to the platform side to deliver
privately (``consent_request`` builds that notice). The token is the whole credential of the consent
page, so it is bound to ``(platform, meeting_id, participant_id, expiry)`` with HMAC-SHA256 under the
gateway's link secret, and verification is constant-time. A token that was changed in any way, names
another participant or meeting, or has expired is refused.

Format: ``base64url(payload) "." base64url(mac)`` without padding, where ``payload`` is the compact JSON
``["cl1", platform, meeting_id, participant_id, expiry_unix]`` and the MAC covers the *encoded* payload
(so that two encodings of one payload cannot both verify). Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.consent.ledger import format_time
from gateway.notify import Notice
from gateway.policy.compiled import Policy

_VERSION = "cl1"
_MAC_CONTEXT = b"consent-gateway link v1\x00"
MAX_TOKEN_CHARS = 2048
"""Longer tokens are refused before any decoding (ids are short)."""


class Refusal(enum.StrEnum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    WRONG_SUBJECT = "wrong_subject"


@dataclass(frozen=True, slots=True)
class LinkScope:
    """Whom and what a link is for."""

    platform: str
    meeting_id: str
    participant_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of verifying a token: the scope, or why it was refused."""

    scope: LinkScope | None
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.scope is not None


class LinkSigner:
    """Mints and verifies link tokens under one secret."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("link secret: at least 16 bytes are needed")
        self._key = key

    def mint(self, platform: str, meeting_id: str, participant_id: str, expires_at: datetime) -> str:
        expiry = int(expires_at.timestamp())
        payload = json.dumps([_VERSION, platform, meeting_id, participant_id, expiry], separators=(",", ":"))
        encoded = _b64(payload.encode())
        return f"{encoded}.{self._mac(encoded)}"

    def verify(self, token: str, now: datetime, expect: tuple[str, str, str] | None = None) -> Checked:
        """The scope of ``token`` if it is intact and unexpired (and, given ``expect``, for that
        ``(platform, meeting_id, participant_id)``)."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            return Checked(None, Refusal.MALFORMED)
        encoded, mac = token.split(".")
        # compare the encoded MAC: a second base64 spelling of the same bytes must not verify
        if not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), self._mac(encoded).encode()):
            return Checked(None, Refusal.BAD_SIGNATURE)
        scope = _decode(encoded)
        if scope is None:
            return Checked(None, Refusal.MALFORMED)
        if expect is not None and expect != (scope.platform, scope.meeting_id, scope.participant_id):
            return Checked(None, Refusal.WRONG_SUBJECT)
        if now >= scope.expires_at:
            return Checked(None, Refusal.EXPIRED)
        return Checked(scope)

    def _mac(self, encoded: str) -> str:
        data = _MAC_CONTEXT + encoded.encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def form_mac(self, token: str, form_state: str) -> str:
        """Binds a rendered form's hidden state (render time, submission id, notice versions shown) to the
        token, so the page can trust what it put in the form when it comes back."""
        data = b"consent-gateway form v1\x00" + token.encode("utf-8", "surrogatepass") + b"\x00"
        return _b64(
            hmac.new(self._key, data + form_state.encode("utf-8", "surrogatepass"), "sha256").digest()
        )

    def form_ok(self, token: str, form_state: str, mac: str) -> bool:
        expected = self.form_mac(token, form_state).encode()
        return hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), expected)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(encoded: str) -> LinkScope | None:
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(doc, list) and len(doc) == 5 and doc[0] == _VERSION):
        return None
    _, platform, meeting_id, participant_id, expiry = doc
    if not all(isinstance(v, str) for v in (platform, meeting_id, participant_id)):
        return None
    if not isinstance(expiry, int) or isinstance(expiry, bool) or not 0 <= expiry < 2**40:
        return None
    return LinkScope(platform, meeting_id, participant_id, datetime.fromtimestamp(expiry, UTC))


@dataclass(frozen=True, slots=True)
class ConsentLinks:
    """What minting a participant's link needs: the signer and the public base URL of the page."""

    signer: LinkSigner
    base_url: str

    def path(self, token: str) -> str:
        return f"/consent/{token}"


def consent_request(
    links: ConsentLinks, policy: Policy, platform: str, meeting_id: str, participant_id: str, now: datetime
) -> Notice:
    """The ``consent_request`` notice for one participant: their fresh link, the purposes, its expiry.

    The one place links are minted, for joiners and for anyone who must be asked again."""
    expires = now + timedelta(hours=policy.spec.consent.link_ttl_hours)
    token = links.signer.mint(platform, meeting_id, participant_id, expires)
    path = links.path(token)
    data = {
        "url": links.base_url + path,
        "path": path,
        "purposes": list(policy.purposes),
        "expires_at": format_time(datetime.fromtimestamp(int(expires.timestamp()), UTC)),
    }
    return Notice(platform, meeting_id, participant_id, "consent_request", data)
