"""Instants from the outside world: a timezone-aware time the gateway can store and compute with.

Platforms and callers send times as text. Any aware time parses, but one near the ends of the calendar
(year 1 with a positive offset, year 9999) overflows later, when it is converted to UTC or an expiry is
added to it, after part of a request may already have been applied. So times are held to years 1970 to
9000 at the boundary, where a bad one is a 400 naming its field and changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

FIRST_YEAR = 1970
LAST_YEAR = 9000


def plausible(value: datetime) -> datetime:
    """``value`` if its year (as written, before any conversion) is within the range; else ValueError."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must be a time between the years {FIRST_YEAR} and {LAST_YEAR}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(plausible)]
"""An aware datetime within years 1970 to 9000: what request models use for every time they take."""
