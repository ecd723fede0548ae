"""Consent receipts: a signed copy of one consent record that the participant keeps.

Every record the ledger holds (given, refused, withdrawn, and rejected attempts) can be issued as a
receipt: the record's fields in the shape of an ISO/IEC TS 27560 / Kantara consent receipt, its place in
the hash-chained ledger (``seq`` and entry hash), and an Ed25519 signature over the canonical JSON of
everything else. A public-key signature is what lets a participant or an auditor check a receipt
*without* the gateway's secret (an HMAC would need the verifier to hold the key that can forge receipts);
the public key is published at ``/.well-known/consent-gateway/receipt-key`` and named by ``key_id``.

A valid signature says the gateway issued the receipt, not that consent was given: a rejected attempt (a
host consenting for someone else) is signed like any record, so verifiers also read ``accepted``.

Pure: signing and verification are functions of their inputs (the issue time is passed in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.consent.ledger import canonical_dumps, format_time
from gateway.model import RecordOutcome
from gateway.store.base import LedgerEntry

RECEIPT_VERSION = "consent-gateway-receipt/1"
ALGORITHM = "Ed25519"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; ``ValueError`` if it is neither."""
    clean = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(clean + "=" * (-len(clean) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


class ReceiptSigner:
    """Holds the gateway's Ed25519 receipt key."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("receipt key: expected the 32-byte Ed25519 seed, base64-encoded")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(self.public)

    @classmethod
    def from_b64(cls, text: str) -> ReceiptSigner:
        return cls(unb64(text))

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK set (RFC 8037 OKP key)."""
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.public), "kid": self.key_id, "use": "sig"}
        return {"keys": [jwk]}

    def issue(self, entry: LedgerEntry, issued_at: datetime, issuer: str) -> dict[str, Any]:
        body = receipt_body(entry, issued_at, issuer)
        body["key"] = {"kid": self.key_id, "alg": ALGORITHM, "x": b64url(self.public)}
        body["signature"] = b64url(self._private.sign(signed_bytes(body)))
        return body


def receipt_body(entry: LedgerEntry, issued_at: datetime, issuer: str) -> dict[str, Any]:
    """The receipt's fields before signing: the consent record, its ledger position, the issuer."""
    r = entry.record
    return {
        "version": RECEIPT_VERSION,
        "issuer": issuer,
        "issued_at": format_time(issued_at),
        "record_id": r.record_id,
        "platform": r.platform,
        "meeting_id": r.meeting_id,
        "subject": r.subject,
        "indicated_by": r.indicated_by,
        "delegation": r.delegation,
        "purposes": list(r.purposes),
        "choice": r.choice.value,
        "outcome": r.outcome.value,
        "reason": r.reason,
        "channel": r.channel,
        "notice_version": r.notice_version,
        "policy_revision": r.policy_revision,
        "at": format_time(r.at),
        "expires_at": None if r.expires_at is None else format_time(r.expires_at),
        "evidence": r.evidence,
        "ledger": {"seq": entry.seq, "entry_hash": entry.hash, "prev_hash": entry.prev_hash},
    }


def signed_bytes(receipt: Mapping[str, Any]) -> bytes:
    """What the signature covers: canonical JSON of every field except ``signature``."""
    return canonical_dumps({k: v for k, v in receipt.items() if k != "signature"}).encode("ascii")


@dataclass(frozen=True, slots=True)
class Verified:
    ok: bool
    reason: str
    """``ok``, ``malformed``, ``duplicate_key``, ``unknown_version``, ``key_mismatch``, ``kid_mismatch`` or
    ``bad_signature``."""
    key_pinned: bool = False
    """Whether the key came from the verifier (``--key``), not only from the receipt itself."""


def verify(receipt: object, public: bytes | None = None) -> Verified:
    """Check a decoded receipt against ``public`` (or, unpinned, against the key it embeds)."""
    if not isinstance(receipt, dict):
        return Verified(False, "malformed")
    if receipt.get("version") != RECEIPT_VERSION:
        return Verified(False, "unknown_version")
    try:
        embedded = unb64(str(receipt["key"]["x"]))
        signature = unb64(str(receipt["signature"]))
        payload = signed_bytes(receipt)
    except (KeyError, TypeError, ValueError):
        return Verified(False, "malformed")
    if public is not None and public != embedded:
        return Verified(False, "key_mismatch", True)
    if receipt["key"].get("kid") != key_id(embedded):
        return Verified(False, "kid_mismatch", public is not None)
    try:
        Ed25519PublicKey.from_public_bytes(embedded).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return Verified(False, "bad_signature", public is not None)
    return Verified(True, "ok", public is not None)


class DuplicateKeyError(ValueError):
    """A JSON object in a receipt names the same key twice."""


def loads(text: str) -> Any:
    """Parse receipt JSON, refusing a key repeated in any object: readers disagree on which copy counts
    (Python keeps the last, a person reading the file sees the first), so one file could show a person
    ``"outcome": "accepted"`` while the verifier checks the signed ``"rejected"``."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def verify_json(text: str, public: bytes | None = None) -> tuple[Verified, Any]:
    """Parse ``text`` strictly (``loads``) and ``verify`` it; also returns the parsed receipt.

    A repeated key is ``duplicate_key``; text that is not JSON raises ``ValueError``.
    """
    try:
        receipt = loads(text)
    except DuplicateKeyError:
        return Verified(False, "duplicate_key"), None
    return verify(receipt, public), receipt


def accepted(receipt: Mapping[str, Any]) -> bool:
    """Whether the ledger accepted the consent the receipt records (its signature aside)."""
    return receipt.get("outcome") == RecordOutcome.ACCEPTED.value


def summary(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a receipt records, as ``(field, text)`` pairs for a person: the choice, whether it was accepted
    (and why not), whose consent it is, who indicated it, for which purposes, and when."""
    purposes = receipt.get("purposes")
    outcome = str(receipt.get("outcome"))
    if receipt.get("reason"):
        outcome += f" ({receipt['reason']})"
    return [
        ("choice", str(receipt.get("choice"))),
        ("outcome", outcome),
        ("subject", str(receipt.get("subject"))),
        ("indicated_by", str(receipt.get("indicated_by"))),
        ("purposes", ", ".join(map(str, purposes)) if isinstance(purposes, list) else str(purposes)),
        ("at", str(receipt.get("at"))),
    ]


def load_public_key(text: str) -> bytes:
    """A public key from a JWK set, a JWK, or base64 of the raw 32 bytes; ``ValueError`` otherwise."""
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            jwk = doc["keys"][0] if "keys" in doc else doc
            raw = unb64(str(jwk["x"]))
        except (ValueError, KeyError, IndexError, TypeError):
            raise ValueError("key: not a JWK or JWK set with an Ed25519 'x'") from None
    else:
        raw = unb64(text)
    if len(raw) != 32:
        raise ValueError("key: an Ed25519 public key is 32 bytes")
    return raw
