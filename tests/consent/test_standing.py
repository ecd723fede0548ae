"""Standing consent: recorded in the one ledger, turned into per-meeting consent only for verified e-mails,
withdrawn everywhere at once. Pure rules first, then through ``runtime.Gateway`` on real SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent import standing
from gateway.consent.standing import STANDING_MEETING, StandingSubmitted
from gateway.engine import evaluate_consent, new_meeting
from gateway.events import ConsentSubmitted, MeetingEnded, ParticipantJoined, SegmentReceived
from gateway.meeting import MeetingState, joined, with_records
from gateway.model import Action, ConsentChoice, ConsentRecord, ConsentState, RecordOutcome, Segment
from gateway.policy.compiled import Policy
from gateway.policy.load import parse_policy
from gateway.runtime import ConsentViewStale, Gateway, PolicySet, Result
from gateway.sinks import CollectSink
from gateway.store import open_store
from gateway.store.base import Store
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.test_roster_restart import ADA_VERIFIED, DEST, post_standing, standing_policy
from tests.web.harness import SIGNING_SECRET, segment, serving_policy
from tests.web.harness import event as generic_event

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ADA = "Ada.Lovelace@Example.org"
POLICY = """\
policy: standing
purposes:
  summary: {description: s, notice: n, notice_version: "s1"}
  training: {description: t, notice: n, notice_version: "t1"}
consent:
  channels: [api, chat, consent_page, standing]
  standing: {allowed: true, max_days: 30}
pending: {window_seconds: 30}
destinations:
  - {id: live, url: "http://127.0.0.1:9/x", purposes: [summary]}
"""


def _policy(text: str = POLICY) -> Policy:
    return parse_policy(text.encode(), "standing.yaml")


def _submitted(
    choice: ConsentChoice = ConsentChoice.GIVEN, purposes: tuple[str, ...] = ("summary",), **kw: object
) -> StandingSubmitted:
    fields: dict[str, object] = {"indicated_by": ADA.lower(), "at": T0, **kw}
    return StandingSubmitted("generic", ADA, purposes, choice, **fields)  # type: ignore[arg-type]


# --- pure rules ----------------------------------------------------------------------------------------


def test_a_standing_record_is_keyed_by_the_normalised_email() -> None:
    """Subject `email:<address>` (trimmed, case-folded), meeting `*standing*`, channel standing, and it
    lapses after the policy's max_days."""
    record = standing.evaluate(_submitted(), _policy(), "r1")
    assert (record.subject, record.meeting_id, record.channel) == (
        "email:ada.lovelace@example.org",
        STANDING_MEETING,
        "standing",
    )
    assert record.indicated_by == record.subject and record.outcome is RecordOutcome.ACCEPTED
    assert record.expires_at == T0 + timedelta(days=30)


@pytest.mark.parametrize(
    ("policy_text", "reason"),
    [
        (POLICY.replace("allowed: true", "allowed: false"), "standing_not_allowed"),
        (POLICY.replace("consent_page, standing]", "consent_page]"), "channel_not_allowed"),
    ],
)
def test_standing_consent_needs_the_policy_to_allow_it(policy_text: str, reason: str) -> None:
    """Without `standing.allowed` and the `standing` channel, the request is recorded as rejected."""
    record = standing.evaluate(_submitted(), _policy(policy_text), "r1")
    assert (record.outcome, record.reason) == (RecordOutcome.REJECTED, reason)


def test_someone_else_cannot_give_standing_consent() -> None:
    """A standing consent indicated by another identity is rejected without a delegation."""
    record = standing.evaluate(_submitted(indicated_by="host@example.org"), _policy(), "r1")
    assert (record.outcome, record.reason) == (RecordOutcome.REJECTED, "indicated_by_other")


