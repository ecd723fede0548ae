"""Hypothesis against the Recall.ai endpoint and parser: arbitrary bytes and headers are refused cleanly or
become valid events; nothing from an unauthenticated request is ever forwarded."""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.events import MeetingEnded, MeetingStarted, ParticipantJoined, ParticipantLeft, SegmentReceived
from gateway.platforms import recall
from gateway.platforms.config import RecallInstall
from gateway.web.problems import Problem
from tests.fakes.recall import (
    BOT,
    RECORDING,
    RecallSender,
    bot_status,
    participant,
    participant_event,
    signed,
    transcript_data,
)
from tests.platforms.platform_gateway import consent, forwarded, in_thread, platform_gateway, post_sync, run
from tests.web.harness import LiveGateway, wait_for

SECRET = "whsec_" + base64.b64encode(b"recall fuzzing secret, 32 bytes!").decode()
OTHER = "whsec_" + base64.b64encode(b"an attacker's own secret 32 byte").decode()
ADA = participant(100, "Ada Lovelace")
KEY_ADA = f"{RECORDING}:100"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _mutated(doc: Any, path: list[str | int], value: Any) -> Any:
    """``doc`` with the value at ``path`` (as far as it exists) replaced."""
    if not path or not isinstance(doc, dict | list):
        return value
    key, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(key, str) and key in doc:
        return {**doc, key: _mutated(doc[key], rest, value)}
    if isinstance(doc, list) and isinstance(key, int) and 0 <= key < len(doc):
        return [*doc[:key], _mutated(doc[key], rest, value), *doc[key + 1 :]]
    return doc


base_docs = st.sampled_from(
    [
        transcript_data(ADA, ["Hello", "there."]),
        transcript_data(None, ["Who?"]),
        participant_event("join", ADA),
        participant_event("update", participant(100, None, "a@example.org")),
        participant_event("leave", ADA),
        participant_event("chat_message", ADA, chat="hi"),
        transcript_data(ADA, ["partial"], event="transcript.partial_data"),
        bot_status("in_call_recording"),
        bot_status("done"),
    ]
)
paths = st.lists(
    st.sampled_from(
        ["event", "data", "words", "participant", "id", "name", "recording", "bot", "timestamp", 0]
    ),
    max_size=5,
).map(lambda p: [("data" if i < 2 and x == "words" else x) for i, x in enumerate(p)])
recall_docs = st.builds(_mutated, base_docs, paths, json_values) | json_values


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveGateway, Any]]:
    install = RecallInstall(id="fuzz", webhook_secret_envs=("S",))

    def setup(app: web.Application) -> None:
        recall.setup(app, [install], environ={"S": SECRET})

    with in_thread(tmp_path_factory.mktemp("recall-fuzz"), setup) as (live, loop):
        body = json.dumps(participant_event("join", ADA)).encode()
        assert post_sync(live.url + recall.WEBHOOK_PATH, body, signed(SECRET, body))[0] == 200
        run(loop, consent(live, recall.PLATFORM, BOT, KEY_ADA))
        yield live, loop


@FUZZ
@given(
    body=st.binary(max_size=2048) | recall_docs.map(lambda d: json.dumps(d).encode()),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "svix-id",
                "svix-timestamp",
                "svix-signature",
                "Authorization",
                "Content-Type",
                "X-Anything",
            ]
        ),
        header_text,
        max_size=6,
    ),
)
def test_unauthenticated_requests_are_refused_and_forward_nothing(
    served: tuple[LiveGateway, Any], body: bytes, headers: dict[str, str]
) -> None:
    """Arbitrary bytes with arbitrary headers (no valid signature) are always 401 problem+json."""
    live, _ = served
    status, content_type, _ = post_sync(live.url + recall.WEBHOOK_PATH, body, headers)
    assert status == 401 and content_type.startswith("application/problem+json")


