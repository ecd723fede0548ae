"""Standard Webhooks signing and verification, checked against the spec's vector and the reference library."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from gateway.signing import Reason, decode_secret, headers, sign, verify

VECTOR_FILE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "platforms"
    / "standard_webhooks"
    / "test-vector.txt"
)

# The same vector, embedded so that it runs where /work/shared is absent.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _read_vector(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            fields[name.strip()] = value.strip()
    return fields


def _vector_file() -> Path:
    if VECTOR_FILE.exists():
        return VECTOR_FILE
    message = f"Standard Webhooks test vector not found at {VECTOR_FILE} (the shared fixtures are absent)"
    if os.environ.get("CONSENT_GATEWAY_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _signed(secret: str = SECRET, msg_id: str = MSG_ID, timestamp: int = TIMESTAMP, body: bytes = BODY):
    return headers(secret, msg_id, timestamp, body)


def test_known_answer_vector_from_shared_fixtures() -> None:
    """The shared fixture's vector signs and verifies to its published signature."""
    vector = _read_vector(_vector_file())
    body = vector["payload"].encode()
    timestamp = int(vector["timestamp"])
    assert sign(vector["secret"], vector["msg_id"], timestamp, body) == vector["signature"]
    sent = {"webhook-id": vector["msg_id"], "webhook-timestamp": vector["timestamp"]}
    sent["webhook-signature"] = vector["signature"]
    assert verify([vector["secret"]], sent, body, now=timestamp).ok


def test_known_answer_vector_embedded() -> None:
    """The spec's vector, embedded literally, signs to its published signature."""
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    assert verify([SECRET], _signed(), BODY, now=TIMESTAMP).ok


def test_secret_without_prefix_or_padding_is_accepted() -> None:
    """A raw base64 secret (no ``whsec_``, padding stripped) gives the same key, as the spec's libs do."""
    raw = SECRET.removeprefix("whsec_")
    assert sign(raw, MSG_ID, TIMESTAMP, BODY) == SIGNATURE
    assert decode_secret(raw.rstrip("=")) == decode_secret(SECRET)


@pytest.mark.parametrize("secret", ["whsec_", "", "whsec_s3cr3t!!", "s3cr3t s3cr3t"])
def test_malformed_secret_is_a_configuration_error(secret: str) -> None:
    """An empty or non-base64 secret raises ValueError without echoing the secret."""
    with pytest.raises(ValueError, match="webhook secret") as raised:
        sign(secret, MSG_ID, TIMESTAMP, BODY)
    assert "s3cr3t" not in str(raised.value)


def test_headers_carry_id_timestamp_and_signature() -> None:
    """headers() returns exactly the three webhook-* headers."""
    assert _signed() == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }


def test_result_carries_id_and_timestamp() -> None:
    """A successful verification reports the message id and timestamp (for replay checks)."""
    result = verify([SECRET], _signed(), BODY, now=TIMESTAMP)
    assert (result.reason, result.msg_id, result.timestamp) == (Reason.OK, MSG_ID, TIMESTAMP)


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_the_edge_of_tolerance_is_accepted(offset: int) -> None:
    """Exactly ±tolerance seconds is still inside the window."""
    assert verify([SECRET], _signed(), BODY, now=TIMESTAMP - offset).ok


def test_stale_timestamp_is_rejected() -> None:
    """A timestamp older than the tolerance is a replay risk."""
    assert verify([SECRET], _signed(), BODY, now=TIMESTAMP + 301).reason is Reason.STALE_TIMESTAMP


def test_future_timestamp_is_rejected() -> None:
    """A timestamp too far ahead is refused too."""
    assert verify([SECRET], _signed(), BODY, now=TIMESTAMP - 301).reason is Reason.STALE_TIMESTAMP


def test_custom_tolerance() -> None:
    """The window is configurable."""
    assert (
        verify([SECRET], _signed(), BODY, now=TIMESTAMP + 20, tolerance=10).reason is Reason.STALE_TIMESTAMP
    )


@pytest.mark.parametrize(
    "raw", ["", "abc", "1614265330.5", "-1614265330", "+1614265330", "1_614_265_330", "١٢٣"]
)
def test_malformed_timestamp_is_rejected(raw: str) -> None:
    """Anything but integer seconds is a bad timestamp (empty counts as missing)."""
    sent = {**_signed(), "webhook-timestamp": raw}
    expected = Reason.MISSING_HEADERS if raw == "" else Reason.BAD_TIMESTAMP
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).reason is expected


def test_tampered_body_is_rejected() -> None:
    """One changed byte of the body breaks the signature."""
    assert (
        verify([SECRET], _signed(), BODY.replace(b"2", b"3", 1), now=TIMESTAMP).reason is Reason.BAD_SIGNATURE
    )


