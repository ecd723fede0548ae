"""Sealing outbox text at rest: AES-256-GCM round trips, binds its associated data, refuses any tampering,
and keeps opening old items after a key rotation; errors never show plaintext or keys."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from gateway.sealing import KEY_BYTES, NONCE_BYTES, Keyring, SealingError, new_key_spec

TEXT = b"Alice: the merger closes on Friday"
AAD = b"outbox:item-1:summariser"


def _spec(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(key).decode().rstrip('=')}"


OLD = _spec("old", bytes(range(32)))
NEW = _spec("new", bytes(range(32, 64)))


def test_sealed_text_opens_to_the_same_bytes_and_does_not_contain_them() -> None:
    """A sealed item opens to its plaintext with the same aad, and the plaintext is not visible in it."""
    ring = Keyring.parse([NEW])
    sealed = ring.seal(TEXT, AAD)
    assert TEXT not in sealed and b"merger" not in sealed
    assert ring.open(sealed, AAD) == TEXT
    assert ring.key_id_of(sealed) == "new"


def test_two_seals_of_the_same_text_differ() -> None:
    """Each seal draws a fresh nonce, so equal plaintexts do not give equal sealed items."""
    ring = Keyring.parse([NEW])
    assert ring.seal(TEXT, AAD) != ring.seal(TEXT, AAD)


def test_layout_is_version_key_id_nonce_then_aes_gcm() -> None:
    """The blob is 0x01, the key id's length and bytes, a 12-byte nonce, then what AESGCM itself produces
    with the header prepended to the aad: a reference check against the library, not our own framing."""
    ring = Keyring.parse([NEW])
    sealed = ring.seal(TEXT, AAD)
    header = b"\x01\x03new"
    assert sealed.startswith(header)
    nonce = sealed[len(header) : len(header) + NONCE_BYTES]
    expected = AESGCM(bytes(range(32, 64))).encrypt(nonce, TEXT, header + AAD)
    assert sealed == header + nonce + expected


def test_different_aad_does_not_open() -> None:
    """An item moved to another row (other aad) is refused, as is one opened without its aad."""
    ring = Keyring.parse([NEW])
    sealed = ring.seal(TEXT, AAD)
    for aad in (b"outbox:item-2:summariser", b"", AAD + b"\x00"):
        with pytest.raises(SealingError, match="authentication failed"):
            ring.open(sealed, aad)


@pytest.mark.parametrize("index", range(len(Keyring.parse([NEW]).seal(TEXT, AAD))))
def test_flipping_any_byte_is_refused(index: int) -> None:
    """Changing any single byte, header included, makes open fail with SealingError."""
    ring = Keyring.parse([NEW, OLD])
    sealed = bytearray(ring.seal(TEXT, AAD))
    sealed[index] ^= 0x01
    with pytest.raises(SealingError):
        ring.open(bytes(sealed), AAD)


def test_truncated_or_foreign_blobs_are_refused() -> None:
    """Every prefix of a sealed item, and bytes of an unknown version, are refused without a crash."""
    ring = Keyring.parse([NEW])
    sealed = ring.seal(TEXT, AAD)
    for cut in range(len(sealed)):
        with pytest.raises(SealingError):
            ring.open(sealed[:cut], AAD)
    with pytest.raises(SealingError, match="version"):
        ring.open(b"\x02" + sealed[1:], AAD)
    with pytest.raises(SealingError, match="version"):
        ring.key_id_of(TEXT)


def test_rotation_keeps_old_items_open_and_seals_under_the_new_key() -> None:
    """After a new key is prepended, items sealed under the old key still open and new seals use the new
    key; once the old key is removed, its items no longer open and say which key they need."""
    before = Keyring.parse([OLD])
    old_item = before.seal(TEXT, AAD)
    rotated = Keyring.parse([NEW, OLD])
    assert rotated.active_id == "new"
    assert rotated.open(old_item, AAD) == TEXT
    new_item = rotated.seal(TEXT, AAD)
    assert (rotated.key_id_of(old_item), rotated.key_id_of(new_item)) == ("old", "new")
    assert Keyring.parse([NEW]).open(new_item, AAD) == TEXT
    with pytest.raises(SealingError, match="unknown key id 'old'"):
        Keyring.parse([NEW]).open(old_item, AAD)
    assert Keyring.parse([NEW]).key_id_of(old_item) == "old"  # reports work without the key


def test_same_key_id_with_another_key_does_not_open() -> None:
    """A key id reused for a different key (an operator mistake) fails authentication, not silently."""
    sealed = Keyring.parse([_spec("k1", bytes(32))]).seal(TEXT, AAD)
    with pytest.raises(SealingError, match="authentication failed"):
        Keyring.parse([_spec("k1", bytes([1]) * 32)]).open(sealed, AAD)


SECRET_KEY = _spec("k1", b"\xab" * 32).partition(":")[2]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "no keys"),
        ([f"k1{SECRET_KEY}"], "key 1: expected KEYID:BASE64URL"),
        ([NEW, f":{SECRET_KEY}"], "key 2: key id"),
        ([NEW, f"{'x' * 33}:{SECRET_KEY}"], "key 2: key id"),
        ([f"k.1:{SECRET_KEY}"], "key 1: key id"),
        ([f"k1:{SECRET_KEY}+/"], "key 1: key is not base64url"),
        ([f"k1:{SECRET_KEY[:-1]}!"], "key 1: key is not base64url"),
        ([f"k1:{SECRET_KEY}=="], "key 1: key is not base64url"),  # 43 chars + "==" is not valid padding
        (["k1:" + base64.urlsafe_b64encode(b"\xab" * 16).decode()], "key 1: key must be 32 bytes, got 16"),
        ([OLD, NEW, _spec("old", b"\xab" * 32)], "key 3: duplicate key id 'old' \\(also key 1\\)"),
    ],
)
def test_bad_key_specs_name_the_position_and_never_echo_the_key(values: list[str], message: str) -> None:
    """Each malformed spec is a ValueError naming the key's position; no key material is in the message."""
    with pytest.raises(ValueError, match=message) as caught:
        Keyring.parse(values)
    text = str(caught.value)
    assert SECRET_KEY[:16] not in text
    for value in values:
        key_part = value.partition(":")[2]
        assert not key_part or key_part[:16] not in text