def test_derive_only_what_still_holds() -> None:
    """Derived consent: live given purposes of this platform, not ones withdrawn since or expired."""
    policy = _policy()
    state = joined(new_meeting("generic", "m1"), "p-ada", "Ada", ADA)
    given = standing.evaluate(_submitted(purposes=("summary", "training")), policy, "r1")
    (request,) = standing.derive(state, "p-ada", [given], policy, T0)
    assert request.purposes == ("summary", "training") and request.channel == "standing"
    assert request.evidence == "standing:r1" and request.expires_at == given.expires_at
    withdrawn = standing.evaluate(_submitted(ConsentChoice.WITHDRAWN, ("training",)), policy, "r2")
    (request,) = standing.derive(state, "p-ada", [given, withdrawn], policy, T0)
    assert request.purposes == ("summary",)
    assert standing.derive(state, "p-ada", [given], policy, T0 + timedelta(days=31)) == ()
    other = new_meeting("zoom", "m1")
    assert standing.derive(other, "p-ada", [given], policy, T0) == ()


def test_a_standing_consent_made_before_a_recorded_withdrawal_is_superseded() -> None:
    """A resent standing consent (a retry of an earlier request, or one that overtook the withdrawal) made
    before the identity's standing withdrawal is rejected as ``superseded``; one made after it applies."""
    policy = _policy()
    given = standing.evaluate(_submitted(), policy, "r1")
    withdrawn = standing.evaluate(
        _submitted(ConsentChoice.WITHDRAWN, at=T0 + timedelta(minutes=5)), policy, "r2"
    )
    again = standing.evaluate(_submitted(), policy, "r3", [given, withdrawn])
    assert (again.outcome, again.reason) == (RecordOutcome.REJECTED, "superseded")
    later = standing.evaluate(_submitted(at=T0 + timedelta(minutes=6)), policy, "r4", [given, withdrawn])
    assert later.outcome is RecordOutcome.ACCEPTED
    elsewhere = standing.evaluate(replace(_submitted(), platform="zoom"), policy, "r5", [given, withdrawn])
    assert elsewhere.outcome is RecordOutcome.ACCEPTED  # another platform's choices are its own


