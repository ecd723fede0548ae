"""The consent ledger: canonical form of a consent record, the hash chain over it, and verification.

Consent channels produce ``ConsentRecord`` values; storage appends them through ``chain``/``next_row`` so that
each entry commits to everything before it; auditors run ``verify`` over the stored rows or an export
(DESIGN invariant 8). Everything here is pure: no I/O, no clock.

The hash of an entry is ``sha256("{seq}:{prev_hash}:" + record_json)`` where ``record_json`` is the canonical
serialisation: sorted-key compact ASCII JSON, datetimes as ISO-8601 UTC with a ``Z`` suffix, enums as their
values, tuples as lists, and fields still at their dataclass default left out. Leaving defaults out is what
lets a later version add a defaulted field to ``ConsentRecord`` without changing the hash of any old record.

What ``verify`` can and cannot prove: any edit, deletion (first, middle), insertion or reordering of rows
breaks a hash or a link. Removing rows from the *tail* leaves a shorter but valid chain, and so does an
attacker who rewrites a row and re-chains everything after it; both are only detectable against a head hash
kept outside the database (``expect_head``), which is why auditors should record the head they last saw.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway.model import ConsentChoice, ConsentRecord, RecordOutcome
from gateway.store.base import LedgerEntry, LedgerRow

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry."""

Head = tuple[int, str]
"""The last entry's ``(seq, hash)``; ``(0, GENESIS)`` for an empty ledger."""

EMPTY_HEAD: Head = (0, GENESIS)

_E = TypeVar("_E", bound=enum.Enum)


# --- JSON value codec (shared with the decision log) ---------------------------------------------------


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with ``Z``; naive datetimes are refused because their instant is ambiguous."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: timestamps must carry a timezone")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("invalid timestamp") from None  # the message would echo the value
    if value.tzinfo is None:
        raise ValueError("timestamp without timezone")
    return value.astimezone(UTC)


