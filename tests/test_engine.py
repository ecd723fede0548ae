"""The pure core, by example: consent evaluation, holds and their bounds, purges, meeting-end batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import engine
from gateway.events import (
    ConsentSubmitted,
    MeetingEnded,
    ParticipantJoined,
    ParticipantRenamed,
    SegmentReceived,
)
from gateway.meeting import MeetingState
from gateway.model import Action, ConsentChoice, ConsentState, RecordOutcome, Segment
from gateway.policy.compiled import Policy
from gateway.policy.load import parse_policy

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
BASE = """\
policy: t
purposes:
  summary: {description: s, notice: n, notice_version: "s1"}
  training: {description: t, notice: n, notice_version: "t1"}
consent:
  channels: [api, chat]
  delegations: [{name: guardian, channels: [api]}]
  max_age_days: 1
pending: {window_seconds: 30, max_segments_per_participant: 2}
destinations:
  - {id: live, url: "http://127.0.0.1:9/a", purposes: [summary]}
  - {id: batch, url: "http://127.0.0.1:9/b", purposes: [summary, training], delivery: meeting_end}
"""


def policy(extra: str = "") -> Policy:
    return parse_policy((BASE + extra).encode(), "t.yaml")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Meeting:
    """A tiny driver over the pure functions, playing the shell's part (records are 'durable' at once)."""

    def __init__(self, pol: Policy | None = None) -> None:
        self.policy = pol or policy()
        self.state: MeetingState = engine.new_meeting("generic", "m1")
        self.decisions: list = []
        self.emits: list = []
        self.records: list = []
        self.received: float | None = None
        """When consent requests are received (None: not checked, as in a replay)."""

    def _take(self, step: engine.Step) -> None:
        self.state = step.state
        self.decisions += step.decisions
        self.emits += step.emits

    def join(self, pid: str, name: str, t: float = 0) -> None:
        self._take(
            engine.on_event(
                self.state, ParticipantJoined("generic", "m1", pid, name, at(t)), self.policy, at(t)
            )
        )

    def rename(self, pid: str, name: str, t: float = 0) -> None:
        event = ParticipantRenamed("generic", "m1", pid, name, at(t))
        self._take(engine.on_event(self.state, event, self.policy, at(t)))

    def consent(self, pid: str, purposes: tuple[str, ...], choice: str = "given", t: float = 0, **kw: object):
        event = ConsentSubmitted(
            "generic",
            "m1",
            pid,
            purposes,
            ConsentChoice(choice),
            str(kw.pop("by", pid)),
            str(kw.pop("channel", "api")),
            at(t),
            **kw,
        )  # type: ignore[arg-type]
        received = at(self.received) if self.received is not None else None
        record = engine.evaluate_consent(self.state, event, self.policy, f"r{len(self.records)}", received)
        self.records.append(record)
        self._take(engine.on_record(self.state, record, self.policy, at(t)))
        return record

    def say(self, sid: str, pid: str | None, text: str, t: float = 0) -> None:
        event = SegmentReceived("generic", Segment("m1", sid, pid, text, at(t)))
        self._take(engine.on_event(self.state, event, self.policy, at(t)))

    def tick(self, t: float) -> None:
        self._take(engine.tick(self.state, self.policy, at(t)))

    def end(self, t: float) -> None:
        self._take(engine.on_event(self.state, MeetingEnded("generic", "m1", at(t)), self.policy, at(t)))

    def last(self, sid: str, dest: str = "live"):
        return [d for d in self.decisions if d.segment_id == sid and d.destination == dest][-1]

    def sent(self, dest: str) -> list[tuple[str, str]]:
        return [
            (p.segment_id, p.payload["text"]) for e in self.emits if e.destination == dest for p in e.parts
        ]


def test_consent_by_someone_else_is_rejected_and_recorded() -> None:
    """A host's 'yes' for a guest yields a rejected record and changes nothing."""
    m = Meeting()
    record = m.consent("guest", ("summary",), by="host")
    assert record.outcome is RecordOutcome.REJECTED and record.reason == "indicated_by_other"
    m.say("s1", "guest", "hello")
    assert m.last("s1").action is Action.HOLD


