"""A real meeting through Zoom's wire format forwards what the same meeting forwards through the generic API.

An Earnings-21 call from ../shared/corpus is played twice. Through Zoom: signed webhooks to a live gateway
(start, joins, chat consent commands, end), then ``recording.transcript_completed`` and a VTT file served
by the fake Zoom, whose ``Name: `` prefixes the adapter attributes by the roster; and again as RTMS
transcript frames. Through the generic API: the same meeting as generic events, replayed offline with
``gateway.replay``. One speaker opts out. What the destination receives must be the same: the same segments,
speakers and (scrubbed) texts.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.load import load_policy
from gateway.replay import replay
from tests.conftest import require_shared
from tests.fakes.zoom import chat_event, meeting_event, participant_event, transcript_completed
from tests.fakes.zoom_rtms import FakeRtms, transcript_frame
from tests.platforms.zoom_support import CLIENT_ID, CLIENT_SECRET, UUID, ZoomRig, texts, zoom_gateway
from tests.web.harness import wait_for

MAX_TURNS = 150
T0 = "2026-11-27T08:00:00+00:00"
TOKEN = "corpus-download-token"
Row = tuple[str, str | None, str]


@dataclass(frozen=True)
class Meeting:
    names: dict[str, str]
    """participant id -> display name"""
    turns: list[tuple[str, str]]
    """(participant id, text with whitespace normalised) in order"""
    decliner: str


def _meeting() -> Meeting:
    """The first Earnings-21 call with at least three distinctly named speakers; its second most frequent
    speaker declines."""
    path = require_shared("corpus/meetings.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            names = raw["meta"].get("speaker_names") or {}
            if not raw["meeting_id"].startswith("earnings21/") or len(set(names.values())) != len(names) >= 3:
                continue
            turns = []
            for turn in raw["turns"]:
                text = " ".join(turn["text"].split())
                if turn["speaker"] in names and text and "-->" not in text:
                    turns.append((f"{1000 + list(names).index(turn['speaker'])}", text))
            turns = turns[:MAX_TURNS]
            by_count = sorted({p for p, _ in turns}, key=lambda p: -sum(1 for q, _ in turns if q == p))
            if len(by_count) < 3:
                continue
            ids = {f"{1000 + i}": names[label] for i, label in enumerate(names)}
            return Meeting({p: ids[p] for p in by_count}, turns, by_count[1])
    pytest.skip("no suitable Earnings-21 call in the corpus")


def _command(meeting: Meeting, pid: str) -> str:
    return "/optout" if pid == meeting.decliner else "/consent summary"


def _generic_lines(meeting: Meeting, segment_id: str) -> list[str]:
    base = {"meeting_id": UUID, "at": T0}
    events: list[dict[str, Any]] = [{**base, "type": "meeting.started"}]
    for pid, name in meeting.names.items():
        events.append({**base, "type": "participant.joined", "participant": {"id": pid, "name": name}})
        events.append({**base, "type": "chat.message", "message_id": f"c-{pid}", "participant_id": pid,
                       "text": _command(meeting, pid)})  # fmt: skip
    events.append({**base, "type": "meeting.ended"})
    for n, (pid, text) in enumerate(meeting.turns, 1):
        events.append({**base, "type": "segment", "segment_id": segment_id.format(n=n), "participant_id": pid,
                       "text": text})  # fmt: skip
    return [json.dumps(e, ensure_ascii=False) for e in events]


async def _generic_rows(rig: ZoomRig, meeting: Meeting, segment_id: str) -> list[Row]:
    output = await replay(load_policy(rig.gw.policy_path), _generic_lines(meeting, segment_id))
    rows = [(p.segment_id, p.participant_id, str(p.payload["text"])) for i in output.items for p in i.parts]
    return sorted(rows)


def _vtt(meeting: Meeting) -> str:
    """Zoom's transcript format; cue text escapes ``&`` and ``<`` as WebVTT requires."""
    lines = ["WEBVTT", ""]
    for n, (pid, text) in enumerate(meeting.turns, 1):
        cue = html.escape(f"{meeting.names[pid]}: {text}", quote=False)
        lines += [str(n), f"{_stamp(n * 2.0)} --> {_stamp(n * 2.0 + 1.5)}", cue, ""]
    return "\n".join(lines)


def _stamp(seconds: float) -> str:
    whole, ms = int(seconds), round((seconds - int(seconds)) * 1000)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{ms:03d}"


async def _zoom_meeting(rig: ZoomRig, meeting: Meeting) -> None:
    await rig.accept(meeting_event("meeting.started", UUID, ts=1))
    for pid, name in meeting.names.items():
        await rig.accept(participant_event("meeting.participant_joined", UUID, pid, name, ts=2))
        await rig.accept(chat_event(UUID, pid, f"c-{pid}", _command(meeting, pid), ts=3))


def _live_rows(rig: ZoomRig) -> list[Row]:
    return sorted((s["segment_id"], s["participant_id"], s["text"]) for s in rig.gw.fake.segments())


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ZoomRig]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig:
        yield rig


@pytest.mark.corpus
async def test_corpus_meeting_via_zoom_vtt_forwards_what_the_generic_api_does(rig: ZoomRig) -> None:
    """The call's VTT transcript through the Zoom adapter yields the generic API's forwarded segments."""
    meeting = _meeting()
    await _zoom_meeting(rig, meeting)
    await rig.accept(meeting_event("meeting.ended", UUID, ts=4))
    url = rig.zoom.add_transcript("corpus", _vtt(meeting), TOKEN)
    await rig.accept(transcript_completed(UUID, url, TOKEN, ts=5))

    async def applied() -> bool:
        return bool(rig.zoom.downloads) and not rig.service.tasks

    await wait_for(applied, "the transcript to be applied")
    await rig.gw.settle()
    expected = await _generic_rows(rig, meeting, f"{UUID}/vtt/f-tr/{{n}}")
    assert expected, "nothing forwarded at all"
    assert all(pid != meeting.decliner for _, pid, _ in expected)
    assert _live_rows(rig) == expected


@pytest.mark.corpus
async def test_corpus_meeting_via_rtms_frames_forwards_what_the_generic_api_does(rig: ZoomRig) -> None:
    """The call's turns as RTMS transcript frames yield the generic API's forwarded segments."""
    meeting = _meeting()
    await _zoom_meeting(rig, meeting)
    async with FakeRtms(CLIENT_ID, CLIENT_SECRET) as fake:
        started = {"event": "meeting.rtms_started", "event_ts": 6, "payload": {
            "meeting_uuid": UUID, "rtms_stream_id": "corpus-stream", "server_urls": fake.url}}  # fmt: skip
        await rig.accept(started)

        async def ready() -> bool:
            return fake.ready_count() == 1

        await wait_for(ready, "the RTMS stream")
        for n, (pid, text) in enumerate(meeting.turns, 1):
            await fake.send_media(transcript_frame(int(pid), meeting.names[pid], text, n, 1795852800000 + n))
        count = len(meeting.turns)

        async def all_decided() -> bool:
            ids = {d.segment_id for d in await rig.gw.decisions()}
            return f"{UUID}/rtms/{count}/rev1" in ids

        await wait_for(all_decided, "every frame to be decided", limit=30)
    await rig.gw.settle()
    expected = await _generic_rows(rig, meeting, f"{UUID}/rtms/{{n}}/rev1")
    assert expected and _live_rows(rig) == expected
    assert len(texts(rig.gw)) == len(expected)