async def test_an_old_standing_consent_resent_after_the_withdrawal_lets_nothing_through(
    tmp_path: Path,
) -> None:
    """Through the API: given 10 minutes ago, withdrawn 5 minutes ago, then the 10-minute-old request again
    (403 superseded). Ada's next meeting forwards nothing of hers."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        t_given = datetime.now(UTC) - timedelta(minutes=10)
        t_withdrawn = datetime.now(UTC) - timedelta(minutes=5)

        def body(decision: str, at: datetime) -> dict[str, object]:
            return {"platform": "generic", "email": "ada@example.org", "purposes": ["summary"],
                    "decision": decision, "indicated_by": "ada@example.org",
                    "at": at.isoformat()}  # fmt: skip

        async with serving_policy(tmp_path, standing_policy(fake.url), fakes={DEST: fake}) as gw:
            assert await post_standing(gw, body("given", t_given)) == 200
            assert await post_standing(gw, body("withdrawn", t_withdrawn)) == 200
            assert await post_standing(gw, body("given", t_given)) == 403
            await gw.send(
                generic_event("participant.joined", "m-next", participant=ADA_VERIFIED),
                segment("s1", "p-ada", "Said after the standing withdrawal.", "m-next"),
            )
            await gw.settle()
        assert fake.segments() == []


def test_a_changed_notice_is_asked_again() -> None:
    """A standing consent to an older notice version derives nothing for that purpose."""
    given = standing.evaluate(_submitted(), _policy(), "r1")
    newer = _policy(POLICY.replace('"s1"', '"s2"'))
    assert standing.derive(new_meeting("generic", "m1"), "p", [given], newer, T0) == ()


def _meeting_record(
    state: MeetingState, choice: ConsentChoice, purposes: tuple[str, ...], record_id: str
) -> ConsentRecord:
    event = ConsentSubmitted("generic", "m1", "p-ada", purposes, choice, "p-ada", "api", T0)
    return evaluate_consent(state, event, _policy(), record_id)


def test_a_standing_withdrawal_the_meeting_missed_withdraws_there() -> None:
    """A standing withdrawal recorded after the meeting's grant, while nobody held the meeting, withdraws the
    grant when the meeting is read back; one recorded before a newer choice in the meeting does not."""
    policy = _policy()
    state = joined(new_meeting("generic", "m1"), "p-ada", "Ada", ADA)
    grant = _meeting_record(state, ConsentChoice.GIVEN, ("summary", "training"), "m-1")
    state = with_records(state, [grant])
    stop = standing.evaluate(_submitted(ConsentChoice.WITHDRAWN, ("summary",)), policy, "s-2")
    (request,) = standing.missed(state, "p-ada", [(2, stop)], {"m-1": 1}, policy, T0)
    assert (request.choice, request.purposes, request.channel) == (
        ConsentChoice.WITHDRAWN,
        ("summary",),
        "standing",
    )
    assert request.evidence == "standing:s-2"
    # the meeting's grant came after the standing withdrawal: that withdrawal was applied, or did not apply
    assert standing.missed(state, "p-ada", [(2, stop)], {"m-1": 3}, policy, T0) == ()
    # a grant it cannot place counts as older
    assert len(standing.missed(state, "p-ada", [(2, stop)], {}, policy, T0)) == 1


def test_a_standing_withdrawal_ends_what_standing_derived_even_once_the_policy_disallows_standing() -> None:
    """Standing consent switched off later: a standing withdrawal is still recorded, and still withdraws."""
    off = _policy(POLICY.replace("allowed: true", "allowed: false"))
    record = standing.evaluate(_submitted(ConsentChoice.WITHDRAWN), off, "r2")
    assert record.outcome is RecordOutcome.ACCEPTED
    state = joined(new_meeting("generic", "m1"), "p-ada", "Ada", ADA)
    state = with_records(state, [_meeting_record(state, ConsentChoice.GIVEN, ("summary",), "m-1")])
    request = standing.withdrawal(state, "p-ada", record, off, T0)
    assert request is not None and request.choice is ConsentChoice.WITHDRAWN


_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["meeting", "standing"]),
            st.sampled_from(list(ConsentChoice)),
            st.sampled_from([("summary",), ("training",), ("summary", "training")]),
        ),
        st.sampled_from([("crash",), ("load",)]),
    ),
    max_size=14,
)


def _run(steps: list[tuple[object, ...]], crashes: bool) -> MeetingState:
    """Play consent choices on one meeting: a meeting's own choice needs a process holding the meeting; a
    standing one is applied at once where a process holds it (``changes``), else when the meeting is read
    back (``missed``). ``crashes``: whether ``crash``/``load`` steps happen at all."""
    policy = _policy()
    state = joined(new_meeting("generic", "m1"), "p-ada", "Ada", ADA)
    seq_of: dict[str, int] = {}
    standing_entries: list[tuple[int, ConsentRecord]] = []
    up = True

    def write(record: ConsentRecord) -> None:
        nonlocal state
        seq_of[record.record_id] = len(seq_of) + len(standing_entries) + 1
        state = with_records(state, [record])

    def apply(requests: tuple[ConsentSubmitted, ...]) -> None:
        for request in requests:
            write(evaluate_consent(state, request, policy, f"m-{len(seq_of)}"))

    for step in [*steps, ("load",)]:
        if step[0] == "crash":
            up = not crashes
        elif step[0] == "load":
            if not up:
                up = True
                apply(standing.missed(state, "p-ada", standing_entries, seq_of, policy, T0))
        elif step[0] == "meeting" and up:
            _, choice, purposes = step
            write(_meeting_record(state, choice, purposes, f"m-{len(seq_of)}"))  # type: ignore[arg-type]
        elif step[0] == "standing":
            _, choice, purposes = step
            record = standing.evaluate(_submitted(choice, purposes), policy, f"s-{len(standing_entries)}")  # type: ignore[arg-type]
            standing_entries.append((len(seq_of) + len(standing_entries) + 1, record))
            if up:
                apply(standing.changes(state, "p-ada", record, [r for _, r in standing_entries], policy, T0))
    return state


@settings(max_examples=500, deadline=None)
@given(_STEPS)
def test_a_meeting_read_back_ends_as_if_no_standing_choice_was_missed(
    steps: list[tuple[object, ...]],
) -> None:
    """Whatever standing choices a meeting missed while no process held it, once read back each purpose is
    in exactly the state it would be in had every choice been applied when recorded (a missed withdrawal
    never leaves words flowing; a missed consent is not lost). The meeting's own choices are the same in both
    runs: with crashes, those made while it is down never happen, so they are left out of both."""
    kept: list[tuple[object, ...]] = []
    up = True
    for step in steps:
        up = {"crash": False, "load": True}.get(str(step[0]), up)
        if step[0] != "meeting" or up:
            kept.append(step)
    live, crashed = _run(kept, crashes=False), _run(kept, crashes=True)
    for purpose in ("summary", "training"):
        assert crashed.consent("p-ada", purpose).at(T0) is live.consent("p-ada", purpose).at(T0)


# --- through the shell ---------------------------------------------------------------------------------


@dataclass
class World:
    gateway: Gateway
    store: Store
    sink: CollectSink
    now: datetime = T0
    n: int = 0
    results: list[Result] = field(default_factory=list)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    async def join(self, meeting: str, pid: str, email: str | None = ADA, *, verified: bool = True) -> None:
        event = ParticipantJoined("generic", meeting, pid, "Ada", self.tick(), email, verified)
        await self.gateway.handle("generic", event, now=self.now)

    async def say(self, meeting: str, pid: str) -> str:
        self.n += 1
        seg = Segment(meeting, f"s{self.n}", pid, "words", self.tick())
        await self.gateway.handle("generic", SegmentReceived("generic", seg), now=self.now)
        return seg.segment_id

    async def standing(self, choice: ConsentChoice, purposes: tuple[str, ...] = ("summary",)) -> Result:
        result = await self.gateway.record_standing(
            _submitted(choice, purposes, at=self.tick()), now=self.now
        )
        self.results.append(result)
        return result

    def state(self, meeting: str, pid: str, purpose: str = "summary") -> ConsentState:
        live = self.gateway.meeting("generic", meeting)
        assert live is not None
        return live.consent(pid, purpose).at(self.now)

    def forwarded(self) -> set[str]:
        return {p.segment_id for i in self.sink.items for p in i.parts}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = open_store(await database_for(tmp_path))
    await store.open()
    sink = CollectSink()
    try:
        yield World(Gateway(PolicySet([_policy()]), store, sink), store, sink)
    finally:
        await store.close()


async def test_a_verified_joiner_brings_their_standing_consent(world: World) -> None:
    """The meeting ledger gets a standing-channel record pointing at the standing one; their words flow."""
    given = await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada")
    sid = await world.say("m1", "p-ada")
    assert sid in world.forwarded()
    (derived,) = await world.store.ledger_entries(meeting_id="m1")
    assert derived.record.channel == "standing" and derived.record.subject == "p-ada"
    assert derived.record.evidence == f"standing:{given.record_id}"
    (source,) = await world.store.standing_records(ADA.upper())
    assert derived.record.expires_at == source.expires_at == source.at + timedelta(days=30)


async def test_an_unverified_email_never_matches(world: World) -> None:
    """The same e-mail without the platform's word for it derives nothing: the speaker is held, not sent."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada", verified=False)
    sid = await world.say("m1", "p-ada")
    assert sid not in world.forwarded()
    assert await world.store.ledger_entries(meeting_id="m1") == []
    assert world.state("m1", "p-ada") is ConsentState.UNKNOWN


