"""Sealing: authenticated encryption of transcript text at rest (the durable outbox), with key rotation.

Consented text waits in the outbox until a destination has it; sealed, a copy of the database alone reveals
no one's words. AES-256-GCM from ``cryptography`` does the work; this module only frames it. A sealed item
names the key that sealed it, so a keyring of several keys opens items sealed under any of them while only
the first (active) key seals: rotation is "prepend a new key everywhere, restart, and drop the old key once
nothing sealed under it remains". The caller's associated data (e.g. the item's id and destination) binds a
sealed blob to its row, so one row's ciphertext cannot be moved onto another.

Layout, version 1::

    0x01 | len(key id) (1 byte) | key id (ASCII) | nonce (12 random bytes) | ciphertext + 16-byte tag

The header (version, key id) is authenticated with the caller's associated data. A random 96-bit nonce per
seal is safe far beyond 2**32 seals per key (NIST SP 800-38D's bound), well past any outbox's lifetime
between rotations.

Pure apart from the random nonce and key generation: no I/O, no clock, no logging. Errors never carry
plaintext or key material: configuration errors (``ValueError``) name the key's position, and
``SealingError`` says only what was wrong with a sealed blob.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class SealingError(Exception):
    """A sealed blob that cannot be opened; the message never holds plaintext or key material."""


@dataclass(frozen=True)
class Keyring:
    """Named AES-256 keys; the first seals, all open. ``repr`` shows the ids only."""

    key_ids: tuple[str, ...]
    keys: tuple[bytes, ...] = field(repr=False)
    _ciphers: Mapping[str, AESGCM] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.key_ids or len(self.key_ids) != len(self.keys):
            raise ValueError("a keyring needs at least one key and one id per key")
        seen: dict[str, int] = {}
        for position, (key_id, key) in enumerate(zip(self.key_ids, self.keys, strict=True), start=1):
            _check_key(position, key_id, key)
            if key_id in seen:
                raise ValueError(f"key {position}: duplicate key id {key_id!r} (also key {seen[key_id]})")
            seen[key_id] = position
        ciphers = {key_id: AESGCM(key) for key_id, key in zip(self.key_ids, self.keys, strict=True)}
        object.__setattr__(self, "_ciphers", ciphers)  # a cache derived from the keys; frozen otherwise

    @classmethod
    def parse(cls, values: Sequence[str]) -> Keyring:
        """Keys from ``KEYID:BASE64URL`` specs, the active one first; errors name the 1-based position."""
        if not values:
            raise ValueError("no keys given")
        pairs = [_parse_spec(position, value) for position, value in enumerate(values, start=1)]
        return cls(tuple(key_id for key_id, _ in pairs), tuple(key for _, key in pairs))

    @classmethod
    def generate(cls) -> Keyring:
        """One fresh random key, for state that does not outlive the process."""
        key_id, key = _parse_spec(1, new_key_spec())
        return cls((key_id,), (key,))

    @property
    def active_id(self) -> str:
        return self.key_ids[0]

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under the active key; the result names that key and carries its own nonce."""
        header = _header(self.active_id)
        nonce = os.urandom(NONCE_BYTES)
        try:
            ciphertext = self._ciphers[self.active_id].encrypt(nonce, plaintext, header + aad)
        except OverflowError:
            raise SealingError("plaintext or associated data too large to seal") from None
        return header + nonce + ciphertext

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext, if ``sealed`` was sealed under one of these keys with this ``aad``, unmodified."""
        key_id, body_at = _parse_header(sealed)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealingError(f"sealed under unknown key id {key_id!r}")
        nonce = sealed[body_at : body_at + NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, sealed[body_at + NONCE_BYTES :], sealed[:body_at] + aad)
        except InvalidTag:
            raise SealingError("authentication failed: wrong key, other aad, or tampered") from None

    def key_id_of(self, sealed: bytes) -> str:
        """The id of the key that sealed ``sealed`` (known to this keyring or not), for rotation reports."""
        return _parse_header(sealed)[0]


def new_key_spec() -> str:
    """``KEYID:BASE64URL`` for a fresh random key, with an id like ``k1a2b3c4d``."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")
    return f"k{secrets.token_hex(4)}:{key}"


def _header(key_id: str) -> bytes:
    raw = key_id.encode("ascii")
    return bytes((VERSION, len(raw))) + raw


def _parse_header(sealed: bytes) -> tuple[str, int]:
    """The key id and the offset of the nonce, or SealingError for anything that is not a v1 blob."""
    if len(sealed) < 2 or sealed[0] != VERSION:
        raise SealingError("not a sealed item of a known version")
    end = 2 + sealed[1]
    if len(sealed) < end + NONCE_BYTES + TAG_BYTES:
        raise SealingError("sealed item is truncated")
    key_id = sealed[2:end].decode("ascii", errors="replace")
    if not _KEY_ID.fullmatch(key_id):
        raise SealingError("sealed item has a malformed key id")
    return key_id, end


def _parse_spec(position: int, value: str) -> tuple[str, bytes]:
    key_id, colon, encoded = value.strip().partition(":")
    if not colon:
        raise ValueError(f"key {position}: expected KEYID:BASE64URL")
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key {position}: key id must be 1 to 32 of A-Z a-z 0-9 _ -")
    if not _BASE64URL.fullmatch(encoded):
        raise ValueError(f"key {position}: key is not base64url")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key {position}: key is not base64url") from None
    return key_id, key


def _check_key(position: int, key_id: str, key: bytes) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key {position}: key id must be 1 to 32 of A-Z a-z 0-9 _ -")
    if len(key) != KEY_BYTES:
        raise ValueError(f"key {position}: key must be {KEY_BYTES} bytes, got {len(key)}")
