"""The ``Store`` contract, run on both backends: chaining, filters, group commit, concurrency, durability."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.consent import ledger
from gateway.model import Action, ConsentChoice, Decision
from gateway.settings import SettingsError, load_settings, with_generated_secrets
from gateway.store import open_store
from gateway.store.base import LedgerEntry, StorageError, Store
from tests.strategies import T0, consent_record


def decision(n: int, meeting_id: str = "m1", participant_id: str | None = "p1") -> Decision:
    return Decision(
        decision_id=f"d{n}",
        meeting_id=meeting_id,
        segment_id=f"s{n}",
        destination="summariser",
        action=Action.FORWARD,
        at=T0 + timedelta(seconds=n),
        policy_revision="rev1",
        rule_ids=("r.forward",),
        consent_record_ids=("c1",),
        participant_id=participant_id,
    )


def commits(store: Store) -> int:
    value = store.commits
    assert isinstance(value, int)
    return value


async def test_append_consent_chains_from_genesis(store: Store) -> None:
    """Appended records get seq 1, 2... linked from GENESIS, and read back equal."""
    first = await store.append_consent(consent_record(record_id="a"))
    second = await store.append_consent(consent_record(record_id="b", choice=ConsentChoice.WITHDRAWN))
    assert (first.seq, first.prev_hash, second.seq, second.prev_hash) == (1, ledger.GENESIS, 2, first.hash)
    assert await store.ledger_entries() == [first, second]
    assert ledger.verify(await store.ledger_entries(), expect_head=second.hash).ok
    assert ledger.verify_rows(await store.ledger_rows(), expect_head=second.hash).ok


async def test_append_consent_is_durable_on_return(store: Store, database_url: str) -> None:
    """Once append_consent returns, another store opened on the same database reads the row."""
    entry = await store.append_consent(consent_record(record_id="durable"))
    other = open_store(database_url, read_only=True)
    await other.open()
    try:
        assert await other.ledger_entries() == [entry]
    finally:
        await other.close()


async def test_filters_select_meeting_and_participant(store: Store) -> None:
    """ledger_entries and decision_records filter by meeting and by participant, keeping order."""
    for n, (meeting, subject) in enumerate([("m1", "p1"), ("m2", "p1"), ("m1", "p2")]):
        await store.append_consent(consent_record(record_id=f"r{n}", meeting_id=meeting, subject=subject))
    await store.append_decisions([decision(1, "m1", "p1"), decision(2, "m2", "p1"), decision(3, "m1", None)])
    assert [e.seq for e in await store.ledger_entries(meeting_id="m1")] == [1, 3]
    assert [e.seq for e in await store.ledger_entries(participant_id="p1")] == [1, 2]
    assert [e.seq for e in await store.ledger_entries(meeting_id="m1", participant_id="p2")] == [3]
    assert [d.decision_id for d in await store.decision_records(meeting_id="m1")] == ["d1", "d3"]
    assert [d.decision_id for d in await store.decision_records(participant_id="p1")] == ["d1", "d2"]
    assert [d.decision_id for d in await store.decision_records(meeting_id="m1", participant_id="p1")] == [
        "d1"
    ]


async def test_decisions_round_trip(store: Store) -> None:
    """Decision records read back equal, in the order written."""
    written = [decision(n) for n in range(5)]
    await store.append_decisions(written)
    await store.append_decisions([])
    assert await store.decision_records() == written


async def test_a_decision_written_twice_is_kept_once(store: Store) -> None:
    """The same decision id again (a redelivered event, another replica) changes nothing and fails nothing."""
    await store.append_decisions([decision(1), decision(2)])
    await asyncio.gather(
        store.append_decisions([decision(2), decision(3)]), store.append_decisions([decision(1)])
    )
    assert [d.decision_id for d in await store.decision_records()] == ["d1", "d2", "d3"]
    # twice within one commit: the first is kept, as across commits
    await asyncio.gather(store.append_decisions([decision(4)]), store.append_decisions([decision(4, "m2")]))
    assert [(d.decision_id, d.meeting_id) for d in await store.decision_records()][3:] == [("d4", "m1")]


async def test_standing_records_are_found_by_email(store: Store) -> None:
    """standing_records returns the standing-consent records of one verified e-mail, in chain order."""
    from gateway.consent import standing

    mine = standing.subject_for("ada@example.org")
    theirs = standing.subject_for("bruno@example.org")
    for n, subject in enumerate([mine, theirs, mine]):
        await store.append_consent(
            consent_record(record_id=f"st{n}", meeting_id=standing.STANDING_MEETING, subject=subject)
        )
    await store.append_consent(consent_record(record_id="in-a-meeting", subject=mine))
    assert [r.record_id for r in await store.standing_records("ada@example.org")] == ["st0", "st2"]


async def test_ping_answers_when_open(store: Store) -> None:
    """ping() succeeds on an open store."""
    await store.ping()


async def test_concurrent_decision_appends_share_commits(store: Store) -> None:
    """200 concurrent append_decisions calls all land, in fewer commits than calls."""
    await asyncio.gather(*(store.append_decisions([decision(n)]) for n in range(200)))
    assert len(await store.decision_records()) == 200
    assert commits(store) < 200


async def test_a_write_gathered_under_load_fails_rather_than_hangs_when_the_writer_is_cancelled(
    store: Store,
) -> None:
    """Under load the writer holds a dequeued write for a moment (gathering more for one commit); if it is
    cancelled then (the loop shutting down), that write's caller gets an error instead of waiting forever."""
    await asyncio.gather(*(store.append_decisions([decision(n)]) for n in range(10)))  # a shared commit
    held = asyncio.ensure_future(store.append_decisions([decision(99)]))
    for _ in range(3):
        await asyncio.sleep(0)  # the writer takes it and starts gathering
    writer = store._task  # type: ignore[attr-defined]
    assert writer is not None
    writer.cancel()
    with pytest.raises(StorageError):
        await asyncio.wait_for(held, 5)


