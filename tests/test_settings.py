"""Settings: flags over ``CONSENT_GATEWAY_*`` variables over defaults, errors that name the variable, and
secrets generated once into a 0600 file and reused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.sealing import Keyring, new_key_spec
from gateway.settings import Settings, SettingsError, load_settings, with_generated_secrets


def test_defaults_apply_when_nothing_is_given() -> None:
    """With no flags and no environment, the documented defaults hold."""
    settings = load_settings({}, environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.database == "sqlite:///consent-gateway.db"
    assert settings.policies == (Path("policies/default.yaml"),)
    assert settings.ingest_token is None


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    """An environment variable beats the default, and a flag beats the environment variable."""
    environ = {
        "CONSENT_GATEWAY_PORT": "9001",
        "CONSENT_GATEWAY_HOST": "192.0.2.1",
        "CONSENT_GATEWAY_POLICIES": "a.yaml,b.yaml",
        "CONSENT_GATEWAY_MAX_BODY_BYTES": "4096",
    }
    from_env = load_settings({}, environ=environ)
    assert (from_env.host, from_env.port, from_env.max_body_bytes) == ("192.0.2.1", 9001, 4096)
    assert from_env.policies == (Path("a.yaml"), Path("b.yaml"))
    flagged = load_settings({"port": 7000, "host": None, "policies": [Path("c.yaml")]}, environ=environ)
    assert (flagged.host, flagged.port) == ("192.0.2.1", 7000)  # None means the flag was not given
    assert flagged.policies == (Path("c.yaml"),)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CONSENT_GATEWAY_PORT", "eighty"), ("CONSENT_GATEWAY_PORT", "70000"),
     ("CONSENT_GATEWAY_MAX_BODY_BYTES", "10"), ("CONSENT_GATEWAY_LOG_LEVEL", "loud")],
)  # fmt: skip
def test_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    """A value that does not validate fails with a message naming the variable, not echoing secrets."""
    with pytest.raises(SettingsError, match=variable):
        load_settings({}, environ={variable: value})


def test_unsupported_database_url_names_the_setting() -> None:
    """A database URL other than sqlite:/// is refused with a message naming ``database``."""
    settings = load_settings({"database": "postgres://db/gw"}, environ={})
    with pytest.raises(SettingsError, match="database"):
        _ = settings.sqlite_path


def test_secrets_are_generated_once_into_a_private_file_and_reused(tmp_path: Path) -> None:
    """Missing secrets are generated into secrets.json beside the database, mode 0600, and the next start
    reads the same values back."""
    settings = load_settings({"database": f"sqlite:///{tmp_path}/gw.db"}, environ={})
    first = with_generated_secrets(settings)
    path = tmp_path / "secrets.json"
    assert first.secrets_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.ingest_token is not None
    assert first.signing_secret is not None
    assert first.signing_secret.get_secret_value().startswith("whsec_")
    stored = path.read_bytes()
    second = with_generated_secrets(load_settings({"database": f"sqlite:///{tmp_path}/gw.db"}, environ={}))
    assert second.ingest_token == first.ingest_token
    assert second.signing_secret == first.signing_secret
    assert path.read_bytes() == stored  # reused, not rewritten


def test_given_secrets_win_over_the_file_and_are_not_written(tmp_path: Path) -> None:
    """A token set by the operator is used as is; only the missing signing secret is generated."""
    environ = {"CONSENT_GATEWAY_INGEST_TOKEN": "operator-token"}
    settings = with_generated_secrets(
        load_settings({"database": f"sqlite:///{tmp_path}/gw.db"}, environ=environ)
    )
    assert settings.ingest_token == SecretStr("operator-token")
    assert "operator-token" not in (tmp_path / "secrets.json").read_text()


def test_unreadable_secrets_file_is_a_settings_error(tmp_path: Path) -> None:
    """A corrupt secrets file stops the start with a message naming the file, not its content."""
    (tmp_path / "secrets.json").write_text('["not", "an object"]')
    settings = Settings(database=f"sqlite:///{tmp_path}/gw.db")
    with pytest.raises(SettingsError, match=r"secrets\.json"):
        with_generated_secrets(settings)
    (tmp_path / "secrets.json").write_text("{broken")
    with pytest.raises(SettingsError, match="unreadable"):
        with_generated_secrets(settings)


def test_secrets_file_content_is_a_json_object_of_strings(tmp_path: Path) -> None:
    """The generated file holds exactly the generated secrets as strings."""
    with_generated_secrets(Settings(database=f"sqlite:///{tmp_path}/gw.db"))
    data = json.loads((tmp_path / "secrets.json").read_text())
    assert sorted(data) == [
        "admin_token",
        "ingest_token",
        "link_secret",
        "outbox_key",
        "receipt_key",
        "signing_secret",
    ]
    assert all(isinstance(v, str) and v for v in data.values())


