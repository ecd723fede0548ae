"""E-mail addresses of non-consenting participants, said or typed by someone else.

Place in the flow: :meth:`gateway.names.NameScrubber.scrub` finds these before names, and a found address
absorbs the name hits inside it, so "bob.stone@corp.example" becomes one placeholder, never
"[participant 2].stone@corp.example". An address identifies its owner as surely as a name (DESIGN.md,
invariant 9). Matched case-insensitively, whole (not inside a longer run of letters or digits). Its local
part alone is a handle people say too ("ping bstone77"): it is matched as a unit when it cannot be an
ordinary word: it has a digit or separator ("bstone77", "bob.stone"), or it embeds one of the owner's name
parts ("bstone"). A bare name part ("stone@...") is left to the name rules, which read its context, and
shared mailboxes ("info@", "sales@") identify nobody.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway import nicknames as nd

ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"'`]+@[^\s@<>()\[\],;:\"'`]+\.[^\s@<>()\[\],;:\"'`.]+")
"""An e-mail address inside a display name ("Bob Stone <bob@corp.example>") or a roster attribute."""
_SHARED = frozenset({
    "admin", "billing", "contact", "enquiries", "help", "hello", "hr", "info", "jobs", "mail", "marketing",
    "news", "noreply", "no-reply", "office", "postmaster", "press", "sales", "security", "service", "support",
    "team", "webmaster",
})  # fmt: skip
_EDGE = r"(?<![^\W_]){}(?![^\W_])"
"""Not inside a longer run of letters or digits; dots, dashes and underscores around it are punctuation."""


def addresses(emails: Iterable[str], names: Iterable[str]) -> tuple[str, ...]:
    """The lower-case addresses of one participant: the roster attribute and any in a display name."""
    found = [e.strip() for e in emails if e and "@" in e]
    found += [m.group() for name in names for m in ADDRESS.finditer(name)]
    return tuple(dict.fromkeys(a.lower() for a in found))


def handle(address: str, tokens: Iterable[str]) -> str | None:
    """The local part when it reads as this person's handle rather than a word or shared mailbox."""
    local = address.rsplit("@", 1)[0]
    if len(local) < 3 or local in _SHARED:
        return None
    if not local.isalpha():
        return local  # "bstone77", "bob.stone", "b_stone"
    if local in nd.COMMON_WORDS or local in nd.WORD_NAMES or local in nd.KNOWN_GIVEN_NAMES:
        return None
    embeds = any(len(t) >= 3 and t in local and t != local for t in tokens)
    return local if embeds else None


@lru_cache(maxsize=64)
def compile_addresses(units: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive pattern, group ``a<i>`` for unit i; longer units first so an address wins
    over its own local part (memoised on the units, like the name pattern)."""
    order = sorted(range(len(units)), key=lambda i: -len(units[i]))
    return re.compile(
        "|".join(f"(?P<a{i}>{_EDGE.format(re.escape(units[i]))})" for i in order), re.IGNORECASE
    )


@dataclass(frozen=True, slots=True)
class Addresses:
    """Compiled addresses and handles of a roster's targets, and whose each is (person index)."""

    pattern: re.Pattern[str]
    owners: tuple[int, ...]
    keys: tuple[str, ...]
    """Lower-case strings one of which every match contains: a cheap test before the pattern runs."""

    @classmethod
    def build(cls, units: Sequence[tuple[str, int]]) -> Addresses | None:
        """``units``: (address or handle, person). None when there is none."""
        if not units:
            return None
        unique = tuple(dict.fromkeys(units))
        keys = tuple(dict.fromkeys(u.rsplit("@", 1)[0] for u, _ in unique))
        return cls(compile_addresses(tuple(u for u, _ in unique)), tuple(p for _, p in unique), keys)

    def find(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, person) of every address or handle in ``text``."""
        lowered = text.lower()
        if not any(k in lowered for k in self.keys):
            return []
        return [(m.start(), m.end(), self.owners[_unit(m)]) for m in self.pattern.finditer(text)]


def _unit(match: re.Match[str]) -> int:
    """Index of the unit a match found: its group is named ``a<index>``."""
    assert match.lastgroup is not None  # every alternative is a named group
    return int(match.lastgroup[1:])
