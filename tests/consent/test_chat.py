"""Chat commands: strict parsing, and the shell recording them as the sender's own consent, never as content.

Parsing is tested as a pure function (with a Hypothesis property that ordinary chat is never a command); the
channel is tested through ``runtime.Gateway`` on real SQLite, with the notices it hands on collected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.chat import Command, parse
from gateway.events import ConsentSubmitted, ParticipantJoined, SegmentReceived
from gateway.model import Action, ConsentChoice, ConsentState, ContentKind, RecordOutcome, Segment
from gateway.notify import Notice
from gateway.policy.load import parse_policy
from gateway.policy.schema import ChatCommandsSpec
from gateway.runtime import Gateway, PolicySet
from gateway.sinks import CollectSink
from gateway.store import open_store
from gateway.store.base import Store
from tests.conftest import database_for

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
MEETING = "m-chat"
PURPOSES = ("summary", "training")
DEFAULTS = ChatCommandsSpec()
POLICY = """\
policy: chat
purposes:
  summary: {description: s, notice: n, notice_version: "s1"}
  training: {description: t, notice: n, notice_version: "t1"}
pending: {window_seconds: 30}
destinations:
  - {id: live, url: "http://127.0.0.1:9/x", purposes: [summary]}
  - {id: trainer, url: "http://127.0.0.1:9/y", purposes: [summary, training]}
"""


# --- parsing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/consent summary", Command("give", ("summary",))),
        ("  /CONSENT   Summary  training ", Command("give", ("summary", "training"))),
        ("/consent summary summary", Command("give", ("summary",))),
        ("/consent all", Command("all")),
        ("/Consent ALL\n", Command("all")),
        ("/optout", Command("optout")),
        ("/consent status", Command("status")),
    ],
)
def test_exact_commands_parse(text: str, expected: Command) -> None:
    """Exact command words parse, whatever their case and the whitespace around and between them."""
    assert parse(text, DEFAULTS, PURPOSES) == expected


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "I agree",
        "ok",
        "consent summary",
        "/consent",
        "/consent sumary",
        "/consent summary please",
        "/consent all please",
        "please /consent summary",
        "/optout now",
        "/opt out",
        "/consentsummary",
        "",
        "   ",
    ],
)
def test_anything_else_is_ordinary_chat(text: str) -> None:
    """Agreement words, near misses, extra words and unknown purposes are ordinary chat, not commands."""
    assert parse(text, DEFAULTS, PURPOSES) is None


def test_configured_commands_replace_the_defaults() -> None:
    """A policy's own command words are the commands; the defaults then mean nothing."""
    spec = ChatCommandsSpec(give="!ja", all="!ja alles", optout="!nein", status="!stand")
    assert parse("!JA summary", spec, PURPOSES) == Command("give", ("summary",))
    assert parse("!nein", spec, PURPOSES) == Command("optout")
    assert parse("/optout", spec, PURPOSES) is None


def test_commands_must_differ() -> None:
    """A policy whose commands collide is refused when it loads."""
    with pytest.raises(ValueError, match="differ"):
        ChatCommandsSpec(optout="/consent STATUS")


@given(st.text(max_size=80))
def test_text_not_starting_with_a_command_word_is_never_a_command(text: str) -> None:
    """Arbitrary text is a command only if its first word is one of the command words."""
    command = parse(text, DEFAULTS, PURPOSES)
    if command is not None:
        assert text.split()[0].casefold() in {"/consent", "/optout"}


spaces = st.text(alphabet=" \t\n", max_size=3)


@given(
    st.sampled_from(["/consent all", "/optout", "/consent status", "/consent training summary"]),
    st.data(),
)
def test_case_and_whitespace_never_change_what_a_command_is(command: str, data: st.DataObject) -> None:
    """A command with any letter case and any whitespace around and between its words is that command."""
    words = [data.draw(st.sampled_from([w, w.upper(), w.title()])) for w in command.split()]
    text = data.draw(spaces) + "".join(w + " " + data.draw(spaces) for w in words)
    assert parse(text, DEFAULTS, PURPOSES) == parse(command, DEFAULTS, PURPOSES) is not None


@given(st.lists(st.sampled_from(["/consent", "all", "status", "summary", "training", "yes", "/optout"])))
def test_a_give_names_only_declared_purposes(words: list[str]) -> None:
    """Whatever words follow, a parsed give names declared purposes only: no chat word reaches the ledger."""
    command = parse(" ".join(words), DEFAULTS, PURPOSES)
    if command is not None:
        assert set(command.purposes) <= set(PURPOSES)
        assert command.verb == "give" or command.purposes == ()


# --- the channel through the shell ---------------------------------------------------------------------