def test_padded_and_unpadded_base64url_both_parse() -> None:
    """``KEYID:BASE64URL`` takes the key with or without ``=`` padding, and surrounding whitespace."""
    key = bytes(range(100, 132))
    padded = f"k1:{base64.urlsafe_b64encode(key).decode()}"
    assert padded.endswith("=")
    sealed = Keyring.parse([f" {padded} "]).seal(TEXT, AAD)
    assert Keyring.parse([_spec("k1", key)]).open(sealed, AAD) == TEXT


def test_new_key_spec_and_generate_give_fresh_usable_keys() -> None:
    """A generated spec is ``k`` + 8 hex chars and a 32-byte base64url key, different every time."""
    spec = new_key_spec()
    assert re.fullmatch(r"k[0-9a-f]{8}:[A-Za-z0-9_-]{43}", spec)
    assert spec != new_key_spec()
    ring = Keyring.generate()
    assert re.fullmatch(r"k[0-9a-f]{8}", ring.active_id)
    assert ring.open(ring.seal(TEXT, AAD), AAD) == TEXT
    assert Keyring.generate().keys != ring.keys


def test_repr_shows_key_ids_but_no_key_material() -> None:
    """A keyring that ends up in a log line or traceback shows its ids only."""
    ring = Keyring.parse([NEW, OLD])
    text = repr(ring)
    assert "new" in text and "old" in text
    assert bytes(range(32)).hex() not in text and repr(bytes(range(32))) not in text
    assert OLD.partition(":")[2] not in text


def test_direct_construction_is_validated() -> None:
    """Building a Keyring from raw keys checks the same rules as parsing."""
    with pytest.raises(ValueError, match="key 1: key must be 32 bytes"):
        Keyring(("k1",), (b"short",))
    with pytest.raises(ValueError, match="at least one key"):
        Keyring((), ())
    with pytest.raises(ValueError, match="key 2: duplicate"):
        Keyring(("a", "a"), (bytes(KEY_BYTES), bytes(KEY_BYTES)))


@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=256), other=st.binary(max_size=256))
def test_any_bytes_round_trip_only_under_their_own_aad(plaintext: bytes, aad: bytes, other: bytes) -> None:
    """For arbitrary plaintext and aad, open(seal(p, a), a) == p; any other aad is refused."""
    ring = Keyring.parse([NEW, OLD])
    sealed = ring.seal(plaintext, aad)
    assert ring.open(sealed, aad) == plaintext
    assert ring.key_id_of(sealed) == "new"
    if other != aad:
        with pytest.raises(SealingError):
            ring.open(sealed, other)


@given(
    plaintext=st.binary(max_size=512),
    aad=st.binary(max_size=64),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_is_refused(plaintext: bytes, aad: bytes, position: int, mask: int) -> None:
    """Changing any byte of any sealed item to any other value is refused, never opened to other text."""
    ring = Keyring.parse([NEW, OLD])
    sealed = bytearray(ring.seal(plaintext, aad))
    sealed[position % len(sealed)] ^= mask
    with pytest.raises(SealingError):
        ring.open(bytes(sealed), aad)


@given(blob=st.binary(max_size=128))
def test_arbitrary_bytes_never_crash_open(blob: bytes) -> None:
    """Random bytes are refused with SealingError, never another exception."""
    with pytest.raises(SealingError):
        Keyring.parse([NEW]).open(blob, AAD)
