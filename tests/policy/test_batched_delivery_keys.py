"""``delivery: batched`` in policy files: its two keys belong to it alone, have defaults, reach delivery."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from gateway.app import destination_configs
from gateway.policy.compiled import BATCH_MAX_SEGMENTS, BATCH_SECONDS
from gateway.policy.load import PolicyError, parse_policy
from gateway.settings import Settings, SettingsError

HEAD = b"""\
policy: batching
purposes:
  summary: {description: d, notice: n, notice_version: v1}
destinations:
"""
SECRET = "whsec_" + base64.b64encode(b"gateway outbound secret, 32 byte").decode()


def _settings() -> Settings:
    return Settings(signing_secret=SecretStr(SECRET))


def _issues(raw: bytes) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(HEAD + raw, "p.yaml")
    return [str(i) for i in info.value.issues]


def test_batched_keys_reach_the_delivery_config_with_defaults_where_unset() -> None:
    raw = (
        b"  - {id: plain, url: 'https://ai.example.test/a', purposes: [summary]}\n"
        b"  - {id: some, url: 'https://ai.example.test/b', purposes: [summary], delivery: batched}\n"
        b"  - {id: tuned, url: 'https://ai.example.test/c', purposes: [summary], delivery: batched,\n"
        b"     batch_seconds: 0, batch_max_segments: 7}\n"
    )
    configs = destination_configs([parse_policy(HEAD + raw, "p.yaml")], _settings())
    assert (configs["plain"].batch_max, configs["plain"].batch_seconds) == (None, 0.0)
    assert (configs["some"].batch_max, configs["some"].batch_seconds) == (BATCH_MAX_SEGMENTS, BATCH_SECONDS)
    assert (configs["tuned"].batch_max, configs["tuned"].batch_seconds) == (7, 0.0)


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        (b"  - {id: x, url: 'https://x', purposes: [summary], batch_seconds: 5}\n", "batch_seconds",
         "only used when delivery is batched"),
        (b"  - {id: x, url: 'https://x', purposes: [summary], delivery: meeting_end, batch_max_segments: 5}"
         b"\n",
         "batch_max_segments", "only used when delivery is batched"),
        (b"  - {id: x, url: 'https://x', purposes: [summary], delivery: batched, batch_max_segments: 0}\n",
         "batch_max_segments", "greater than or equal to 1"),
        (b"  - {id: x, url: 'https://x', purposes: [summary], delivery: batched, batch_seconds: -1}\n",
         "batch_seconds", "greater than or equal to 0"),
        (b"  - {id: x, url: 'https://x', purposes: [summary], delivery: batched, batch_size: 5}\n",
         "batch_size", "unknown key"),
    ],
)  # fmt: skip
def test_misplaced_or_bad_batch_keys_are_refused_naming_the_key(raw: bytes, key: str, message: str) -> None:
    issues = _issues(raw)
    assert any(f"destinations[0].{key}: " in issue and message in issue for issue in issues), issues
    assert all(issue.startswith("p.yaml:5:") for issue in issues), issues


def test_two_policies_must_agree_on_how_a_shared_destination_is_batched() -> None:
    stream = parse_policy(HEAD + b"  - {id: x, url: 'https://x.test/', purposes: [summary]}\n", "a.yaml")
    batched = parse_policy(
        HEAD + b"  - {id: x, url: 'https://x.test/', purposes: [summary], delivery: batched}\n", "b.yaml"
    )
    with pytest.raises(SettingsError, match="batch_max_segments"):
        destination_configs([stream, batched], _settings())