@dataclass
class Meeting:
    gateway: Gateway
    store: Store
    sink: CollectSink
    notices: list[Notice] = field(default_factory=list)
    now: datetime = T0
    n: int = 0

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    async def join(self, pid: str) -> None:
        await self.gateway.handle("generic", ParticipantJoined("generic", MEETING, pid, pid, self.tick()))

    async def chat(self, pid: str | None, text: str) -> str:
        self.n += 1
        mid = f"c{self.n}"
        seg = Segment(MEETING, mid, pid, text, self.tick(), kind=ContentKind.CHAT)
        await self.gateway.handle("generic", SegmentReceived("generic", seg), now=self.now)
        return mid

    async def say(self, pid: str, text: str) -> str:
        self.n += 1
        sid = f"s{self.n}"
        seg = Segment(MEETING, sid, pid, text, self.tick())
        await self.gateway.handle("generic", SegmentReceived("generic", seg), now=self.now)
        return sid

    def state(self, pid: str, purpose: str) -> ConsentState:
        meeting = self.gateway.meeting("generic", MEETING)
        assert meeting is not None
        return meeting.consent(pid, purpose).at(self.now)

    def forwarded(self) -> list[tuple[str, str]]:
        return [(i.destination, p.segment_id) for i in self.sink.items for p in i.parts]

    def replies(self, pid: str) -> list[str]:
        return [
            str(n.data["text"]) for n in self.notices if n.kind == "chat_reply" and n.participant_id == pid
        ]


async def open_meeting(tmp_path: Path, policy_yaml: str = POLICY) -> AsyncIterator[Meeting]:
    store = open_store(await database_for(tmp_path))
    await store.open()
    sink = CollectSink()
    policy = parse_policy(policy_yaml.encode(), "chat.yaml")
    gateway = Gateway(PolicySet([policy]), store, sink)
    meeting = Meeting(gateway, store, sink)
    gateway.notify = meeting.notices.append
    try:
        yield meeting
    finally:
        await store.close()


@pytest.fixture
async def meeting(tmp_path: Path) -> AsyncIterator[Meeting]:
    async for m in open_meeting(tmp_path):
        yield m


async def test_give_command_records_the_senders_consent(meeting: Meeting) -> None:
    """`/consent summary` records a given consent for the sender, by the sender, through channel chat."""
    await meeting.join("p1")
    mid = await meeting.chat("p1", "/consent summary")
    (entry,) = await meeting.store.ledger_entries()
    record = entry.record
    assert (record.subject, record.indicated_by, record.channel) == ("p1", "p1", "chat")
    assert record.purposes == ("summary",) and record.choice is ConsentChoice.GIVEN
    assert record.evidence == f"chat:{mid}"
    assert meeting.state("p1", "summary") is ConsentState.GIVEN
    assert meeting.state("p1", "training") is ConsentState.UNKNOWN


async def test_a_command_is_never_forwarded_and_its_drop_is_logged(meeting: Meeting) -> None:
    """The command message reaches no destination, even once the sender consents; a drop is logged."""
    await meeting.join("p1")
    await meeting.chat("p1", "/consent all")
    mid = await meeting.chat("p1", "/consent status")
    await meeting.say("p1", "hello")
    assert all(seg.startswith("s") for _, seg in meeting.forwarded())
    logged = [d for d in await meeting.store.decision_records() if d.segment_id == mid]
    assert {d.destination for d in logged} == {"live", "trainer"}
    assert all(d.action is Action.DROP and d.reasons == ("consent_command",) for d in logged)


async def test_the_gateway_replies_to_the_sender_only(meeting: Meeting) -> None:
    """Each command gets a chat reply addressed to its sender, stating their choices, echoing no chat text."""
    await meeting.join("p1")
    await meeting.join("p2")
    mid = await meeting.chat("p1", "/consent summary")
    (reply,) = [n for n in meeting.notices if n.kind == "chat_reply"]
    assert reply.participant_id == "p1" and reply.data["in_reply_to"] == mid
    assert reply.data["text"] == "Recorded. Your consent choices: summary: yes; training: not decided."
    await meeting.chat("p1", "/consent status")
    assert meeting.replies("p1")[-1] == "Your consent choices: summary: yes; training: not decided."
    assert meeting.replies("p2") == []


async def test_optout_withdraws_what_was_given_and_refuses_the_rest(meeting: Meeting) -> None:
    """`/optout` withdraws given purposes and refuses undecided ones; nothing of the sender flows after."""
    await meeting.join("p1")
    await meeting.chat("p1", "/consent summary")
    await meeting.say("p1", "before")
    await meeting.chat("p1", "/OPTOUT")
    after = await meeting.say("p1", "after")
    records = [e.record for e in await meeting.store.ledger_entries()]
    assert [(r.choice, r.purposes) for r in records[1:]] == [
        (ConsentChoice.WITHDRAWN, ("summary",)),
        (ConsentChoice.REFUSED, ("training",)),
    ]
    assert meeting.state("p1", "summary") is ConsentState.WITHDRAWN
    assert meeting.state("p1", "training") is ConsentState.REFUSED
    assert after not in {seg for _, seg in meeting.forwarded()}
    assert meeting.replies("p1")[-1].startswith("Recorded: nothing of yours will be sent.")


