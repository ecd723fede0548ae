"""Audit: show, verify and export the consent ledger and the decision log (the auditor's side of the flow).

The CLI calls these with an opened ``Store`` and a text stream. Exports in JSON lines carry ``seq``,
``prev_hash``, ``hash`` and the record exactly as stored, so an auditor can re-verify them offline with
``rows_from_jsonl`` + ``verify_rows`` (or ``entries_from_jsonl`` + ``verify``) without access to the database.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any, Literal, TextIO

from gateway.consent import ledger
from gateway.consent.ledger import VerifyReport
from gateway.decision_log import decision_to_dict
from gateway.model import ConsentRecord, Decision
from gateway.store.base import LedgerEntry, LedgerRow, Store

SHOW_COLUMNS = (
    "seq", "at", "meeting", "subject", "indicated_by", "purposes", "choice", "outcome", "channel",
    "record_id",
)  # fmt: skip
_RECORD_FIELDS = tuple(f.name for f in fields(ConsentRecord))
_DECISION_FIELDS = tuple(f.name for f in fields(Decision))
# Spreadsheets execute cells starting with these; ids come from platforms, so they are not trusted.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""Characters a spreadsheet may read a cell starting with as a formula (with their full-width forms)."""


# --- show --------------------------------------------------------------------------------------------


def _summary(entry: LedgerEntry) -> dict[str, Any]:
    record = entry.record
    return {
        "seq": entry.seq,
        "at": ledger.format_time(record.at),
        "meeting": record.meeting_id,
        "subject": record.subject,
        "indicated_by": record.indicated_by,
        "purposes": ",".join(record.purposes),
        "choice": record.choice.value,
        "outcome": record.outcome.value,
        "channel": record.channel,
        "record_id": record.record_id,
    }