def test_a_policy_delegation_allows_consent_on_someones_behalf_and_says_so() -> None:
    """A named delegation over an allowed channel is accepted and recorded as a delegation."""
    m = Meeting()
    record = m.consent("child", ("summary",), by="parent", delegation="guardian")
    assert record.outcome is RecordOutcome.ACCEPTED and record.delegation == "guardian"
    assert m.consent("child2", ("summary",), by="parent", delegation="guardian", channel="chat").reason == (
        "indicated_by_other"
    )


def test_requests_the_policy_does_not_know_are_rejected() -> None:
    """Unknown purposes, channels the policy does not accept and stale notices are refused."""
    m = Meeting()
    assert m.consent("a", ("marketing",)).reason == "unknown_purpose"
    assert m.consent("a", ("summary",), channel="standing").reason == "channel_not_allowed"
    assert m.consent("a", ("summary",), notice_version="s0").reason == "stale_notice"
    assert m.consent("a", ("summary",), notice_version="s1").outcome is RecordOutcome.ACCEPTED


def test_a_refusal_or_withdrawal_is_recorded_through_any_channel_and_for_any_purpose() -> None:
    """Every channel can also withdraw (DESIGN): someone who consented through a channel a reloaded policy
    no longer accepts can still say stop there, and a withdrawal naming a purpose the policy no longer has
    is not refused as a whole (that would leave the purposes it does know given). Someone else still cannot
    withdraw for them without a delegation (invariant 3)."""
    m = Meeting()
    assert m.consent("a", ("summary",)).outcome is RecordOutcome.ACCEPTED
    withdrawn = m.consent("a", ("summary", "marketing"), "withdrawn", channel="standing")
    assert (withdrawn.outcome, withdrawn.reason) == (RecordOutcome.ACCEPTED, None)
    assert m.state.consent("a", "summary").state is ConsentState.WITHDRAWN
    refused = m.consent("b", ("marketing",), "refused", channel="somewhere")
    assert refused.outcome is RecordOutcome.ACCEPTED
    assert m.consent("a", ("summary",), "withdrawn", by="host").reason == "indicated_by_other"
    assert m.consent("a", (), "withdrawn").reason == "unknown_purpose"


def test_consent_given_before_a_withdrawal_already_held_is_superseded() -> None:
    """Ada consents at 10:00:05 and withdraws at 10:00:10; the consent of 10:00:05 arrives again (a
    redelivery hours later, or a delivery that overtook the withdrawal): it is recorded as rejected,
    ``superseded``, and she stays withdrawn. A consent made after the withdrawal applies as usual."""
    m = Meeting()
    m.join("ada", "Ada Lovelace")
    assert m.consent("ada", ("summary",), t=5).outcome is RecordOutcome.ACCEPTED
    m.consent("ada", ("summary",), "withdrawn", t=10)
    late = m.consent("ada", ("summary", "training"), t=5)
    assert (late.outcome, late.reason) == (RecordOutcome.REJECTED, "superseded")
    assert m.state.consent("ada", "summary").state is ConsentState.WITHDRAWN
    m.say("s1", "ada", "After the withdrawal.", t=20)
    assert m.last("s1").action is Action.DROP
    again = m.consent("ada", ("summary",), t=30)
    assert again.outcome is RecordOutcome.ACCEPTED
    assert m.state.consent("ada", "summary").state is ConsentState.GIVEN


def test_consent_on_the_consent_page_is_never_superseded() -> None:
    """The page stamps its choices with the gateway's clock as they happen; a relayed withdrawal may carry a
    platform clock running ahead. A "yes" on the page after that withdrawal was received is the later
    choice, whatever the times say."""
    with_page = BASE.replace("channels: [api, chat]", "channels: [api, chat, consent_page]")
    m = Meeting(parse_policy(with_page.encode(), "t.yaml"))
    m.consent("ada", ("summary",), "withdrawn", t=10)  # a platform clock ahead of the gateway's
    page = m.consent("ada", ("summary",), t=5, channel="consent_page", notice_version="s1")
    assert page.outcome is RecordOutcome.ACCEPTED
    assert m.state.consent("ada", "summary").state is ConsentState.GIVEN