def test_tampered_id_is_rejected() -> None:
    """The message id is part of the signed content."""
    sent = {**_signed(), "webhook-id": "msg_other"}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).reason is Reason.BAD_SIGNATURE


def test_wrong_secret_is_rejected() -> None:
    """A signature made with another secret does not verify."""
    other = "whsec_" + base64.b64encode(b"another secret of 24 bytes").decode()
    assert verify([other], _signed(), BODY, now=TIMESTAMP).reason is Reason.BAD_SIGNATURE


def test_any_configured_secret_may_match() -> None:
    """During key rotation both the old and the new secret verify."""
    other = "whsec_" + base64.b64encode(b"another secret of 24 bytes").decode()
    assert verify([other, SECRET], _signed(), BODY, now=TIMESTAMP).ok


def test_no_secrets_fails_closed() -> None:
    """With no secret configured nothing verifies."""
    assert verify([], _signed(), BODY, now=TIMESTAMP).reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(missing: str) -> None:
    """Each of the three headers is required."""
    sent = {name: value for name, value in _signed().items() if name != missing}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).reason is Reason.MISSING_HEADERS


def test_legacy_svix_headers_are_accepted() -> None:
    """Older Recall.ai accounts send svix-* headers with the same scheme."""
    sent = {"svix-id": MSG_ID, "svix-timestamp": str(TIMESTAMP), "svix-signature": SIGNATURE}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).ok


def test_header_names_are_case_insensitive() -> None:
    """Header names in any case are found."""
    sent = {name.title(): value for name, value in _signed().items()}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).ok


def test_one_valid_signature_among_several_is_enough() -> None:
    """A space-separated list passes if any v1 entry matches, whatever precedes it."""
    wrong = "v1," + base64.b64encode(b"x" * 32).decode()
    listed = f"v1a,abcd v1,!!notbase64 nonsense {wrong} {SIGNATURE} v2,{SIGNATURE[3:]}"
    sent = {**_signed(), "webhook-signature": listed}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).ok


def test_only_v1_entries_count() -> None:
    """The right digest under another version label is not accepted."""
    sent = {**_signed(), "webhook-signature": "v2," + SIGNATURE[3:]}
    assert verify([SECRET], sent, BODY, now=TIMESTAMP).reason is Reason.BAD_SIGNATURE


# Cross-checks against the reference implementation. It verifies against its own wall clock, so the
# generated timestamps lie near now; it signs text, so bodies are valid UTF-8.
secrets = st.binary(min_size=1, max_size=64).map(lambda key: base64.b64encode(key).decode())
prefixed_secrets = st.tuples(secrets, st.booleans()).map(lambda pair: ("whsec_" if pair[1] else "") + pair[0])
msg_ids = st.text(alphabet=st.characters(codec="ascii", exclude_characters=".\r\n"), min_size=1, max_size=40)
texts = st.text(max_size=300)
offsets = st.integers(min_value=-200, max_value=200)


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


@settings(max_examples=150, deadline=None)
@given(secret=prefixed_secrets, msg_id=msg_ids, offset=offsets, text=texts)
def test_our_signatures_verify_with_the_reference(secret: str, msg_id: str, offset: int, text: str) -> None:
    """What we sign, the reference library accepts."""
    timestamp = _now() + offset
    body = text.encode()
    Webhook(secret).verify(body, headers(secret, msg_id, timestamp, body), json_parse=False)


@settings(max_examples=150, deadline=None)
@given(secret=prefixed_secrets, msg_id=msg_ids, offset=offsets, text=texts)
def test_reference_signatures_verify_with_ours(secret: str, msg_id: str, offset: int, text: str) -> None:
    """What the reference library signs, we accept, and produce the identical header value."""
    timestamp = _now() + offset
    reference = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), text)
    sent = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": reference}
    assert reference == sign(secret, msg_id, timestamp, text.encode())
    assert verify([secret], sent, text.encode(), now=_now()).ok


@settings(max_examples=100, deadline=None)
@given(secret=secrets, msg_id=msg_ids, text=texts, extra=st.text(min_size=1, max_size=5))
def test_tampered_bodies_fail_in_both(secret: str, msg_id: str, text: str, extra: str) -> None:
    """A body changed after signing is rejected by us and by the reference alike."""
    timestamp = _now()
    sent = headers(secret, msg_id, timestamp, text.encode())
    tampered = (text + extra).encode()
    assert verify([secret], sent, tampered, now=timestamp).reason is Reason.BAD_SIGNATURE
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, sent, json_parse=False)
