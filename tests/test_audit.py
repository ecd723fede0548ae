"""Audit functions: show, verify and export over a real store (the backend the suite runs on)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway import audit
from gateway.consent import ledger
from gateway.model import Action, ConsentChoice, Decision
from gateway.store import open_store
from gateway.store.base import LedgerEntry, Store
from tests.conftest import database_for, tamper
from tests.strategies import T0, consent_record


@pytest.fixture
async def database(tmp_path: Path) -> str:
    return await database_for(tmp_path)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    opened = open_store(database)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def entries(store: Store) -> list[LedgerEntry]:
    records = [
        consent_record(record_id="r1", purposes=("summary", "training")),
        consent_record(record_id="r2", subject="p2", meeting_id="m2", choice=ConsentChoice.REFUSED),
        consent_record(record_id="r3", choice=ConsentChoice.WITHDRAWN, at=T0 + timedelta(minutes=5)),
    ]
    return [await store.append_consent(record) for record in records]


def decision(n: int) -> Decision:
    return Decision(
        decision_id=f"d{n}",
        meeting_id="m1",
        segment_id=f"s{n}",
        destination="summariser",
        action=Action.DROP,
        at=T0,
        policy_revision="rev1",
        reasons=("consent.unknown",),
        participant_id="=cmd|' /C calc'!A0",
    )


async def test_show_table_is_aligned_with_a_header(store: Store, entries: list[LedgerEntry]) -> None:
    """The table has the documented columns and one aligned line per entry."""
    out = io.StringIO()
    await audit.show(store, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == list(audit.SHOW_COLUMNS)
    assert len(lines) == 4
    assert lines[1].index("2025-03-01T12:00:00Z") == lines[0].index("at")
    assert "summary,training" in lines[1]


async def test_show_json_filters_by_participant(store: Store, entries: list[LedgerEntry]) -> None:
    """JSON-lines output has one object per matching entry with the documented keys."""
    out = io.StringIO()
    await audit.show(store, participant_id="p1", fmt="json", out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row["record_id"] for row in rows] == ["r1", "r3"]
    assert set(rows[0]) == set(audit.SHOW_COLUMNS)
    assert rows[1]["choice"] == "withdrawn"


async def test_show_escapes_control_characters(store: Store) -> None:
    """A participant id with terminal escapes is shown escaped, not interpreted."""
    await store.append_consent(consent_record(subject="evil\x1b[2J"))
    out = io.StringIO()
    await audit.show(store, out=out)
    assert "\x1b" not in out.getvalue()
    assert "evil\\x1b[2J" in out.getvalue()


async def test_verify_store_reports_ok_with_head(store: Store, entries: list[LedgerEntry]) -> None:
    """An untouched store verifies, and the report names the head and count."""
    report = await audit.verify_store(store, expect_head=entries[-1].hash)
    assert report.ok
    assert report.count == 3
    assert report.head_hash == entries[-1].hash
    text = audit.format_report(report)
    assert text.startswith("ledger OK: 3 entries")
    assert entries[-1].hash in text


async def test_format_report_lists_problems_and_the_anchor_caveat(
    store: Store, database: str, entries: list[LedgerEntry]
) -> None:
    """A failed report lists each problem by seq; an unanchored one says truncation is not covered."""
    await tamper(database, "DELETE FROM ledger WHERE seq = 2")
    text = audit.format_report(await audit.verify_store(store))
    assert text.startswith("ledger FAILED: 2 entries")
    assert "  seq 3: seq_gap" in text
    assert "  seq 3: broken_link" in text
    assert "head kept elsewhere" in text


async def test_jsonl_export_reverifies_offline(store: Store, entries: list[LedgerEntry]) -> None:
    """A JSON-lines export carries seq, hashes and records, and verifies without the database."""
    out = io.StringIO()
    assert await audit.export(store, fmt="jsonl", out=out) == 3
    lines = out.getvalue().splitlines()
    assert set(json.loads(lines[0])) == {"seq", "prev_hash", "hash", "record"}
    assert audit.entries_from_jsonl(lines) == entries
    assert ledger.verify(audit.entries_from_jsonl(lines), expect_head=entries[-1].hash).ok
    assert ledger.verify_rows(audit.rows_from_jsonl(lines), expect_head=entries[-1].hash).ok


async def test_a_tampered_export_fails_verification(store: Store, entries: list[LedgerEntry]) -> None:
    """Editing a record in an exported file is detected offline."""
    out = io.StringIO()
    await audit.export(store, fmt="jsonl", out=out)
    lines = out.getvalue().splitlines()
    line = json.loads(lines[1])
    line["record"]["choice"] = "given"
    lines[1] = json.dumps(line)
    report = ledger.verify_rows(audit.rows_from_jsonl(lines))
    assert report.problems == ((2, "hash_mismatch"),)


async def test_a_damaged_row_is_exported_and_still_fails(
    store: Store, database: str, entries: list[LedgerEntry]
) -> None:
    """A row that is no longer JSON is exported as raw text and fails offline verification."""
    await tamper(database, "UPDATE ledger SET record_json = 'garbage' WHERE seq = 1")
    out = io.StringIO()
    await audit.export(store, fmt="jsonl", out=out)
    rows = audit.rows_from_jsonl(out.getvalue().splitlines())
    assert ledger.verify_rows(rows).problems == ((1, "hash_mismatch"),)
    with pytest.raises(ValueError, match="line 1"):
        audit.entries_from_jsonl(out.getvalue().splitlines())


async def test_csv_ledger_export_has_every_field(store: Store, entries: list[LedgerEntry]) -> None:
    """The CSV ledger export has a header of seq, hashes and every record field, one row per entry."""
    out = io.StringIO()
    assert await audit.export(store, fmt="csv", out=out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["record_id"] for row in rows] == ["r1", "r2", "r3"]
    assert rows[0]["purposes"] == "summary;training"
    assert rows[0]["outcome"] == "accepted"
    assert rows[0]["expires_at"] == ""
    assert rows[2]["hash"] == entries[2].hash


async def test_decision_exports_and_formula_cells(store: Store) -> None:
    """Decisions export as JSON lines (round-trip values) and as CSV with formula cells neutralised."""
    await store.append_decisions([decision(1), decision(2)])
    jsonl, table = io.StringIO(), io.StringIO()
    assert await audit.export(store, fmt="jsonl", out=jsonl, what="decisions") == 2
    assert [json.loads(line)["decision_id"] for line in jsonl.getvalue().splitlines()] == ["d1", "d2"]
    assert await audit.export(store, fmt="csv", out=table, what="decisions") == 2
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert rows[0]["participant_id"].startswith("'=")
    assert rows[0]["reasons"] == "consent.unknown"


@pytest.mark.parametrize("value", [" =1+1", "  @SUM(A1)", "\n-2", "\uff1dcmd", " \t+3"])
def test_a_formula_behind_spaces_or_in_full_width_is_neutralised(value: str) -> None:
    """A spreadsheet may skip leading spaces before a formula, and some read full-width signs as theirs."""
    assert audit._cell(value) == "'" + value


def test_ordinary_cells_are_left_as_they_are() -> None:
    assert [audit._cell(v) for v in ("p-1", " summary", "a=b")] == ["p-1", " summary", "a=b"]


async def test_unknown_formats_are_refused(store: Store) -> None:
    """An unknown format or log name raises ValueError naming the choices."""
    with pytest.raises(ValueError, match="jsonl or csv"):
        await audit.export(store, fmt="xml", out=io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="table or json"):
        await audit.show(store, fmt="xml", out=io.StringIO())  # type: ignore[arg-type]
