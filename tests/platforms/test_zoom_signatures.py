"""Known-answer tests for Zoom's three signature formulas (PLATFORMS.md), with values computed by openssl.

Each expected value was computed once, independently of this code, with the shell commands shown; the
gateway's implementation and the fakes' implementation must both reproduce them.
"""

from __future__ import annotations

import pytest

from gateway.platforms.config import ZoomApp
from gateway.platforms.zoom import Install, encrypted_token, signature, verify
from gateway.platforms.zoom_rtms import handshake_signature
from gateway.web.problems import Problem
from tests.fakes.zoom import zoom_signature
from tests.fakes.zoom_rtms import rtms_signature

SECRET = "zoom-test-secret-token"
TIMESTAMP = "1700000000"
BODY = (
    b'{"event":"meeting.started","event_ts":1700000000000,"payload":{"account_id":"a","object":'
    b'{"uuid":"hwkAADUySwyG3GyUkqc0vA==","id":86431910364}}}'
)
# printf '%s' 'v0:1700000000:{"event":"meeting.started","event_ts":1700000000000,"payload":{"account_id":"a",\
#   "object":{"uuid":"hwkAADUySwyG3GyUkqc0vA==","id":86431910364}}}' \
#   | openssl dgst -sha256 -hmac 'zoom-test-secret-token'
WEBHOOK_SIGNATURE = "v0=25c4738ee970a61bd221d84d7acdc6d2698e5331946a9b11349f78ea7881e722"
# printf '%s' 'qgg8vlvZRS6UYooatFL8Aw' | openssl dgst -sha256 -hmac 'zoom-test-secret-token'
ENCRYPTED_TOKEN = "189bad60d71b25fc9705f43e5883e837f2d813ec93ba913b641fbe02d931744f"
# printf '%s' 'rtms-client-id,hwkAADUySwyG3GyUkqc0vA==,stream-0f1e' \
#   | openssl dgst -sha256 -hmac 'rtms-client-secret'
RTMS_SIGNATURE = "ec0b75af76ef865df7ce704ec28a85727ccbc35accb544c3f4cb18bfedba4227"


def test_webhook_signature_known_answer() -> None:
    """x-zm-signature is v0= + hex HMAC-SHA256(secret, "v0:{timestamp}:{raw body}")."""
    assert signature(SECRET, TIMESTAMP, BODY) == WEBHOOK_SIGNATURE
    assert zoom_signature(SECRET, TIMESTAMP, BODY) == WEBHOOK_SIGNATURE


def test_url_validation_known_answer() -> None:
    """encryptedToken is hex HMAC-SHA256(secret, plainToken)."""
    assert encrypted_token(SECRET, "qgg8vlvZRS6UYooatFL8Aw") == ENCRYPTED_TOKEN


def test_rtms_handshake_known_answer() -> None:
    """The RTMS handshake signature is hex HMAC-SHA256(client_secret, "client_id,meeting_uuid,stream_id")."""
    args = ("rtms-client-id", "rtms-client-secret", "hwkAADUySwyG3GyUkqc0vA==", "stream-0f1e")
    assert handshake_signature(*args) == RTMS_SIGNATURE
    assert rtms_signature(*args) == RTMS_SIGNATURE


def test_verify_accepts_the_known_answer_within_the_window_only() -> None:
    """The known-answer signature verifies at its timestamp and up to 300 s either side, not beyond."""
    install = Install(ZoomApp(id="a", webhook_secret_env="X"), SECRET)
    headers = {"x-zm-signature": WEBHOOK_SIGNATURE, "x-zm-request-timestamp": TIMESTAMP}
    for now in (1700000000, 1699999700, 1700000300):
        assert verify([install], headers, BODY, now) is install
    for now in (1699999699, 1700000301):
        with pytest.raises(Problem) as refused:
            verify([install], headers, BODY, now)
        assert refused.value.status == 401