async def test_another_email_never_matches(world: World) -> None:
    """A verified e-mail that is not the standing identity derives nothing."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-bob", "bob@example.org")
    assert await world.store.ledger_entries(meeting_id="m1") == []


async def test_withdrawing_standing_consent_applies_in_every_live_meeting(world: World) -> None:
    """A standing withdrawal is recorded in each live meeting the identity is in; nothing flows after it."""
    await world.standing(ConsentChoice.GIVEN, ("summary", "training"))
    await world.join("m1", "p-ada")
    await world.join("m2", "ada-2")
    assert world.state("m1", "p-ada") is ConsentState.GIVEN
    await world.standing(ConsentChoice.WITHDRAWN, ("summary", "training"))
    assert world.state("m1", "p-ada") is ConsentState.WITHDRAWN
    assert world.state("m2", "ada-2", "training") is ConsentState.WITHDRAWN
    sid = await world.say("m1", "p-ada")
    assert sid not in world.forwarded()
    decisions = [d for d in await world.store.decision_records() if d.segment_id == sid]
    assert [d.reasons for d in decisions] == [("consent_withdrawn",)]
    for meeting in ("m1", "m2"):
        last = (await world.store.ledger_entries(meeting_id=meeting))[-1].record
        assert (last.choice, last.channel) == (ConsentChoice.WITHDRAWN, "standing")


async def test_a_standing_withdrawal_purges_held_segments(tmp_path: Path) -> None:
    """Words held for a destination needing a purpose not yet given are purged by the standing withdrawal."""
    text = POLICY + '  - {id: trainer, url: "http://127.0.0.1:9/y", purposes: [summary, training]}\n'
    store = open_store(await database_for(tmp_path))
    await store.open()
    try:
        sink = CollectSink()
        world = World(Gateway(PolicySet([_policy(text)]), store, sink), store, sink)
        await world.standing(ConsentChoice.GIVEN)
        await world.join("m1", "p-ada")
        held = await world.say("m1", "p-ada")
        await world.standing(ConsentChoice.WITHDRAWN)
        decisions = [d for d in await store.decision_records() if d.segment_id == held]
        assert [(d.destination, d.action) for d in decisions] == [
            ("live", Action.FORWARD),
            ("trainer", Action.HOLD),
            ("trainer", Action.DROP),
        ]
        assert decisions[-1].reasons == ("purged_consent_changed",)
    finally:
        await store.close()


async def test_standing_consent_given_mid_meeting_applies_at_once(world: World) -> None:
    """A verified participant already in a meeting is covered once their standing consent is recorded."""
    await world.join("m1", "p-ada")
    assert world.state("m1", "p-ada") is ConsentState.UNKNOWN
    await world.standing(ConsentChoice.GIVEN)
    assert world.state("m1", "p-ada") is ConsentState.GIVEN
    assert await world.say("m1", "p-ada") in world.forwarded()


async def test_an_in_meeting_refusal_outranks_standing_consent(world: World) -> None:
    """Rejoining after refusing in this meeting does not bring the standing consent back."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada")
    refusal = ConsentSubmitted(
        "generic", "m1", "p-ada", ("summary",), ConsentChoice.REFUSED, "p-ada", "chat", world.tick()
    )
    await world.gateway.handle("generic", refusal, now=world.now)
    await world.join("m1", "p-ada")
    assert world.state("m1", "p-ada") is ConsentState.REFUSED


