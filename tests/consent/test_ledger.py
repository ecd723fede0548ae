"""The consent ledger's canonical form, hash chain and verification (pure)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import ledger
from gateway.consent.ledger import GENESIS, chain, verify
from gateway.model import ConsentChoice, ConsentRecord, RecordOutcome
from gateway.store.base import LedgerEntry
from tests.strategies import T0, consent_record, consent_records


def build(records: list[ConsentRecord]) -> list[LedgerEntry]:
    entries: list[LedgerEntry] = []
    for record in records:
        entries.append(chain(entries[-1] if entries else None, record))
    return entries


def codes(entries: list[LedgerEntry], expect_head: str | None = None) -> set[str]:
    return {code for _, code in verify(entries, expect_head).problems}


chains = st.lists(consent_records(), min_size=1, max_size=8, unique_by=lambda r: r.record_id)


@given(consent_records())
def test_record_round_trips_through_dict(record: ConsentRecord) -> None:
    """record_from_dict(record_to_dict(r)) == r for any record."""
    assert ledger.record_from_dict(record_to_json_and_back(record)) == record


def record_to_json_and_back(record: ConsentRecord) -> dict[str, object]:
    return json.loads(json.dumps(ledger.record_to_dict(record)))  # type: ignore[no-any-return]


@given(consent_records())
def test_canonical_json_is_stable_across_a_round_trip(record: ConsentRecord) -> None:
    """Re-serialising a decoded record gives the same bytes that were hashed."""
    text = ledger.canonical_json(record)
    assert ledger.canonical_json(ledger.record_from_dict(json.loads(text))) == text
    assert ledger.canonical_dumps(json.loads(text)) == text


def test_canonical_form_is_sorted_compact_utc() -> None:
    """Keys are sorted, separators compact, times UTC with Z, enums as values, tuples as lists."""
    tz = timezone(timedelta(hours=2))
    record = consent_record(at=datetime(2025, 3, 1, 14, 0, tzinfo=tz), purposes=("summary", "training"))
    text = ledger.canonical_json(record)
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert ", " not in text
    assert ": " not in text
    assert data["at"] == "2025-03-01T12:00:00Z"
    assert data["purposes"] == ["summary", "training"]
    assert data["choice"] == "given"


def test_default_fields_are_left_out_of_the_canonical_form() -> None:
    """Fields at their default are omitted, so adding a defaulted field later keeps old hashes."""
    data = ledger.record_to_dict(consent_record())
    assert not {"expires_at", "evidence", "delegation", "outcome", "reason"} & set(data)
    rejected = ledger.record_to_dict(consent_record(outcome=RecordOutcome.REJECTED))
    assert rejected["outcome"] == "rejected"


def test_naive_datetimes_are_refused() -> None:
    """A naive timestamp has no defined instant, so it cannot be hashed into the ledger."""
    with pytest.raises(ValueError, match="naive"):
        ledger.canonical_json(consent_record(at=datetime(2025, 1, 1)))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"choice": "maybe"}, "choice"),
        ({"at": "yesterday"}, "at"),
        ({"purposes": "summary"}, "purposes"),
        ({"subject": 7}, "subject"),
        ({"extra": "x"}, "unknown keys"),
    ],
)
def test_malformed_dicts_raise_without_echoing_values(change: dict[str, object], key: str) -> None:
    """Decoding errors name the key, never the value."""
    data = {**ledger.record_to_dict(consent_record()), **change}
    with pytest.raises(ValueError, match=key) as caught:
        ledger.record_from_dict(data)
    assert not any(str(value) in str(caught.value) for value in ("maybe", "yesterday", "summary"))


def test_first_entry_links_to_genesis() -> None:
    """The first entry has seq 1 and prev_hash of 64 zeros; the next links to its hash."""
    first, second = build([consent_record(), consent_record(record_id="r2")])
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert len(first.hash) == 64


@given(chains)
def test_an_untouched_chain_verifies(records: list[ConsentRecord]) -> None:
    """A chain built with chain() verifies, anchored or not."""
    entries = build(records)
    report = verify(entries, expect_head=entries[-1].hash)
    assert report.ok
    assert report.count == len(entries)
    assert report.anchored
    assert report.head_hash == entries[-1].hash


def test_an_empty_ledger_verifies_with_genesis_head() -> None:
    """An empty ledger is valid and its head is GENESIS."""
    report = verify([])
    assert report.ok
    assert report.count == 0
    assert report.head_hash == GENESIS


@given(chains, st.data())
def test_an_edited_record_is_detected(records: list[ConsentRecord], data: st.DataObject) -> None:
    """Changing any field of any record breaks that entry's hash."""
    entries = build(records)
    i = data.draw(st.integers(0, len(entries) - 1))
    record = entries[i].record
    choice = data.draw(st.sampled_from([c for c in ConsentChoice if c is not record.choice]))
    entries[i] = dataclasses.replace(entries[i], record=dataclasses.replace(record, choice=choice))
    assert verify(entries).problems == ((entries[i].seq, "hash_mismatch"),)


