"""The command-line verbs, called through ``gateway.cli.main`` as a shell would: exit codes and output.

``log`` verbs run against the database of a short real run of the gateway (loopback server, real SQLite);
``outbox`` verbs against items written through the real store on SQLite and PostgreSQL, sealed with real keys.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import structlog

from gateway.cli import STATUS_COLUMNS, main
from gateway.demo import run_demo
from gateway.model import ConsentChoice
from gateway.sealing import Keyring, new_key_spec
from gateway.store import open_store, outbox
from gateway.store.outbox import Finished, Lease, OutboxItem, Purge, SealedPart
from tests.conftest import create_postgres_database, drop_postgres_database, sqlite_url
from tests.strategies import consent_record
from tests.web.harness import consent, event, joined, segment, serving

SECRET_WORDS = "the merger closes on Friday"
"""Said in the short run: it must not appear in any log output (invariant 6)."""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # the CLI configures structlog onto the stream pytest captures; later tests must not write to it
    yield
    structlog.reset_defaults()


# --- policy ---------------------------------------------------------------------------------------------


def test_policy_check_passes_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    """``policy check`` exits 0 on every shipped policy and says ok for each."""
    files = sorted(str(p) for p in Path("policies").glob("*.yaml"))
    assert main(["policy", "check", *files]) == 0
    assert capsys.readouterr().out.count(": ok (policy ") == len(files)


def test_policy_check_names_file_line_and_misspelt_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt key fails ``policy check`` with exit 1 and ``file:line:col: key: unknown key``."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "policy: broken\n"
        "purposes:\n"
        "  summary: {description: d, notice: n, notice_version: v}\n"
        "pending:\n"
        "  window_secnds: 5\n",
        encoding="utf-8",
    )
    assert main(["policy", "check", str(broken), "policies/default.yaml"]) == 1
    captured = capsys.readouterr()
    assert f"{broken}:5:3: pending.window_secnds: unknown key" in captured.err
    assert "policies/default.yaml: ok" in captured.out


def test_policy_test_passes_shipped_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """``policy test`` exits 0 on the shipped test cases and reports none failed."""
    assert main(["policy", "test", "policies/tests"]) == 0
    assert ", 0 failed" in capsys.readouterr().out


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case expecting a decliner's words to be forwarded makes ``policy test`` exit 1 naming the case."""
    shutil.copy("policies/default.yaml", tmp_path / "default.yaml")
    (tmp_path / "cases.yaml").write_text(
        "policy: default.yaml\n"
        "cases:\n"
        "  - name: a decliner is forwarded (wrong on purpose)\n"
        "    events:\n"
        "      - {type: participant.joined, participant: {id: p-bob, name: Bob Marley}, at: 0}\n"
        "      - {type: consent, participant_id: p-bob, purposes: [summary], decision: refused,"
        " indicated_by: p-bob, channel: api, at: 1}\n"
        "      - {type: segment, segment_id: s1, participant_id: p-bob, text: Hello., at: 2}\n"
        "    expect:\n"
        "      - {segment: s1, destination: summariser, action: forward}\n",
        encoding="utf-8",
    )
    assert main(["policy", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "a decliner is forwarded" in out


# --- log ------------------------------------------------------------------------------------------------


async def _short_run(tmp: Path) -> Path:
    # SQLite whatever the backend under test: these tests copy the .db file and edit it with sqlite3
    async with serving(tmp, database=sqlite_url(tmp)) as gw:
        await gw.send(joined("p-ada", "Ada Lovelace"), joined("p-bob", "Bob Marley"))
        await gw.send(consent("p-ada", "given"), consent("p-bob", "refused"))
        assert (await gw.post(consent("p-bob", "given", by="p-ada"))).status == 403
        await gw.send(segment("s1", "p-ada", f"Bob, {SECRET_WORDS}."), segment("s2", "p-bob", SECRET_WORDS))
        await gw.send(consent("p-ada", "withdrawn"), event("meeting.ended"))
        await gw.settle()
    return gw.db_path


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite file of a short real run: 4 ledger records (one rejected) and a few decisions."""
    return asyncio.run(_short_run(tmp_path_factory.mktemp("run")))


@pytest.fixture
def db(run_db: Path, tmp_path: Path) -> str:
    """A private copy of the run's database, as a ``--database`` URL."""
    for path in run_db.parent.glob(run_db.name + "*"):
        shutil.copy(path, tmp_path / path.name)
    return f"sqlite:///{tmp_path / run_db.name}"


def log(db: str, *args: str) -> int:
    return main(["log", "--database", db, *args])


def test_log_show_lists_every_consent_record(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``log show`` prints a table of the ledger, rejected attempts included, and JSON on request."""
    assert log(db, "show") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["seq", "at", "meeting"]
    assert len(table) == 5
    assert log(db, "show", "--format", "json", "--participant", "p-bob") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["choice"], r["outcome"], r["indicated_by"]) for r in rows] == [
        ("refused", "accepted", "p-bob"),
        ("given", "rejected", "p-ada"),
    ]


def test_log_verify_passes_then_fails_after_tampering(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``log verify`` exits 0 on the untouched ledger and 1 once a row was edited with sqlite3."""
    assert log(db, "verify") == 0
    assert capsys.readouterr().out.startswith("ledger OK: 4 entries")
    with closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
        conn.execute("DROP TRIGGER ledger_no_update")  # what an attacker with the file would do first
        conn.execute(
            "UPDATE ledger SET record_json = replace(record_json, '\"refused\"', '\"given\"') WHERE seq = 2"
        )
        conn.commit()
    assert log(db, "verify") == 1
    out = capsys.readouterr().out
    assert out.startswith("ledger FAILED")
    assert "seq 2:" in out


def test_log_verify_detects_a_removed_newest_entry_against_the_head(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--expect-head``, deleting the newest ledger row is detected (exit 1)."""
    assert log(db, "verify") == 0
    head = capsys.readouterr().out.split("head ")[1].split()[0]
    assert log(db, "verify", "--expect-head", head) == 0
    with closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
        conn.execute("DROP TRIGGER ledger_no_delete")
        conn.execute("DELETE FROM ledger WHERE seq = (SELECT max(seq) FROM ledger)")
        conn.commit()
    capsys.readouterr()
    assert log(db, "verify") == 0  # without an anchor, truncation looks like a shorter ledger
    assert log(db, "verify", "--expect-head", head) == 1


def test_log_export_round_trips_through_verify(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON-lines export verifies offline with ``log verify --file``, and fails once a line is edited."""
    assert log(db, "export") == 0
    captured = capsys.readouterr()
    assert "exported 4 records" in captured.err
    export = tmp_path / "ledger.jsonl"
    export.write_text(captured.out, encoding="utf-8")
    assert log(db, "verify", "--file", str(export)) == 0
    lines = captured.out.splitlines()
    lines[0] = lines[0].replace('"p-ada"', '"p-eve"')
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert log(db, "verify", "--file", str(export)) == 1


def test_log_export_of_decisions_holds_no_transcript_text(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decision log exports as CSV citing segments and rules, without a word of what was said."""
    assert log(db, "export", "--what", "decisions", "--format", "csv") == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["segment_id"], r["action"]) for r in rows} >= {("s1", "redact"), ("s2", "drop")}
    assert "merger" not in out
    assert "Bob Marley" not in out


# --- demo -----------------------------------------------------------------------------------------------


async def test_demo_shows_decliner_dropped_withdrawal_honoured_and_names_scrubbed() -> None:
    """The demo's received column drops the decliner and the withdrawn speaker and never shows "Tomás"."""
    out = io.StringIO()
    assert await run_demo(out, width=200) == 0
    rows = [line.split(" | ", 1) for line in out.getvalue().splitlines() if " | " in line]
    said = {left.strip(): right.strip() for left, right in rows}
    received = " ".join(said.values())
    assert (
        said["Tomás Ortega: Churn is at 4.2 percent, but please keep that between us for now."] == "(nothing)"
    )
    withdrawn = "Wen Li: Actually, I'd rather the AI didn't keep anything I say from here on."
    assert said[withdrawn] == "(nothing)"
    assert said["Sam Okafor: Thanks Tomás. Wen, can you check the pricing page before Friday?"] == (
        "Sam Okafor: Thanks [participant 2]. Wen, can you check the pricing page before Friday?"
    )
    assert "[participant 2]" in received
    for name in ("Tomás", "Tomas", "Ortega"):
        assert name not in received
    assert "5 of 7 utterances reached the AI service." in out.getvalue()
    assert "ledger OK: 5 entries" in out.getvalue()


# --- outbox ---------------------------------------------------------------------------------------------

OLD_KEY, NEW_KEY = new_key_spec(), new_key_spec()


def _sealed_item(
    keyring: Keyring, key: str, people: tuple[str, ...], destination: str, created_at: float
) -> OutboxItem:
    parts = tuple(
        SealedPart(p, f"{key}-{p}", "0" * 64, keyring.seal(SECRET_WORDS.encode(), key.encode()))
        for p in people
    )
    return OutboxItem(key, "m1", destination, "segment", ("summary",), created_at, created_at + 86_400, parts)


async def _fill_outbox(url: str) -> None:
    """Pending parts sealed under an old and a new key, one delivered and one expired item, one withdrawal."""
    old, new = Keyring.parse([OLD_KEY]), Keyring.parse([NEW_KEY, OLD_KEY])
    hour_ago = time.time() - 3600
    store = open_store(url)
    await store.open()
    try:
        items = [
            _sealed_item(old, "k1", ("p-ada", "p-bob"), "summariser", hour_ago),
            _sealed_item(new, "k2", ("p-ada",), "summariser", hour_ago + 60),
            _sealed_item(new, "k3", ("p-ada",), "archive", hour_ago + 120),
            _sealed_item(new, "k4", ("p-ada",), "summariser", hour_ago),
            _sealed_item(new, "k5", ("p-bob",), "archive", hour_ago),
        ]
        await store.append_decisions([], items, Lease("a", 0.0))
        await store.finish_outbox(
            [
                Finished("k4", outbox.DELIVERED, None, 1, 200, ("k4-p-ada",), time.time()),
                Finished("k5", outbox.DROPPED, "expired", 3, 503, (), time.time()),
            ]
        )
        withdrawal = consent_record(record_id="w", subject="p-bob", choice=ConsentChoice.WITHDRAWN)
        await store.append_consent(withdrawal, Purge("m1", "p-bob", ("summariser", "archive")))
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each backend holding ``_fill_outbox``'s items (PostgreSQL: skipped when absent)."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else asyncio.run(create_postgres_database())
    try:
        asyncio.run(_fill_outbox(url))
        yield url
    finally:
        if request.param == "postgres":
            asyncio.run(drop_postgres_database(url))


def test_outbox_status_counts_items_by_destination_status_and_reason(
    outbox_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``outbox status`` counts items per destination, status and reason, and ages the oldest pending one."""
    assert main(["outbox", "status", "--database", outbox_db, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    counts = {(r["destination"], r["status"], r["reason"]): (r["items"], r["sealed_parts"]) for r in rows}
    assert counts == {
        ("archive", "dropped", "expired"): (1, 0),
        ("archive", "pending", None): (1, 1),
        ("summariser", "delivered", None): (1, 0),
        ("summariser", "pending", None): (2, 2),  # p-bob's part of k1 was withdrawn with the ledger record
    }
    ages = {(r["destination"], r["status"]): r["oldest_pending_age"] for r in rows}
    assert ages[("summariser", "pending")] >= 3600
    assert ages[("summariser", "delivered")] is None


def test_outbox_status_table_filters_by_meeting_and_shows_no_payloads(
    outbox_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table ends with the pending total; another meeting's filter finds nothing; no text is shown."""
    assert main(["outbox", "--database", outbox_db, "status", "--meeting", "m1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == list(STATUS_COLUMNS)
    assert out.splitlines()[-1].startswith("3 items pending, the oldest for 6")  # 60 min, or a bit more
    assert "merger" not in out
    assert main(["outbox", "status", "--database", outbox_db, "--meeting", "m2"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["nothing pending"]


def test_outbox_keys_counts_pending_parts_per_key_and_flags_a_missing_key(
    outbox_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the old key configured, ``outbox keys`` names it and exits 1; with it, exits 0."""
    old_id, new_id = OLD_KEY.split(":")[0], NEW_KEY.split(":")[0]
    monkeypatch.setenv("CONSENT_GATEWAY_OUTBOX_KEYS", NEW_KEY)
    assert main(["outbox", "keys", "--database", outbox_db]) == 1
    captured = capsys.readouterr()
    table = {line.split()[0]: line.split()[1:] for line in captured.out.splitlines()[1:]}
    assert table == {new_id: ["2", "active"], old_id: ["1", "NO"]}
    assert f"not configured: {old_id}" in captured.err
    monkeypatch.setenv("CONSENT_GATEWAY_OUTBOX_KEYS", f"{NEW_KEY},{OLD_KEY}")
    assert main(["outbox", "keys", "--database", outbox_db]) == 0
    assert NEW_KEY.split(":")[1] not in capsys.readouterr().out


def test_outbox_keys_says_when_an_old_key_can_go(
    outbox_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once nothing pending was sealed under a configured old key, ``outbox keys`` says it may be removed."""
    spare = new_key_spec()
    monkeypatch.setenv("CONSENT_GATEWAY_OUTBOX_KEYS", f"{NEW_KEY},{OLD_KEY},{spare}")
    assert main(["outbox", "keys", "--database", outbox_db]) == 0
    out = capsys.readouterr().out
    assert f"no pending part needs {spare.split(':')[0]}: safe to remove" in out


def test_outbox_keys_reads_the_generated_key_from_the_secrets_file(
    outbox_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no keys set, the key ``serve`` generated into the secrets file counts; without that file
    ``outbox keys`` says it cannot compare, exits 0 and creates no file."""
    secrets = tmp_path / "secrets.json"
    monkeypatch.delenv("CONSENT_GATEWAY_OUTBOX_KEYS", raising=False)
    monkeypatch.setenv("CONSENT_GATEWAY_SECRETS_FILE", str(secrets))
    assert main(["outbox", "keys", "--database", outbox_db]) == 0
    assert "cannot compare" in capsys.readouterr().err
    assert not secrets.exists()
    secrets.write_text(json.dumps({"outbox_key": NEW_KEY}), encoding="utf-8")
    assert main(["outbox", "keys", "--database", outbox_db]) == 1
    out = capsys.readouterr().out
    assert f"{NEW_KEY.split(':')[0]}  2             active" in out
    assert NEW_KEY.split(":")[1] not in out
