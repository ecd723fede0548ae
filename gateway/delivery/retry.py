"""Retry policy for deliveries: which outcomes are final, and how long to wait before the next attempt.

Pure functions used by the dispatcher between attempts: classify an HTTP status, compute an exponential
backoff with full jitter, and read a ``Retry-After`` header. The clock and the random source are passed in.
"""

from __future__ import annotations

import enum
import random
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 429})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


def classify(status: int) -> Verdict:
    """2xx delivered; 5xx, 408 and 429 worth another try; anything else final."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Verdict.RETRY
    # 3xx lands here too: redirects are not followed, since signed content must reach only the configured URL.
    return Verdict.REJECTED


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))] after the ``attempt``-th failure."""
    # The exponent is bounded so that a large attempt number cannot overflow the float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, ceiling)


def retry_after(value: str | None, now: float, cap: float) -> float | None:
    """Seconds to wait per ``Retry-After`` (delta-seconds or HTTP date), capped; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # HTTP dates are always GMT; a zoneless date is not one
    return min(max(when.timestamp() - now, 0.0), cap)
