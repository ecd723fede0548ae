"""The decision log record: a ``Decision`` as a versioned JSON value.

Every decision the pipeline makes (forward, redact, drop, hold) is written through the store as this value and
read back by the audit commands. A ``Decision`` carries ids, reasons, rule ids, consent record ids and
redaction *spans*, never transcript text (invariant 6); this codec adds nothing to that. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from gateway.consent.ledger import Fields, format_time
from gateway.model import Action, Decision, Span

SCHEMA = 1
"""Version of the serialised form; bump it (and teach ``decision_from_dict`` the old one) on any change."""

_FIELDS = ("v", *(f.name for f in fields(Decision)))


def _span_to_dict(span: Span) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "placeholder": span.placeholder}


def _span_from_dict(data: object) -> Span:
    if not isinstance(data, Mapping):
        raise ValueError("decision: redactions must hold objects")
    f = Fields(data, "redaction span", ("start", "end", "placeholder"))
    return Span(f.integer("start"), f.integer("end"), f.string("placeholder"))


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    return {
        "v": SCHEMA,
        "decision_id": decision.decision_id,
        "meeting_id": decision.meeting_id,
        "segment_id": decision.segment_id,
        "destination": decision.destination,
        "action": decision.action.value,
        "at": format_time(decision.at),
        "policy_revision": decision.policy_revision,
        "reasons": list(decision.reasons),
        "rule_ids": list(decision.rule_ids),
        "consent_record_ids": list(decision.consent_record_ids),
        "redactions": [_span_to_dict(span) for span in decision.redactions],
        "participant_id": decision.participant_id,
        "shadow": decision.shadow,
    }


def decision_from_dict(data: Mapping[str, object]) -> Decision:
    f = Fields(data, "decision", _FIELDS)
    if data.get("v", SCHEMA) != SCHEMA:
        raise ValueError("decision: unsupported schema version")
    return Decision(
        decision_id=f.string("decision_id"),
        meeting_id=f.string("meeting_id"),
        segment_id=f.string("segment_id"),
        destination=f.string("destination"),
        action=f.member(Action, "action"),
        at=f.time("at"),
        policy_revision=f.string("policy_revision"),
        reasons=f.strings("reasons"),
        rule_ids=f.strings("rule_ids"),
        consent_record_ids=f.strings("consent_record_ids"),
        redactions=tuple(_span_from_dict(item) for item in f.array("redactions")),
        participant_id=f.opt_string("participant_id"),
        shadow=f.flag("shadow", False),
    )
