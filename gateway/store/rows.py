"""Row codecs shared by the stores: records to insert parameters and stored JSON back to values.

Pure functions; each backend passes what differs (how an id is stored in a column, how a driver error is
named). A row that cannot be decoded, and any driver failure, becomes a ``StorageError`` that names the row
or the error class only, never a value from a record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from gateway.consent import ledger
from gateway.decision_log import SCHEMA, decision_from_dict
from gateway.model import ConsentRecord, Decision
from gateway.store.base import LedgerEntry, LedgerRow, StorageError
from gateway.store.columns import unstored


def verbatim(value: str) -> str:
    return value


def storage_error(exc: BaseException, doing: str, error_name: Callable[[BaseException], str]) -> StorageError:
    """``exc`` as a StorageError naming what failed by ``error_name`` only (never its message)."""
    if isinstance(exc, StorageError):
        return StorageError(str(exc))
    error = StorageError(f"storage {doing} failed ({error_name(exc)})")
    error.__cause__ = exc
    return error


def decision_row(decision: Decision, column: Callable[[str], str] = verbatim) -> tuple[str | None, ...]:
    """Insert parameters of a decision; ``column`` maps an id to its stored form."""
    at = ledger.format_time(decision.at)
    participant = decision.participant_id
    return (
        column(decision.decision_id),
        column(decision.meeting_id),
        None if participant is None else column(participant),
        column(decision.destination),
        decision.action._value_,  # the enum's value without the ``value`` descriptor (a call a decision)
        at,
        decision_json(decision, at),
    )


_q = encode_basestring_ascii  # the C function ``json.dumps(..., ensure_ascii=True)`` quotes strings with


def decision_json(decision: Decision, at: str) -> str:
    """``ledger.canonical_dumps(decision_to_dict(decision))``, byte for byte (a test holds the two equal).

    Written out because it runs for every decision on the ingest path: building the dict and letting
    ``json.dumps`` sort it cost ~9 µs a decision, this ~2 µs. Keys are in sorted order, as canonical JSON
    has them; ``at`` is ``format_time(decision.at)``, which the caller needs for its own column too.
    """
    participant = "null" if decision.participant_id is None else _q(decision.participant_id)
    spans = ",".join(
        f'{{"end":{s.end!r},"placeholder":{_q(s.placeholder)},"start":{s.start!r}}}'
        for s in decision.redactions
    )
    return (
        f'{{"action":{_q(decision.action._value_)},"at":{_q(at)},'
        f'"consent_record_ids":{_strings(decision.consent_record_ids)},'
        f'"decision_id":{_q(decision.decision_id)},"destination":{_q(decision.destination)},'
        f'"meeting_id":{_q(decision.meeting_id)},"participant_id":{participant},'
        f'"policy_revision":{_q(decision.policy_revision)},"reasons":{_strings(decision.reasons)},'
        f'"redactions":[{spans}],"rule_ids":{_strings(decision.rule_ids)},'
        f'"segment_id":{_q(decision.segment_id)},"shadow":{"true" if decision.shadow else "false"},'
        f'"v":{SCHEMA!r}}}'
    )


def _strings(values: Sequence[str]) -> str:
    return "[" + ",".join(map(_q, values)) + "]"


def ledger_params(
    row: LedgerRow, record: ConsentRecord, column: Callable[[str], str] = verbatim
) -> tuple[object, ...]:
    """Insert parameters of a chained consent record; ``column`` maps an id to its stored form."""
    at = ledger.format_time(record.at)
    return (row.seq, column(record.record_id), column(record.meeting_id), column(record.subject), at,
            row.record_json, row.prev_hash, row.hash)  # fmt: skip


def ledger_row(row: Any) -> LedgerRow:
    """A ledger row from a driver's ``(seq, record_json, prev_hash, hash)`` result row, with its indexed
    columns (decoded) when the row has them (``SELECT_LEDGER_COLUMNS``)."""
    columns = None
    if len(row) >= 8:
        columns = (unstored(str(row[4])), unstored(str(row[5])), unstored(str(row[6])), str(row[7]))
    return LedgerRow(int(row[0]), str(row[1]), str(row[2]), str(row[3]), columns)


def decode_entry(row: LedgerRow) -> LedgerEntry:
    try:
        record = ledger.record_from_dict(json.loads(row.record_json))
    except (ValueError, TypeError, OverflowError):
        raise StorageError(f"ledger row {row.seq} cannot be decoded") from None
    return LedgerEntry(row.seq, record, row.prev_hash, row.hash)


def decode_decision(row_id: int, record_json: str) -> Decision:
    try:
        return decision_from_dict(json.loads(record_json))
    except (ValueError, TypeError, OverflowError):
        raise StorageError(f"decision row {row_id} cannot be decoded") from None
