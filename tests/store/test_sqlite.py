"""SQLiteStore on a real file: schema, failure mapping and tamper evidence (the contract both backends
share is in test_contract.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent import ledger
from gateway.consent.ledger import VerifyReport
from gateway.model import Action, ConsentRecord, Decision
from gateway.store.base import LedgerEntry, StorageError
from gateway.store.sqlite import MIGRATIONS, SQLiteStore
from tests.strategies import T0, consent_record, consent_records

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("SECRET-meeting", "SECRET-subject", "SECRET-record")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "gateway.db")
    await opened.open()
    yield opened
    await opened.close()


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


def secret_record(record_id: str = "SECRET-record") -> ConsentRecord:
    return consent_record(record_id=record_id, meeting_id="SECRET-meeting", subject="SECRET-subject")


def assert_no_content(error: BaseException) -> None:
    assert not any(secret in str(error) for secret in SECRETS)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- schema guard -----------------------------------------------------------------------------------


async def test_ledger_is_append_only_in_the_schema(store: SQLiteStore) -> None:
    """UPDATE and DELETE on the ledger are refused by triggers."""
    await store.append_consent(consent_record())
    with closing(raw(store.path)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE ledger SET subject = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM ledger")


async def test_the_decision_log_is_append_only_in_the_schema(store: SQLiteStore) -> None:
    """UPDATE and DELETE on the decision log are refused by triggers (migration 5)."""
    from tests.store.test_contract import decision

    await store.append_decisions([decision(1)])
    with closing(raw(store.path)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE decisions SET action = 'drop'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM decisions")


# --- schema ------------------------------------------------------------------------------------------


async def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    """The schema is created once; reopening keeps version and data."""
    for _ in range(2):
        store = SQLiteStore(tmp_path / "g.db")
        await store.open()
        await store.append_decisions([decision(len(await store.decision_records()))])
        await store.close()
    with closing(sqlite3.connect(tmp_path / "g.db")) as db:
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]  # each step applied exactly once
        assert db.execute("SELECT COUNT(*) FROM decisions").fetchone() == (2,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file migrated by a newer build is not opened by this one."""
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    await store.close()
    with closing(raw(tmp_path / "g.db")) as db:
        db.execute("INSERT INTO schema_version VALUES (99, 'later')")
    with pytest.raises(StorageError, match="newer"):
        await SQLiteStore(tmp_path / "g.db").open()


