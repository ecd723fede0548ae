"""Fuzzing the Zoom webhook endpoint of a live gateway: only clean refusals or valid events, never a 500.

Unsigned (or wrongly signed) requests of arbitrary bytes and headers are refused 401 and leave no trace.
Signed requests of arbitrary JSON, or of valid Zoom deliveries with one value replaced by arbitrary JSON,
are either accepted (200) or refused 400 with a problem document, and a refused one changes nothing.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.events import SegmentReceived
from gateway.platforms import vtt
from gateway.platforms.zoom_rtms import Sentences, participant_events, stops, transcript_events
from gateway.web.keys import GATEWAY
from tests.fakes.zoom import chat_event, participant_event, signed, transcript_completed, zoom_signature
from tests.platforms.zoom_support import SECRET, UUID, ZoomRig, fixture, zoom_gateway
from tests.web.harness import PROBLEM_JSON

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
header_names = st.sampled_from(
    ["x-zm-signature", "x-zm-request-timestamp", "content-type", "authorization", "x-zm-trackingid"]
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


def _bases() -> list[dict[str, Any]]:
    return [
        fixture("meeting.started.json"),
        fixture("meeting.participant_joined.json"),
        fixture("meeting.chat_message_sent.json"),
        fixture("meeting.chat_message_sent.flat.json"),
        chat_event(UUID, "16778241", "m-1", "/consent summary"),
        participant_event("meeting.participant_left", UUID, "16778241", "Gwen"),
        transcript_completed(UUID, "http://127.0.0.1:9/rec/download/x", "tok"),
        {"event": "endpoint.url_validation", "payload": {"plainToken": "abc"}},
    ]


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*at, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(_bases())))
    path = draw(st.sampled_from(_paths(doc)[1:]))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(json_values)
    doc["event_ts"] = draw(st.integers(0, 2**53))  # every example a distinct delivery
    return doc


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ZoomRig]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig:
        yield rig


async def _footprint(rig: ZoomRig) -> tuple[int, int, bool]:
    state = rig.gw.app[GATEWAY].meeting("zoom", UUID)
    return len(await rig.gw.ledger()), len(await rig.gw.decisions()), state is not None


@FUZZ
@given(
    body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(header_names, header_values, max_size=5),
)
async def test_unsigned_requests_are_refused_and_leave_no_trace(
    rig: ZoomRig, body: bytes, headers: dict[str, str]
) -> None:
    """Arbitrary bytes under arbitrary headers: always 401 problem+json, nothing stored or forwarded."""
    reply = await rig.zoom.post_raw(rig.gw.url, body, headers)
    assert reply.status == 401 and reply.content_type == PROBLEM_JSON
    assert await _footprint(rig) == (0, 0, False)
    assert rig.gw.fake.received == []


@FUZZ
@given(doc=mutated() | json_values)
async def test_signed_arbitrary_deliveries_are_accepted_or_cleanly_refused(rig: ZoomRig, doc: Any) -> None:
    """Signed deliveries never cause a 500: 200, or 400 problem+json that changes nothing."""
    before = await _footprint(rig)
    reply = await rig.send(doc)
    assert reply.status in (200, 400), reply
    if reply.status == 400:
        assert reply.content_type == PROBLEM_JSON and reply.doc["detail"]
        assert await _footprint(rig) == before


@FUZZ
@given(body=st.binary(max_size=300))
async def test_signed_bytes_that_are_not_json_are_400(rig: ZoomRig, body: bytes) -> None:
    """Signed bytes that are not a JSON object are refused 400 naming the body."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    _, headers = signed(None, SECRET)
    stamp = str(int(time.time()))
    headers = {
        **headers,
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": zoom_signature(SECRET, stamp, body),
    }
    reply = await rig.zoom.post_raw(rig.gw.url, body, headers)
    if not isinstance(parsed, dict):
        assert reply.status == 400 and reply.content_type == PROBLEM_JSON
    assert reply.status in (200, 400)


@settings(max_examples=150, deadline=None)
@given(content=st.dictionaries(st.sampled_from(
    ["user_id", "user_name", "data", "timestamp", "sentence_id", "event_type", "participants", "start_time"]
), json_values, max_size=8), msg_type=st.sampled_from([6, 8, 9, 17]))  # fmt: skip
def test_rtms_frames_of_any_content_give_only_valid_events(content: dict[str, Any], msg_type: int) -> None:
    """RTMS frame contents of any shape give well-formed events (or none) and never raise."""
    known: set[str] = set()
    events = [
        *transcript_events(UUID, content, Sentences(), known),
        *participant_events(UUID, content, known),
    ]
    stops({"msg_type": msg_type, **content})
    for event in events:
        assert event.meeting_id == UUID
        if isinstance(event, SegmentReceived):
            pid = event.segment.participant_id
            assert (pid is None or (isinstance(pid, str) and pid)) and event.segment.text.strip()
            assert event.segment.segment_id.startswith(f"{UUID}/rtms/")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.builds(lambda body: "WEBVTT\n\n" + body, st.text(max_size=200)))
def test_vtt_parser_returns_cues_or_vtt_error(text: str) -> None:
    """Any text is either cues or a VttError: the parser never fails otherwise."""
    try:
        cues = vtt.parse(text)
    except vtt.VttError:
        return
    assert all(c.end >= 0 and c.start >= 0 for c in cues)
