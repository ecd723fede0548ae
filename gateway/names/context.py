"""Context rules: does a found word read as a mention of that person here?

Place in the flow: :meth:`gateway.names.NameScrubber.scrub` runs these only on words the pattern found and
the forms confirmed. Recall comes first: a hit is dropped only on a positive sign of another reading (a
name-word used as a word, another person's full name, a firm, a place).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway import nicknames as nd
from gateway.names.folding import fold


@dataclass(frozen=True, slots=True)
class Entry:
    """One way a matched word can refer to a person."""

    person: int
    given: bool
    fuzzy: bool
    bound: bool = False
    """A particle ("Van", "Ste"): part of a name only when joined to another piece of it."""


class Hit(NamedTuple):
    """A confirmed word: its folded-text range, the word as written and who it can name.

    A named tuple, not a dataclass: one is made per found word, on the hot path."""

    start: int
    end: int
    word: str
    entries: tuple[Entry, ...]

    @property
    def persons(self) -> frozenset[int]:
        return frozenset(e.person for e in self.entries)


class _Near(NamedTuple):
    """The word on one side of a hit and the characters between them (cheap to make, like :class:`Hit`)."""

    word: str
    sep: str

    @property
    def key(self) -> str:
        """Lower-case, no apostrophes or dots: "I'll" -> "ill", "Mr." -> "mr"."""
        return self.word.lower().replace("'", "").replace("’", "").strip(".")

    @property
    def capitalised(self) -> bool:
        return bool(self.word) and self.word[0].isupper()

    @property
    def tight(self) -> bool:
        """Separated by spaces only, so the two words read as one phrase."""
        return bool(self.word) and self.sep != "" and self.sep.strip(" \t") == ""


_ALNUM = "".join(c for c in map(chr, range(128)) if c.isalnum())
_SEPARATORS = "".join(c for c in map(chr, range(128)) if not c.isalnum())
_AFTER = re.compile(r"([\W_]*)((?:[^\W_]|['\-])*)")  # separators (not alnum), then the word
_WINDOW = 48


def _word_before(text: str, pos: int) -> _Near:
    j = _back(text, pos, _SEPARATORS, lambda c: not c.isalnum())
    k = _back(text, j, _ALNUM + "'.-", lambda c: c.isalnum() or c in "'.-")
    return _Near(text[k:j], text[j:pos])


def _word_after(text: str, pos: int) -> _Near:
    match = _AFTER.match(text, pos)
    assert match is not None  # both parts may be empty, so it always matches
    return _Near(match.group(2), match.group(1))


def _back(text: str, pos: int, ascii_run: str, more: Callable[[str], bool]) -> int:
    """Start of the run ending at ``pos`` of characters in ``ascii_run`` or, beyond ASCII, satisfying
    ``more``. ``rstrip`` on a short window crosses ASCII in C; the test only sees other characters."""
    while pos > 0:
        low = max(0, pos - _WINDOW)
        cut = low + len(text[low:pos].rstrip(ascii_run))
        if cut == low and low > 0:
            pos = low  # the whole window is run: look further back
            continue
        if cut == 0 or text[cut - 1].isascii() or not more(text[cut - 1]):
            return cut
        pos = cut - 1
    return pos


def _sentence_start(ctx: Context, pos: int) -> bool:
    """True when the word at ``pos`` opens a sentence, so its capital letter says nothing."""
    before = ctx.before(pos)
    if not before.word:
        return True
    return any(c in before.sep for c in '.?!:;"\n') and before.key not in nd.TITLES


_HAS_LOWER = re.compile("[a-z]")
_HAS_UPPER = re.compile("[A-Z]")
_JOINER = re.compile(
    r"\s{1,2}|\s?-\s?|['’]|\s[A-Za-z]{1,2}['’]|\s(?:(?:de|del|der|den|di|da|du|dos|das|la|le|van|von|ter|ten|st|ste)\.?\s)+",
    re.IGNORECASE,
)
_BILL_NUMBER = re.compile(r"[A-Za-z]?-?\d")


@dataclass(slots=True)
class Context:
    """Per-call facts about the text, computed lazily because most texts never need them."""

    text: str
    hits: list[Hit]
    _cased: bool | None = field(default=None)
    _joined: list[bool] = field(default_factory=list)
    """Per hit: is it joined to the next one? Computed once; every rule asks about neighbours."""
    _before: dict[int, _Near] = field(default_factory=dict)
    _after: dict[int, _Near] = field(default_factory=dict)
    _plain: dict[tuple[int, bool], bool] = field(default_factory=dict)

    def reads_as_name(self, index: int, fuzzy: bool) -> bool:
        """Person-independent rules for hit ``index``, kept: a common first name has many entries."""
        key = (index, fuzzy)
        found = self._plain.get(key)
        if found is None:
            found = self._plain[key] = _reads_as_name(index, fuzzy, self)
        return found

    def before(self, pos: int) -> _Near:
        """The word before ``pos``; several rules ask about the same position, so it is kept."""
        near = self._before.get(pos)
        if near is None:
            near = self._before[pos] = _word_before(self.text, pos)
        return near

    def after(self, pos: int) -> _Near:
        near = self._after.get(pos)
        if near is None:
            near = self._after[pos] = _word_after(self.text, pos)
        return near

    @property
    def cased(self) -> bool:
        """Mixed-case text: capital letters carry meaning (ASR output in one case does not)."""
        if self._cased is None:
            self._cased = bool(_HAS_LOWER.search(self.text)) and bool(_HAS_UPPER.search(self.text))
        return self._cased

    def neighbour(self, index: int, step: int) -> Hit | None:
        """The hit directly joined to hit ``index`` on one side (full names, hyphenated names)."""
        other = index + step
        if not 0 <= other < len(self.hits):
            return None
        if not self._joined:
            pairs = zip(self.hits, self.hits[1:], strict=False)
            self._joined = [_JOINER.fullmatch(self.text, a.end, b.start) is not None for a, b in pairs]
        return self.hits[other] if self._joined[min(index, other)] else None


# ---------------------------------------------------------------------------------------- decisions


Known = tuple[frozenset[str], frozenset[str]]


def accept(entry: Entry, index: int, ctx: Context, known: Known) -> bool:
    """Does hit ``index`` read as a mention of ``entry.person``? Recall first: reject only on a sign."""
    if _joined_to_same(entry, index, ctx):
        return True  # part of a full name ("Elizabeth May", "Brian Nagel", "Van Popta")
    if entry.bound or not ctx.reads_as_name(index, entry.fuzzy):
        return False
    return not _other_person(entry, index, ctx, known)


def _reads_as_name(index: int, fuzzy: bool, ctx: Context) -> bool:
    """The rules that do not depend on whose name it is: misspelling written as a name, name-word used
    as a name, no place word before."""
    hit = ctx.hits[index]
    key = hit.word.lower()
    if fuzzy and not _fuzzy_ok(hit, ctx):
        return False
    if (key in nd.WORD_NAMES or len(key) <= 2) and not _word_ok(hit, ctx):
        return False
    return not _after_place_word(hit, ctx)


def _after_place_word(hit: Hit, ctx: Context) -> bool:
    """'Saint John', 'St. Lawrence', 'Trinity Saint David', 'Prince Edward Island' name places."""
    before = ctx.before(hit.start)
    return before.capitalised and before.key in nd.PLACE_PREFIXES and before.sep.strip(". ") == ""


def _joined_to_same(entry: Entry, index: int, ctx: Context) -> bool:
    """Joined to another part of the same person's name: a given and a family part, or a particle.

    Two given-name forms side by side ("bill will") are not a full name.
    """
    hit = ctx.hits[index]
    for step in (-1, 1):
        near = ctx.neighbour(index, step)
        if near is None:
            continue
        sep = ctx.text[hit.end : near.start] if step > 0 else ctx.text[near.end : hit.start]
        piece = sep in ("-", "'", "’")  # pieces of one hyphenated or apostrophe name: "Jo-Anne"
        if any(
            _completes(entry, other) or (piece and other.person == entry.person) for other in near.entries
        ):
            return True
    return False


def _completes(entry: Entry, other: Entry) -> bool:
    if other.person != entry.person:
        return False
    return other.given != entry.given or other.bound or entry.bound


def _fuzzy_ok(hit: Hit, ctx: Context) -> bool:
    """A misspelt name counts only when written as a name: capitalised, in text that has case."""
    word = hit.word
    return ctx.cased and word[0].isupper() and not word.isupper()


def _word_ok(hit: Hit, ctx: Context) -> bool:
    """A name that is also a word ("Bill", "May", "Grant", "Ed") must look like a name here."""
    cased = ctx.cased
    if cased and (not hit.word[0].isupper() or (len(hit.word) > 1 and hit.word.isupper())):
        return False  # "the minister may reply", "a bill", "BILL C-7"
    before = ctx.before(hit.start)
    titled = before.key in nd.TITLES
    if not cased:
        return titled  # one-case text: only a title makes "bill" a name
    if titled:
        return True  # "Ms. May", "Mr. Fast"
    after = ctx.after(hit.end)
    if hit.word.lower() in nd.MODAL_NAMES and after.tight and _sentence_start(ctx, hit.start):
        return False  # "Will the government...", "May I..."
    return not (_common_use(hit.word.lower(), before, after) or _inside_proper_noun(before, ctx, hit))


def _common_use(key: str, before: _Near, after: _Near) -> bool:
    """Determiner, month, modal verb, legislation number or compound: the word, not the name."""
    if before.tight and before.key in nd.DETERMINERS:
        return True  # "the Bill", "a Grant"
    if key in nd.MONTH_NAMES and (before.key in nd.MONTH_PREPOSITIONS or after.word[:1].isdigit()):
        return True  # "in May", "May 2020"
    followers = nd.MODAL_FOLLOWERS if key in nd.MODAL_NAMES else nd.OBJECT_FOLLOWERS
    if after.tight and after.key in followers:
        return True  # "May I", "Will you", "Grant them", "Mark my words"
    if key == "bill" and _BILL_NUMBER.match(after.word) and after.sep.strip() == "":
        return True  # "Bill C-12", "Bill 21"
    return after.sep == "-" and after.word[:1].islower()  # "Mark-to-market"


def _inside_proper_noun(before: _Near, ctx: Context, hit: Hit) -> bool:
    """'Development Grant', "Member's Bill": a capitalised word before, mid-sentence, not a title."""
    if not (before.tight and before.capitalised) or before.key in nd.CONNECTIVES:
        return False
    return not _sentence_start(ctx, hit.start - len(before.sep) - len(before.word))


def _other_person(entry: Entry, index: int, ctx: Context, known: Known) -> bool:
    """A different surname after a given name, a different given name before a surname, or a firm.

    Only a person whose other name part we know can be told apart: a roster entry "Antonio" is
    consistent with any surname, so "Antonio Llarden" stays a mention.
    """
    given, family = known
    hit = ctx.hits[index]
    after = ctx.after(hit.end)
    start = hit.end + len(after.sep)
    own = _word_is_hit_of(entry.person, start, start + len(after.word), ctx) or _abbreviates(after, family)
    if (family or not entry.given) and _foreign_name_word(after) and not own:
        return True  # "Salma Ataullahjan", "Morgan Stanley", "Jordan Sadler"
    if entry.given or not given:
        return False
    before = ctx.before(hit.start)
    if _INITIALS.fullmatch(before.word) and before.sep == ". " and not _abbreviates(before, given):
        return True  # "J.P. Morgan", "M. Jordan"
    start = hit.start - len(before.sep) - len(before.word)
    if not _foreign_name_word(before) or _word_is_hit_of(entry.person, start, start + len(before.word), ctx):
        return False
    if _abbreviates(before, given):
        return False  # "Rell Winand" for Relland Winand
    opens = _sentence_start(ctx, start)
    return not opens or before.key in nd.KNOWN_GIVEN_NAMES  # "Michael Jordan", "J.P. Morgan"


_INITIALS = re.compile(r"[A-Z](?:\.[A-Z])*")


def _abbreviates(near: _Near, tokens: frozenset[str]) -> bool:
    """A cut-off form or initial of one of the person's own name parts ("Rob Pauli-", "B. Nagel")."""
    key = fold(near.key)[0].replace(".", "")
    return (len(key) >= 3 or len(key) == 1) and any(t.startswith(key) for t in tokens)


def _foreign_name_word(near: _Near) -> bool:
    """A capitalised word right next to a name that could itself be part of a (different) name."""
    if not (near.tight and near.capitalised) or near.word.isupper():
        return False  # acronyms such as CPC, NDP, AM are parties and post-nominals
    key = near.key
    return not (key in nd.CONNECTIVES or key in nd.TITLES or key in nd.NAME_SUFFIXES)


def _word_is_hit_of(person: int, start: int, end: int, ctx: Context) -> bool:
    """Does a hit that can name ``person`` lie inside the word at ``start:end`` ("D'Ambrosia")?"""
    return any(start <= h.start and h.end <= end and person in h.persons for h in ctx.hits)
