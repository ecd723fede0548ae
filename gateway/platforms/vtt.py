"""WebVTT transcripts into cues, and speaker names into roster participants: shared by Zoom and Teams.

Parsing is ``webvtt-py``'s. Two platform quirks are handled before it sees the text: Teams writes negative
timestamps (a cue that began before the recording), which the parser would silently drop, so they are clamped
to zero; unpadded timestamps (``0:0:1.5``) it reads as they are. Speakers come from a ``<v Name>`` voice tag
(Teams) or, when a roster is given, from a ``Name: `` prefix (Zoom).

Cue text is returned without markup (``<v>``, ``<b>``...) and with character references (``&amp;``,
``&lt;``) decoded, whitespace collapsed to single spaces; the text as written (markup kept) is returned too.

Display names are not identity. A name is credited to a participant only when exactly one roster participant
bears it (current or earlier name); otherwise the cue is unattributed, which the core treats as not consented.
Zoom names may contain ``:``, so prefixes are matched against the roster's names, never split at a colon.
Zoom writes a name as it was typed, so one that looks like markup ("Bob<Ops>") loses it in the text without
markup ("Bob"), where it would read as someone else's name: a ``Name: `` prefix is credited only when the
text as written and the text without markup name the same participant (``speaker``).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import webvtt
from webvtt.errors import MalformedFileError

from gateway.model import Participant

_NEGATIVE_START = re.compile(r"(?m)^(\s*)-[\d:.]+(?=\s+-->)")
_NEGATIVE_END = re.compile(r"(-->\s+)-[\d:.]+")
_VOICE = re.compile(r"^<v(?:\.[^\s>]*)?\s+([^>]*)>")
_VOICES = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]*)>")
_NUMBERED = re.compile(r"[0-9]{1,9}")
MAX_CUES = 200_000


class VttError(ValueError):
    """A file that is not WebVTT; the message never carries the file's text."""


@dataclass(frozen=True, slots=True)
class Cue:
    index: int
    """1-based position in the file: the identifier when the cue has none."""
    identifier: str | None = field(repr=False)
    """As the file has it. Not always an id: the line before a timing line is the cue's identifier to the
    parser (as the WebVTT standard says), so a cue whose text follows a blank line gives its words to the
    next cue as identifier."""
    start: float
    end: float
    text: str = field(repr=False)
    voice: str | None = field(default=None, repr=False)
    written: str = field(default="", repr=False)
    """The text as the file writes it, markup kept: character references decoded and whitespace collapsed,
    as in ``text``. Empty when not known, which credits the cue to nobody (``speaker``)."""

    @property
    def key(self) -> str:
        """A stable id for the cue within its file, which never carries words: a numbered identifier
        (Zoom's) as it is, any other (Teams' GUIDs, or words a malformed file put there) hashed."""
        identifier = self.identifier
        if identifier is None:
            return f"n{self.index}"
        if _NUMBERED.fullmatch(identifier):
            return identifier
        return "h" + hashlib.blake2b(identifier.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def parse(text: str) -> list[Cue]:
    """The cues of a WebVTT document, in order (raises VttError)."""
    zero = r"\g<1>00:00:00.000"
    clamped = _NEGATIVE_END.sub(zero, _NEGATIVE_START.sub(zero, text.replace("\r\n", "\n")))
    try:
        captions = webvtt.from_string(clamped)
    except (MalformedFileError, ValueError, IndexError):
        raise VttError("not a WebVTT document") from None
    cues = []
    for index, caption in enumerate(captions.captions, 1):
        if index > MAX_CUES:
            raise VttError(f"more than {MAX_CUES} cues")
        raw = caption.raw_text.strip()
        voice = _VOICE.match(raw) if _one_voice(raw) else None
        cues.append(
            Cue(
                index=index,
                identifier=(caption.identifier or "").strip() or None,
                start=_seconds(caption.start_time),
                end=_seconds(caption.end_time),
                text=" ".join(html.unescape(caption.text).split()),
                voice=voice.group(1).strip() if voice else None,
                written=" ".join(html.unescape(raw).split()),
            )
        )
    return cues


def _one_voice(raw: str) -> bool:
    """Whether every voice span of a cue is the same voice. A cue may hold several (WebVTT allows it):
    credited to its first, the others' words would leave as that person's, so it is nobody's then."""
    return len({" ".join(v.split()).casefold() for v in _VOICES.findall(raw)}) <= 1


def _seconds(stamp: object) -> float:
    h, m, s, ms = (int(getattr(stamp, k)) for k in ("hours", "minutes", "seconds", "milliseconds"))
    return float(h * 3600 + m * 60 + s) + ms / 1000.0


# --- who spoke -----------------------------------------------------------------------------------------


def by_name(roster: Mapping[str, Participant], name: str) -> str | None:
    """The one participant bearing ``name`` (now or earlier), or None when none or several do. Names are
    compared with their whitespace collapsed and case folded, as cue text is collapsed: "Alice  Smith"
    and "alice smith" are the name of "Alice Smith" too, so two such participants make a cue ambiguous
    rather than one of them its speaker."""
    wanted = _same_name(name)
    owners = {pid for pid, p in roster.items() if any(_same_name(n) == wanted for n in p.names)}
    return next(iter(owners)) if len(owners) == 1 else None


def bears_name(roster: Mapping[str, Participant], name: str) -> bool:
    """Whether any participant bears ``name`` (now or earlier), compared as ``by_name`` does."""
    wanted = _same_name(name)
    return any(_same_name(n) == wanted for p in roster.values() for n in p.names)


def _same_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def speaker(roster: Mapping[str, Participant], cue: Cue) -> tuple[str | None, str]:
    """(participant id, words) of a Zoom cue by its ``Name: `` prefix (``split_prefix``), read on the text
    as written and on the text without markup: credited only when both name the same participant. Markup
    stripped from a name ("Bob<Ops>: " becomes "Bob: ") would otherwise credit one person's words to
    another; when the two disagree the cue is unattributed and its text kept whole."""
    pid, words = split_prefix(roster, cue.text)
    if split_prefix(roster, cue.written)[0] != pid:
        return None, cue.text
    return pid, words


def split_prefix(roster: Mapping[str, Participant], text: str) -> tuple[str | None, str]:
    """``"Name: words"`` -> (participant id, words) when exactly one participant's name prefixes the text.

    When names of several participants prefix it (``Ann`` and ``Ann: Lee`` on ``"Ann: Lee: hi"``), or
    none does, the cue is unattributed and its text is kept whole."""
    matches = list(_prefixes(roster.items(), text))
    owners = {pid for pid, _ in matches}
    if len(owners) != 1:
        return None, text
    longest = max(len(name) for _, name in matches)
    return owners.pop(), text[longest + 1 :].strip()


def _prefixes(roster: Iterable[tuple[str, Participant]], text: str) -> Iterator[tuple[str, str]]:
    """(participant id, name as it stands in ``text``) of each name prefixing it; ``text`` has its
    whitespace collapsed, so names are compared collapsed and case-folded (see ``by_name``)."""
    for pid, person in roster:
        for raw in person.names:
            name = " ".join(raw.split())
            said = text[: len(name)]
            if name and text[len(name) : len(name) + 1] == ":" and said.casefold() == name.casefold():
                yield pid, said
