"""E-mail addresses of non-consenting participants: scrubbed whole, before names, with their placeholder."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import engine
from gateway.events import ConsentSubmitted, ParticipantJoined, SegmentReceived
from gateway.model import ConsentChoice, Segment
from gateway.names import NameScrubber, NameTarget
from gateway.policy.load import parse_policy

P1, P2 = "[participant 1]", "[participant 2]"


def scrubber(*targets: tuple[str, str], others: tuple[tuple[str, ...], ...] = ()) -> NameScrubber:
    built = [NameTarget(f"[participant {i + 1}]", (n,), (e,)) for i, (n, e) in enumerate(targets)]
    return NameScrubber.build(built, others)


def out(s: NameScrubber, text: str) -> str:
    return s.scrub(text)[0]


def test_address_is_one_unit_never_half_scrubbed() -> None:
    """'bob.stone@corp.example' becomes one placeholder, not '[participant 1].stone@corp.example'."""
    s = scrubber(("Bob Stone", "bob.stone@corp.example"))
    new, spans = s.scrub("write to bob.stone@corp.example today")
    assert new == f"write to {P1} today"
    assert len(spans) == 1


def test_address_that_is_no_name_any_case_and_at_sentence_end() -> None:
    """An address with nothing of the name in it is scrubbed too, in any case, before a full stop."""
    s = scrubber(("Bob Stone", "bstone77@corp.example"))
    assert out(s, "mail bstone77@corp.example") == f"mail {P1}"
    assert out(s, "Mail BStone77@Corp.Example.") == f"Mail {P1}."


def test_handle_alone_and_at_another_domain() -> None:
    """The local part is a handle when it cannot be a word: 'bstone77', 'bob.stone', 'bstone'."""
    s = scrubber(("Bob Stone", "bstone77@corp.example"), ("Ann Lee", "alee@corp.example"))
    assert out(s, "ping bstone77 or bstone77@gmail.com") == f"ping {P1} or {P1}@gmail.com"
    assert out(s, "ask alee") == f"ask {P2}"


def test_words_and_shared_mailboxes_are_no_handles() -> None:
    """'info@' identifies nobody; a local part that is a word stays a word."""
    s = scrubber(("Bob Stone", "info@corp.example"), ("Ann Lee", "design@corp.example"))
    assert out(s, "more info on the design") == "more info on the design"
    assert out(s, "send it to info@corp.example") == f"send it to {P1}"


def test_address_as_display_name_and_inside_one() -> None:
    """A display name that is, or holds, an address scrubs that address."""
    targets = [
        NameTarget(P1, ("bstone77@corp.example",)),
        NameTarget(P2, ("Ann Lee <ann.lee@corp.example>",)),
    ]
    s = NameScrubber.build(targets)
    assert out(s, "cc bstone77@corp.example and ann.lee@corp.example") == f"cc {P1} and {P2}"


def test_other_addresses_are_untouched() -> None:
    """Another address at the same domain, and consenting participants' names, stay."""
    s = scrubber(("Bob Stone", "bob.stone@corp.example"), others=(("Alice Archer",),))
    assert out(s, "alice@corp.example and Alice") == "alice@corp.example and Alice"


POLICY = b"""\
policy: p
purposes:
  summary: {description: s, notice: n, notice_version: "s1"}
pending: {window_seconds: 30}
destinations:
  - {id: live, url: "http://127.0.0.1:9/x", purposes: [summary]}
"""


def test_roster_email_attribute_is_scrubbed_through_the_decision_core() -> None:
    """decide passes each non-consenting participant's e-mail attribute to the scrubber (invariant 9)."""
    pol, now = parse_policy(POLICY, "p.yaml"), datetime(2026, 5, 4, tzinfo=UTC)
    state = engine.new_meeting("generic", "m1")
    for pid, name, email in (
        ("a", "Alice Archer", "alice@corp.example"),
        ("b", "Bob Stone", "bs77@x.example"),
    ):
        state = engine.on_event(
            state, ParticipantJoined("generic", "m1", pid, name, now, email), pol, now
        ).state
    event = ConsentSubmitted("generic", "m1", "a", ("summary",), ConsentChoice.GIVEN, "a", "api", now)
    state = engine.on_record(state, engine.evaluate_consent(state, event, pol, "r1"), pol, now).state
    segment = Segment("m1", "s1", "a", "mail bs77@x.example or alice@corp.example", now)
    step = engine.on_event(state, SegmentReceived("generic", segment), pol, now)
    texts = [p.payload["text"] for e in step.emits for p in e.parts]
    assert texts == ["mail [participant 2] or alice@corp.example"]


def test_every_email_a_participant_had_is_scrubbed() -> None:
    """Bob rejoins, and a platform update brings a third address: each one he had in the meeting names
    him, so each is scrubbed while he does not consent (not only the newest)."""
    pol, now = parse_policy(POLICY, "p.yaml"), datetime(2026, 5, 4, tzinfo=UTC)
    state = engine.new_meeting("generic", "m1")
    for pid, name, email in (
        ("a", "Alice Archer", "alice@corp.example"),
        ("b", "Bob Stone", "bs77@x.example"),
        ("b", "Bob Stone", "bob.stone@old.example"),
        ("b", "", "bob@new.example"),
    ):
        state = engine.on_event(
            state, ParticipantJoined("generic", "m1", pid, name, now, email), pol, now
        ).state
    event = ConsentSubmitted("generic", "m1", "a", ("summary",), ConsentChoice.GIVEN, "a", "api", now)
    state = engine.on_record(state, engine.evaluate_consent(state, event, pol, "r1"), pol, now).state
    said = "write bs77@x.example, bob.stone@old.example or bob@new.example"
    step = engine.on_event(state, SegmentReceived("generic", Segment("m1", "s1", "a", said, now)), pol, now)
    texts = [p.payload["text"] for e in step.emits for p in e.parts]
    assert texts == ["write [participant 2], [participant 2] or [participant 2]"]
