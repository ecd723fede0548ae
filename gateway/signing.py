"""Standard Webhooks signatures: signing what the gateway sends, verifying what platforms send.

Used at both edges of the flow: ingest adapters verify Recall.ai deliveries (``webhook-*`` or legacy
``svix-*`` headers) on the raw bytes before parsing, and the delivery dispatcher signs every request it sends
to an AI service. The signed content is ``f"{id}.{timestamp}.{body}"``, HMAC-SHA256 keyed with the
base64-decoded part of a ``whsec_`` secret, carried as ``v1,<base64>`` in a space-separated list.

Pure: no clock (``now`` is passed in), no I/O, no logging. Verification returns a value for any request, so
the caller can log the reason and map it to a status code in one place; only a malformed configured secret
raises ``ValueError`` (a configuration error, not a property of the request).
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format marker, not a secret
VERSION = "v1"
DEFAULT_TOLERANCE = 300
"""Seconds a timestamp may be off in either direction (the spec's five minutes)."""

_HEADER_SETS = (
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    # Older Recall.ai (Svix) accounts send the same scheme under these names.
    ("svix-id", "svix-timestamp", "svix-signature"),
)


class Reason(enum.StrEnum):
    OK = "ok"
    MISSING_HEADERS = "missing_headers"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    """Outside ±tolerance: too old (a replay) or too far in the future."""
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of a verification; ``msg_id`` and ``timestamp`` are set once the headers parsed."""

    reason: Reason
    msg_id: str | None = None
    timestamp: int | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


@functools.lru_cache(maxsize=64)
def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; prefix and padding are optional, as in the spec's libs."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        # Never echo the secret: the message names only the problem.
        raise ValueError("webhook secret is not valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return hmac.digest(key, signed, "sha256")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message: ``v1,<base64>``."""
    digest = _digest(decode_secret(secret), msg_id, timestamp, body)
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for an outbound request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> VerifyResult:
    """Check a request's signature headers against its raw body; several secrets allow key rotation."""
    found = _find_headers(headers)
    if found is None:
        return VerifyResult(Reason.MISSING_HEADERS)
    msg_id, raw_timestamp, raw_signatures = found
    timestamp = _parse_timestamp(raw_timestamp)
    if timestamp is None:
        return VerifyResult(Reason.BAD_TIMESTAMP, msg_id)
    if abs(now - timestamp) > tolerance:
        return VerifyResult(Reason.STALE_TIMESTAMP, msg_id, timestamp)
    offered = _offered_signatures(raw_signatures)
    for secret in secrets:
        expected = _digest(decode_secret(secret), msg_id, timestamp, body)
        # Compare against every entry (no early exit on the first mismatch) in constant time each.
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return VerifyResult(Reason.OK, msg_id, timestamp)
    return VerifyResult(Reason.BAD_SIGNATURE, msg_id, timestamp)


def _find_headers(raw: Mapping[str, str]) -> tuple[str, str, str] | None:
    # Header names are case-insensitive; a plain dict from a test or another framework may use any case.
    lowered = {name.lower(): value for name, value in raw.items()}
    for names in _HEADER_SETS:
        values = tuple(lowered.get(name, "") for name in names)
        if all(values):
            return values[0], values[1], values[2]
    return None


def _parse_timestamp(raw: str) -> int | None:
    # Integer seconds only: int() alone would also accept "+1", " 1" and "1_000".
    stripped = raw.strip()
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 15:
        return None
    return int(stripped)


def _offered_signatures(raw: str) -> list[bytes]:
    offered = []
    for entry in raw.split():
        version, _, encoded = entry.partition(",")
        if version != VERSION:
            continue  # other versions (e.g. asymmetric v1a) are not ours to check
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue  # a malformed entry must not hide a valid one later in the list
    return offered
