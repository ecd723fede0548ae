"""Reusable Hypothesis strategies for the core value types.

Import as ``from tests.strategies import ...`` (run pytest as ``python -m pytest`` from the repo root).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from gateway.model import (
    Action,
    ConsentChoice,
    ConsentRecord,
    Decision,
    RecordOutcome,
    Span,
)

ids = st.text(min_size=1, max_size=16)
"""Platform ids are opaque: any non-empty text, including unicode and control characters."""

optional_ids = st.none() | ids
short_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
purposes = st.sampled_from(["summary", "action_items", "training", "transcript", "analytics"])

offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
timezones = st.one_of(st.just(UTC), st.builds(timezone, offsets))
aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=timezones
)
"""Timezone-aware instants in any fixed offset (the ledger stores them as UTC)."""


@st.composite
def consent_records(
    draw: st.DrawFn,
    *,
    record_id: st.SearchStrategy[str] | None = None,
    meeting_id: st.SearchStrategy[str] = ids,
    subject: st.SearchStrategy[str] = ids,
) -> ConsentRecord:
    who = draw(subject)
    return ConsentRecord(
        record_id=draw(record_id if record_id is not None else st.uuids().map(str)),
        platform=draw(st.sampled_from(["zoom", "teams", "meet", "jitsi"])),
        meeting_id=draw(meeting_id),
        subject=who,
        indicated_by=draw(st.one_of(st.just(who), ids)),
        purposes=tuple(draw(st.lists(purposes, max_size=3, unique=True))),
        choice=draw(st.sampled_from(ConsentChoice)),
        channel=draw(st.sampled_from(["page", "chat", "api", "standing"])),
        notice_version=draw(st.none() | short_ids),
        policy_revision=draw(short_ids),
        at=draw(aware_datetimes),
        expires_at=draw(st.none() | aware_datetimes),
        evidence=draw(st.none() | ids),
        delegation=draw(st.none() | st.just("guardian")),
        outcome=draw(st.sampled_from(RecordOutcome)),
        reason=draw(st.none() | short_ids),
    )


spans = st.builds(
    Span,
    start=st.integers(min_value=0, max_value=10_000),
    end=st.integers(min_value=0, max_value=10_000),
    placeholder=st.integers(min_value=1, max_value=50).map(lambda n: f"[participant {n}]"),
)


@st.composite
def decisions(
    draw: st.DrawFn,
    *,
    meeting_id: st.SearchStrategy[str] = ids,
    participant_id: st.SearchStrategy[str | None] = optional_ids,
) -> Decision:
    return Decision(
        decision_id=draw(st.uuids().map(str)),
        meeting_id=draw(meeting_id),
        segment_id=draw(ids),
        destination=draw(short_ids),
        action=draw(st.sampled_from(Action)),
        at=draw(aware_datetimes),
        policy_revision=draw(short_ids),
        reasons=tuple(draw(st.lists(short_ids, max_size=3))),
        rule_ids=tuple(draw(st.lists(short_ids, max_size=3))),
        consent_record_ids=tuple(draw(st.lists(st.uuids().map(str), max_size=3))),
        redactions=tuple(draw(st.lists(spans, max_size=3))),
        participant_id=draw(participant_id),
        shadow=draw(st.booleans()),
    )


T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def consent_record(**overrides: object) -> ConsentRecord:
    """A plain accepted self-given record for one purpose; override any field."""
    values: dict[str, object] = {
        "record_id": "r1",
        "platform": "zoom",
        "meeting_id": "m1",
        "subject": "p1",
        "indicated_by": overrides.get("subject", "p1"),
        "purposes": ("summary",),
        "choice": ConsentChoice.GIVEN,
        "channel": "page",
        "notice_version": "n1",
        "policy_revision": "rev1",
        "at": T0,
    }
    values.update(overrides)
    return ConsentRecord(**values)  # type: ignore[arg-type]
