"""Generated documents stay in step with the code that validates what they describe."""

from __future__ import annotations

from pathlib import Path

from gateway import openapi
from gateway.policy import reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_openapi_file_matches_the_wire_models() -> None:
    """docs/openapi.yaml is what `python -m gateway.openapi` prints (regenerate it if this fails)."""
    assert (DOCS / "openapi.yaml").read_text(encoding="utf-8") == openapi.render()


def test_policy_reference_matches_the_schema() -> None:
    """docs/policy-reference.md is what `python -m gateway.policy.reference` prints."""
    assert (DOCS / "policy-reference.md").read_text(encoding="utf-8") == reference.render()
