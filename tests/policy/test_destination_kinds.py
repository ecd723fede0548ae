"""Destination kinds in policy files: each kind's keys are required where they belong and refused elsewhere,
errors name the key, and the loaded policy becomes the delivery config each transport needs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from gateway.app import destination_configs
from gateway.policy.load import PolicyError, parse_policy
from gateway.policy.schema import KIND_FIELDS
from gateway.settings import Settings, SettingsError

HEAD = b"""\
policy: kinds
purposes:
  summary: {description: d, notice: n, notice_version: v1}
destinations:
"""
SUMMARY = b"""\
  - id: notes
    kind: openai_summary
    delivery: meeting_end
    purposes: [summary]
    base_url: https://api.example.test/v1
    model: small-model
    prompt: Summarise.
    api_key_env: NOTES_API_KEY
    summary_url: https://hooks.example.test/summary
"""
SECRET = "whsec_" + base64.b64encode(b"gateway outbound secret, 32 byte").decode()


def _issues(raw: bytes) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(HEAD + raw, "p.yaml")
    return [str(i) for i in info.value.issues]


def _without(line: bytes) -> bytes:
    assert line in SUMMARY
    return SUMMARY.replace(line, b"")


def test_every_kind_loads_with_its_keys() -> None:
    """http and websocket need a URL of their scheme; openai_summary an API, model, prompt, key, webhook."""
    raw = (
        b"  - {id: plain, url: 'https://ai.example.test/in', purposes: [summary]}\n"
        b"  - {id: live, kind: websocket, url: 'wss://ai.example.test/stream', purposes: [summary]}\n"
        + SUMMARY
    )
    plain, live, notes = parse_policy(HEAD + raw, "p.yaml").destinations
    assert (plain.kind, plain.url) == ("http", "https://ai.example.test/in")
    assert (live.kind, live.url) == ("websocket", "wss://ai.example.test/stream")
    assert notes.kind == "openai_summary"
    assert notes.url == "https://api.example.test/v1"  # where the transcript goes
    assert (notes.model, notes.prompt, notes.api_key_env) == ("small-model", "Summarise.", "NOTES_API_KEY")
    assert notes.summary_url == "https://hooks.example.test/summary"


WS_HTTPS = b"  - {id: live, kind: websocket, url: 'https://x', purposes: [summary]}\n"
HTTP_WSS = b"  - {id: plain, url: 'wss://x', purposes: [summary]}\n"
HTTP_NO_URL = b"  - {id: plain, purposes: [summary]}\n"
HTTP_MODEL = b"  - {id: plain, url: 'https://x', purposes: [summary], model: m}\n"
BAD_KIND = b"  - {id: x, kind: grpc, url: 'https://x', purposes: [summary]}\n"


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        (WS_HTTPS, "url", "must start with ws:// or wss:// when kind is websocket"),
        (HTTP_WSS, "url", "must start with http:// or https:// when kind is http"),
        (HTTP_NO_URL, "url", "required when kind is http"),
        (_without(b"    model: small-model\n"), "model", "required when kind is openai_summary"),
        (_without(b"    prompt: Summarise.\n"), "prompt", "required when kind is openai_summary"),
        (
            _without(b"    api_key_env: NOTES_API_KEY\n"),
            "api_key_env",
            "required when kind is openai_summary",
        ),
        (_without(b"    summary_url: https://hooks.example.test/summary\n"), "summary_url", "required"),
        (_without(b"    base_url: https://api.example.test/v1\n"), "base_url", "required"),
        (_without(b"    delivery: meeting_end\n"), "delivery", "must be meeting_end"),
        (SUMMARY.replace(b"meeting_end", b"stream"), "delivery", "must be meeting_end"),
        (SUMMARY + b"    url: https://x\n", "url", "not used when kind is openai_summary"),
        (HTTP_MODEL, "model", "not used when kind is http"),
        (SUMMARY.replace(b"https://hooks", b"ftp://hooks"), "summary_url", "String should match"),
        (SUMMARY.replace(b"NOTES_API_KEY", b"notes key"), "api_key_env", "String should match"),
        (SUMMARY.replace(b"model: small-model", b"model: ''"), "model", "String should have at least 1"),
        (BAD_KIND, "kind", "Input should be 'http', 'websocket' or 'openai_summary'"),
    ],
)
def test_bad_combinations_are_refused_naming_the_key(raw: bytes, key: str, message: str) -> None:
    """A missing, misplaced or malformed kind-specific key is an error at that key, with file and line."""
    issues = _issues(raw)
    assert any(f"destinations[0].{key}: " in issue and message in issue for issue in issues), issues
    assert all(issue.startswith("p.yaml:") and int(issue.split(":")[1]) >= 5 for issue in issues), issues


def test_an_error_points_at_the_key_when_it_is_written() -> None:
    """A wrong value is reported at its own line; a missing key at its destination's line."""
    misplaced = _issues(SUMMARY.replace(b"meeting_end", b"stream"))
    assert misplaced == [
        "p.yaml:7:5: destinations[0].delivery: Value error, must be meeting_end when kind is openai_summary "
        "(a summary needs the transcript)"
    ]
    (missing,) = _issues(_without(b"    model: small-model\n"))
    assert missing.startswith("p.yaml:5:5: destinations[0].model:")


