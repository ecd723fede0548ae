"""Names written in scripts other than Latin: Cyrillic, Greek, Arabic, Hebrew, Han, kana, Hangul, Thai...

Place in the flow: :meth:`gateway.names.NameScrubber.build` collects here the words of every display name that
have a letter of another script ("Ольга Петрова", "王伟", the "王伟" of "Wang Wei (王伟)"), and
:meth:`~gateway.names.NameScrubber.scrub` asks :class:`ScriptNames` for their mentions beside the Latin
pattern's, with the same placeholder. The Latin machinery (nicknames, misspellings, context rules) is
English-centred and does not apply: these forms match exactly, after NFKC, case folding and removal of the
marks writers add or drop freely (Greek accents, Cyrillic breve and diaeresis, Arabic harakat, Hebrew points).
Scripts that separate words with spaces match whole words. Scripts written without spaces between words (Han,
kana, Hangul, whose particles attach to the name, Thai, Lao, Khmer, Myanmar) match substrings, and only forms
of two or more characters: a single ideograph is an ordinary word far more often than a name, so a
one-character name part ("王 伟") is only found inside the full name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.names.folding import INVISIBLE

_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "YI ", "THAI", "LAO", "KHMER", "MYANMAR")
"""Unicode character-name prefixes of scripts written without spaces between words."""
_DROPPED = re.compile(
    "[\u0300-\u036f"  # combining diacritics: Greek tonos, Cyrillic breve/diaeresis (after NFKD)
    "\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"  # Hebrew cantillation and points
    "\u0610-\u061a\u064b-\u065f\u0670"  # Arabic harakat, hamza and madda above and below
    "\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed\u0640"  # Quranic marks, tatweel
    f"{INVISIBLE}]"
)
_LETTERS = (("ى", "ي"), ("ی", "ي"), ("ک", "ك"), ("ة", "ه"))
"""Arabic-script letters written interchangeably (alef maqsura/yeh, Persian yeh and kaf, teh marbuta/heh)."""
_HAN_TITLES = (
    "先生",
    "女士",
    "小姐",
    "老师",
    "老師",
    "总",
    "總",
    "经理",
    "經理",
    "博士",
    "教授",
    "さん",
    "様",
    "氏",
)
"""Address forms after a Chinese/Japanese surname ("王先生", "王总"): the surname alone is too common."""
_HAN_PREFIXES = ("老", "小")
"""Familiar forms before a surname ("老王", "小王")."""


def normalise(text: str) -> str:
    """NFKC, case-folded, without accents, vowel points and invisible joiners."""
    folded = _DROPPED.sub("", unicodedata.normalize("NFKD", text)).casefold()
    if not unicodedata.is_normalized("NFC", folded):  # the check is ~100 times cheaper than composing
        folded = unicodedata.normalize("NFC", folded)
    for variant, letter in _LETTERS:  # str.replace runs in C; str.translate with a dict does not
        folded = folded.replace(variant, letter)
    return folded


_normalise_cluster = lru_cache(maxsize=4096)(normalise)
"""Memoised for single characters and their marks, the unit of the offset map (never whole texts)."""


def _is_latin(ch: str) -> bool:
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN")


def _is_unspaced(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(_UNSPACED)


@lru_cache(maxsize=1)
def _marks() -> str:
    """Character-class body of every combining mark of the Basic Multilingual Plane: inside words of Indic
    and other scripts, which ``\\w`` does not count as word characters. Computed once, on first use. Marks
    beyond the BMP (historic scripts) are left out on purpose: with them ``re`` turns the class from a
    bitmap into a range list and searches it about 60 times slower."""
    return re.escape("".join(c for c in map(chr, range(0x300, 0x10000)) if unicodedata.category(c)[0] == "M"))


def _words(name: str) -> list[str]:
    """Runs of letters and marks of a normalised display name, in order."""
    marks = _marks()
    return re.findall(f"(?:[^\\W\\d_]|[{marks}])+", name)


@lru_cache(maxsize=4096)
def script_forms(display_name: str) -> frozenset[tuple[str, bool]]:
    """(form, whole word) for the non-Latin name parts of a display name; empty for a label ("Участник 1")."""
    if any(ch.isdigit() for ch in display_name):
        return frozenset()  # the Latin parser's rule: a number makes a label, not a name
    words = [w for w in _words(normalise(display_name)) if not all(_is_latin(c) for c in w)]
    forms = {(w, True) for w in words if len(w) >= 2 and not any(_is_unspaced(c) for c in w)}
    unspaced = [w for w in words if any(_is_unspaced(c) for c in w)]
    forms.update((f, False) for f in _unspaced_forms(unspaced) if len(f) >= 2)
    return frozenset(forms)


def _unspaced_forms(parts: list[str]) -> set[str]:
    """Forms of the name parts in an unspaced script: each part, and the full name with or without the
    space ("王 伟", "田中 太郎"). A Han or Hangul name in one word of three characters also gives its given
    name ("张小明" -> "小明", "김민수" -> "민수"); a one-character Han surname gives its address forms
    ("王先生", "王总", "老王")."""
    if not parts:
        return set()
    forms = set(parts) | {"".join(parts), " ".join(parts)}
    first = parts[0]
    if len(parts) == 1 and len(first) == 3 and all(_is_han_or_hangul(c) for c in first):
        forms.add(first[1:])
    surname = first[0] if len(parts) == 1 and len(first) in (2, 3) else first if len(first) == 1 else ""
    if surname and unicodedata.name(surname, "").startswith("CJK"):
        forms.update(surname + t for t in _HAN_TITLES)
        forms.update(p + surname for p in _HAN_PREFIXES)
    return forms


def _is_han_or_hangul(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(("CJK", "HANGUL"))


@lru_cache(maxsize=64)
def compile_forms(forms: frozenset[tuple[str, bool]]) -> re.Pattern[str]:
    """One pattern over normalised text; each match is a lookahead, so overlapping forms are all found.

    Memoised on the forms, like the Latin pattern: a consent change keeps every form.
    """
    marks = _marks()
    word = f"(?:[^\\W\\d_]|[{marks}])"
    whole = sorted((f for f, w in forms if w), key=lambda f: (-len(f), f))
    inside = sorted((f for f, w in forms if not w), key=lambda f: (-len(f), f))
    branches = []
    if whole:
        branches.append(f"(?<!{word})(?:{'|'.join(map(re.escape, whole))})(?!{word})")
    if inside:
        branches.append("|".join(map(re.escape, inside)))
    return re.compile(f"(?=({'|'.join(branches)}))")


@lru_cache(maxsize=64)
def _compile_quick(forms: frozenset[str]) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, sorted(forms))))


_CLUSTER_TAIL = f"{INVISIBLE}\u0640\u1160-\u11ff\uff9e\uff9f"
"""Plus tatweel, conjoining Hangul vowels and finals, and halfwidth (semi-)voiced sound marks, which are
spacing characters but compose with the kana before them under NFKC ("ﾃﾞ" -> "デ")."""


@lru_cache(maxsize=1)
def _tails() -> re.Pattern[str]:
    return re.compile(f"[{_marks()}{_CLUSTER_TAIL}]")


@lru_cache(maxsize=1)
def _cluster() -> re.Pattern[str]:
    """A character and the marks and joiners that belong to it: normalised as one unit."""
    return re.compile(f".[{_marks()}{_CLUSTER_TAIL}]*", re.DOTALL)


def _mapped(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """Normalised text, and per normalised character the original cluster's start and end (None when
    they are the character's own offsets, the usual case)."""
    folded = normalise(text)
    if (
        len(folded) == len(text)
        and _tails().search(text) is None
        and all(len(_normalise_cluster(ch)) == 1 for ch in set(text))
    ):
        # Without marks or joiners nothing composes or is dropped, and no character expands ("ß" -> "ss",
        # "…" -> "...") or shrinks ("ﾃﾞ" -> "デ"): every character maps to one. Equal lengths alone are not
        # enough, an expansion and a shrink elsewhere cancel out.
        return folded, None, None
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _cluster().finditer(text):
        piece = _normalise_cluster(match.group())
        pieces.append(piece)
        starts += [match.start()] * len(piece)
        ends += [match.end()] * len(piece)
    return "".join(pieces), starts, ends


