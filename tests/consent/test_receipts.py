"""Consent receipts: Ed25519-signed copies of ledger records, verifiable without the gateway's secret."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.consent import receipts
from gateway.consent.ledger import chain
from gateway.consent.receipts import ReceiptSigner
from gateway.model import ConsentChoice, RecordOutcome
from gateway.settings import Settings, with_generated_secrets
from tests.strategies import T0, consent_record, consent_records

SIGNER = ReceiptSigner(bytes(range(32)))
OTHER = ReceiptSigner(bytes(range(1, 33)))


def issue(**overrides: Any) -> dict[str, Any]:
    entry = chain(None, consent_record(**overrides))
    return SIGNER.issue(entry, T0, "https://gw.example")


@given(consent_records())
def test_any_record_round_trips_and_verifies(record: Any) -> None:
    """A receipt of any ledger record survives JSON and verifies against the gateway's public key."""
    receipt = json.loads(json.dumps(SIGNER.issue(chain(None, record), T0, "https://gw.example")))
    assert receipts.verify(receipt, SIGNER.public) == receipts.Verified(True, "ok", True)
    assert receipt["record_id"] == record.record_id and receipt["choice"] == record.choice.value


def test_receipt_carries_the_consent_record_fields_and_ledger_position() -> None:
    """A receipt holds the consent record fields (ISO 27560 / Kantara) and its ledger seq and hash."""
    entry = chain(None, consent_record(choice=ConsentChoice.WITHDRAWN, evidence="sub-1"))
    receipt = SIGNER.issue(entry, T0, "https://gw.example")
    for key in ("record_id", "subject", "indicated_by", "purposes", "choice", "channel", "notice_version",
                "policy_revision", "at", "expires_at", "evidence", "signature"):  # fmt: skip
        assert key in receipt
    assert receipt["ledger"] == {"seq": 1, "entry_hash": entry.hash, "prev_hash": entry.prev_hash}
    assert receipt["choice"] == "withdrawn"
    assert receipt["key"]["kid"] == SIGNER.key_id