async def test_another_process_can_read_while_the_server_runs(store: SQLiteStore) -> None:
    """A second OS process (the CLI) reads the ledger while this store holds it open."""
    await store.append_consent(consent_record(record_id="seen-by-cli"))
    script = (
        "import asyncio, sys\n"
        "from gateway.store.sqlite import SQLiteStore\n"
        "async def main():\n"
        "    s = SQLiteStore(sys.argv[1], read_only=True)\n"
        "    await s.open()\n"
        "    print([e.record.record_id for e in await s.ledger_entries()])\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    repo = REPO
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, str(store.path)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "['seen-by-cli']"


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing_dir", "directory", "not_a_database"])
async def test_unopenable_paths_raise_storage_error(tmp_path: Path, where: str) -> None:
    """A path that cannot hold a database raises StorageError, not sqlite3 errors."""
    paths = {
        "missing_dir": tmp_path / "nope" / "g.db",
        "directory": tmp_path,
        "not_a_database": tmp_path / "junk.db",
    }
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open storage"):
        await SQLiteStore(paths[where]).open()


async def test_removed_directory_fails_writes_and_ping(tmp_path: Path) -> None:
    """When the database's directory disappears, writes and ping raise StorageError without content."""
    (tmp_path / "data").mkdir()
    store = SQLiteStore(tmp_path / "data" / "g.db")
    await store.open()
    try:
        shutil.rmtree(tmp_path / "data")
        with pytest.raises(StorageError, match="removed") as caught:
            await store.append_consent(secret_record())
        assert_no_content(caught.value)
        with pytest.raises(StorageError):
            await store.ping()
    finally:
        await store.close()


async def test_a_locked_database_fails_every_waiting_caller(tmp_path: Path) -> None:
    """When another writer holds the file, each waiting caller gets StorageError naming no content."""
    store = SQLiteStore(tmp_path / "g.db", busy_timeout=0.05)
    await store.open()
    try:
        with closing(raw(tmp_path / "g.db")) as other:
            other.execute("BEGIN EXCLUSIVE")
            calls = [store.append_consent(secret_record(f"SECRET-record-{n}")) for n in range(3)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            other.execute("ROLLBACK")
        assert all(isinstance(r, StorageError) and "SQLITE_BUSY" in str(r) for r in results)
        for result in results:
            assert isinstance(result, StorageError)
            assert_no_content(result)
            assert not isinstance(result, sqlite3.Error)
        assert (await store.append_consent(consent_record())).seq == 1  # recovers once the lock is gone
    finally:
        await store.close()


async def test_a_broken_schema_raises_storage_error(store: SQLiteStore) -> None:
    """A write the database refuses (table gone) surfaces as StorageError without content."""
    with closing(raw(store.path)) as db:
        db.execute("DROP TABLE decisions")
    with pytest.raises(StorageError, match="write failed") as caught:
        await store.append_decisions([decision(1, meeting_id="SECRET-meeting")])
    assert_no_content(caught.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
async def test_an_unwritable_file_raises_storage_error(tmp_path: Path) -> None:
    """A database file without write permission cannot be opened for writing."""
    store = SQLiteStore(tmp_path / "g.db")
    await store.open()
    await store.close()
    os.chmod(tmp_path / "g.db", 0o400)
    os.chmod(tmp_path, 0o500)  # sqlite could otherwise create journal files beside it
    try:
        with pytest.raises(StorageError):
            await SQLiteStore(tmp_path / "g.db").open()
    finally:
        os.chmod(tmp_path, 0o700)


async def test_an_undecodable_row_raises_storage_error(store: SQLiteStore) -> None:
    """A ledger row that no longer decodes raises StorageError naming its seq only."""
    await store.append_consent(secret_record())
    with closing(raw(store.path)) as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute('UPDATE ledger SET record_json = \'{"subject": "SECRET-subject"}\'')
    with pytest.raises(StorageError, match="row 1 cannot be decoded") as caught:
        await store.ledger_entries()
    assert_no_content(caught.value)
    assert not ledger.verify_rows(await store.ledger_rows()).ok


# --- tamper evidence (DESIGN invariant 8), as an attacker with the file would do it -----------------


def write_ledger(path: Path, records: list[ConsentRecord]) -> list[LedgerEntry]:
    async def run() -> list[LedgerEntry]:
        store = SQLiteStore(path)
        await store.open()
        try:
            return [await store.append_consent(record) for record in records]
        finally:
            await store.close()

    return asyncio.run(run())


def verify_file(path: Path, expect_head: str | None = None) -> VerifyReport:
    async def run() -> VerifyReport:
        store = SQLiteStore(path, read_only=True)
        await store.open()
        try:
            return ledger.verify_rows(await store.ledger_rows(), expect_head)
        finally:
            await store.close()

    return asyncio.run(run())


Attack = Callable[[sqlite3.Connection, int, st.DataObject], None]


def edit_field(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    seq = data.draw(st.integers(1, n), label="seq")
    (text,) = db.execute("SELECT record_json FROM ledger WHERE seq = ?", (seq,)).fetchone()
    record = json.loads(text)
    key = data.draw(st.sampled_from(["subject", "choice", "purposes", "at", "indicated_by"]), label="field")
    changes = {
        "choice": "refused" if record["choice"] == "given" else "given",
        "purposes": [*record["purposes"], "training-forged"],
        "at": "2001-01-01T00:00:00Z" if record["at"] != "2001-01-01T00:00:00Z" else "2002-01-01T00:00:00Z",
    }
    record[key] = changes.get(key, str(record.get(key)) + "x")
    db.execute("UPDATE ledger SET record_json = ? WHERE seq = ?", (ledger.canonical_dumps(record), seq))


def delete_middle(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    db.execute("DELETE FROM ledger WHERE seq = ?", (data.draw(st.integers(2, n - 1), label="seq"),))


def delete_first(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    db.execute("DELETE FROM ledger WHERE seq = 1")


def swap_rows(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    i, j = data.draw(st.lists(st.integers(1, n), min_size=2, max_size=2, unique=True), label="seqs")
    select = "SELECT record_json, prev_hash, hash FROM ledger WHERE seq = ?"
    row_i, row_j = db.execute(select, (i,)).fetchone(), db.execute(select, (j,)).fetchone()
    update = "UPDATE ledger SET record_json = ?, prev_hash = ?, hash = ? WHERE seq = ?"
    db.execute(update, (*row_j, i))
    db.execute(update, (*row_i, j))


def insert_forged(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    """A forged row at position k, correctly chained to k-1 and hashed, without re-chaining the rest."""
    k = data.draw(st.integers(1, n), label="position")
    forged = data.draw(consent_records(record_id=st.just("forged")), label="forged")
    prev = db.execute("SELECT hash FROM ledger WHERE seq = ?", (k - 1,)).fetchone()
    row = ledger.next_row((k - 1, prev[0] if prev else ledger.GENESIS), ledger.canonical_json(forged))
    db.execute("UPDATE ledger SET seq = -seq WHERE seq >= ?", (k,))  # two steps: seq is a primary key
    db.execute("UPDATE ledger SET seq = 1 - seq WHERE seq < 0")
    db.execute(
        "INSERT INTO ledger VALUES (?, ?, 'm', 's', 'at', ?, ?, ?)",
        (row.seq, "forged", row.record_json, row.prev_hash, row.hash),
    )


def move_columns(db: sqlite3.Connection, n: int, data: st.DataObject) -> None:
    """Reads filter on the indexed columns: moving a row's meeting or subject hides it from them."""
    seq = data.draw(st.integers(1, n), label="seq")
    column = data.draw(st.sampled_from(["meeting_id", "subject", "record_id", "at"]), label="column")
    db.execute(f"UPDATE ledger SET {column} = {column} || '-moved' WHERE seq = ?", (seq,))  # noqa: S608


ATTACKS: dict[str, tuple[int, Attack]] = {
    "edit_field": (1, edit_field),
    "move_columns": (1, move_columns),
    "delete_middle": (3, delete_middle),
    "delete_first": (2, delete_first),
    "swap_rows": (2, swap_rows),
    "insert_forged": (1, insert_forged),
}


def tamper(source: Path, target: Path, attack: Attack, n: int, data: st.DataObject) -> None:
    with closing(sqlite3.connect(source)) as src, closing(raw(target)) as db:
        src.backup(db)
        db.execute("DROP TRIGGER ledger_no_update")  # the schema's guard is no obstacle to an attacker
        db.execute("DROP TRIGGER ledger_no_delete")
        db.execute("BEGIN")
        attack(db, n, data)
        db.execute("COMMIT")


chains = st.lists(consent_records(), min_size=1, max_size=7, unique_by=lambda r: r.record_id)
tamper_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@pytest.mark.parametrize("attack_name", list(ATTACKS))
@tamper_settings
@given(records=chains, data=st.data())
def test_any_single_tampering_of_the_file_is_detected(
    attack_name: str, records: list[ConsentRecord], data: st.DataObject
) -> None:
    """A stored chain verifies; any one edit, deletion, swap or forged insertion makes it fail."""
    min_rows, attack = ATTACKS[attack_name]
    if len(records) < min_rows:
        records = [*records, *(consent_record(record_id=f"pad{n}") for n in range(min_rows))]
    with tempfile.TemporaryDirectory() as tmp:
        original, tampered = Path(tmp) / "ledger.db", Path(tmp) / "tampered.db"
        entries = write_ledger(original, records)
        report = verify_file(original, expect_head=entries[-1].hash)
        assert report.ok
        assert report.count == len(records)
        tamper(original, tampered, attack, len(records), data)
        assert not verify_file(tampered).ok


@tamper_settings
@given(records=chains)
def test_tail_truncation_is_detected_only_against_an_anchor(records: list[ConsentRecord]) -> None:
    """Deleting the newest row leaves a valid shorter chain: only an expected head kept elsewhere shows it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        head = write_ledger(path, records)[-1].hash
        with closing(raw(path)) as db:
            db.execute("DROP TRIGGER ledger_no_delete")
            db.execute("DELETE FROM ledger WHERE seq = (SELECT MAX(seq) FROM ledger)")
        assert verify_file(path).ok  # the documented limit
        report = verify_file(path, expect_head=head)
        assert [code for _, code in report.problems] == ["head_mismatch"]


@tamper_settings
@given(records=chains, more=st.integers(1, 3))
def test_a_chain_grown_since_the_kept_head_verifies_against_it(
    records: list[ConsentRecord], more: int
) -> None:
    """The head an auditor kept is still in the chain after legitimate growth: that is no problem (only a
    kept head that is gone, cut off or rewritten, is)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        extra = [consent_record(record_id=f"later{n}") for n in range(more)]
        entries = write_ledger(path, [*records, *extra])
        kept = entries[len(records) - 1].hash
        assert verify_file(path, expect_head=kept).ok
        assert not verify_file(path, expect_head="f" * 64).ok