async def test_a_rejected_standing_request_changes_nothing(world: World) -> None:
    """A standing request for an unknown purpose is recorded as rejected and derives nothing."""
    result = await world.standing(ConsentChoice.GIVEN, ("marketing",))
    assert (result.status, result.reason) == ("rejected", "unknown_purpose")
    await world.join("m1", "p-ada")
    assert await world.store.ledger_entries(meeting_id="m1") == []
    (rejected,) = await world.store.standing_records(ADA)
    assert rejected.outcome is RecordOutcome.REJECTED


async def test_a_meeting_seen_again_after_being_forgotten_applies_a_standing_withdrawal(world: World) -> None:
    """Ada's consent in m1 came from her standing consent. m1 ends and is forgotten; she then withdraws her
    standing consent, which no live meeting holds. Late content of m1 arrives (a recorded transcript does):
    m1 is read back from its ledger, and whoever's consent there came from a standing record gets the
    standing choices made since, found through that record even with no roster naming them."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada")
    first = await world.say("m1", "p-ada")
    await world.gateway.handle("generic", MeetingEnded("generic", "m1", world.tick()), now=world.now)
    world.now += timedelta(hours=1)
    await world.gateway.tick(world.now)
    assert world.gateway.meeting("generic", "m1") is None  # forgotten
    await world.standing(ConsentChoice.WITHDRAWN)
    await world.join("m1", "p-ada")
    late = await world.say("m1", "p-ada")
    assert first in world.forwarded() and late not in world.forwarded()
    last = (await world.store.ledger_entries(meeting_id="m1"))[-1].record
    assert (last.choice, last.channel) == (ConsentChoice.WITHDRAWN, "standing")
    assert last.evidence == f"standing:{world.results[-1].record_id}"


async def test_no_yes_between_a_standing_withdrawal_and_its_meetings(world: World) -> None:
    """A standing withdrawal is durable before it reaches each live meeting (a read, each meeting's lock
    and write). Meanwhile delivery's check must not answer yes for the identity's participants."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada")
    assert world.gateway.still_allowed("m1", "live", "p-ada")
    real = world.store.standing_records
    reading, resume = asyncio.Event(), asyncio.Event()

    async def slow(email: str) -> list[ConsentRecord]:
        reading.set()
        await resume.wait()  # the withdrawal is durable; m1 has not got it yet
        return await real(email)

    world.store.standing_records = slow  # type: ignore[method-assign]
    task = asyncio.create_task(world.standing(ConsentChoice.WITHDRAWN))
    await reading.wait()
    with pytest.raises(ConsentViewStale):
        world.gateway.still_allowed("m1", "live", "p-ada")
    resume.set()
    await task
    assert not world.gateway.still_allowed("m1", "live", "p-ada")


