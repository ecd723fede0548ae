"""Properties: a target's non-Latin name or e-mail address in any text never survives; consenting
participants' names are never touched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.model import Span
from gateway.names import NameScrubber, NameTarget

TARGETS = (
    NameTarget("[participant 1]", ("Ольга Петрова",), ("o.petrova@corp.example",)),
    NameTarget("[participant 2]", ("王伟",)),
    NameTarget("[participant 3]", ("Κώστας Παπαδόπουλος",)),
    NameTarget("[participant 4]", ("Bob Stone",), ("bstone77@corp.example",)),
    NameTarget("[participant 5]", ("محمد علي", "田中 太郎", "김민수"), ("kim.minsu@corp.example",)),
)
OTHERS = (("Алиса Смирнова",), ("李娜",), ("Ελένη",), ("Alice Archer",))
SCRUBBER = NameScrubber.build(TARGETS, OTHERS)
TARGET_WORDS = (
    "Ольга", "ОЛЬГА", "Петрова", "Ольга Петрова", "王伟", "Κώστας", "Κωστας", "ΚΩΣΤΑΣ", "Παπαδόπουλος",
    "محمد", "علي", "田中", "田中太郎", "김민수", "민수",
)  # fmt: skip
ADDRESSES = ("o.petrova@corp.example", "bstone77@corp.example", "kim.minsu@corp.example")
CONSENTING = ("Алиса", "Смирнова", "李娜", "Ελένη", "Alice", "Archer")
SEPARATORS = (" ", ", ", ". ", "! ", "\n", " — ", ": ", "？", "。")
FILLER = st.text(
    st.characters(codec="utf-8", categories=("L", "M", "N", "P", "Zs")).filter(lambda c: c not in "@.-_+"),
    max_size=12,
)
"""Any letters, marks, digits, punctuation and spaces of any script; no address characters, so filler never
extends an inserted address."""


def _random_case(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from((word, word.lower(), word.upper())))


@st.composite
def texts(draw: st.DrawFn, inserts: tuple[str, ...]) -> tuple[str, list[tuple[int, int]]]:
    """Random filler with words from ``inserts`` between separators; returns the text and where they are."""
    parts: list[str] = []
    where: list[tuple[int, int]] = []
    length = 0
    for _ in range(draw(st.integers(1, 6))):
        filler, sep = draw(FILLER), draw(st.sampled_from(SEPARATORS))
        word = _random_case(draw, draw(st.sampled_from(inserts)))
        parts += [filler, sep]
        length += len(filler) + len(sep)
        where.append((length, length + len(word)))
        parts += [word, draw(st.sampled_from(SEPARATORS))]
        length += len(word) + len(parts[-1])
    parts.append(draw(FILLER))
    return "".join(parts), where


def _covered(spans: tuple[Span, ...], start: int, end: int) -> bool:
    return any(s.start <= start and end <= s.end for s in spans)


def _rebuilds(text: str, new: str, spans: tuple[Span, ...]) -> bool:
    rebuilt, last = [], 0
    for span in spans:
        assert last <= span.start < span.end <= len(text)
        rebuilt += [text[last : span.start], span.placeholder]
        last = span.end
    return "".join([*rebuilt, text[last:]]) == new


@given(texts(TARGET_WORDS))
def test_no_target_non_latin_name_survives(case: tuple[str, list[tuple[int, int]]]) -> None:
    """A target's non-Latin name part, in any case, amid any text, is inside a replaced span."""
    text, where = case
    new, spans = SCRUBBER.scrub(text)
    assert _rebuilds(text, new, spans)
    assert all(_covered(spans, a, b) for a, b in where)


@given(texts(ADDRESSES))
def test_no_target_address_survives(case: tuple[str, list[tuple[int, int]]]) -> None:
    """A target's e-mail address, in any case, amid any text, is inside one replaced span."""
    text, where = case
    new, spans = SCRUBBER.scrub(text)
    assert _rebuilds(text, new, spans)
    assert all(_covered(spans, a, b) for a, b in where)
    assert "@corp.example" not in new.lower()


@given(texts(CONSENTING))
def test_consenting_names_are_untouched(case: tuple[str, list[tuple[int, int]]]) -> None:
    """A consenting participant's name, in any script, is never inside a replaced span."""
    text, where = case
    new, spans = SCRUBBER.scrub(text)
    assert _rebuilds(text, new, spans)
    for a, b in where:
        assert not any(s.start < b and a < s.end for s in spans)
