"""Name-mention scrubbing: mentions of non-consenting participants become stable per-meeting placeholders.

Place in the flow: the transform stage calls :meth:`NameScrubber.scrub` on every segment it forwards, so
the words of a consenting speaker reach an AI service without the names of the people who said no.

How it works. :meth:`NameScrubber.build` (once per roster or consent change) parses each display name into
name parts and expands them into the forms people and transcription engines use: every case, diacritics
folded, nicknames and spelling variants (``gateway.nicknames``), and edit-distance-1 misspellings. All forms
go into ONE regex shaped as a trie, so a segment without any name costs a single C-level scan. Only on a
candidate hit does Python look at context, because many names are also words ("Bill", "May", "Grant") or
belong to someone else ("Salma Ataullahjan" is not participant Salma Zahid). Recall comes first: a mention
that could be a target is replaced, and only a positive sign of another reading lets it through.
Spans are reported in original-text offsets; the replaced words never leave this module.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway import nicknames as nd
from gateway.model import Span

__all__ = ["NameScrubber", "NameTarget", "ParsedName", "fold", "parse_display_name"]

# --------------------------------------------------------------------------------------------- folding


def _fold_table() -> dict[int, int]:
    """Map each accented Latin letter to its base letter, one character to one, so offsets survive."""
    table: dict[int, int] = {}
    for code in range(0x80, 0x2000):
        base = "".join(c for c in unicodedata.normalize("NFKD", chr(code)) if not unicodedata.combining(c))
        if len(base) == 1 and base.isascii() and base.isalpha():
            table[code] = ord(base)
    extra = {
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "’": "'",
        "‘": "'",
        "ʼ": "'",
    }
    table.update({ord(k): ord(v) for k, v in extra.items()})
    return table


_FOLD = _fold_table()
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def fold(text: str) -> tuple[str, tuple[int, ...] | None]:
    """Fold diacritics; return the folded text and, only if lengths differ, folded->original offsets."""
    if text.isascii():
        return text, None  # the common case costs one C-level scan
    if _COMBINING.search(text) is None:
        return text.translate(_FOLD), None
    return _fold_with_offsets(text)


_ACCENTED = re.compile("[\u00c0-\u024f\u1e00-\u1eff]")


def _searchable(text: str) -> tuple[str, tuple[int, ...] | None]:
    """The text the ASCII pattern runs on. Most non-ASCII text only has dashes, quotes or currency
    signs, so it is searched as is; only accented letters pay for a fold."""
    if text.isascii() or (_ACCENTED.search(text) is None and _COMBINING.search(text) is None):
        return text, None
    return fold(text)


def _fold_with_offsets(text: str) -> tuple[str, tuple[int, ...]]:
    """Slow path for decomposed text (letter + combining mark): drop the marks, remember offsets."""
    chars: list[str] = []
    offsets: list[int] = []
    for i, ch in enumerate(text):
        if unicodedata.combining(ch):
            continue
        chars.append(ch.translate(_FOLD))
        offsets.append(i)
    offsets.append(len(text))
    return "".join(chars), tuple(offsets)


# ------------------------------------------------------------------------------------ display names


@dataclass(frozen=True, slots=True)
class ParsedName:
    """Name parts of one display name, as written: given names first, then family names."""

    given: tuple[str, ...] = ()
    family: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return self.given + self.family


_PAREN = re.compile(r"\([^()]*\)")
_ROLE_PREFIX = re.compile(r"^[^(]*\((.*)\)\s*$", re.DOTALL)
_WORD = re.compile(r"[^\s,;/|]+")


def parse_display_name(raw: str) -> ParsedName:
    """Parse a platform display name; roles ("The Chair", "Speaker 1", "Operator") give no name parts."""
    text = _email_to_name(raw)
    text = _unwrap_role(text)
    while _PAREN.search(text):
        text = _PAREN.sub(" ", text)
    words = [w for w in (_clean_word(w) for w in _WORD.findall(text.split("(")[0])) if w]
    if any(ch.isdigit() for w in words for ch in w):
        return ParsedName()  # "Speaker 1", "User 42": a label, not a name
    words = [w for i, w in enumerate(words) if not _is_noise_word(w, inside=0 < i < len(words) - 1)]
    if not words or all(_key(w) in nd.ROLE_NAMES for w in words):
        return ParsedName()
    if len(words) == 1:
        single = words[0]
        given = _key(single) in nd.KNOWN_GIVEN_NAMES
        return ParsedName(given=(single,)) if given else ParsedName(family=(single,))
    return ParsedName(given=(words[0],), family=tuple(words[1:]))


def _email_to_name(raw: str) -> str:
    """An e-mail address as display name: its local part, with separators as spaces."""
    if "@" not in raw or " " in raw.strip():
        return raw
    return re.sub(r"[._+\-]+", " ", raw.split("@", 1)[0])


def _unwrap_role(text: str) -> str:
    """'The Chair (Hon. Anthony Rota (Riding, Lib.))' names the person inside the parentheses."""
    match = _ROLE_PREFIX.match(text)
    if match is None:
        return text
    head = [_key(w) for w in _WORD.findall(text.split("(", 1)[0])]
    if head and all(w in nd.ROLE_NAMES or w in nd.TITLES for w in head):
        return match.group(1)
    return text


def _clean_word(word: str) -> str:
    """Strip quotes, trailing dots and a possessive ("Benjamin's" in source data is a typo for the name)."""
    word = word.strip("\"“”'’.:()[]")
    for suffix in ("'s", "’s"):
        if word.lower().endswith(suffix):
            word = word[: -len(suffix)]
    return word


def _is_noise_word(word: str, inside: bool = False) -> bool:
    """Titles, post-nominals, initials and stray particles are not name parts ("Van Popta" keeps "Van")."""
    key = _key(word)
    if key in nd.TITLES or key in nd.NAME_SUFFIXES or key == "the":
        return True
    if key in nd.PARTICLES:
        return not inside
    return len(key.replace(".", "")) <= 1


def _key(word: str) -> str:
    """Folded lower-case form used for every table lookup."""
    return fold(word)[0].lower().strip(".")


def _name_tokens(part: str) -> list[tuple[str, bool]]:
    """(token, bound) pieces of one name part; a bound piece (particle) counts only beside the rest."""
    pieces = re.findall(r"[a-z]+", _key(part))
    tokens = [(p, p in nd.PARTICLES) for p in pieces if len(p) >= 2]
    if len(pieces) > 1 and "'" in part.replace("’", "'"):
        tokens.append(("".join(pieces), False))
    return tokens


# --------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class NameTarget:
    """One non-consenting participant: the placeholder that replaces them and every name they used."""

    placeholder: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One way a matched word can refer to a person."""

    person: int
    given: bool
    fuzzy: bool
    bound: bool = False
    """A particle ("Van", "Ste"): part of a name only when joined to another piece of it."""


@dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int
    word: str
    entries: tuple[_Entry, ...]

    @property
    def persons(self) -> frozenset[int]:
        return frozenset(e.person for e in self.entries)


# ------------------------------------------------------------------------------------------- variants

_VOWELS = "aeiouy"
_ANY = "\x00"  # trie symbols for "any letter" and "any vowel" in wildcard forms
_VOWEL = "\x01"
_NICKS = nd.groups_by_name(nd.NICKNAME_GROUPS)
_SPELLINGS = nd.groups_by_name(nd.SPELLING_GROUPS)


def _exact_forms(token: str, given: bool) -> set[str]:
    """The token, its spelling variants and, for given names, its nicknames."""
    forms = {token} | _SPELLINGS.get(token, frozenset())
    if given:
        for form in list(forms):
            forms |= _NICKS.get(form, frozenset())
    return forms


def _orthographic_forms(token: str) -> set[str]:
    """Spelling slips transcripts make on names: doubled letters, c/k, ph/f/v, y/i, a final e."""
    forms: set[str] = set()
    for old, new in (("c", "k"), ("k", "c"), ("ph", "f"), ("f", "ph"), ("ph", "v"), ("v", "ph"), ("y", "i")):
        forms |= {token[:i] + new + token[i + len(old) :] for i in _find_all(token, old)}
    forms |= {token[:i] + token[i] + token[i:] for i in range(1, len(token)) if token[i] not in _VOWELS}
    forms |= {token[:i] + token[i + 1 :] for i in range(1, len(token) - 1) if token[i] == token[i + 1]}
    if len(token) >= 4:
        forms.add(token[:-1] if token.endswith("e") else token + "e")
    forms.discard(token)
    return {f for f in forms if len(f) >= 3}


def _find_all(token: str, sub: str) -> list[int]:
    return [i for i in range(len(token)) if token.startswith(sub, i)]


