"""Held segments at rest (``gateway.held``): what the outbox keeps is what memory holds, and a hold read back
is the hold that was written; ``engine.restored`` decides recovered holds as a consent arriving would."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway import engine, held
from gateway.meeting import Held, MeetingState, joined, with_record
from gateway.model import Action, ConsentChoice, ConsentRecord, ContentKind, RecordOutcome, Segment
from gateway.policy.load import parse_policy
from gateway.sinks import to_item

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
MEETING = "m-1"
POLICY = """\
policy: held-test
mode: per_speaker
purposes:
  summary: {description: Summaries., notice: Sent to the summariser., notice_version: s-1}
pending:
  window_seconds: 60
destinations:
  - id: summariser
    url: http://127.0.0.1:9/segments
    purposes: [summary]
"""

texts = st.text(max_size=40)  # any text, lone surrogates included: it is sealed as ASCII JSON
ids = st.text(min_size=1, max_size=8)


@st.composite
def holds(draw: st.DrawFn) -> Held:
    start = draw(st.none() | st.floats(0, 1e6, allow_nan=False))
    segment = Segment(
        MEETING,
        draw(ids),
        draw(st.none() | ids),
        draw(texts),
        T0 + timedelta(milliseconds=draw(st.integers(0, 10**9))),
        start,
        None if start is None else start + draw(st.floats(0, 100, allow_nan=False)),
        draw(st.sampled_from(ContentKind)),
    )
    since = T0 + timedelta(microseconds=draw(st.integers(0, 10**12)))
    present = frozenset(draw(st.lists(ids, max_size=4)))
    return Held(
        segment, draw(st.sampled_from(["summariser", "trainer"])), since, present, draw(st.booleans())
    )


def state_with(entries: list[Held]) -> MeetingState:
    return replace(engine.new_meeting("generic", MEETING), held=tuple(entries))


@given(holds(), st.sampled_from(["generic", "zoom"]))
def test_a_hold_read_back_is_the_hold_that_was_written(hold: Held, platform: str) -> None:
    [emit] = held.stored(platform, None, state_with([hold]))
    assert emit.kind == "held" and emit.idempotency_key == held.item_key(MEETING, hold)
    assert held.opened(to_item(emit)) == (platform, hold)


@given(st.lists(holds(), max_size=6), st.lists(holds(), max_size=6), st.data())
def test_the_store_is_told_exactly_what_memory_gained_and_lost(
    kept: list[Held], extra: list[Held], data: st.DataObject
) -> None:
    """Whatever a step did to the holds (kept, added, removed, marked stale), the emissions written and the
    items closed are the difference, by item key."""
    before = state_with(kept)
    remaining = [h for h in kept if data.draw(st.booleans())]
    remaining = [replace(h, stale=True) if data.draw(st.booleans()) else h for h in remaining]
    after = state_with(remaining + extra)
    old = {held.item_key(MEETING, h) for h in before.held}
    new = {held.item_key(MEETING, h) for h in after.held}
    assert {e.idempotency_key for e in held.stored("generic", before, after)} == new - old
    closed = held.decided(before, after, 1.0)
    assert {f.key for f in closed} == old - new
    assert all(f.status == "decided" and f.sent == () for f in closed)


def _given(state: MeetingState, participant: str, choice: ConsentChoice) -> MeetingState:
    record = ConsentRecord(
        record_id=f"r-{participant}-{choice}",
        platform="generic",
        meeting_id=MEETING,
        subject=participant,
        indicated_by=participant,
        purposes=("summary",),
        choice=choice,
        outcome=RecordOutcome.ACCEPTED,
        channel="api",
        notice_version="s-1",
        policy_revision="r",
        at=T0,
    )
    return with_record(state, record)


def test_recovered_holds_are_decided_at_once_against_the_consent_recorded_meanwhile() -> None:
    policy = parse_policy(POLICY.encode(), "held-test.yaml")
    state = engine.new_meeting("generic", MEETING)
    for pid, name in (("ada", "Ada Lovelace"), ("bo", "Bo Nakamura"), ("cy", "Cy Twombly")):
        state = joined(state, pid, name, None)
    state = _given(_given(state, "ada", ConsentChoice.GIVEN), "bo", ConsentChoice.REFUSED)
    now = T0 + timedelta(seconds=30)

    def hold(sid: str, pid: str, text: str) -> Held:
        return Held(Segment(MEETING, sid, pid, text, T0), "summariser", T0)

    recovered = [hold("a1", "ada", "Over to Bo Nakamura."), hold("b1", "bo", "No."), hold("c1", "cy", "Hm.")]
    before, step = engine.restored(state, recovered, policy, now)
    assert [h.segment.segment_id for h in before.held] == ["a1", "b1", "c1"]  # what the store has
    actions = {d.segment_id: (d.action, d.reasons) for d in step.decisions}
    assert actions["a1"][0] is Action.REDACT  # released, Bo's name scrubbed
    assert actions["b1"][0] is Action.DROP
    assert "c1" not in actions and [h.segment.segment_id for h in step.state.held] == ["c1"]  # still waits
    [emit] = step.emits
    assert emit.parts[0].payload["text"] == "Over to [participant 2]."
    # a hold already here, or for a destination the policy does not have, is not taken twice or at all
    again, nothing = engine.restored(step.state, [recovered[2], replace(recovered[0], destination="x")],
                                     policy, now)  # fmt: skip
    assert again.held == step.state.held and nothing.decisions == ()


def test_a_recovered_hold_past_its_window_is_dropped_as_expired() -> None:
    policy = parse_policy(POLICY.encode(), "held-test.yaml")
    state = joined(engine.new_meeting("generic", MEETING), "ada", "Ada Lovelace", None)
    late = T0 + timedelta(seconds=61)
    _, step = engine.restored(state, [Held(Segment(MEETING, "a1", "ada", "Said.", T0), "summariser", T0)],
                              policy, late)  # fmt: skip
    [decision] = step.decisions
    assert (decision.action, decision.reasons) == (Action.DROP, ("pending_expired",))
    assert step.state.held == () and step.emits == ()
