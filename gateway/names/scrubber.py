"""The compiled scrubber of one meeting: build once per roster or consent change, scrub every segment.

Place in the flow: the transform stage calls :meth:`NameScrubber.scrub` on every segment it forwards, so the
words of a consenting speaker reach an AI service without the names of the people who said no. Spans are
reported in original-text offsets; the replaced words never leave this package.

Scanning is two-stage. The byte pattern (``variants.compile_heads``) runs over the byte image of the text
(``folding.prepare``): a segment with no name costs one C-level scan that only stops at word starts. Each
word it finds is confirmed in Python against the exact forms and, for a misspelling, :func:`edit_allowed`
(memoised per word); only confirmed words become hits whose context is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway import nicknames as nd
from gateway.model import Span
from gateway.names.context import Context, Entry, Hit, Known, accept
from gateway.names.emails import Addresses, addresses, handle
from gateway.names.folding import prepare
from gateway.names.parse import name_tokens, parse_display_name
from gateway.names.scripts import ScriptNames
from gateway.names.variants import (
    Head,
    compile_heads,
    edit_allowed,
    exact_forms,
    heads,
    orthographic_forms,
    wildcard_heads,
)


@dataclass(frozen=True, slots=True)
class NameTarget:
    """One non-consenting participant: the placeholder that replaces them and every name they used."""

    placeholder: str
    names: tuple[str, ...]
    emails: tuple[str, ...] = ()
    """Their e-mail addresses (the roster attribute); addresses inside display names count too."""


@dataclass(frozen=True, slots=True)
class NameScrubber:
    """Compiled matcher for one meeting's roster; build once, scrub many segments."""

    placeholders: tuple[str | None, ...]
    """Per person: the placeholder of a target, None for a consenting participant (context only)."""
    known: tuple[Known, ...]
    """Per person: (given tokens, family tokens); an empty side disables "another person" rules."""
    exact: dict[str, tuple[Entry, ...]]
    tokens: dict[str, tuple[Entry, ...]]
    """Match tokens (exact spelling) per person, the base of the wildcard forms."""
    pattern: re.Pattern[bytes] | None
    initials: tuple[frozenset[str], ...] = ()
    """Per person: single-letter words of their display names ("Bart Q"), swallowed after a name."""
    scripts: ScriptNames | None = None
    """Targets' name parts in other scripts ("Ольга", "王伟"), matched beside the Latin pattern."""
    addresses: Addresses | None = None
    """Targets' e-mail addresses and handles, matched first: an address absorbs the names inside it."""
    fuzzy_cache: dict[str, tuple[Entry, ...]] = field(default_factory=dict, compare=False)
    signature: tuple[object, ...] = field(default=(), compare=False)
    """What it was built from (targets and others): two scrubbers with equal signatures scrub alike."""

    @classmethod
    def build(cls, targets: Sequence[NameTarget], others: Sequence[Sequence[str]] = ()) -> NameScrubber:
        """Compile the matcher. ``others`` are consenting participants' names: they only add context."""
        rosters = [tuple(t.names) for t in targets] + [tuple(o) for o in others]
        placeholders = tuple(t.placeholder for t in targets) + (None,) * len(others)
        tokens = _person_tokens(rosters)
        exact = _exact_index(tokens)
        pattern = compile_heads(_all_heads(exact, tokens)) if targets else None  # nothing to replace
        initials = tuple(_initials(names) for names in rosters)
        known = _known(tokens, len(rosters))
        scripts = ScriptNames.build(rosters) if targets else None
        units = [
            (unit, person)
            for person, target in enumerate(targets)
            for address in addresses(target.emails, target.names)
            for unit in (address, handle(address, known[person][0] | known[person][1]))
            if unit
        ]
        signature = (tuple(targets), tuple(tuple(o) for o in others))
        return cls(
            placeholders, known, exact, tokens, pattern, initials, scripts, Addresses.build(units),
            signature=signature,
        )  # fmt: skip

    def scrubs_as(self, other: object) -> bool:
        """Whether ``other`` is a scrubber built from the same targets and names (so it scrubs alike)."""
        return other is self or (isinstance(other, NameScrubber) and other.signature == self.signature)

    def scrub(self, text: str) -> tuple[str, tuple[Span, ...]]:
        """Replace target mentions; return the new text and the replaced ranges in original offsets."""
        spans = self._name_spans(text)
        others = self._address_spans(text) + self._script_spans(text)
        if others:
            spans = _merge([*others, *spans])  # addresses first: on the same start, theirs wins
        return _apply(text, spans), spans

    def _name_spans(self, text: str) -> tuple[Span, ...]:
        """Mentions of Latin-script name parts, in original offsets."""
        if self.pattern is None:
            return ()
        folded, offsets, image = prepare(text)
        first = self.pattern.search(image)
        if first is None:
            return ()
        hits = self._hits(folded, image, first.start())
        if not any(self.placeholders[e.person] is not None for h in hits for e in h.entries):
            # Only consenting participants' names (or none): no span can name a target, so reading their
            # context would change nothing. Common in meetings, where people address whoever consented.
            return ()
        spans = self._spans(Context(folded, hits))
        if offsets is not None:
            spans = tuple(_to_original(s, offsets) for s in spans)
        return spans

    def _address_spans(self, text: str) -> list[Span]:
        if self.addresses is None:
            return []
        return [Span(a, b, self._placeholder(p)) for a, b, p in self.addresses.find(text)]

    def _script_spans(self, text: str) -> list[Span]:
        """Targets' non-Latin name forms; one inside a longer form naming only consenting participants
        is theirs ("王伟" inside consenting "李王伟"). Parts joined by a space or hyphen make one span."""
        if self.scripts is None:
            return []
        found = self.scripts.find(text)
        shields = [(a, b) for a, b, ps in found if all(self.placeholders[p] is None for p in ps)]
        spans: list[Span] = []
        for a, b, persons in found:
            targets = [p for p in persons if self.placeholders[p] is not None]
            if not targets or any(c <= a and b <= d and d - c > b - a for c, d in shields):
                continue
            span = Span(a, b, self._placeholder(targets[0]))
            last = spans[-1] if spans else None
            if last and last.placeholder == span.placeholder and text[last.end : a] in (" ", "-", "\u00a0"):
                spans[-1] = Span(last.start, b, span.placeholder)
            else:
                spans.append(span)
        return spans

    def _placeholder(self, person: int) -> str:
        placeholder = self.placeholders[person]
        assert placeholder is not None  # only targets are matched; narrows the type for mypy
        return placeholder

    def _hits(self, folded: str, image: bytes, start: int) -> list[Hit]:
        """Confirmed words; image offsets are one past folded ones (the leading space)."""
        hits = []
        for match in self.pattern.finditer(image, start):  # type: ignore[union-attr]
            begin, end = match.span()  # the separator before the word, then the word
            word = folded[begin : end - 1]
            entries = self._entries(word.lower())
            if entries:
                hits.append(Hit(begin, end - 1, word, entries))
        return hits

    def _entries(self, word: str) -> tuple[Entry, ...]:
        found = self.exact.get(word)
        if found is not None:
            return found
        cached = self.fuzzy_cache.get(word)
        if cached is None:
            cached = self._fuzzy_entries(word)
            if len(self.fuzzy_cache) < 4096:  # bounded: a memo, not state
                self.fuzzy_cache[word] = cached
        return cached

    def _fuzzy_entries(self, word: str) -> tuple[Entry, ...]:
        """Entries for a misspelling; ordinary words and other known names are never misspellings.

        The pattern only checked how the word starts and its length; a misspelling must be an
        edit-distance-1 form of a token of at least 3 letters (the forms the pattern stands for).
        """
        if _is_common(word) or not any(len(t) >= 3 and edit_allowed(word, t) for t in self.tokens):
            return ()
        found: list[Entry] = []
        for token, entries in self.tokens.items():
            if len(token) < 7 and word in nd.KNOWN_GIVEN_NAMES:
                continue  # "Maria" is not a slip of "Marie"; "Fransisco"/"Francisco" is
            if edit_allowed(word, token):
                found.extend(Entry(e.person, e.given, True) for e in entries if not e.bound)
        return tuple(dict.fromkeys(found))

    def _spans(self, ctx: Context) -> tuple[Span, ...]:
        kept = [
            frozenset(e.person for e in h.entries if accept(e, i, ctx, self.known[e.person]))
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

    def _close(self, ctx: Context, group: list[int], persons: frozenset[int], spans: list[Span]) -> None:
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


def _person_tokens(rosters: Sequence[tuple[str, ...]]) -> dict[str, tuple[Entry, ...]]:
    """token -> entries, for every name part of every person (exact spellings only)."""
    index: dict[str, list[Entry]] = {}
    for person, names in enumerate(rosters):
        for name in names:
            parsed = parse_display_name(name)
            single = len(parsed.parts) == 1  # "Brian", "Suarez": could be either; treat as given
            for part in parsed.parts:
                given = single or part in parsed.given
                for token, bound in name_tokens(part):
                    index.setdefault(token, []).append(Entry(person, given, False, bound))
    return {t: tuple(dict.fromkeys(es)) for t, es in index.items()}


def _known(
    tokens: dict[str, tuple[Entry, ...]], count: int
) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
    """Per person, the given and family tokens we know; a single-name person has no family side."""
    given: list[set[str]] = [set() for _ in range(count)]
    family: list[set[str]] = [set() for _ in range(count)]
    for token, entries in tokens.items():
        for e in entries:
            (given if e.given else family)[e.person].add(token)
    return tuple((frozenset(g), frozenset(f)) for g, f in zip(given, family, strict=True))


def _all_heads(exact: dict[str, tuple[Entry, ...]], tokens: dict[str, tuple[Entry, ...]]) -> frozenset[Head]:
    """What the pattern stands for: every exact form and every edit-distance-1 form of every token."""
    return frozenset(heads(exact)).union(*(wildcard_heads(t) for t in tokens))


def _is_common(word: str) -> bool:
    """An ordinary word is never taken for a misspelt name."""
    return word in nd.WORD_NAMES or word in nd.CONNECTIVES or word in nd.COMMON_WORDS


def _exact_index(tokens: dict[str, tuple[Entry, ...]]) -> dict[str, tuple[Entry, ...]]:
    """Every literal form: tokens, nicknames and spellings (exact), orthographic slips (fuzzy)."""
    exact: dict[str, list[Entry]] = {}
    fuzzy: dict[str, list[Entry]] = {}
    for token, entries in tokens.items():
        for entry in entries:
            for form in exact_forms(token, entry.given and not entry.bound):
                exact.setdefault(form, []).append(entry)
            for form in () if entry.bound else orthographic_forms(token):
                fuzzy.setdefault(form, []).append(Entry(entry.person, entry.given, True))
    for form, slips in fuzzy.items():
        if form not in exact and not _is_common(form):
            exact[form] = slips  # an exact name of anyone wins over a slip of another's
    return {f: tuple(dict.fromkeys(es)) for f, es in exact.items()}


def _to_original(span: Span, offsets: tuple[int, ...]) -> Span:
    """Folded offsets back to original ones; the end swallows combining marks of the last letter."""
    return Span(offsets[span.start], offsets[span.end], span.placeholder)


def _merge(spans: list[Span]) -> tuple[Span, ...]:
    """Sorted, overlapping spans joined into one (the earlier span's placeholder): a name inside an address,
    the Latin and the native form of one name, overlapping forms of an unspaced script."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):  # stable: on the same start, the earlier source wins
        last = out[-1] if out else None
        if last is not None and span.start < last.end:
            if span.end > last.end:
                out[-1] = Span(last.start, span.end, last.placeholder)
        else:
            out.append(span)
    return tuple(out)


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