def _wildcard_forms(token: str) -> set[str]:
    """Edit-distance-1 forms that keep the first letter; longer names tolerate more kinds of edit."""
    n = len(token)
    forms: set[str] = set()
    insert = _ANY if n >= 5 else _VOWEL
    forms |= {token[:i] + insert + token[i:] for i in range(1, n + 1)}
    if n >= 5:
        forms |= {token[:i] + token[i + 1] + token[i] + token[i + 2 :] for i in range(1, n - 1)}
    if n >= 6:
        forms |= {token[:i] + token[i + 1 :] for i in range(1, n)}
    if n >= 4:
        sub = _ANY if n >= 7 else _VOWEL
        forms |= {token[:i] + sub + token[i + 1 :] for i in range(1, n) if n >= 7 or token[i] in _VOWELS}
    return forms


def edit_allowed(word: str, token: str) -> bool:
    """True when ``word`` is one of the wildcard forms of ``token`` (same rules as the pattern)."""
    if not word or not token or word[0] != token[0] or word == token:
        return False
    n, m = len(token), len(word)
    if m == n + 1:
        return _is_insertion(word, token, any_letter=n >= 5)
    if m == n - 1:
        return n >= 6 and any(token[:i] + token[i + 1 :] == word for i in range(1, n))
    if m == n:
        return _is_substitution(word, token) or _is_transposition(word, token)
    return False


def _is_insertion(word: str, token: str, any_letter: bool) -> bool:
    return any(
        word[:i] + word[i + 1 :] == token and (any_letter or word[i] in _VOWELS) for i in range(1, len(word))
    )


def _is_substitution(word: str, token: str) -> bool:
    diff = [i for i in range(len(word)) if word[i] != token[i]]
    if len(diff) != 1 or len(token) < 4:
        return False
    i = diff[0]
    return len(token) >= 7 or (word[i] in _VOWELS and token[i] in _VOWELS)


def _is_transposition(word: str, token: str) -> bool:
    diff = [i for i in range(len(word)) if word[i] != token[i]]
    if len(token) < 5 or len(diff) != 2 or diff[1] != diff[0] + 1:
        return False
    i = diff[0]
    return word[i] == token[i + 1] and word[i + 1] == token[i]


# -------------------------------------------------------------------------------------- trie pattern


_Trie = dict[str, "_Trie"]


def _trie_regex(forms: Iterable[str]) -> str:
    """One alternation shaped as a trie: shared prefixes are written once, so matching stays linear."""
    root: _Trie = {}
    for form in forms:
        node = root
        for ch in form:
            node = node.setdefault(ch, {})
        node[""] = {}  # end of a form
    return _render(root)