async def test_a_roster_brought_back_keeps_standing_identities_and_asks_nobody(world: World) -> None:
    """A forgotten meeting's roster is announced again for a late transcript (``Gateway.rejoins``): the
    participant whose consent there came from standing consent is that identity again, so a standing
    withdrawal recorded after reaches the meeting; and nobody is sent a consent request for a meeting
    that is over."""
    asked: list[str] = []
    world.gateway.consent_request = lambda policy, platform, meeting, pid, now: asked.append(pid)  # type: ignore[assignment,misc,return-value]
    world.gateway.notify = lambda notice: None
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-ada")
    await world.gateway.handle("generic", MeetingEnded("generic", "m1", world.tick()), now=world.now)
    world.now += timedelta(hours=1)
    await world.gateway.tick(world.now)
    assert world.gateway.meeting("generic", "m1") is None
    asked.clear()
    for event in world.gateway.rejoins("generic", "m1", world.tick()):
        await world.gateway.handle("generic", event, now=world.now, ask=False)
    assert world.state("m1", "p-ada") is ConsentState.GIVEN and asked == []
    await world.standing(ConsentChoice.WITHDRAWN)
    assert world.state("m1", "p-ada") is ConsentState.WITHDRAWN
    assert await world.say("m1", "p-ada") not in world.forwarded()


async def test_a_verified_join_brought_back_without_asking_still_notes_the_identity(world: World) -> None:
    """A late transcript announces a forgotten meeting's joins again without asking anyone (``ask=False``):
    a verified e-mail among them is still noted, so a standing withdrawal recorded after reaches Ada's
    consent there, although she gave it in the meeting, not through standing consent."""
    await world.join("m1", "p-ada")
    given_ = ConsentSubmitted(
        "generic", "m1", "p-ada", ("summary",), ConsentChoice.GIVEN, "p-ada", "api", world.tick()
    )
    await world.gateway.handle("generic", given_, now=world.now)
    await world.gateway.handle("generic", MeetingEnded("generic", "m1", world.tick()), now=world.now)
    world.now += timedelta(hours=1)
    await world.gateway.tick(world.now)
    assert world.gateway.meeting("generic", "m1") is None
    again = ParticipantJoined("generic", "m1", "p-ada", "Ada", world.tick(), ADA, True)
    await world.gateway.handle("generic", again, now=world.now, ask=False)
    assert world.state("m1", "p-ada") is ConsentState.GIVEN
    await world.standing(ConsentChoice.WITHDRAWN)
    assert world.state("m1", "p-ada") is ConsentState.WITHDRAWN


