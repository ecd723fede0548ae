"""How an id is stored in an indexed column, the same on both backends."""

from __future__ import annotations

import re


def stored(value: str) -> str:
    """An id as stored in an indexed column: PostgreSQL text holds neither NUL nor lone surrogates,
    SQLite's driver cannot encode lone surrogates, and platform ids are opaque text that may contain both.

    Injective (a backslash is escaped too), so filtering on the escaped value finds exactly the records of
    the original; ordinary ids are stored as they are. The record itself is kept verbatim in
    ``record_json``, whose JSON escapes every such character.
    """
    return _UNSTORABLE.sub(_escape, value)


_UNSTORABLE = re.compile("[\\\\\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else f"\\u{ord(char):04x}"


def unstored(value: str) -> str:
    """The id ``stored`` made ``value`` from (its inverse)."""
    return _ESCAPED.sub(_unescape, value)


_ESCAPED = re.compile(r"\\(\\|u[0-9a-f]{4})")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    return "\\" if code == "\\" else chr(int(code[1:], 16))
