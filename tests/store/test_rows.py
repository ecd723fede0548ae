"""Row codecs: the hand-written decision JSON is canonical JSON of the decision record, byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import ledger
from gateway.decision_log import decision_from_dict, decision_to_dict
from gateway.model import Decision, Span
from gateway.store.columns import stored, unstored
from gateway.store.rows import decision_json, decision_row
from tests.strategies import decisions, ids

any_text = st.text(max_size=12)
"""Any text, escapes and non-ASCII included: every string field goes through the same quoting."""


@st.composite
def odd_decisions(draw: st.DrawFn) -> Decision:
    decision = draw(decisions())
    return replace(
        decision,
        decision_id=draw(ids),
        destination=draw(ids),
        policy_revision=draw(any_text),
        reasons=tuple(draw(st.lists(any_text, max_size=3))),
        rule_ids=tuple(draw(st.lists(any_text, max_size=3))),
        consent_record_ids=tuple(draw(st.lists(any_text, max_size=3))),
        redactions=tuple(
            Span(draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9)), draw(any_text))
            for _ in range(draw(st.integers(0, 3)))
        ),
    )


@given(decisions() | odd_decisions())
def test_decision_json_is_canonical_json_of_the_record(decision: Decision) -> None:
    """The stored JSON is exactly what ``canonical_dumps(decision_to_dict(...))`` writes."""
    expected = ledger.canonical_dumps(decision_to_dict(decision))
    assert decision_json(decision, ledger.format_time(decision.at)) == expected


@given(decisions() | odd_decisions())
def test_decision_row_round_trips(decision: Decision) -> None:
    """A decision row's JSON decodes back to the same decision, and its columns match the record."""
    row = decision_row(decision)
    assert decision_from_dict(json.loads(str(row[-1]))) == decision
    assert row[:6] == (
        decision.decision_id,
        decision.meeting_id,
        decision.participant_id,
        decision.destination,
        decision.action.value,
        ledger.format_time(decision.at),
    )


@given(
    st.text(
        alphabet=st.sampled_from(["a", "u", "0", "d", "é", "\\", "\x00", "\ud800", "\udfff"])
        | st.characters(),
        max_size=20,
    )
)
def test_an_id_read_back_from_an_indexed_column_is_the_id_stored(value: str) -> None:
    """``unstored`` inverts ``stored`` (the escaping of NUL, lone surrogates and backslashes), so an id
    listed from a column (the stored roster's meetings, at start) is the platform's id again."""
    assert unstored(stored(value)) == value