async def test_optout_also_withdraws_a_purpose_a_reload_dropped(meeting: Meeting) -> None:
    """Consent to everything, then a reload drops ``training``, then ``/optout``: when a later reload
    brings ``training`` back, the trainer gets nothing of the sender ("nothing of yours will be sent")."""
    await meeting.join("p1")
    await meeting.chat("p1", "/consent all")
    narrowed = POLICY.replace('  training: {description: t, notice: n, notice_version: "t1"}\n', "")
    narrowed = narrowed.replace("purposes: [summary, training]", "purposes: [summary]")
    meeting.gateway.policies = PolicySet([parse_policy(narrowed.encode(), "chat.yaml")])
    await meeting.chat("p1", "/optout")
    meeting.gateway.policies = PolicySet([parse_policy(POLICY.encode(), "chat.yaml")])
    assert meeting.state("p1", "training") is ConsentState.WITHDRAWN
    await meeting.say("p1", "After opting out.")
    await meeting.gateway.settle()
    assert meeting.forwarded() == []


async def test_optout_purges_held_segments_of_the_sender(meeting: Meeting) -> None:
    """Segments held for a destination still waiting on a purpose are purged by `/optout`."""
    await meeting.join("p1")
    await meeting.chat("p1", "/consent summary")
    held = await meeting.say("p1", "waiting for training consent")
    await meeting.chat("p1", "/optout")
    purged = [d for d in await meeting.store.decision_records() if d.segment_id == held]
    assert [(d.destination, d.action) for d in purged][-1] == ("trainer", Action.DROP)
    assert "purged_consent_changed" in purged[-1].reasons
    assert ("trainer", held) not in meeting.forwarded()


async def test_ordinary_agreement_in_chat_is_content_not_consent(meeting: Meeting) -> None:
    """Chat saying yes, I agree or ok changes no consent, and are content held or dropped like speech."""
    await meeting.join("p1")
    ids = [await meeting.chat("p1", text) for text in ("yes", "I agree", "ok")]
    assert await meeting.store.ledger_entries() == []
    assert meeting.state("p1", "summary") is ConsentState.UNKNOWN
    decisions = [d for d in await meeting.store.decision_records() if d.segment_id in ids]
    assert {d.action for d in decisions} == {Action.HOLD}
    assert meeting.notices == []


async def test_chat_content_obeys_the_same_consent_as_speech(meeting: Meeting) -> None:
    """After `/consent summary`, the sender's ordinary chat reaches the summariser, not the trainer."""
    await meeting.join("p1")
    await meeting.chat("p1", "/consent summary")
    mid = await meeting.chat("p1", "see the doc")
    assert ("live", mid) in meeting.forwarded()
    assert ("trainer", mid) not in meeting.forwarded()


async def test_chat_without_a_sender_is_never_a_command(meeting: Meeting) -> None:
    """An unattributed `/consent all` records nothing and is dropped as unattributed text."""
    mid = await meeting.chat(None, "/consent all")
    assert await meeting.store.ledger_entries() == []
    decisions = [d for d in await meeting.store.decision_records() if d.segment_id == mid]
    assert decisions and all(d.reasons == ("unattributed",) for d in decisions)


async def test_a_command_changes_only_the_senders_consent(meeting: Meeting) -> None:
    """p1's commands leave p2's consent exactly as it was."""
    await meeting.join("p1")
    await meeting.join("p2")
    submitted = ConsentSubmitted(
        "generic", MEETING, "p2", ("summary",), ConsentChoice.GIVEN, "p2", "api", meeting.tick()
    )
    await meeting.gateway.handle("generic", submitted, now=meeting.now)
    for text in ("/consent all", "/optout", "/consent training"):
        await meeting.chat("p1", text)
    assert meeting.state("p2", "summary") is ConsentState.GIVEN
    assert meeting.state("p2", "training") is ConsentState.UNKNOWN
    assert {e.record.subject for e in await meeting.store.ledger_entries()} == {"p1", "p2"}
    assert all(e.record.indicated_by == e.record.subject for e in await meeting.store.ledger_entries())


async def test_chat_consent_where_the_policy_does_not_accept_it(tmp_path: Path) -> None:
    """Under a policy without the chat channel, a command is recorded as rejected, changes nothing, and
    the reply says so; the message is still not content."""
    policy = POLICY.replace("pending:", "consent: {channels: [api]}\npending:")
    async for meeting in open_meeting(tmp_path, policy):
        await meeting.join("p1")
        mid = await meeting.chat("p1", "/consent summary")
        (entry,) = await meeting.store.ledger_entries()
        assert entry.record.outcome is RecordOutcome.REJECTED
        assert entry.record.reason == "channel_not_allowed"
        assert meeting.state("p1", "summary") is ConsentState.UNKNOWN
        assert meeting.replies("p1") == [
            "Not recorded: consent by chat is not accepted in this meeting. "
            "Your consent choices: summary: not decided; training: not decided."
        ]
        decisions = [d for d in await meeting.store.decision_records() if d.segment_id == mid]
        assert all(d.reasons == ("consent_command",) for d in decisions)