def encode_value(value: object) -> Any:
    """A field value as JSON: datetimes as UTC strings, enums as values, tuples as lists."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [encode_value(item) for item in value]
    return value


def canonical_dumps(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class Fields:
    """Typed, strict reads from a decoded JSON object.

    Error messages name the kind and key but never the value, so a malformed record cannot leak its
    contents into a log line.
    """

    def __init__(self, data: Mapping[str, object], kind: str, allowed: Iterable[str]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"{kind}: unknown keys {unknown}")
        self._data = data
        self._kind = kind

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise ValueError(f"{self._kind}: missing {key}")
        return self._data[key]

    def _fail(self, key: str, expected: str) -> ValueError:
        return ValueError(f"{self._kind}: {key} must be {expected}")

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def opt_string(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.string(key)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._data.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean")
        return value

    def array(self, key: str) -> list[object]:
        value = self._data.get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def time(self, key: str) -> datetime:
        try:
            return parse_time(self.string(key))
        except (ValueError, OverflowError):
            raise self._fail(key, "an ISO-8601 timestamp with timezone") from None

    def opt_time(self, key: str) -> datetime | None:
        return None if self._data.get(key) is None else self.time(key)

    def member(self, cls: type[_E], key: str, default: _E | None = None) -> _E:
        if default is not None and key not in self._data:
            return default
        try:
            return cls(self.string(key))
        except ValueError:
            raise self._fail(key, f"a {cls.__name__}") from None


# --- consent records ---------------------------------------------------------------------------------

_RECORD_FIELDS = tuple(f.name for f in fields(ConsentRecord))
_RECORD_DEFAULTS = {f.name: f.default for f in fields(ConsentRecord) if f.default is not MISSING}


def record_to_dict(record: ConsentRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        if name in _RECORD_DEFAULTS and value == _RECORD_DEFAULTS[name]:
            continue  # see the module docstring: keeps old hashes stable when fields are added
        out[name] = encode_value(value)
    return out


def record_from_dict(data: Mapping[str, object]) -> ConsentRecord:
    f = Fields(data, "consent record", _RECORD_FIELDS)
    return ConsentRecord(
        record_id=f.string("record_id"),
        platform=f.string("platform"),
        meeting_id=f.string("meeting_id"),
        subject=f.string("subject"),
        indicated_by=f.string("indicated_by"),
        purposes=f.strings("purposes"),
        choice=f.member(ConsentChoice, "choice"),
        channel=f.string("channel"),
        notice_version=f.opt_string("notice_version"),
        policy_revision=f.string("policy_revision"),
        at=f.time("at"),
        expires_at=f.opt_time("expires_at"),
        evidence=f.opt_string("evidence"),
        delegation=f.opt_string("delegation"),
        outcome=f.member(RecordOutcome, "outcome", RecordOutcome.ACCEPTED),
        reason=f.opt_string("reason"),
    )


def canonical_json(record: ConsentRecord) -> str:
    """The exact text that is hashed and stored for a record."""
    return canonical_dumps(record_to_dict(record))


# --- the chain ---------------------------------------------------------------------------------------


def entry_hash(seq: int, prev_hash: str, record_json: str) -> str:
    digest = hashlib.sha256(f"{seq}:{prev_hash}:".encode("ascii"))
    # surrogatepass: a tampered row may hold any text; hashing it must not crash the audit
    digest.update(record_json.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def next_row(head: Head, record_json: str) -> LedgerRow:
    """The row that follows ``head``; storage calls this inside its write transaction."""
    seq, prev_hash = head[0] + 1, head[1]
    return LedgerRow(seq, record_json, prev_hash, entry_hash(seq, prev_hash, record_json))


def chain(prev: LedgerEntry | None, record: ConsentRecord) -> LedgerEntry:
    head = EMPTY_HEAD if prev is None else (prev.seq, prev.hash)
    row = next_row(head, canonical_json(record))
    return LedgerEntry(row.seq, record, row.prev_hash, row.hash)


def to_row(entry: LedgerEntry) -> LedgerRow:
    return LedgerRow(entry.seq, canonical_json(entry.record), entry.prev_hash, entry.hash)


# --- verification ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    count: int
    head_hash: str
    """Hash of the last entry (``GENESIS`` when empty): keep it outside the database as an anchor."""
    problems: tuple[tuple[int, str], ...] = ()
    """``(seq, code)`` with code one of hash_mismatch, broken_link, seq_gap, seq_order, columns_mismatch,
    head_mismatch."""
    anchored: bool = False
    """Whether the chain was checked against an expected head (only then is tail truncation detectable)."""


def _row_problems(row: LedgerRow, prev_seq: int, prev_hash: str) -> Iterator[str]:
    if row.seq <= prev_seq:
        yield "seq_order"
    elif row.seq != prev_seq + 1:
        yield "seq_gap"
    if row.prev_hash != prev_hash:
        yield "broken_link"
    if entry_hash(row.seq, row.prev_hash, row.record_json) != row.hash:
        yield "hash_mismatch"
    if row.columns is not None and row.columns != _columns_of(row.record_json):
        yield "columns_mismatch"


def _columns_of(record_json: str) -> tuple[str, str, str, str] | None:
    """What a row's indexed columns must hold for its record (None: the record cannot be read)."""
    try:
        record = record_from_dict(json.loads(record_json))
    except (ValueError, TypeError, KeyError, OverflowError):
        return None
    return (record.record_id, record.meeting_id, record.subject, format_time(record.at))


def verify_rows(rows: Iterable[LedgerRow], expect_head: str | None = None) -> VerifyReport:
    """Check rows in stored order; each problem is reported at the seq where it shows."""
    problems: list[tuple[int, str]] = []
    (prev_seq, prev_hash), count = EMPTY_HEAD, 0
    kept = expect_head is None or expect_head == GENESIS
    for row in rows:
        problems.extend((row.seq, code) for code in _row_problems(row, prev_seq, prev_hash))
        # continue from the stored hash so one bad row is reported once, not for the rest of the chain
        prev_seq, prev_hash, count = row.seq, row.hash, count + 1
        kept = kept or row.hash == expect_head
    if not kept:
        # the head kept at an earlier audit must still be in the chain: entries recorded since then are
        # growth; a head that is gone means what it ended with was cut off or rewritten
        problems.append((prev_seq, "head_mismatch"))
    return VerifyReport(not problems, count, prev_hash, tuple(problems), expect_head is not None)


def verify(entries: Iterable[LedgerEntry], expect_head: str | None = None) -> VerifyReport:
    return verify_rows((to_row(entry) for entry in entries), expect_head)