@given(chains.filter(lambda rs: len(rs) >= 2), st.data())
def test_a_deleted_entry_is_detected(records: list[ConsentRecord], data: st.DataObject) -> None:
    """Removing the first or a middle entry leaves a seq gap and a broken link."""
    entries = build(records)
    i = data.draw(st.integers(0, len(entries) - 2))
    del entries[i]
    assert {"seq_gap", "broken_link"} <= codes(entries)


@given(chains.filter(lambda rs: len(rs) >= 2), st.data())
def test_reordered_entries_are_detected(records: list[ConsentRecord], data: st.DataObject) -> None:
    """Swapping two entries is detected."""
    entries = build(records)
    i, j = data.draw(st.lists(st.integers(0, len(entries) - 1), min_size=2, max_size=2, unique=True))
    entries[i], entries[j] = entries[j], entries[i]
    assert not verify(entries).ok


@given(chains, consent_records(), st.data())
def test_an_inserted_entry_is_detected(
    records: list[ConsentRecord], forged: ConsentRecord, data: st.DataObject
) -> None:
    """A forged entry chained onto its predecessor, without re-chaining the rest, is detected."""
    entries = build(records)
    i = data.draw(st.integers(0, len(entries) - 1))
    fake = chain(entries[i - 1] if i else None, forged)
    shifted = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[i:]]
    assert not verify([*entries[:i], fake, *shifted]).ok


@given(chains)
def test_tail_truncation_needs_an_anchor(records: list[ConsentRecord]) -> None:
    """Dropping the newest entry is invisible without expect_head and detected with it."""
    entries = build(records)
    head = entries[-1].hash
    assert verify(entries[:-1]).ok  # documented limit: a shorter chain is still a valid chain
    assert codes(entries[:-1], expect_head=head) == {"head_mismatch"}


@given(chains.filter(lambda rs: len(rs) >= 2))
def test_a_fully_rechained_rewrite_needs_an_anchor(records: list[ConsentRecord]) -> None:
    """Rewriting a record and re-chaining everything after it is caught only by the head anchor."""
    entries = build(records)
    rewritten = build([dataclasses.replace(records[0], subject=records[0].subject + "x"), *records[1:]])
    assert verify(rewritten).ok
    assert not verify(rewritten, expect_head=entries[-1].hash).ok


def test_problems_are_reported_where_they_occur() -> None:
    """Only the edited entry is flagged, not every entry after it."""
    entries = build([consent_record(record_id=f"r{i}", at=T0) for i in range(5)])
    entries[2] = dataclasses.replace(entries[2], record=dataclasses.replace(entries[2].record, subject="p9"))
    assert verify(entries).problems == ((3, "hash_mismatch"),)