def test_across_channels_only_a_clear_lead_supersedes() -> None:
    """A withdrawal on the page (the gateway's clock) and a consent in chat a moment later, on a platform
    clock a few seconds behind: the consent stands. A chat consent made well before the withdrawal (a
    redelivery) is still superseded."""
    with_page = BASE.replace("channels: [api, chat]", "channels: [api, chat, consent_page]")
    m = Meeting(parse_policy(with_page.encode(), "t.yaml"))
    m.consent("ada", ("summary",), "withdrawn", t=10, channel="consent_page")
    assert m.consent("ada", ("summary",), t=8, channel="chat").outcome is RecordOutcome.ACCEPTED
    m.consent("ada", ("summary",), "withdrawn", t=100, channel="consent_page")
    late = m.consent("ada", ("summary",), t=20, channel="chat")
    assert (late.outcome, late.reason) == (RecordOutcome.REJECTED, "superseded")


def test_consent_stamped_later_than_it_arrived_is_refused() -> None:
    """A consent stamped an hour ahead of its arrival would come after any withdrawal to come (nothing
    could supersede it when sent again) and expire an hour late: refused, ``future_time``. Clocks a few
    seconds apart are no reason; a refusal stamped ahead still applies (fail closed)."""
    m = Meeting()
    m.received = 0
    ahead = m.consent("ada", ("summary",), t=3600)
    assert (ahead.outcome, ahead.reason) == (RecordOutcome.REJECTED, "future_time")
    assert m.state.consent("ada", "summary").state is not ConsentState.GIVEN
    assert m.consent("ada", ("summary",), t=20).outcome is RecordOutcome.ACCEPTED
    assert m.consent("ada", ("summary",), "withdrawn", t=3600).outcome is RecordOutcome.ACCEPTED
    assert m.state.consent("ada", "summary").state is ConsentState.WITHDRAWN


def test_a_withdrawal_older_than_the_consent_it_follows_still_applies() -> None:
    """Fail closed: a refusal or withdrawal applies whatever its time; only consent can be superseded."""
    m = Meeting()
    m.consent("ada", ("summary",), t=10)
    assert m.consent("ada", ("summary",), "withdrawn", t=5).outcome is RecordOutcome.ACCEPTED
    assert m.state.consent("ada", "summary").state is ConsentState.WITHDRAWN


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["given", "withdrawn", "refused"]), st.integers(min_value=0, max_value=20)),
        min_size=1,
        max_size=8,
    )
)
def test_consent_never_stands_on_a_choice_older_than_a_restriction_received(
    choices: list[tuple[str, int]],
) -> None:
    """Whatever order a participant's choices arrive in (each with the time it was made), if they end up
    consenting, the consent that stands was made after every refusal or withdrawal the gateway received."""
    m = Meeting()
    for choice, t in choices:
        m.consent("ada", ("summary",), choice, t=t)
    entry = m.state.consent("ada", "summary")
    if entry.state is ConsentState.GIVEN:
        restrictions = [at(t) for choice, t in choices if choice != "given"]
        assert entry.since is not None and all(entry.since >= r for r in restrictions)


def test_consent_expires_after_the_policy_max_age() -> None:
    """A given consent stops forwarding once max_age_days have passed."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.consent("a", ("summary",))
    m.say("s1", "a", "on day one", t=10)
    m.say("s2", "a", "two days later", t=2 * 86400)
    assert m.last("s1").action is Action.FORWARD
    assert m.last("s2").reasons == ("consent_expired",)


def test_hold_is_bounded_per_participant() -> None:
    """Beyond max_segments_per_participant, further segments are dropped, not buffered."""
    m = Meeting()
    for n in range(3):
        m.say(f"s{n}", "quiet", "words", t=n)
    assert [m.last(f"s{n}").action for n in range(3)] == [Action.HOLD, Action.HOLD, Action.DROP]
    assert m.last("s2").reasons == ("hold_full",)


def test_withdrawing_training_keeps_the_summary_stream_but_purges_the_training_batch() -> None:
    """A withdrawal for one purpose purges only destinations that need it."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.consent("a", ("summary", "training"))
    m.say("s1", "a", "first", t=1)
    m.consent("a", ("training",), "withdrawn", t=2)
    m.say("s2", "a", "second", t=3)
    m.end(4)
    assert m.sent("live") == [("s1", "first"), ("s2", "second")]
    assert m.sent("batch") == []
    assert m.last("s1", "batch").reasons == ("purged_consent_changed",)


