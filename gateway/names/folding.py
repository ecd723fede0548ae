"""Diacritic folding and the byte image of a text that the name pattern scans.

Folding keeps offsets: accented Latin letters fold one character to one; only decomposed text (letter +
combining mark) needs an offset map back to the original. The byte image keeps offsets too: one byte per
character, ASCII letters lower-cased, every other word character a ``_`` and every non-word character a space,
so a compiled lower-case byte pattern finds the same whole words the text has.
"""

from __future__ import annotations

import re
import unicodedata

# Letters of other scripts that look like Latin ones (Unicode TR39's confusables, the common ones): a
# display name or transcript that spells a name with them ("Аnna" with a Cyrillic А) must still match it.
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "І": "I", "Ї": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip


def _fold_table() -> dict[int, int]:
    """Map each accented Latin letter (and fullwidth form, and look-alike of another script) to its base
    letter, one character to one, so offsets survive."""
    table: dict[int, int] = {}
    for code in (*range(0x80, 0x2000), *range(0xFF01, 0xFF5F)):
        base = "".join(c for c in unicodedata.normalize("NFKD", chr(code)) if not unicodedata.combining(c))
        if len(base) == 1 and base.isascii() and base.isalpha():
            table[code] = ord(base)
    table.update({ord(k): ord(v) for k, v in _LOOKALIKES.items()})
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
INVISIBLE = "\u00ad\u200b-\u200d\u2060\ufeff"
"""Soft hyphen, zero-width space and joiners, word joiner, BOM: inside a name they hide it from a match."""
_COMBINING = re.compile(f"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f{INVISIBLE}]")


def fold(text: str) -> tuple[str, tuple[int, ...] | None]:
    """Fold diacritics; return the folded text and, only if lengths differ, folded->original offsets."""
    if text.isascii():
        return text, None  # the common case costs one C-level scan
    if _COMBINING.search(text) is None:
        return text.translate(_FOLD), None
    return _fold_with_offsets(text)


def _fold_with_offsets(text: str) -> tuple[str, tuple[int, ...]]:
    """Slow path for decomposed text (letter + combining mark): drop the marks, remember offsets."""
    chars: list[str] = []
    offsets: list[int] = []
    for i, ch in enumerate(text):
        if unicodedata.combining(ch) or _COMBINING.match(ch):
            continue
        chars.append(ch.translate(_FOLD))
        offsets.append(i)
    offsets.append(len(text))
    return "".join(chars), tuple(offsets)


def _byte_table() -> bytes:
    """ASCII letters lower-cased, digits and '_' kept (word characters), everything else a space."""
    out = bytearray(b" " * 256)
    for code in range(128):
        ch = chr(code)
        if ch.isalnum() or ch == "_":
            out[code] = ord(ch.lower())
    return bytes(out)


_BYTES = _byte_table()
_NON_ASCII = re.compile("[^\x00-\x7f]")
_NEEDS_FOLD = re.compile(
    "[\u00c0-\u024f\u1e00-\u1eff\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
    f"\u0370-\u03ff\u0400-\u052f\uff01-\uff5e{INVISIBLE}]"
)


def prepare(text: str) -> tuple[str, tuple[int, ...] | None, bytes]:
    """The text the pattern runs on, its offset map (see :func:`fold`) and its byte image.

    Most non-ASCII text only has dashes, quotes, ellipses or currency signs: it is searched as is, and only
    accented letters or combining marks pay for a fold. The byte image has one byte per character after a
    leading space: ASCII letters lower-cased, other word characters ``_`` (so "Brianα" is no "Brian"),
    everything else a space, exactly the words ``\b`` sees in a ``str`` pattern.
    """
    if text.isascii():
        return text, None, b" " + text.encode("ascii").translate(_BYTES)
    others = set(_NON_ASCII.findall(text))  # few distinct characters; found at C speed
    folded, offsets = text, None
    if any(_NEEDS_FOLD.match(c) for c in others):
        folded, offsets = fold(text)
        others = set(_NON_ASCII.findall(folded))
    image = b" " + folded.encode("ascii", "replace").translate(_BYTES)  # "?" is a separator too
    letters = [c for c in others if c.isalnum()]
    if not letters:
        return folded, offsets, image
    marked = bytearray(image)
    for c in letters:
        at = folded.find(c)
        while at >= 0:
            marked[at + 1] = ord("_")
            at = folded.find(c, at + 1)
    return folded, offsets, bytes(marked)