@dataclass(frozen=True, slots=True)
class ScriptNames:
    """The non-Latin forms of one roster and who each can name, in roster order."""

    pattern: re.Pattern[str]
    persons: dict[str, tuple[int, ...]]
    quick: re.Pattern[str]
    """Every form, no boundaries: a literal alternation the engine scans fast, run before ``pattern``."""

    @classmethod
    def build(cls, rosters: Sequence[Sequence[str]]) -> ScriptNames | None:
        """None when nobody on the roster has a name part outside the Latin script."""
        persons: dict[str, list[int]] = {}
        kinds: set[tuple[str, bool]] = set()
        for person, names in enumerate(rosters):
            for name in names:
                for form in script_forms(name):
                    kinds.add(form)
                    persons.setdefault(form[0], []).append(person)
        if not kinds:
            return None
        forms = frozenset(kinds)
        owners = {f: tuple(dict.fromkeys(p)) for f, p in persons.items()}
        return cls(compile_forms(forms), owners, _compile_quick(frozenset(persons)))

    def find(self, text: str) -> list[tuple[int, int, tuple[int, ...]]]:
        """(start, end, persons) of every form in ``text``, original offsets; overlapping ones included."""
        if text.isascii() or self.quick.search(normalise(text)) is None:
            return []  # one C-level pass decides for nearly every text; only a candidate pays for offsets
        folded, starts, ends = _mapped(text)
        found = []
        for match in self.pattern.finditer(folded):
            a, b = match.span(1)
            if starts is not None and ends is not None:
                a, b = starts[a], ends[b - 1]
            found.append((a, b, self.persons[match.group(1)]))
        return found