def _paths(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in doc.items():
        if key == "signature":
            continue
        if isinstance(value, dict):
            out.extend((key, *sub) for sub in _paths(value))
        else:
            out.append((key,))
    return out


@given(st.data())
def test_changing_any_field_breaks_the_signature(data: st.DataObject) -> None:
    """Any edit to any signed field (including the embedded key) makes the receipt fail verification."""
    receipt = issue(evidence="sub-1")
    path = data.draw(st.sampled_from(_paths(receipt)))
    tampered = copy.deepcopy(receipt)
    holder = tampered
    for key in path[:-1]:
        holder = holder[key]
    old = holder[path[-1]]
    new = data.draw(st.one_of(st.text(max_size=8), st.integers(), st.none()).filter(lambda v: v != old))
    holder[path[-1]] = new
    assert not receipts.verify(tampered, None).ok
    assert not receipts.verify(tampered, SIGNER.public).ok


def test_a_receipt_resigned_with_another_key_fails_against_the_pinned_key() -> None:
    """Someone who re-signs an edited receipt with their own key is caught when the key is pinned."""
    forged = OTHER.issue(chain(None, consent_record(choice=ConsentChoice.GIVEN)), T0, "https://gw.example")
    assert receipts.verify(forged, None).ok  # consistent with itself...
    assert receipts.verify(forged, SIGNER.public).reason == "key_mismatch"  # ...but not the gateway's


@pytest.mark.parametrize("doc", [None, [], {}, {"version": "x"}, {"version": receipts.RECEIPT_VERSION}])
def test_malformed_receipts_are_refused(doc: object) -> None:
    """Anything that is not a whole receipt is refused with a reason, never an exception."""
    assert not receipts.verify(doc, SIGNER.public).ok


def test_public_key_loads_from_jwks_jwk_and_base64() -> None:
    """The verifier accepts the well-known JWK set, a single JWK, or the raw key in base64."""
    jwks = json.dumps(SIGNER.jwks())
    jwk = json.dumps(SIGNER.jwks()["keys"][0])
    for text in (jwks, jwk, receipts.b64url(SIGNER.public)):
        assert receipts.load_public_key(text) == SIGNER.public
    with pytest.raises(ValueError, match="32 bytes"):
        receipts.load_public_key("AAAA")


def test_cli_receipt_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`receipt verify` exits 0 for a genuine receipt checked against the gateway's key, 2 for one checked
    only against the key inside it (anyone can make such a receipt, with a key of their own), 1 for a
    tampered one, a wrong key, or a key id that is not the embedded key's."""
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(issue()))
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(SIGNER.jwks()))
    assert main(["receipt", "verify", str(good)]) == 2
    assert "pass --key" in capsys.readouterr().out
    forged = tmp_path / "forged.json"
    made = OTHER.issue(chain(None, consent_record()), T0, "x")
    made["key"]["kid"] = SIGNER.key_id  # claims the gateway's key id
    forged.write_text(json.dumps(made))
    assert main(["receipt", "verify", str(forged)]) == 1
    assert "kid_mismatch" in capsys.readouterr().out
    assert main(["receipt", "verify", str(forged), "--key", str(key_file)]) == 1
    assert main(["receipt", "verify", str(good), "--key", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "valid receipt r1" in out and "outcome:      accepted" in out and "choice:       given" in out
    assert main(["receipt", "verify", str(good), "--key", receipts.b64url(SIGNER.public)]) == 0
    assert main(["receipt", "verify", str(good), "--key", receipts.b64url(OTHER.public)]) == 1
    tampered = tmp_path / "tampered.json"
    doc = issue()
    doc["choice"] = "refused"
    tampered.write_text(json.dumps(doc))
    assert main(["receipt", "verify", str(tampered), "--key", str(key_file)]) == 1
    assert "INVALID (bad_signature)" in capsys.readouterr().out
    not_json = tmp_path / "junk.json"
    not_json.write_text("{")
    assert main(["receipt", "verify", str(not_json)]) == 1


REJECTED = {"choice": ConsentChoice.GIVEN, "outcome": RecordOutcome.REJECTED, "reason": "indicated_by_other",
            "subject": "p-sam", "indicated_by": "p-host", "purposes": ("summary", "training")}  # fmt: skip


def test_cli_receipt_verify_reports_a_rejected_consent_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A genuine receipt of a rejected attempt exits 3 with "valid signature, but this consent was REJECTED
    (reason)" and what the record says; unpinned it stays 2, since nothing shows who signed it."""
    path = tmp_path / "rejected.json"
    path.write_text(json.dumps(issue(**REJECTED)))
    key = receipts.b64url(SIGNER.public)
    assert main(["receipt", "verify", str(path), "--key", key]) == 3
    out = capsys.readouterr().out
    assert "valid signature, but this consent was REJECTED (indicated_by_other)" in out
    assert "valid receipt" not in out
    for line in (
        "choice:       given",
        "outcome:      rejected (indicated_by_other)",
        "subject:      p-sam",
        "indicated_by: p-host",
        "purposes:     summary, training",
        "at:           2025-03-01T12:00:00Z",
    ):
        assert line in out, line
    assert main(["receipt", "verify", str(path)]) == 2
    assert "outcome:      rejected" in capsys.readouterr().out


def _with_duplicate(doc: dict[str, Any], path: tuple[str, ...], first: object) -> str:
    """``doc`` as JSON text with the key at ``path`` written twice: ``first``, then the real value."""
    members = []
    for key, value in doc.items():
        text = json.dumps(value)
        if key == path[0] and len(path) > 1:
            text = _with_duplicate(value, path[1:], first)
        elif key == path[0]:
            members.append(f"{json.dumps(key)}: {json.dumps(first)}")
        members.append(f"{json.dumps(key)}: {text}")
    return "{" + ", ".join(members) + "}"


@given(st.data())
def test_a_key_written_twice_anywhere_is_invalid(data: st.DataObject) -> None:
    """A receipt whose JSON repeats any key, at any depth, is refused as ``duplicate_key``, though a plain
    parser (which keeps the last copy) would find the signature good."""
    receipt = issue(**REJECTED)
    path = data.draw(st.sampled_from([*_paths(receipt), ("signature",)]))
    text = _with_duplicate(receipt, path, data.draw(st.one_of(st.none(), st.text(max_size=8))))
    assert receipts.verify(json.loads(text), SIGNER.public).ok
    assert receipts.verify_json(text, SIGNER.public) == (receipts.Verified(False, "duplicate_key"), None)


def test_cli_receipt_verify_refuses_an_accepted_outcome_written_before_the_real_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's disguise: ``"outcome": "accepted"`` placed before the signed ``"rejected"`` is INVALID."""
    forged = tmp_path / "forged.json"
    forged.write_text(_with_duplicate(issue(**REJECTED), ("outcome",), "accepted"))
    assert main(["receipt", "verify", str(forged), "--key", receipts.b64url(SIGNER.public)]) == 1
    assert "INVALID (duplicate_key)" in capsys.readouterr().out


def test_cli_receipt_verify_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """`receipt verify --help` documents each exit code."""
    with pytest.raises(SystemExit):
        main(["receipt", "verify", "--help"])
    out = capsys.readouterr().out
    for code in ("0  valid", "1  invalid", "2  unpinned", "3  valid signature, but the consent was REJECTED"):
        assert code in out, code


def test_generated_receipt_key_is_a_usable_ed25519_seed(tmp_path: Path) -> None:
    """The receipt key written to secrets.json on first start signs receipts that verify."""
    settings = with_generated_secrets(Settings(database=f"sqlite:///{tmp_path}/gw.db"))
    assert settings.receipt_key is not None and settings.link_secret is not None
    signer = ReceiptSigner.from_b64(settings.receipt_key.get_secret_value())
    assert receipts.verify(signer.issue(chain(None, consent_record()), T0, "x"), signer.public).ok
