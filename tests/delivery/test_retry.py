"""The pure retry policy: status classification, full-jitter backoff, Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.retry import Verdict, backoff, classify, retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (429, Verdict.RETRY),
        (408, Verdict.RETRY),
        (400, Verdict.REJECTED),
        (401, Verdict.REJECTED),
        (404, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (301, Verdict.REJECTED),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    """2xx delivered; 5xx, 408, 429 retried; other statuses (redirects included) final."""
    assert classify(status) is verdict


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0.001, max_value=100),
    seed=st.integers(),
)
def test_backoff_stays_within_full_jitter_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    """The delay lies in [0, min(cap, base * 2**(attempt-1))], even for huge attempt numbers."""
    delay = backoff(attempt, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt - 1, 62))


def test_backoff_grows_exponentially_until_the_cap() -> None:
    """With the jitter at its maximum the ceiling doubles per attempt and stops at the cap."""

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [backoff(n, 0.5, 3.0, Top()) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def _http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("3600", 30.0),
        (_http_date(12), 12.0),
        (_http_date(-50), 0.0),
        (_http_date(10_000), 30.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Tue, 14 Nov 2023 22:13:32", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    """Delta-seconds and GMT dates are read and capped; past dates mean now; anything else is ignored."""
    assert retry_after(header, NOW, cap=30.0) == expected
