"""Display names into name parts: honorifics, ridings, post-nominals, roles and e-mail addresses removed.

Place in the flow: :meth:`gateway.names.NameScrubber.build` parses every display name of every participant
here, then expands the parts into the forms that are searched for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway import nicknames as nd
from gateway.names.folding import fold


@dataclass(frozen=True, slots=True)
class ParsedName:
    """Name parts of one display name, as written: given names first, then family names."""

    given: tuple[str, ...] = ()
    family: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return self.given + self.family


_PAREN = re.compile(r"\([^()]*\)")
_PAREN_INSIDE = re.compile(r"\(([^()]*)\)")
_ROLE_PREFIX = re.compile(r"^[^(]*\((.*)\)\s*$", re.DOTALL)
_WORD = re.compile(r"[^\s,;/|]+")


@lru_cache(maxsize=4096)
def parse_display_name(raw: str) -> ParsedName:
    """Parse a platform display name; roles ("The Chair", "Speaker 1", "Operator") give no name parts."""
    text = _email_to_name(raw)
    text = _unwrap_role(text)
    nicknames = _nicknames(text)
    while _PAREN.search(text):
        text = _PAREN.sub(" ", text)
    words = [w for w in (_clean_word(w) for w in _WORD.findall(text.split("(")[0])) if w]
    if any(ch.isdigit() for w in words for ch in w):
        # "Bea Okafor 2", "Bea's iPhone 14", "Bea Okafor - Room 12": the name is still there beside the
        # number, which with the device and room words is no part of it; "Speaker 1", "User 42" and a
        # dial-in number leave no name. What is left is a name ("Bea 2", "Wen 3": failing closed, any word
        # the lists do not know) unless every word of it is an ordinary word or a letter: "Training Room 1",
        # "Sales 2" and "Conference Room B 3" are rooms and teams
        words = [w for w in map(_without_digits, words) if w and token_key(w) not in nd.DEVICE_WORDS]
        if all(_ordinary_word(token_key(w)) or len(token_key(w).replace(".", "")) <= 1 for w in words):
            return ParsedName()
    words = [w for i, w in enumerate(words) if not _is_noise_word(w, inside=0 < i < len(words) - 1)]
    if not words or all(token_key(w) in nd.ROLE_NAMES for w in words):
        return ParsedName(given=nicknames)
    if len(words) == 1:
        single = words[0]
        given = token_key(single) in nd.KNOWN_GIVEN_NAMES
        return ParsedName(given=(single, *nicknames)) if given else ParsedName(nicknames, (single,))
    return ParsedName(given=(words[0], *nicknames), family=tuple(words[1:]))


_ONE_WORD = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*")


def _nicknames(text: str) -> tuple[str, ...]:
    """Names in parentheses: "Robert (Bob) Smith", "(Bea) Okafor" are called Bob and Bea too, so those
    are scrubbed as well (failing closed). Only one word, and not a role ("(Host)"), an abbreviation
    ("(CPC)"), a title or an ordinary word: ridings, parties and roles in parentheses stay out."""
    found = []
    for inside in _PAREN_INSIDE.findall(text):
        word = _clean_word(inside.strip())
        key = token_key(word)
        if (
            _ONE_WORD.fullmatch(word)
            and len(key) >= 2
            and not word.isupper()
            and key not in nd.ROLE_NAMES
            and key not in nd.TITLES
            and key not in nd.NAME_SUFFIXES
            and key not in nd.DEVICE_WORDS
            and not _ordinary_word(key)
            and key not in nd.CONNECTIVES
        ):
            found.append(word)
    return tuple(dict.fromkeys(found))


def _ordinary_word(key: str) -> bool:
    """A word that, alone beside a number, labels a room, a team or a role rather than a person."""
    return key not in nd.KNOWN_GIVEN_NAMES and (key in nd.ROOM_WORDS or key in nd.COMMON_WORDS)


def _without_digits(word: str) -> str:
    """The word without its digits ("Okafor2" is "Okafor"); nothing if fewer than two letters remain."""
    if not any(ch.isdigit() for ch in word):
        return word
    kept = "".join(ch for ch in word if not ch.isdigit()).strip("-_.+#")
    return kept if sum(ch.isalpha() for ch in kept) >= 2 else ""


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
    head = [token_key(w) for w in _WORD.findall(text.split("(", 1)[0])]
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
    key = token_key(word)
    if key in nd.TITLES or key in nd.NAME_SUFFIXES or key == "the":
        return True
    if key in nd.PARTICLES:
        return not inside
    return len(key.replace(".", "")) <= 1


def token_key(word: str) -> str:
    """Folded lower-case form used for every table lookup."""
    return fold(word)[0].lower().strip(".")


def name_tokens(part: str) -> list[tuple[str, bool]]:
    """(token, bound) pieces of one name part; a bound piece (particle) counts only beside the rest."""
    pieces = re.findall(r"[a-z]+", token_key(part))
    tokens = [(p, p in nd.PARTICLES) for p in pieces if len(p) >= 2]
    if len(pieces) > 1 and "'" in part.replace("’", "'"):
        tokens.append(("".join(pieces), False))
    return tokens
