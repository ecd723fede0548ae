"""Ingest parsing: the fast path for one valid event agrees with the general path on every body."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.web.ingest import parse_batch, parse_general
from gateway.web.problems import Problem

AT = "2026-11-27T10:00:00+00:00"
WEIRD = [
    "chat.message",
    "consent",
    "meeting.ended",
    "weird.type",
    "",
    "x" * 300,
    "2026-11-27T10:00:00",
    "1e400",
]
"""Other types (known and unknown), empty and oversized ids, a naive time, a number out of range."""

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Valid segment events about half the time; otherwise a few fields dropped or replaced by anything."""
    event: dict[str, Any] = {
        "type": "segment",
        "meeting_id": draw(st.text(min_size=1, max_size=8)),
        "segment_id": draw(st.text(min_size=1, max_size=8)),
        "participant_id": draw(st.none() | st.text(min_size=1, max_size=8)),
        "text": draw(st.text(max_size=20)),
        "at": AT,
    }
    if draw(st.booleans()):
        event["start"] = draw(st.floats(min_value=0, max_value=1e7) | st.integers(0, 10**7))
    if draw(st.booleans()):
        return event
    for key in draw(st.lists(st.sampled_from([*event, "start", "end", "events", "extra"]), max_size=3)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(values | st.sampled_from(WEIRD))
    return event


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return parse(body)
    except Problem as exc:
        return ("problem", exc.document())


bodies = st.one_of(
    events().map(lambda e: json.dumps(e).encode()),
    events().map(lambda e: json.dumps(e, ensure_ascii=False, indent=1).encode()),
    st.lists(events(), max_size=3).map(lambda es: json.dumps({"events": es}).encode()),
    events().map(lambda e: json.dumps(e).encode()[: len(json.dumps(e)) // 2]),  # truncated JSON
    st.binary(max_size=40),
)


@given(bodies)
def test_fast_path_and_general_path_agree(body: bytes) -> None:
    """Same events or the same problem document, whichever path a body takes."""
    assert _outcome(parse_batch, body) == _outcome(parse_general, body)


def test_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    """A repeated key means what ``json.loads`` makes of it (the last one) on the fast path too."""
    body = (
        '{"type":"segment","meeting_id":"m1","segment_id":"s1","participant_id":"p1",'
        f'"text":"first","at":"{AT}","text":"second"}}'
    ).encode()
    assert parse_batch(body) == parse_general(body)
    assert parse_batch(body)[0][0].text == "second"  # type: ignore[union-attr]


def test_json_the_stdlib_refuses_is_refused_on_both_paths() -> None:
    """Raw control characters and trailing garbage are malformed JSON, not events."""
    good = (
        '{"type":"segment","meeting_id":"m1","segment_id":"s1","participant_id":"p1",'
        f'"text":"a","at":"{AT}"}}'
    )
    for body in (good.replace('"a"', '"a\nb"'), good + "x", "\ufeff" + good):
        assert _outcome(parse_batch, body.encode()) == _outcome(parse_general, body.encode())