def printable(value: object) -> str:
    """Escape control characters so a crafted id cannot drive the auditor's terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(value))


def format_table(rows: list[dict[str, Any]], columns: Iterable[str]) -> str:
    header = list(columns)
    cells = [header, *([printable(row[c]) for c in header] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in cells
    )


async def show(
    store: Store,
    *,
    meeting_id: str | None = None,
    participant_id: str | None = None,
    fmt: Literal["table", "json"] = "table",
    out: TextIO,
) -> None:
    """Ledger entries as an aligned table or as JSON lines."""
    entries = await store.ledger_entries(meeting_id=meeting_id, participant_id=participant_id)
    rows = [_summary(entry) for entry in entries]
    if fmt == "json":
        out.writelines(json.dumps(row) + "\n" for row in rows)
    elif fmt == "table":
        out.write(format_table(rows, SHOW_COLUMNS))
    else:
        raise ValueError(f"unknown format {fmt!r}: use table or json")


# --- verify ------------------------------------------------------------------------------------------


async def verify_store(store: Store, expect_head: str | None = None) -> VerifyReport:
    return ledger.verify_rows(await store.ledger_rows(), expect_head)


def format_report(report: VerifyReport) -> str:
    status = "OK" if report.ok else "FAILED"
    lines = [f"ledger {status}: {report.count} entries, head {report.head_hash}"]
    lines += [f"  seq {seq}: {code}" for seq, code in report.problems]
    if not report.anchored:
        lines.append("  (removal of the newest entries is only detectable against a head kept elsewhere)")
    return "\n".join(lines)


# --- export ------------------------------------------------------------------------------------------


def _export_line(row: LedgerRow) -> dict[str, Any]:
    line: dict[str, Any] = {"seq": row.seq, "prev_hash": row.prev_hash, "hash": row.hash}
    try:
        line["record"] = json.loads(row.record_json)
    except ValueError:
        line["record_json"] = row.record_json  # a damaged row is exported as is, for the auditor to see
    return line


def _cell(value: object) -> str:
    encoded = ledger.encode_value(value)
    if isinstance(encoded, list):
        text = ";".join(json.dumps(v) if isinstance(v, dict) else str(v) for v in encoded)
    else:
        text = "" if encoded is None else str(encoded)
    # a spreadsheet may skip leading spaces before reading a formula (" =HYPERLINK(...)")
    formula = text.startswith(_FORMULA_STARTS) or text.lstrip().startswith(_FORMULA_STARTS)
    return "'" + text if formula else text


def _ledger_csv(entry: LedgerEntry) -> list[str]:
    values = [getattr(entry.record, name) for name in _RECORD_FIELDS]
    return [str(entry.seq), entry.prev_hash, entry.hash, *map(_cell, values)]


def _decision_csv(decision: Decision) -> list[str]:
    data = decision_to_dict(decision)
    return [_cell(data[name]) for name in _DECISION_FIELDS]


async def _export_ledger(store: Store, fmt: str, out: TextIO) -> int:
    if fmt == "jsonl":
        rows = await store.ledger_rows()
        out.writelines(ledger.canonical_dumps(_export_line(row)) + "\n" for row in rows)
        return len(rows)
    entries = await store.ledger_entries()
    writer = csv.writer(out)
    writer.writerow(["seq", "prev_hash", "hash", *_RECORD_FIELDS])
    writer.writerows(_ledger_csv(entry) for entry in entries)
    return len(entries)


async def _export_decisions(store: Store, fmt: str, out: TextIO) -> int:
    decisions = await store.decision_records()
    if fmt == "jsonl":
        out.writelines(ledger.canonical_dumps(decision_to_dict(d)) + "\n" for d in decisions)
        return len(decisions)
    writer = csv.writer(out)
    writer.writerow(_DECISION_FIELDS)
    writer.writerows(_decision_csv(decision) for decision in decisions)
    return len(decisions)


async def export(
    store: Store,
    *,
    fmt: Literal["jsonl", "csv"],
    out: TextIO,
    what: Literal["ledger", "decisions"] = "ledger",
) -> int:
    """Write the ledger or the decision log to ``out``; returns the number of records written.

    Only the JSON-lines ledger export can be re-verified: CSV is for reading, not for proof.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown format {fmt!r}: use jsonl or csv")
    if what == "ledger":
        return await _export_ledger(store, fmt, out)
    if what == "decisions":
        return await _export_decisions(store, fmt, out)
    raise ValueError(f"unknown log {what!r}: use ledger or decisions")


# --- reading an export back --------------------------------------------------------------------------


def _export_objects(lines: Iterable[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ValueError(f"export line {number} is not JSON") from None
        if not isinstance(obj, dict):
            raise ValueError(f"export line {number} is not a JSON object")
        yield number, obj


def _row_from_object(number: int, obj: Mapping[str, Any]) -> LedgerRow:
    try:
        # "record_json" is how _export_line writes a row that was not even JSON
        raw = obj["record_json"] if "record" not in obj else None
        record_json = ledger.canonical_dumps(obj["record"]) if raw is None else str(raw)
        return LedgerRow(int(obj["seq"]), record_json, str(obj["prev_hash"]), str(obj["hash"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"export line {number} lacks seq, prev_hash, hash or record") from None


def rows_from_jsonl(lines: Iterable[str]) -> list[LedgerRow]:
    """Rows of a JSON-lines ledger export, re-canonicalised exactly as they were hashed."""
    return [_row_from_object(number, obj) for number, obj in _export_objects(lines)]


def entries_from_jsonl(lines: Iterable[str]) -> list[LedgerEntry]:
    """Decoded entries of a JSON-lines ledger export; raises ValueError on a record that does not decode."""
    entries = []
    for number, obj in _export_objects(lines):
        row = _row_from_object(number, obj)
        try:
            record = ledger.record_from_dict(json.loads(row.record_json))
        except (ValueError, TypeError):
            raise ValueError(f"export line {number}: record does not decode") from None
        entries.append(LedgerEntry(row.seq, record, row.prev_hash, row.hash))
    return entries