def test_former_names_are_scrubbed_after_a_rename() -> None:
    """Renaming oneself does not make the old name safe to forward."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.rename("b", "Bart Q")
    m.consent("a", ("summary",))
    m.say("s1", "a", "Over to Bartholomew Quist and Bart Q.", t=1)
    assert m.sent("live") == [("s1", "Over to [participant 2] and [participant 2].")]


def test_meeting_end_batch_is_rescrubbed_against_consent_at_the_end() -> None:
    """A name that was fine when said is scrubbed if its owner withdrew before the batch left."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.consent("a", ("summary", "training"))
    m.consent("b", ("summary", "training"))
    m.say("s1", "a", "Thanks Bartholomew.", t=1)
    m.consent("b", ("summary", "training"), "withdrawn", t=2)
    m.end(3)
    assert m.sent("batch") == [("s1", "Thanks [participant 2].")]
    assert m.last("s1", "batch").reasons == ("sent_at_meeting_end", "names_scrubbed_at_meeting_end:1")


def test_all_party_release_needs_everyone_present_when_it_was_said() -> None:
    """A held segment waits for everyone who heard it, even if one of them left since."""
    m = Meeting(policy("mode: all_party\n"))
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.consent("a", ("summary",))
    m.say("s1", "a", "hello", t=1)
    m.state = engine.meeting.left(m.state, "b")
    m.say("s2", "a", "now alone", t=2)
    assert m.last("s1").action is Action.HOLD
    assert m.last("s2").action is Action.FORWARD
    m.consent("b", ("summary",), t=3)
    assert m.last("s1").action is Action.FORWARD