def _render(node: _Trie) -> str:
    branches = [_atom(ch) + _render(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return "(?:" + body + ")?" if "" in node else body


def _atom(ch: str) -> str:
    """Explicit ASCII case classes instead of re.IGNORECASE: the engine skips failing branches faster
    and compiles quickly; accented letters are folded before the search instead."""
    if ch == _ANY:
        return "[A-Za-z]"
    if ch == _VOWEL:
        return "[AEIOUYaeiouy]"
    return f"[{ch.upper()}{ch}]"


def _compile(forms: set[str]) -> re.Pattern[str] | None:
    """Whole words only; the look-ahead on first letters lets most positions fail after one test."""
    if not forms:
        return None
    firsts = "".join(sorted({f[0].upper() + f[0] for f in forms}))
    return re.compile(r"\b(?=[" + firsts + r"])(?:" + _trie_regex(forms) + r")\b")


# ------------------------------------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class _Near:
    """The word on one side of a hit and the characters between them."""

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


def _word_before(text: str, pos: int) -> _Near:
    j = pos
    while j > 0 and not text[j - 1].isalnum():
        j -= 1
    k = j
    while k > 0 and (text[k - 1].isalnum() or text[k - 1] in "'.-"):
        k -= 1
    return _Near(text[k:j], text[j:pos])


def _word_after(text: str, pos: int) -> _Near:
    j = pos
    while j < len(text) and not text[j].isalnum():
        j += 1
    k = j
    while k < len(text) and (text[k].isalnum() or text[k] in "'-"):
        k += 1
    return _Near(text[j:k], text[pos:j])


def _sentence_start(text: str, pos: int) -> bool:
    """True when the word at ``pos`` opens a sentence, so its capital letter says nothing."""
    before = _word_before(text, pos)
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
class _Context:
    """Per-call facts about the text, computed lazily because most texts never need them."""

    text: str
    hits: list[_Hit]
    _cased: bool | None = field(default=None)

    @property
    def cased(self) -> bool:
        """Mixed-case text: capital letters carry meaning (ASR output in one case does not)."""
        if self._cased is None:
            self._cased = bool(_HAS_LOWER.search(self.text)) and bool(_HAS_UPPER.search(self.text))
        return self._cased

    def neighbour(self, index: int, step: int) -> _Hit | None:
        """The hit directly joined to hit ``index`` on one side (full names, hyphenated names)."""
        other = index + step
        if not 0 <= other < len(self.hits):
            return None
        a, b = (self.hits[index], self.hits[other]) if step > 0 else (self.hits[other], self.hits[index])
        return self.hits[other] if _JOINER.fullmatch(self.text, a.end, b.start) else None


# ------------------------------------------------------------------------------------------ scrubber


@dataclass(frozen=True, slots=True)
class NameScrubber:
    """Compiled matcher for one meeting's roster; build once, scrub many segments."""

    placeholders: tuple[str | None, ...]
    """Per person: the placeholder of a target, None for a consenting participant (context only)."""
    known: tuple[tuple[frozenset[str], frozenset[str]], ...]
    """Per person: (given tokens, family tokens); an empty side disables "another person" rules."""
    exact: dict[str, tuple[_Entry, ...]]
    tokens: dict[str, tuple[_Entry, ...]]
    """Match tokens (exact spelling) per person, the base of the wildcard forms."""
    pattern: re.Pattern[str] | None
    initials: tuple[frozenset[str], ...] = ()
    """Per person: single-letter words of their display names ("Bart Q"), swallowed after a name."""
    fuzzy_cache: dict[str, tuple[_Entry, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, targets: Sequence[NameTarget], others: Sequence[Sequence[str]] = ()) -> NameScrubber:
        """Compile the matcher. ``others`` are consenting participants' names: they only add context."""
        rosters = [tuple(t.names) for t in targets] + [tuple(o) for o in others]
        placeholders = tuple(t.placeholder for t in targets) + (None,) * len(others)
        tokens = _person_tokens(rosters)
        exact = _exact_index(tokens)
        forms = set(exact) | {w for token in tokens for w in _wildcard_forms(token) if len(token) >= 3}
        initials = tuple(_initials(names) for names in rosters)
        return cls(placeholders, _known(tokens, len(rosters)), exact, tokens, _compile(forms), initials)

    def scrub(self, text: str) -> tuple[str, tuple[Span, ...]]:
        """Replace target mentions; return the new text and the replaced ranges in original offsets."""
        if self.pattern is None:
            return text, ()
        folded, offsets = _searchable(text)
        first = self.pattern.search(folded)
        if first is None:
            return text, ()
        hits = self._hits(folded, first.start())
        spans = self._spans(_Context(folded, hits)) if hits else ()
        if offsets is not None:
            spans = tuple(_to_original(s, offsets) for s in spans)
        return _apply(text, spans), spans

    def _hits(self, folded: str, start: int) -> list[_Hit]:
        hits = []
        for match in self.pattern.finditer(folded, start):  # type: ignore[union-attr]
            entries = self._entries(match.group().lower())
            if entries:
                hits.append(_Hit(match.start(), match.end(), match.group(), entries))
        return hits

    def _entries(self, word: str) -> tuple[_Entry, ...]:
        found = self.exact.get(word)
        if found is not None:
            return found
        cached = self.fuzzy_cache.get(word)
        if cached is None:
            cached = self._fuzzy_entries(word)
            if len(self.fuzzy_cache) < 4096:  # bounded: a memo, not state
                self.fuzzy_cache[word] = cached
        return cached

    def _fuzzy_entries(self, word: str) -> tuple[_Entry, ...]:
        """Entries for a misspelling; ordinary words and other known names are never misspellings."""
        if _is_common(word):
            return ()
        found: list[_Entry] = []
        for token, entries in self.tokens.items():
            if len(token) < 7 and word in nd.KNOWN_GIVEN_NAMES:
                continue  # "Maria" is not a slip of "Marie"; "Fransisco"/"Francisco" is
            if edit_allowed(word, token):
                found.extend(_Entry(e.person, e.given, True) for e in entries if not e.bound)
        return tuple(dict.fromkeys(found))

    def _spans(self, ctx: _Context) -> tuple[Span, ...]:
        kept = [
            frozenset(e.person for e in h.entries if _accept(e, i, ctx, self.known[e.person]))
            for i, h in enumerate(ctx.hits)
        ]
        spans: list[Span] = []
        group: list[int] = []
        persons: frozenset[int] = frozenset()
        for i, mine in enumerate(kept):
            if group and group[-1] == i - 1 and mine & persons and ctx.neighbour(i - 1, 1) is not None:
                group.append(i)
                persons &= mine
                continue
            self._close(ctx, group, persons, spans)
            group, persons = ([i], mine) if mine else ([], frozenset())
        self._close(ctx, group, persons, spans)
        return tuple(spans)

    def _close(self, ctx: _Context, group: list[int], persons: frozenset[int], spans: list[Span]) -> None:
        """Emit one span for a run of joined hits if any remaining reading is a target."""
        targets = sorted(p for p in persons if self.placeholders[p] is not None)
        if group and targets:
            placeholder = self.placeholders[targets[0]]
            assert placeholder is not None  # filtered just above; narrows the type for mypy
            end = _past_initial(ctx.text, ctx.hits[group[-1]].end, self.initials[targets[0]])
            spans.append(Span(ctx.hits[group[0]].start, end, placeholder))


_TRAILING_INITIAL = re.compile(r"[ \t]+([A-Za-z])\b")


def _initials(names: Sequence[str]) -> frozenset[str]:
    """Single letters a display name spells out ("Bart Q", "Ann B."): a name part too short to match alone."""
    return frozenset(w.lower() for n in names for w in re.findall(r"(?<![\w'])([A-Za-z])\.?(?!\w)", n))


def _past_initial(text: str, end: int, initials: frozenset[str]) -> int:
    """Extend a full-name span over the person's own trailing initial, so "Bart Q." leaves no "Q"."""
    found = _TRAILING_INITIAL.match(text, end)
    return found.end() if found and initials and found.group(1).lower() in initials else end


def _person_tokens(rosters: Sequence[tuple[str, ...]]) -> dict[str, tuple[_Entry, ...]]:
    """token -> entries, for every name part of every person (exact spellings only)."""
    index: dict[str, list[_Entry]] = {}
    for person, names in enumerate(rosters):
        for name in names:
            parsed = parse_display_name(name)
            single = len(parsed.parts) == 1  # "Brian", "Suarez": could be either; treat as given
            for part in parsed.parts:
                given = single or part in parsed.given
                for token, bound in _name_tokens(part):
                    index.setdefault(token, []).append(_Entry(person, given, False, bound))
    return {t: tuple(dict.fromkeys(es)) for t, es in index.items()}


def _known(
    tokens: dict[str, tuple[_Entry, ...]], count: int
) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
    """Per person, the given and family tokens we know; a single-name person has no family side."""
    given: list[set[str]] = [set() for _ in range(count)]
    family: list[set[str]] = [set() for _ in range(count)]
    for token, entries in tokens.items():
        for e in entries:
            (given if e.given else family)[e.person].add(token)
    return tuple((frozenset(g), frozenset(f)) for g, f in zip(given, family, strict=True))


def _is_common(word: str) -> bool:
    """An ordinary word is never taken for a misspelt name."""
    return word in nd.WORD_NAMES or word in nd.CONNECTIVES or word in nd.COMMON_WORDS


def _exact_index(tokens: dict[str, tuple[_Entry, ...]]) -> dict[str, tuple[_Entry, ...]]:
    """Every literal form: tokens, nicknames and spellings (exact), orthographic slips (fuzzy)."""
    exact: dict[str, list[_Entry]] = {}
    fuzzy: dict[str, list[_Entry]] = {}
    for token, entries in tokens.items():
        for entry in entries:
            for form in _exact_forms(token, entry.given and not entry.bound):
                exact.setdefault(form, []).append(entry)
            for form in () if entry.bound else _orthographic_forms(token):
                fuzzy.setdefault(form, []).append(_Entry(entry.person, entry.given, True))
    for form, slips in fuzzy.items():
        if form not in exact and not _is_common(form):
            exact[form] = slips  # an exact name of anyone wins over a slip of another's
    return {f: tuple(dict.fromkeys(es)) for f, es in exact.items()}


# ---------------------------------------------------------------------------------------- decisions


_Known = tuple[frozenset[str], frozenset[str]]


def _accept(entry: _Entry, index: int, ctx: _Context, known: _Known) -> bool:
    """Does hit ``index`` read as a mention of ``entry.person``? Recall first: reject only on a sign."""
    if _joined_to_same(entry, index, ctx):
        return True  # part of a full name ("Elizabeth May", "Brian Nagel", "Van Popta")
    if entry.bound:
        return False
    hit = ctx.hits[index]
    key = hit.word.lower()
    if entry.fuzzy and not _fuzzy_ok(hit, ctx):
        return False
    if (key in nd.WORD_NAMES or len(key) <= 2) and not _word_ok(hit, ctx):
        return False
    return not (_after_place_word(hit, ctx) or _other_person(entry, index, ctx, known))


def _after_place_word(hit: _Hit, ctx: _Context) -> bool:
    """'Saint John', 'St. Lawrence', 'Trinity Saint David', 'Prince Edward Island' name places."""
    before = _word_before(ctx.text, hit.start)
    return before.capitalised and before.key in nd.PLACE_PREFIXES and before.sep.strip(". ") == ""


def _joined_to_same(entry: _Entry, index: int, ctx: _Context) -> bool:
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


def _completes(entry: _Entry, other: _Entry) -> bool:
    if other.person != entry.person:
        return False
    return other.given != entry.given or other.bound or entry.bound


def _fuzzy_ok(hit: _Hit, ctx: _Context) -> bool:
    """A misspelt name counts only when written as a name: capitalised, in text that has case."""
    word = hit.word
    return ctx.cased and word[0].isupper() and not word.isupper()


def _word_ok(hit: _Hit, ctx: _Context) -> bool:
    """A name that is also a word ("Bill", "May", "Grant", "Ed") must look like a name here."""
    before = _word_before(ctx.text, hit.start)
    titled = before.key in nd.TITLES
    if not ctx.cased:
        return titled  # one-case text: only a title makes "bill" a name
    if not hit.word[0].isupper() or (len(hit.word) > 1 and hit.word.isupper()):
        return False  # "the minister may reply", "a bill", "BILL C-7"
    if titled:
        return True  # "Ms. May", "Mr. Fast"
    after = _word_after(ctx.text, hit.end)
    if hit.word.lower() in nd.MODAL_NAMES and after.tight and _sentence_start(ctx.text, hit.start):
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


def _inside_proper_noun(before: _Near, ctx: _Context, hit: _Hit) -> bool:
    """'Development Grant', "Member's Bill": a capitalised word before, mid-sentence, not a title."""
    if not (before.tight and before.capitalised) or before.key in nd.CONNECTIVES:
        return False
    return not _sentence_start(ctx.text, hit.start - len(before.sep) - len(before.word))


def _other_person(entry: _Entry, index: int, ctx: _Context, known: _Known) -> bool:
    """A different surname after a given name, a different given name before a surname, or a firm.

    Only a person whose other name part we know can be told apart: a roster entry "Antonio" is
    consistent with any surname, so "Antonio Llarden" stays a mention.
    """
    given, family = known
    hit = ctx.hits[index]
    after = _word_after(ctx.text, hit.end)
    start = hit.end + len(after.sep)
    own = _word_is_hit_of(entry.person, start, start + len(after.word), ctx) or _abbreviates(after, family)
    if (family or not entry.given) and _foreign_name_word(after) and not own:
        return True  # "Salma Ataullahjan", "Morgan Stanley", "Jordan Sadler"
    if entry.given or not given:
        return False
    before = _word_before(ctx.text, hit.start)
    if _INITIALS.fullmatch(before.word) and before.sep == ". " and not _abbreviates(before, given):
        return True  # "J.P. Morgan", "M. Jordan"
    start = hit.start - len(before.sep) - len(before.word)
    if not _foreign_name_word(before) or _word_is_hit_of(entry.person, start, start + len(before.word), ctx):
        return False
    if _abbreviates(before, given):
        return False  # "Rell Winand" for Relland Winand
    opens = _sentence_start(ctx.text, start)
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


def _word_is_hit_of(person: int, start: int, end: int, ctx: _Context) -> bool:
    """Does a hit that can name ``person`` lie inside the word at ``start:end`` ("D'Ambrosia")?"""
    return any(start <= h.start and h.end <= end and person in h.persons for h in ctx.hits)


# -------------------------------------------------------------------------------------------- output


def _to_original(span: Span, offsets: tuple[int, ...]) -> Span:
    """Folded offsets back to original ones; the end swallows combining marks of the last letter."""
    return Span(offsets[span.start], offsets[span.end], span.placeholder)


def _apply(text: str, spans: tuple[Span, ...]) -> str:
    """Replace each span by its placeholder; possessives and punctuation around names stay."""
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for span in spans:
        out.append(text[last : span.start])
        out.append(span.placeholder)
        last = span.end
    out.append(text[last:])
    return "".join(out)
