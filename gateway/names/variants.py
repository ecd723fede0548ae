"""The forms a name part takes in transcripts, and the one byte pattern that finds them all.

Forms of one token: exact (the token, its spelling variants and, for given names, nicknames from
``gateway.nicknames``), orthographic slips (doubled letters, c/k, ph/f/v, y/i, a final e) and edit-distance-1
forms that keep the first letter, stricter for shorter names. The pattern does not spell every form out: it
writes the first :data:`HEAD` letters of each form as a trie and leaves the rest as a length window
(``[a-z]{2,4}``), so it stays small: it compiles several times faster than one spelling every form out
and tries fewer branches at each word. It therefore finds a superset of the forms; the scrubber confirms
each found word against the exact forms and :func:`edit_allowed`, the rule the wildcard forms spell out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from gateway import nicknames as nd

VOWELS = "aeiouy"
ANY = "\x00"  # form symbols for "any letter" and "any vowel" in edit-distance-1 forms
VOWEL = "\x01"
HEAD = 3
"""Letters of a form written out in the pattern; longer forms continue as a window of any letters.
3 rather than 4: compiles in about 60% of the time, scans about 5% slower on large rosters (more words
start like a form and are turned down by the confirmation)."""
_NICKS = nd.groups_by_name(nd.NICKNAME_GROUPS)
_SPELLINGS = nd.groups_by_name(nd.SPELLING_GROUPS)

Head = tuple[str, int]
"""The first HEAD symbols of a form and the form's length."""


@lru_cache(maxsize=4096)
def exact_forms(token: str, given: bool) -> frozenset[str]:
    """The token, its spelling variants and, for given names, its nicknames (memoised, like every
    per-token expansion here: a rebuild after a roster change expands only the newcomer's tokens)."""
    forms = {token} | _SPELLINGS.get(token, frozenset())
    if given:
        for form in list(forms):
            forms |= _NICKS.get(form, frozenset())
    return frozenset(forms)


@lru_cache(maxsize=4096)
def orthographic_forms(token: str) -> frozenset[str]:
    """Spelling slips transcripts make on names: doubled letters, c/k, ph/f/v, y/i, a final e."""
    forms: set[str] = set()
    for old, new in (("c", "k"), ("k", "c"), ("ph", "f"), ("f", "ph"), ("ph", "v"), ("v", "ph"), ("y", "i")):
        forms |= {token[:i] + new + token[i + len(old) :] for i in _find_all(token, old)}
    forms |= {token[:i] + token[i] + token[i:] for i in range(1, len(token)) if token[i] not in VOWELS}
    forms |= {token[:i] + token[i + 1 :] for i in range(1, len(token) - 1) if token[i] == token[i + 1]}
    if len(token) >= 4:
        forms.add(token[:-1] if token.endswith("e") else token + "e")
    forms.discard(token)
    return frozenset(f for f in forms if len(f) >= 3)


def _find_all(token: str, sub: str) -> list[int]:
    return [i for i in range(len(token)) if token.startswith(sub, i)]


def wildcard_forms(token: str) -> set[str]:
    """Edit-distance-1 forms that keep the first letter; longer names tolerate more kinds of edit."""
    n = len(token)
    forms: set[str] = set()
    insert = ANY if n >= 5 else VOWEL
    forms |= {token[:i] + insert + token[i:] for i in range(1, n + 1)}
    if n >= 5:
        forms |= {token[:i] + token[i + 1] + token[i] + token[i + 2 :] for i in range(1, n - 1)}
    if n >= 6:
        forms |= {token[:i] + token[i + 1 :] for i in range(1, n)}
    if n >= 4:
        sub = ANY if n >= 7 else VOWEL
        forms |= {token[:i] + sub + token[i + 1 :] for i in range(1, n) if n >= 7 or token[i] in VOWELS}
    return forms


@lru_cache(maxsize=4096)
def wildcard_heads(token: str) -> frozenset[Head]:
    """Pattern heads of the token's edit-distance-1 forms (none under 3 letters); memoised per token."""
    return frozenset(heads(wildcard_forms(token))) if len(token) >= 3 else frozenset()


def heads(forms: Iterable[str]) -> Iterable[Head]:
    return ((f[:HEAD], len(f)) for f in forms)


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
        word[:i] + word[i + 1 :] == token and (any_letter or word[i] in VOWELS) for i in range(1, len(word))
    )


def _is_substitution(word: str, token: str) -> bool:
    diff = [i for i in range(len(word)) if word[i] != token[i]]
    if len(diff) != 1 or len(token) < 4:
        return False
    i = diff[0]
    return len(token) >= 7 or (word[i] in VOWELS and token[i] in VOWELS)


def _is_transposition(word: str, token: str) -> bool:
    diff = [i for i in range(len(word)) if word[i] != token[i]]
    if len(token) < 5 or len(diff) != 2 or diff[1] != diff[0] + 1:
        return False
    i = diff[0]
    return word[i] == token[i + 1] and word[i + 1] == token[i]


# -------------------------------------------------------------------------------------- trie pattern

_Trie = dict[str, "_Trie"]
_WINDOW = "\x02"  # trie key prefix: a window of this many more letters ends a form here


@lru_cache(maxsize=64)
def compile_heads(found: frozenset[Head]) -> re.Pattern[bytes] | None:
    """Whole lower-case words of the byte image (see ``folding.prepare``) that start like a form.

    Memoised on the heads: a consent change moves people between targets and others but keeps every
    form, so the scrubber built after it reuses the pattern.
    """
    if not found:
        return None
    root: _Trie = {}
    for head, length in found:
        node = root
        for ch in head:
            node = node.setdefault(ch, {})
        node.setdefault(f"{_WINDOW}{length - len(head)}" if length > len(head) else "", {})
    return re.compile(b" (?:" + _render(root).encode("ascii") + rb")\b")


def _render(node: _Trie) -> str:
    """Shared prefixes once; siblings with the same continuation merge into one class ("[ae]ly"), a letter
    beside "any letter" with the same continuation is dropped, windows merge into one ``[a-z]{lo,hi}``.
    A smaller pattern compiles faster and tries fewer branches at each word."""
    windows = sorted(int(k[1:]) for k in node if k.startswith(_WINDOW))
    same: dict[str, set[str]] = {}
    for ch, child in node.items():
        if ch and ch[0] != _WINDOW:
            same.setdefault(_render(child), set()).add(ch)
    branches = [_class(chars) + rest for rest, chars in sorted(same.items(), key=lambda kv: sorted(kv[1]))]
    if windows:
        lo, hi = windows[0], windows[-1]
        branches.append("[a-z]" + ("" if hi == 1 else f"{{{hi}}}" if lo == hi else f"{{{lo},{hi}}}"))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return "(?:" + body + ")?" if "" in node else body


def _class(chars: set[str]) -> str:
    if ANY in chars:
        return "[a-z]"
    letters = sorted((chars - {VOWEL}) | (set(VOWELS) if VOWEL in chars else set()))
    return letters[0] if len(letters) == 1 else "[" + "".join(letters) + "]"