def test_outbox_keys_come_from_a_comma_separated_variable_and_the_first_seals() -> None:
    """``CONSENT_GATEWAY_OUTBOX_KEYS=new,old`` gives a keyring that seals under ``new`` and opens ``old``
    items; a flag overrides the variable; no keys means no keyring."""
    new, old = new_key_spec(), new_key_spec()
    old_item = Keyring.parse([old]).seal(b"text", b"aad")
    settings = load_settings({}, environ={"CONSENT_GATEWAY_OUTBOX_KEYS": f"{new},{old}"})
    assert settings.outbox_keys == (SecretStr(new), SecretStr(old))
    ring = settings.keyring()
    assert ring is not None
    assert ring.active_id == new.partition(":")[0]
    assert ring.open(old_item, b"aad") == b"text"
    assert new.partition(":")[2] not in repr(settings)
    flagged = load_settings({"outbox_keys": [old]}, environ={"CONSENT_GATEWAY_OUTBOX_KEYS": f"{new},{old}"})
    assert flagged.outbox_keys == (SecretStr(old),)
    assert load_settings({}, environ={}).keyring() is None


@pytest.mark.parametrize("bad", ["no-colon-here", "k1:not*base64", "k1:" + "A" * 22, "k 1:" + "A" * 43, ""])
def test_bad_outbox_key_is_a_settings_error_naming_the_setting_and_position(bad: str) -> None:
    """A malformed second key stops the start with a message naming ``outbox_keys`` and the key's
    position, never the key."""
    good = new_key_spec()
    settings = load_settings({}, environ={"CONSENT_GATEWAY_OUTBOX_KEYS": f"{good},{bad}"})
    with pytest.raises(SettingsError, match=r"outbox_keys .*key 2") as caught:
        settings.keyring()
    assert good.partition(":")[2] not in str(caught.value)
    secret_part = bad.partition(":")[2] or bad
    assert not secret_part or secret_part not in str(caught.value)


def test_duplicate_outbox_key_ids_are_refused() -> None:
    """Two keys with one id would make it ambiguous which opens an item, so the start fails."""
    first, second = new_key_spec(), new_key_spec()
    same_id = first.partition(":")[0] + ":" + second.partition(":")[2]
    settings = Settings(outbox_keys=(SecretStr(first), SecretStr(same_id)))
    with pytest.raises(SettingsError, match=r"outbox_keys.*key 2: duplicate key id"):
        settings.keyring()


def test_outbox_key_is_generated_once_and_reused(tmp_path: Path) -> None:
    """With no configured outbox key, one is generated into secrets.json and the next start opens what the
    first one sealed."""
    database = f"sqlite:///{tmp_path}/gw.db"
    first = with_generated_secrets(load_settings({"database": database}, environ={}))
    ring = first.keyring()
    assert ring is not None
    sealed = ring.seal(b"text", b"aad")
    stored = json.loads((tmp_path / "secrets.json").read_text())["outbox_key"]
    assert stored.startswith(ring.active_id + ":")
    second = with_generated_secrets(load_settings({"database": database}, environ={})).keyring()
    assert second is not None and second.open(sealed, b"aad") == b"text"


def test_existing_secrets_file_without_an_outbox_key_gets_one_added(tmp_path: Path) -> None:
    """A secrets file written before outbox encryption gains an ``outbox_key``; its other secrets stay."""
    before = {
        "ingest_token": "i",
        "signing_secret": "whsec_c2lnbmluZw==",
        "admin_token": "a",
        "link_secret": "l",
        "receipt_key": "cg==",
    }
    (tmp_path / "secrets.json").write_text(json.dumps(before))
    settings = with_generated_secrets(Settings(database=f"sqlite:///{tmp_path}/gw.db"))
    after = json.loads((tmp_path / "secrets.json").read_text())
    assert {k: v for k, v in after.items() if k != "outbox_key"} == before
    assert settings.ingest_token == SecretStr("i")
    ring = settings.keyring()
    assert ring is not None and after["outbox_key"].startswith(ring.active_id + ":")


def test_configured_outbox_keys_win_over_the_generated_one(tmp_path: Path) -> None:
    """Operator keys are used as given and never written to the secrets file."""
    spec = new_key_spec()
    environ = {"CONSENT_GATEWAY_OUTBOX_KEYS": spec}
    settings = with_generated_secrets(load_settings({"database": f"sqlite:///{tmp_path}/gw.db"}, environ))
    assert settings.outbox_keys == (SecretStr(spec),)
    assert spec.partition(":")[2] not in (tmp_path / "secrets.json").read_text()


def test_database_passwords_never_reach_a_log_line() -> None:
    """The URL logged at start-up keeps user, host and database but not the password."""
    from gateway.settings import redacted_url

    assert redacted_url("postgresql://gw:s3cret@db:5432/consent") == "postgresql://gw:***@db:5432/consent"
    assert redacted_url("sqlite:///consent-gateway.db") == "sqlite:///consent-gateway.db"
