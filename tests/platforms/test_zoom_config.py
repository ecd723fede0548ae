"""The platforms file's Zoom section: strict validation, secrets from the environment, wiring by setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.app import create_app
from gateway.platforms.config import PlatformsConfigError, load_platforms, parse_platforms
from gateway.platforms.zoom import installs_from
from gateway.settings import Settings


def test_secrets_come_from_the_named_variables() -> None:
    """Each app's webhook and client secrets are read from the variables the file names."""
    config = parse_platforms({"zoom": [
        {"id": "a", "webhook_secret_env": "A_SECRET", "client_id": "cid", "client_secret_env": "A_CLIENT"},
        {"id": "b", "webhook_secret_env": "B_SECRET"},
    ]})  # fmt: skip
    installs = installs_from(config.zoom, {"A_SECRET": "s-a", "A_CLIENT": "c-a", "B_SECRET": "s-b"})
    assert [(i.app.id, i.webhook_secret, i.client_secret) for i in installs] == [
        ("a", "s-a", "c-a"), ("b", "s-b", None)]  # fmt: skip
    assert "s-a" not in repr(installs)


def test_missing_secret_variable_is_named() -> None:
    """An unset secret variable is an error naming the variable (never a value)."""
    config = parse_platforms({"zoom": [{"id": "a", "webhook_secret_env": "A_SECRET"}]})
    with pytest.raises(PlatformsConfigError, match="A_SECRET"):
        installs_from(config.zoom, {})


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (
            {"zoom": [{"id": "a", "webhook_secret_env": "X", "webhook_secret": "inline"}]},
            "zoom.0.webhook_secret",
        ),
        ({"zoom": [{"id": "a"}]}, "zoom.0.webhook_secret_env"),
        ({"zoom": [{"id": "a", "webhook_secret_env": "X"}, {"id": "a", "webhook_secret_env": "Y"}]}, "zoom"),
        (
            {"zoom": [{"id": "a", "webhook_secret_env": "X", "download_base": "ftp://x"}]},
            "zoom.0.download_base",
        ),
        ({"zooom": []}, "zooom"),
    ],
)
def test_invalid_files_name_the_key(doc: object, key: str) -> None:
    """Unknown keys (an inline secret too), missing fields, duplicate ids and bad URLs name the key."""
    with pytest.raises(PlatformsConfigError, match=f": {key}: "):
        parse_platforms(doc, "platforms.yaml")


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    """A missing file or one that is not YAML is an error naming the file."""
    with pytest.raises(PlatformsConfigError, match=r"nope\.yaml"):
        load_platforms(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zoom: [\n")
    with pytest.raises(PlatformsConfigError, match=r"bad\.yaml"):
        load_platforms(bad)


def test_create_app_adds_the_zoom_route_only_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``platforms_file`` set the Zoom route exists; without it, it does not."""
    policy = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
    monkeypatch.setenv("CG_TEST_ZOOM", "secret")
    platforms = tmp_path / "platforms.yaml"
    platforms.write_text("zoom:\n  - id: main\n    webhook_secret_env: CG_TEST_ZOOM\n")
    base = {
        "database": f"sqlite:///{tmp_path / 'g.db'}",
        "policies": (policy,),
        "signing_secret": SecretStr("whsec_" + "A" * 44),
    }
    assert "/platforms/zoom/webhook" in _routes(Settings(**base, platforms_file=platforms))
    assert "/platforms/zoom/webhook" not in _routes(Settings(**base))


def _routes(settings: Settings) -> set[str]:
    return {r.resource.canonical for r in create_app(settings).router.routes() if r.resource is not None}
