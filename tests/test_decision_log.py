"""The decision-log record codec."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given

from gateway.decision_log import decision_from_dict, decision_to_dict
from gateway.model import Decision
from tests.strategies import decisions


@given(decisions())
def test_decision_round_trips_through_json(decision: Decision) -> None:
    """decision_from_dict(json(decision_to_dict(d))) == d, exactly."""
    assert decision_from_dict(json.loads(json.dumps(decision_to_dict(decision)))) == decision


def test_decision_has_no_text_field() -> None:
    """A Decision cannot carry transcript text: its fields are ids, codes, times and spans only."""
    names = {f.name for f in dataclasses.fields(Decision)}
    assert not names & {"text", "content", "body", "words", "transcript", "message"}


@given(decisions())
def test_the_serialised_form_is_versioned_and_complete(decision: Decision) -> None:
    """Every field is written, plus a schema version."""
    data = decision_to_dict(decision)
    assert data["v"] == 1
    assert set(data) == {"v", *(f.name for f in dataclasses.fields(Decision))}


@given(decisions())
def test_unknown_keys_and_versions_are_refused(decision: Decision) -> None:
    """Decoding is strict: an unknown key or a future schema version is an error, not a guess."""
    data = decision_to_dict(decision)
    with pytest.raises(ValueError, match="unknown keys"):
        decision_from_dict({**data, "text": "hello"})
    with pytest.raises(ValueError, match="schema version"):
        decision_from_dict({**data, "v": 2})
