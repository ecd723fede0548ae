"""VTT parsing (webvtt-py with platform quirks) and attributing ``Name: `` prefixes by the roster."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.model import Participant
from gateway.platforms import vtt
from tests.platforms.zoom_support import fixture_text

ROSTER = {
    "1": Participant("1", "Gwen Ap Rhys: Ops"),
    "2": Participant("2", "Tomás Ó Briain", former_names=("Tom",)),
    "3": Participant("3", "Sam Lee"),
    "4": Participant("4", "Sam Lee"),
    "5": Participant("5", "Gwen"),
}


def test_zoom_transcript_fixture_parses_with_identifiers_and_times() -> None:
    """Numbered cues keep their identifiers and millisecond times."""
    cues = vtt.parse(fixture_text("transcript.vtt"))
    assert [c.key for c in cues] == ["1", "2", "3", "4", "5"]
    assert (cues[0].start, cues[0].end) == (1.12, 4.48)
    assert cues[3].text == "And the budget is approved."


MALFORMED = (
    "WEBVTT\n\n"
    "0:0:1.0 --> 0:0:2.0\n\n"
    "<v Bea Okafor>ZQXSECRET is mine, and I said no.</v>\n"  # after a blank line: the next cue's identifier
    "0:0:2.0 --> 0:0:3.0\n<v Ada Lovelace>Noted.</v>\n\n"
    "Okay.\n0:0:3.0 --> 0:0:4.0\n<v Ada Lovelace>Next.</v>\n"
)


def test_words_a_malformed_file_makes_an_identifier_never_reach_a_cue_key() -> None:
    """The line before a timing line is the cue's identifier to the parser, words or not; a cue key (part
    of the segment id, which is forwarded and logged) is a number, a position, or a hash."""
    cues = vtt.parse(MALFORMED)
    assert [c.text for c in cues] == ["", "Noted.", "Next."]
    keys = [c.key for c in cues]
    assert keys[0] == "n1" and all(re.fullmatch(r"h[0-9a-f]{20}", k) for k in keys[1:]), keys
    assert "ZQXSECRET" not in repr(cues)
    assert len(set(keys)) == 3 and [c.key for c in vtt.parse(MALFORMED)] == keys  # stable across fetches


@given(st.text(min_size=1, max_size=40).filter(lambda t: "-->" not in t and "\n" not in t and t.strip()))
def test_a_cue_key_is_a_number_a_position_or_a_hash(identifier: str) -> None:
    """Whatever a file puts before a timing line, the key never holds a letter of it."""
    key = vtt.Cue(1, identifier, 0.0, 1.0, "text").key
    assert re.fullmatch(r"[0-9]{1,9}|n1|h[0-9a-f]{20}", key), key


def test_teams_voice_tags_unpadded_and_negative_timestamps() -> None:
    """``<v Name>`` gives the voice; unpadded times parse; a negative start is clamped to 0, not dropped."""
    text = (
        "WEBVTT\n\n-0:0:1.5 --> 0:0:2.0\n<v Ann Lee>Early words</v>\n\n0:0:3.25 --> 0:1:0.0\n<v B>Later</v>\n"
    )
    cues = vtt.parse(text)
    assert [(c.voice, c.text, c.start, c.end) for c in cues] == [
        ("Ann Lee", "Early words", 0.0, 2.0),
        ("B", "Later", 3.25, 60.0),
    ]
    assert [c.key for c in cues] == ["n1", "n2"]


@pytest.mark.parametrize("text", ["", "not a vtt", "WEBVTX\n\n00:00:01.000 --> 00:00:02.000\nx\n"])
def test_not_webvtt_raises_vtt_error(text: str) -> None:
    """A file that is not WebVTT is a VttError (whose message carries no file text)."""
    with pytest.raises(vtt.VttError) as raised:
        vtt.parse(text + "SECRET-WORDS")
    assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Gwen Ap Rhys: Ops: Hello", ("1", "Hello")),
        ("Gwen: hi there", ("5", "hi there")),
        ("Tomás Ó Briain: Ahoj", ("2", "Ahoj")),
        ("Tom: earlier name", ("2", "earlier name")),
        ("Sam Lee: who am I", (None, "Sam Lee: who am I")),
        ("Pat: not here", (None, "Pat: not here")),
        ("no prefix at all", (None, "no prefix at all")),
        ("Gwen Ap Rhys said: hi", (None, "Gwen Ap Rhys said: hi")),
    ],
)
def test_prefix_attribution(text: str, expected: tuple[str | None, str]) -> None:
    """A prefix is credited only to the one participant bearing that name; otherwise unattributed."""
    assert vtt.split_prefix(ROSTER, text) == expected


def test_prefix_that_two_roster_names_match_is_unattributed() -> None:
    """``Ann`` and ``Ann: Lee`` both prefix ``Ann: Lee: hi``: ambiguous, so nobody is credited."""
    roster = {"a": Participant("a", "Ann"), "b": Participant("b", "Ann: Lee")}
    assert vtt.split_prefix(roster, "Ann: Lee: hi") == (None, "Ann: Lee: hi")
    assert vtt.split_prefix(roster, "Ann: hi") == ("a", "hi")


def test_names_differing_only_in_spacing_or_case_make_a_cue_ambiguous() -> None:
    """Cue text has its whitespace collapsed: "Alice  Smith" (two spaces) and "alice smith" bear the cue
    "Alice Smith: ..." as much as "Alice Smith" does, so with two of them nobody is credited (credited to
    the exact one, the words of the other could go under a consent that is not theirs)."""
    for other in ("Alice  Smith", "alice smith", "Alice Smith "):
        roster = {"a": Participant("a", "Alice Smith"), "b": Participant("b", other)}
        assert vtt.split_prefix(roster, "Alice Smith: hi") == (None, "Alice Smith: hi")
        assert vtt.by_name(roster, "Alice Smith") is None
    alone = {"b": Participant("b", "Alice  Smith")}
    assert vtt.split_prefix(alone, "Alice Smith: hi") == ("b", "hi")


names = st.text(st.sampled_from("AB :é"), min_size=1, max_size=6)


@given(roster_names=st.lists(names, max_size=5), speaker=names, words=st.text(max_size=20))
def test_attribution_is_only_ever_to_the_unique_bearer(
    roster_names: list[str], speaker: str, words: str
) -> None:
    """Whatever the names, a cue is credited to a participant only if exactly one participant's name
    prefixes it, and that participant is the one credited. Names count with their whitespace collapsed
    and case folded, as cue text is collapsed: "A  B" and "a b" bear "A B: ..." too."""
    roster = {str(i): Participant(str(i), n) for i, n in enumerate(roster_names)}
    text = f"{speaker}: {words}"
    pid, _ = vtt.split_prefix(roster, text)

    def bears(name: str) -> bool:
        collapsed = " ".join(name.split())
        head, colon = text[: len(collapsed)], text[len(collapsed) : len(collapsed) + 1]
        return bool(collapsed) and colon == ":" and head.casefold() == collapsed.casefold()

    bearers = {p for p, person in roster.items() if bears(person.name)}
    if pid is None:
        assert len(bearers) != 1
    else:
        assert bearers == {pid}


def test_a_cue_with_two_voices_is_nobodys_and_negative_times_are_clamped_at_both_ends() -> None:
    """One cue may hold several voice spans: credited to the first, the others' words would leave as that
    person's, so such a cue is unattributed (one voice written twice is still that voice). A cue wholly
    before the recording (both times negative) is kept, at zero, not dropped."""
    doc = (
        "WEBVTT\n\n-0:0:3.0 --> -0:0:0.5\n<v Ada Lovelace>Before the recording.</v>\n\n"
        "0:0:1.0 --> 0:0:2.0\n<v Ada Lovelace>Sounds good.</v>\n<v Bea Okafor>Not Ada's words.</v>\n\n"
        "0:0:2.0 --> 0:0:3.0\n<v Ada Lovelace>One.</v> <v Ada  Lovelace>Two.</v>\n"
    )
    cues = vtt.parse(doc)
    assert [(c.start, c.end, c.voice) for c in cues] == [
        (0.0, 0.0, "Ada Lovelace"),
        (1.0, 2.0, None),
        (2.0, 3.0, "Ada Lovelace"),
    ]


def _cue(line: str) -> vtt.Cue:
    (cue,) = vtt.parse(f"WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\n{line}\n")
    return cue


def test_a_name_that_loses_its_markup_credits_nobody() -> None:
    """Zoom writes "Bob<Ops>" as typed; without markup the cue reads "Bob: ...". Credited only when the text
    as written and the text without markup name the same participant: the refuser's words never go as Bob's,
    nor as anyone's when one of the two names is missing from the roster."""
    bob, ops = Participant("bob", "Bob"), Participant("ops", "Bob<Ops>")
    cue = _cue("Bob<Ops>: private words")
    assert (cue.text, cue.written) == ("Bob: private words", "Bob<Ops>: private words")
    for roster in ({"bob": bob, "ops": ops}, {"bob": bob}, {"ops": ops}):
        assert vtt.speaker(roster, cue) == (None, "Bob: private words"), roster
    both = {"bob": bob, "ops": ops}
    escaped = _cue("Bob&lt;Ops&gt;: escaped as WebVTT wants")
    assert vtt.speaker(both, escaped) == ("ops", "escaped as WebVTT wants")
    assert vtt.speaker(both, _cue("Bob: <i>markup</i> in the words")) == ("bob", "markup in the words")


markup_names = st.builds(
    str.__add__,
    st.sampled_from(["Bob", "bob", "Bob Lee", "Ann:"]),
    st.sampled_from(["", "<Ops>", "<b>", "</v>", "&lt;Ops&gt;", " <", "&amp;", ": Ops"]),
)


@given(roster_names=st.lists(markup_names, max_size=4), speaker=markup_names)
@example(roster_names=["Bob", "Bob<Ops>"], speaker="Bob<Ops>")
def test_a_cue_is_credited_only_to_the_unique_bearer_of_the_name_as_written(
    roster_names: list[str], speaker: str
) -> None:
    """Whatever markup-like text names hold, a cue is credited only to a participant who alone bears the
    name prefixing the cue as Zoom wrote it (markup kept), and alone its name once the markup is gone."""
    roster = {str(i): Participant(str(i), n) for i, n in enumerate(roster_names)}
    cue = _cue(f"{speaker}: words")
    pid, _ = vtt.speaker(roster, cue)

    def bearers(text: str) -> set[str]:
        return {p for p, person in roster.items() if vtt.split_prefix({p: person}, text)[0] == p}

    if pid is not None:
        assert bearers(cue.written) == bearers(cue.text) == {pid}
