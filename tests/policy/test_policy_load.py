"""Policy files: strict loading with file:line:key errors, content-hash revisions, fail closed on oddities."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.load import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "policies" / "default.yaml"
MINIMAL = b"""\
policy: minimal
purposes:
  summary:
    description: d
    notice: n
    notice_version: v1
"""


def _issues(raw: bytes) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(raw, "p.yaml")
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize("name", ["default.yaml", "all-party.yaml"])
def test_shipped_policies_load(name: str) -> None:
    """The policies the project ships load and compile."""
    policy = load_policy(ROOT / "policies" / name)
    assert policy.destinations


def test_revision_is_the_sha256_of_the_file_bytes() -> None:
    """An auditor holding the file can recompute the revision every log record cites."""
    assert load_policy(DEFAULT).revision == hashlib.sha256(DEFAULT.read_bytes()).hexdigest()


def test_a_misspelt_key_is_named_with_file_line_and_column() -> None:
    """Unknown keys are errors that point at the key itself."""
    raw = MINIMAL + b"pending:\n  window_secs: 60\n"
    assert _issues(raw) == ["p.yaml:8:3: pending.window_secs: unknown key"]


def test_a_wrongly_typed_value_is_named() -> None:
    """Types are not coerced: a quoted number is not a number, 'yes' is not a boolean."""
    issues = _issues(MINIMAL + b"pending:\n  window_seconds: '60'\n  release_on_consent: yes\n")
    assert any("pending.window_seconds" in i and ":8:" in i for i in issues)
    assert not any("release_on_consent" in i for i in issues)  # YAML 1.1 'yes' is a real boolean
    issues = _issues(MINIMAL + b"pending:\n  release_on_consent: 'yes'\n")
    assert any("pending.release_on_consent" in i for i in issues)


def test_a_duplicate_key_is_an_error() -> None:
    """YAML silently keeps the last of two equal keys; a policy must not."""
    assert any("duplicate key" in i for i in _issues(MINIMAL + b"mode: per_speaker\nmode: all_party\n"))


def test_a_destination_naming_an_undeclared_purpose_is_refused() -> None:
    """Cross references are checked when the policy loads, not when a segment arrives."""
    raw = MINIMAL + b"destinations:\n  - {id: d, url: 'http://x', purposes: [training]}\n"
    assert any("undeclared purposes" in i for i in _issues(raw))


def test_empty_and_non_yaml_files_are_errors_not_crashes() -> None:
    """Garbage in gives a PolicyError with a position, never another exception."""
    assert _issues(b"") == ["p.yaml:1:1: <top>: the file is empty"]
    assert _issues(b"policy: [unclosed\n")[0].startswith("p.yaml:2:")
    assert "not valid UTF-8" in _issues(b"\xff\xfe")[0]


def test_an_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    """A missing file fails like a broken one: the gateway refuses to start (fail closed)."""
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_corruption_of_a_policy_loads_fully_or_fails_with_policy_error(data: st.DataObject) -> None:
    """Invariant 5: a policy is applied whole or not at all; no edit makes loading fail any other way."""
    raw = bytearray(DEFAULT.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        byte = data.draw(st.sampled_from(list(b" :-[]{}\n#'\"abcxyz019\t")))
        if action == "delete":
            del raw[at]
        elif action == "replace":
            raw[at] = byte
        else:
            raw.insert(at, byte)
    try:
        policy = parse_policy(bytes(raw), "fuzzed.yaml")
    except PolicyError as exc:
        issues = exc.issues
    else:
        issues = ()
        assert policy.revision == hashlib.sha256(bytes(raw)).hexdigest()
    assert all(i.file == "fuzzed.yaml" for i in issues)