def test_only_the_standing_api_gives_standing_consent() -> None:
    """A given record in the standing ledger counts only as the standing-consent API writes it (channel
    ``standing``, with its checks and expiry); any restriction there counts whatever its channel."""
    from tests.strategies import consent_record

    now = datetime(2026, 11, 27, tzinfo=UTC)

    def record(channel: str, choice: ConsentChoice, n: int) -> ConsentRecord:
        return consent_record(record_id=f"r{n}", platform="generic", meeting_id=STANDING_MEETING,
                              subject="email:ada@example.org", purposes=("summary",), choice=choice,
                              channel=channel, at=now - timedelta(days=1), expires_at=None)  # fmt: skip

    assert standing.holding([record("api", ConsentChoice.GIVEN, 1)], "generic", now) == {}
    given = record(standing.CHANNEL, ConsentChoice.GIVEN, 2)
    assert standing.holding([given], "generic", now) == {"summary": given}
    assert standing.holding([given, record("api", ConsentChoice.WITHDRAWN, 3)], "generic", now) == {}


def test_an_identity_is_the_address_in_any_case_and_no_other() -> None:
    """Upper and lower case name one mailbox; "straße" and "strasse" are two (casefold would join them)."""
    assert standing.subject_for(" Ada@Example.org ") == standing.subject_for("ada@example.org")
    assert standing.subject_for("straße@example.org") != standing.subject_for("strasse@example.org")


async def test_a_participant_id_that_comes_back_as_someone_else_keeps_nothing_of_the_first(
    world: World,
) -> None:
    """The platform reuses p-1 for Bob (verified bob@) after Ada (verified, standing consent) left. What
    Ada's standing consent gave p-1 is withdrawn when Bob arrives, and Ada's later standing choices no
    longer reach p-1: Bob's words go nowhere on Ada's word."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-1")
    assert world.state("m1", "p-1") is ConsentState.GIVEN
    await world.join("m1", "p-1", "bob@example.org")
    assert world.state("m1", "p-1") is ConsentState.WITHDRAWN
    await world.standing(ConsentChoice.GIVEN, ("summary", "training"))
    sid = await world.say("m1", "p-1")
    assert sid not in world.forwarded()
    last = (await world.store.ledger_entries(meeting_id="m1"))[-1].record
    assert (last.choice, last.evidence) == (ConsentChoice.WITHDRAWN, "identity_changed")


async def test_a_reused_id_with_an_address_the_platform_does_not_vouch_for_keeps_nothing_either(
    world: World,
) -> None:
    """Bob comes back under p-1 with an address the platform does not vouch for (bob@, unverified): that is
    still not Ada, so what her standing consent gave p-1 is withdrawn, and her later standing choices no
    longer reach p-1."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-1")
    assert world.state("m1", "p-1") is ConsentState.GIVEN
    await world.join("m1", "p-1", "bob@example.org", verified=False)
    assert world.state("m1", "p-1") is ConsentState.WITHDRAWN
    await world.standing(ConsentChoice.GIVEN, ("summary", "training"))
    assert world.state("m1", "p-1") is ConsentState.WITHDRAWN
    sid = await world.say("m1", "p-1")
    assert sid not in world.forwarded()


async def test_a_join_again_without_an_address_keeps_the_identity(world: World) -> None:
    """A platform may send a join again without the address (it comes on a later update): that says
    nothing about who it is, so Ada keeps what her standing consent gave her."""
    await world.standing(ConsentChoice.GIVEN)
    await world.join("m1", "p-1")
    await world.join("m1", "p-1", None)
    assert world.state("m1", "p-1") is ConsentState.GIVEN
    await world.join("m1", "p-1", ADA.upper(), verified=False)  # her own address, not vouched for
    assert world.state("m1", "p-1") is ConsentState.GIVEN
    sid = await world.say("m1", "p-1")
    assert sid in world.forwarded()