@given(
    kind=st.sampled_from(sorted(KIND_FIELDS)),
    present=st.sets(st.sampled_from(sorted(set().union(*KIND_FIELDS.values())))),
)
def test_a_destination_loads_exactly_when_it_has_its_kinds_keys(kind: str, present: set[str]) -> None:
    """Whatever subset of kind-specific keys is written, the policy loads iff it is exactly the kind's set."""
    values = {
        "url": "wss://x/s" if kind == "websocket" else "https://x/in",
        "base_url": "https://api/v1",
        "model": "m",
        "prompt": "p",
        "api_key_env": "KEY",
        "summary_url": "https://hooks/s",
    }
    lines = ["  - id: d", f"    kind: {kind}", "    purposes: [summary]"]
    if kind == "openai_summary":
        lines.append("    delivery: meeting_end")
    lines += [f"    {key}: {values[key]}" for key in sorted(present)]
    raw = HEAD + ("\n".join(lines) + "\n").encode()
    if present == KIND_FIELDS[kind]:
        assert parse_policy(raw, "p.yaml").destinations[0].kind == kind
    else:
        with pytest.raises(PolicyError) as info:
            parse_policy(raw, "p.yaml")
        wrong = present ^ KIND_FIELDS[kind]
        assert {i.key.removeprefix("destinations[0].") for i in info.value.issues} == wrong


def _settings() -> Settings:
    return Settings(signing_secret=SecretStr(SECRET))


def test_configs_carry_each_kinds_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The delivery config of a summariser holds its model, prompt, webhook and the key read from the env."""
    monkeypatch.setenv("NOTES_API_KEY", "sk-from-env")
    raw = (
        HEAD + b"  - {id: live, kind: websocket, url: 'ws://127.0.0.1:1/s', purposes: [summary]}\n" + SUMMARY
    )
    configs = destination_configs([parse_policy(raw, "p.yaml")], _settings())
    live, notes = configs["live"], configs["notes"]
    assert (live.kind, live.url, live.secret) == ("websocket", "ws://127.0.0.1:1/s", SECRET)
    assert notes.kind == "openai_summary"
    assert (notes.url, notes.model, notes.prompt) == (
        "https://api.example.test/v1",
        "small-model",
        "Summarise.",
    )
    assert (notes.api_key, notes.summary_url) == ("sk-from-env", "https://hooks.example.test/summary")
    assert "sk-from-env" not in repr(notes) and "Summarise." not in repr(notes)


def test_a_missing_api_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: an unset key variable is a settings error naming the variable, not a failing delivery."""
    monkeypatch.delenv("NOTES_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="NOTES_API_KEY: API key of destination 'notes' is not set"):
        destination_configs([parse_policy(HEAD + SUMMARY, "p.yaml")], _settings())


def test_two_policies_must_agree_on_a_shared_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same destination id may not be reached two ways (kind, model...) by two loaded policies."""
    monkeypatch.setenv("NOTES_API_KEY", "sk-from-env")
    first = parse_policy(HEAD + SUMMARY, "a.yaml")
    second = parse_policy(HEAD + SUMMARY.replace(b"small-model", b"large-model"), "b.yaml")
    with pytest.raises(SettingsError, match="destination 'notes' has two model values"):
        destination_configs([first, second], _settings())
    assert destination_configs([first, first], _settings())["notes"].model == "small-model"