@FUZZ
@given(
    words=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6),
    how=st.sampled_from(["other secret", "stale", "future", "body changed", "legacy other secret"]),
)
def test_consented_speech_with_a_bad_signature_is_never_forwarded(
    served: tuple[LiveGateway, Any], words: list[str], how: str
) -> None:
    """A valid utterance of a consenting participant, signed wrongly, is refused and never reaches anyone."""
    live, loop = served
    body = json.dumps(transcript_data(ADA, words)).encode()
    now = int(time.time())
    headers = {
        "other secret": signed(OTHER, body),
        "stale": signed(SECRET, body, timestamp=now - 400),
        "future": signed(SECRET, body, timestamp=now + 400),
        "body changed": signed(SECRET, body + b"\n"),
        "legacy other secret": signed(OTHER, body, legacy=True),
    }[how]
    assert post_sync(live.url + recall.WEBHOOK_PATH, body, headers)[0] == 401
    run(loop, live.settle())
    assert forwarded(live) == []


@FUZZ
@given(body=st.binary(max_size=2048) | recall_docs.map(lambda d: json.dumps(d).encode()))
def test_signed_arbitrary_bodies_get_200_or_a_clean_400(served: tuple[LiveGateway, Any], body: bytes) -> None:
    """A correctly signed delivery of any bytes is accepted or refused with a 400 problem; never a 500."""
    live, _ = served
    status, content_type, raw = post_sync(live.url + recall.WEBHOOK_PATH, body, signed(SECRET, body))
    assert status in (200, 400), raw[:200]
    if status == 400:
        assert content_type.startswith("application/problem+json") and json.loads(raw)["detail"]


@settings(max_examples=500, deadline=None)
@given(doc=recall_docs)
def test_parse_yields_valid_events_or_a_400(doc: Any) -> None:
    """``recall.parse`` of any JSON returns well-formed events of the right meeting, or raises a 400."""
    try:
        events = recall.parse(json.dumps(doc).encode(), datetime.now(UTC))
    except Problem as exc:
        events, problem = [], exc
    else:
        problem = None
    assert problem is None or (problem.status == 400 and problem.detail)
    assert len(events) <= 1
    for event in events:
        assert event.platform == recall.PLATFORM and event.meeting_id and event.at.tzinfo is not None
        if isinstance(event, MeetingStarted | MeetingEnded):
            assert event.meeting_id == doc["data"]["bot"]["id"]
        elif isinstance(event, SegmentReceived):
            pid = event.segment.participant_id
            assert pid is None or pid.startswith(doc["data"]["recording"]["id"] + ":")
            assert isinstance(event.segment.text, str) and event.segment.segment_id
        else:
            assert isinstance(event, ParticipantJoined | ParticipantLeft)
            assert event.participant_id.startswith(doc["data"]["recording"]["id"] + ":")


@settings(max_examples=15, deadline=None)
@given(messages=st.lists(st.binary(max_size=300) | recall_docs.map(json.dumps), max_size=25))
async def test_arbitrary_socket_messages_never_break_the_stream(messages: list[bytes | str]) -> None:
    """Whatever arrives on an authenticated socket (text or binary, valid or not), the socket stays up and
    a valid utterance sent after it is still handled."""
    with tempfile.TemporaryDirectory() as tmp:
        install = RecallInstall(id="ws", webhook_secret_envs=("S",))

        def setup(app: web.Application) -> None:
            recall.setup(app, [install], environ={"S": SECRET})

        async with platform_gateway(Path(tmp), setup) as live:
            sender = RecallSender(live.url, SECRET, live.http)
            assert (await sender.post(participant_event("join", ADA))).status == 200
            await consent(live, recall.PLATFORM, BOT, KEY_ADA)
            ws = await sender.connect()
            for message in messages:
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
            await ws.send_str(json.dumps(transcript_data(ADA, ["still", "here"], start=9999.0)))
            await wait_for(lambda: _has_text(live, "still here"), "the utterance after the fuzzed messages")
            assert not ws.closed
            await ws.close()


async def _has_text(live: LiveGateway, text: str) -> bool:
    await live.settle()
    return any(p["text"] == text for p in forwarded(live))