def test_per_speaker_another_participants_refusal_leaves_a_held_segment_held() -> None:
    """Per-speaker mode: Ann's words wait for Ann alone. Bart refusing while they are held must not drop
    them (that would lose words Ann then consents to); his name in them is scrubbed when they are released."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.say("s1", "a", "Thanks Bartholomew.", t=1)
    assert m.last("s1").action is Action.HOLD
    m.consent("b", ("summary",), "refused", t=2)
    assert m.last("s1").action is Action.HOLD
    m.consent("a", ("summary",), t=3)
    assert m.sent("live") == [("s1", "Thanks [participant 2].")]


def test_all_party_a_refusal_by_someone_present_drops_what_was_held() -> None:
    """All-party mode: a refusal by anyone present when it was said ends the held segment."""
    m = Meeting(policy("mode: all_party\n"))
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.consent("a", ("summary",))
    m.say("s1", "a", "hello", t=1)
    assert m.last("s1").action is Action.HOLD
    m.consent("b", ("summary",), "refused", t=2)
    assert m.last("s1").action is Action.DROP
    assert m.last("s1").reasons == ("purged_consent_changed",)
    assert m.sent("live") == []


def test_decisions_carry_rule_ids_and_record_ids_but_no_text() -> None:
    """Every decision cites its rule and consent record; redactions are spans, not words."""
    m = Meeting()
    m.join("a", "Ann Example")
    m.join("b", "Bartholomew Quist")
    m.consent("a", ("summary",))
    m.say("s1", "a", "Hi Bartholomew", t=1)
    d = m.last("s1")
    assert d.action is Action.REDACT and d.consent_record_ids == ("r0",)
    assert "destinations.live.purposes" in d.rule_ids and "redaction.mentions" in d.rule_ids
    assert [(r.start, r.end, r.placeholder) for r in d.redactions] == [(3, 14, "[participant 2]")]
    assert "Bartholomew" not in repr(d)


def test_consent_to_a_notice_since_changed_does_not_count_until_given_again() -> None:
    """Ada consented to ``summary`` under notice s1. A reload changes that notice (s2: the summaries are
    now kept to train models): her s1 consent is not consent to s2, so her words wait as if she had not
    decided, and she is asked again; once she consents under s2 they go."""
    from gateway.consent import asking

    m = Meeting()
    m.join("ada", "Ada Lovelace")
    m.consent("ada", ("summary",), t=1)
    before = m.policy
    m.policy = parse_policy(
        BASE.replace('notice: n, notice_version: "s1"', 'notice: m, notice_version: "s2"').encode(), "t.yaml"
    )
    assert asking.new_purposes(m.state, before, m.policy) == (("ada", ("summary",)),)
    m.say("s1", "ada", "Under the new notice.", t=2)
    assert m.last("s1").action is Action.HOLD
    assert m.sent("live") == []
    m.consent("ada", ("summary",), t=3, notice_version="s2")
    assert m.sent("live") == [("s1", "Under the new notice.")]
    assert asking.new_purposes(m.state, before, m.policy) == ()


def test_a_new_revision_decides_held_segments_again() -> None:
    """All-party mode held Ada's words for Bo; a reload to per-speaker mode releases them (Ada consented),
    while what the new revision would still hold stays held."""
    m = Meeting(policy("mode: all_party\n"))
    m.join("ada", "Ada Lovelace")
    m.join("bo", "Bo Nakamura")
    m.consent("ada", ("summary",), t=1)
    m.say("s1", "ada", "Waiting for Bo.", t=2)
    assert m.last("s1").action is Action.HOLD
    m.policy = policy()
    step = engine.revised(m.state, m.policy, at(3))
    m._take(step)
    assert m.sent("live") == [("s1", "Waiting for [participant 2].")]  # Bo has not consented
    assert [h.segment.segment_id for h in m.state.held] == ["s1"]  # the batch destination needs training


def test_a_full_hold_cites_the_bound_it_met() -> None:
    """The per-meeting character bound is cited when it is the one met, not the per-participant count."""
    bounded = "max_segments_per_participant: 5, max_chars_per_meeting: 20}"
    m = Meeting(parse_policy(BASE.replace("max_segments_per_participant: 2}", bounded).encode(), "t.yaml"))
    m.say("s1", "bo", "x" * 15, t=1)
    m.say("s2", "bo", "y" * 15, t=2)
    assert m.last("s2").rule_ids == ("pending.max_chars_per_meeting",)


def test_a_consent_at_the_very_end_of_the_window_finds_the_hold_over_whichever_path_asks() -> None:
    """The window is 30 s: a consent recorded at exactly 30 s finds Ada's held words over, as the tick
    would at that moment (before, a consent re-deciding them released them, while a tick dropped them)."""
    m = Meeting()
    m.join("ada", "Ada Lovelace")
    m.say("s1", "ada", "Held.", t=0)
    m.consent("ada", ("summary",), t=30)
    assert m.last("s1").action is Action.DROP
    assert m.sent("live") == []


def test_a_restriction_no_policy_governs_is_the_participants_own_or_rejected() -> None:
    """With no policy covering the meeting, a participant's own refusal is accepted (every channel can
    withdraw); one indicated by someone else, or naming no purpose, is rejected: no delegation can be
    checked without a policy."""

    def submitted(by: str, purposes: tuple[str, ...]) -> ConsentSubmitted:
        return ConsentSubmitted("generic", "m1", "ada", purposes, ConsentChoice.REFUSED, by, "api", at(0))

    own = engine.evaluate_ungoverned("generic", submitted("ada", ("summary",)), "r1")
    assert (own.outcome, own.policy_revision, own.expires_at) == (RecordOutcome.ACCEPTED, "none", None)
    assert (
        engine.evaluate_ungoverned("generic", submitted("host", ("summary",)), "r2").reason
        == "indicated_by_other"
    )
    assert engine.evaluate_ungoverned("generic", submitted("ada", ()), "r3").reason == "unknown_purpose"