async def test_concurrent_consent_appends_never_race_the_chain(store: Store) -> None:
    """Concurrent consent and decision appends give a contiguous, valid chain and share commits."""
    consents = [store.append_consent(consent_record(record_id=f"r{n}")) for n in range(50)]
    decisions = [store.append_decisions([decision(n)]) for n in range(50)]
    results = await asyncio.gather(*consents, *decisions)
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    assert sorted(e.seq for e in entries) == list(range(1, 51))
    assert ledger.verify(await store.ledger_entries()).ok
    assert commits(store) < 100


async def test_two_stores_on_one_database_keep_one_chain(database_url: str) -> None:
    """Two writers on one database (as two processes or replicas would) still produce a single valid chain."""
    a, b = open_store(database_url), open_store(database_url)
    await a.open()
    await b.open()
    try:
        writes = [(a if n % 2 else b).append_consent(consent_record(record_id=f"r{n}")) for n in range(40)]
        entries = await asyncio.gather(*writes)
        report = ledger.verify_rows(await a.ledger_rows())
    finally:
        await a.close()
        await b.close()
    assert report.ok
    assert report.count == 40
    assert sorted(e.seq for e in entries) == list(range(1, 41))


async def test_a_duplicate_fails_only_its_own_caller(store: Store) -> None:
    """One caller's duplicate record id does not fail the others sharing its commit."""
    await store.append_consent(consent_record(record_id="taken"))
    calls = [store.append_consent(consent_record(record_id=f"r{n}")) for n in range(5)]
    calls.insert(2, store.append_consent(consent_record(record_id="taken")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results].count(StorageError) == 1
    assert isinstance(results[2], StorageError)
    assert "taken" not in str(results[2])
    assert ledger.verify(await store.ledger_entries()).ok
    assert len(await store.ledger_entries()) == 6


async def test_close_flushes_pending_writes(database_url: str) -> None:
    """Writes queued before close() are committed, and writes after it are refused."""
    store = open_store(database_url)
    await store.open()
    pending = [asyncio.ensure_future(store.append_decisions([decision(n)])) for n in range(20)]
    await asyncio.sleep(0)  # let every call enqueue, as concurrent callers would
    await store.close()
    await asyncio.gather(*pending)
    with pytest.raises(StorageError, match="not open"):
        await store.append_decisions([decision(99)])
    reader = open_store(database_url, read_only=True)
    await reader.open()
    try:
        assert len(await reader.decision_records()) == 20
    finally:
        await reader.close()


async def test_reopening_keeps_the_data(database_url: str) -> None:
    """The schema is created once; reopening migrates nothing away and keeps every row."""
    for n in range(2):
        store = open_store(database_url)
        await store.open()
        await store.append_decisions([decision(n)])
        await store.append_consent(consent_record(record_id=f"r{n}"))
        await store.close()
    reader = open_store(database_url, read_only=True)
    await reader.open()
    try:
        assert len(await reader.decision_records()) == 2
        assert ledger.verify_rows(await reader.ledger_rows()).count == 2
    finally:
        await reader.close()


async def test_a_read_only_store_reads_while_the_writer_runs(store: Store, database_url: str) -> None:
    """An audit reader on the same database sees committed rows and cannot write."""
    entry = await store.append_consent(consent_record())
    reader = open_store(database_url, read_only=True)
    await reader.open()
    try:
        assert await reader.ledger_entries() == [entry]
        await reader.ping()
        with pytest.raises(StorageError):
            await reader.append_consent(consent_record(record_id="r2"))
    finally:
        await reader.close()


async def test_a_closed_store_refuses_reads_and_writes(database_url: str) -> None:
    """After close(), reads, writes and ping raise StorageError."""
    store = open_store(database_url)
    await store.open()
    await store.close()
    with pytest.raises(StorageError):
        await store.ping()
    with pytest.raises(StorageError):
        await store.ledger_entries()
    with pytest.raises(StorageError):
        await store.append_consent(consent_record())


@pytest.mark.parametrize("url", ["mysql://db/gw", "sqlite://relative.db", "gateway.db", ""])
def test_other_database_urls_are_refused_naming_the_setting(url: str) -> None:
    """open_store accepts only sqlite:/// and postgresql:// URLs; others fail naming ``database``."""
    with pytest.raises(SettingsError, match=r"^database: "):
        open_store(url)


def test_a_refused_url_is_not_echoed() -> None:
    """The refusal does not repeat the URL, which may carry a password."""
    with pytest.raises(SettingsError) as caught:
        open_store("mysql://user:hunter2@db/gw")
    assert "hunter2" not in str(caught.value)


def test_generated_secrets_of_a_server_database_go_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a postgresql:// database (no directory of its own), generated secrets land in ./secrets.json."""
    monkeypatch.chdir(tmp_path)
    settings = with_generated_secrets(load_settings({"database": "postgresql://gw@db/gw"}, environ={}))
    assert settings.secrets_file == Path("secrets.json")
    assert (tmp_path / "secrets.json").exists()
