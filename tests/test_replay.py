"""``consent-gateway replay`` forwards exactly what the live server forwards, and scrubs real transcripts.

A four-person meeting (consent, a refusal, a withdrawal midway, name mentions, chat, a meeting-end
destination) is played through the live server to fake AI services; the events it accepted are then
replayed offline, through ``gateway.replay.replay`` and through the CLI, and the bodies compared per
destination.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.cli import main
from gateway.delivery.items import body
from gateway.names import fold
from gateway.policy.load import load_policy, parse_policy
from gateway.replay import ReplayError, replay
from tests.conftest import require_shared
from tests.web.harness import Dest, chat, consent, event, joined, segment, serving

ADA, BRUNO, WEN, DEE = "p-ada", "p-bruno", "p-wen", "p-dee"
DESTS = (Dest("summariser"), Dest("archive", delivery="meeting_end"))
TIME_DEPENDENT = ("decision_id",)
"""Payload fields that legitimately differ: the decision id hashes the decision time, which is the wall
clock when serving and the event's ``at`` when replaying."""

Bodies = dict[str, list[tuple[str, Any]]]
"""destination -> [(idempotency key, JSON body)] in arrival order."""


def meeting() -> Iterator[dict[str, Any]]:
    """The scripted meeting, one event at a time (each stamped when it is produced)."""
    yield event("meeting.started", title="Launch review")
    for pid, name in ((ADA, "Ada Lovelace"), (BRUNO, "Bruno Díaz"), (WEN, "Wen Li"), (DEE, "Dee Okafor")):
        yield joined(pid, name)
    yield consent(ADA, "given")
    yield consent(BRUNO, "refused")
    yield consent(WEN, "given")
    yield segment("s1", ADA, "Morning. Bruno sent the numbers and Dee will present them.")
    yield segment("s2", BRUNO, "Churn is at four percent; please keep it between us.")
    yield segment("s3", DEE, "Thanks Ada, I'll start once I've clicked the consent link.")
    yield chat("c1", WEN, "Bruno Díaz, can you share the deck?")
    yield consent(DEE, "given")  # within the window: Dee's held s3 is released
    yield segment("s4", WEN, "Ada and Dee, the pricing page looks right to me.")
    yield chat("c2", BRUNO, "Sharing it now.")
    yield consent(WEN, "withdrawn")
    yield segment("s5", WEN, "From here on, keep me out of it.")
    yield segment("s6", DEE, "Noted, Wen. Bruno, thanks for the numbers.")
    yield chat("c3", ADA, "Wen and Bruno: action items to follow.")
    yield event("meeting.ended")


@dataclass(frozen=True)
class LiveRun:
    events_file: Path
    policy_file: Path
    bodies: Bodies


async def _play_live(tmp: Path) -> LiveRun:
    async with serving(tmp, DESTS, window=30.0) as gw:
        for one in meeting():
            await gw.send(one)
            await gw.settle()  # delivery keeps pace with the meeting, as replay assumes
        bodies = {d: [(r.key or "", r.body) for r in fake.accepted()] for d, fake in gw.fakes.items()}
        for fake in gw.fakes.values():
            assert all(r.status == 200 for r in fake.received)
    events_file = tmp / "events.jsonl"
    events_file.write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in gw.sent), encoding="utf-8"
    )
    return LiveRun(events_file, gw.policy_path, bodies)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveRun:
    """The meeting played once through the live server."""
    return asyncio.run(_play_live(tmp_path_factory.mktemp("live")))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # the CLI configures structlog onto the stream pytest captures; later tests must not write to it
    yield
    structlog.reset_defaults()


def comparable(bodies: Bodies) -> Bodies:
    return {dest: [(key, _strip(doc)) for key, doc in items] for dest, items in bodies.items() if items}


def _strip(doc: Any) -> Any:
    if doc.get("type") == "transcript":
        return {**doc, "segments": [_strip(s) for s in doc["segments"]]}
    return {k: v for k, v in doc.items() if k not in TIME_DEPENDENT}


def test_live_run_forwards_what_the_policy_allows(live: LiveRun) -> None:
    """The live run itself: consented words only, the decliner and the withdrawer's later words absent."""
    summariser = [doc for _, doc in live.bodies["summariser"]]
    assert [d["segment_id"] for d in summariser] == ["s1", "c1", "s3", "s4", "s6", "c3"]
    assert (
        summariser[0]["text"]
        == "Morning. [participant 2] sent the numbers and [participant 4] will present them."
    )
    assert summariser[3]["text"] == "Ada and Dee, the pricing page looks right to me."
    assert summariser[5]["text"] == "[participant 3] and [participant 2]: action items to follow."
    ((_, transcript),) = live.bodies["archive"]
    assert [s["segment_id"] for s in transcript["segments"]] == ["s1", "s3", "s6", "c3"]
    everything = json.dumps(live.bodies, ensure_ascii=False)
    for absent in ("Bruno", "Díaz", "Churn", "Sharing it now", "keep me out"):
        assert absent not in everything


async def test_replay_produces_the_live_bodies(live: LiveRun) -> None:
    """``replay`` of the accepted events yields, per destination and in order, the bodies the live
    destinations received (same idempotency keys), differing only in the time-dependent decision id."""
    lines = live.events_file.read_text(encoding="utf-8").splitlines()
    output = await replay(load_policy(live.policy_file), lines)
    replayed: Bodies = {}
    for item in output.items:
        replayed.setdefault(item.destination, []).append(
            (item.idempotency_key, json.loads(body(item, item.parts)))
        )
    assert comparable(replayed) == comparable(live.bodies)
    assert {r.status for r in output.results} == {"accepted"}


def test_cli_replay_writes_the_live_bodies_per_destination(live: LiveRun, tmp_path: Path) -> None:
    """``consent-gateway replay --out DIR`` writes one file per destination holding the live bodies."""
    out = tmp_path / "out"
    code = main(["replay", "--policy", str(live.policy_file), str(live.events_file), "--out", str(out)])
    assert code == 0
    replayed = {
        path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for path in sorted(out.glob("*.jsonl"))
    }
    expected = {dest: [doc for _, doc in items] for dest, items in comparable(live.bodies).items()}
    assert {dest: [_strip(doc) for doc in docs] for dest, docs in replayed.items()} == expected


def test_cli_replay_to_stdout_names_destination_and_key(
    live: LiveRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--out`` the CLI prints one JSON line per request with its destination and idempotency key,
    and a summary on stderr."""
    assert main(["replay", "--policy", str(live.policy_file), str(live.events_file)]) == 0
    captured = capsys.readouterr()
    printed: Bodies = {}
    for line in captured.out.splitlines():
        doc = json.loads(line)
        printed.setdefault(doc["destination"], []).append((doc["idempotency_key"], doc["body"]))
    assert comparable(printed) == comparable(live.bodies)
    assert "requests a destination would receive: 7" in captured.err


def test_cli_replay_names_the_bad_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A replay file with an invalid event exits 1 naming its line and field (not the event's type tag)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(Path("policies/default.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    events = tmp_path / "events.jsonl"
    bad = {**segment("s1", ADA, "x"), "text": 5}
    events.write_text(json.dumps(joined(ADA, "Ada")) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    assert main(["replay", "--policy", str(policy), str(events)]) == 1
    assert "line 3: text:" in capsys.readouterr().err


async def test_replay_rejects_malformed_json_lines() -> None:
    """``replay`` refuses a line that is not JSON (or nests too deep to decode), naming it."""
    policy = load_policy(Path("policies/default.yaml"))
    with pytest.raises(ReplayError, match="line 2: not valid JSON"):
        await replay(policy, [json.dumps(joined(ADA, "Ada")), "{oops"])
    with pytest.raises(ReplayError, match="line 1: not valid JSON"):
        await replay(policy, ["[" * 200_000])


# --- a real meeting from the corpus -------------------------------------------------------------------

CORPUS_POLICY = """\
policy: corpus
purposes:
  summary: {description: Summaries., notice: Sent to the summariser., notice_version: s-1}
destinations:
  - {id: summariser, url: "http://127.0.0.1:9/segments", purposes: [summary]}
  - {id: archive, url: "http://127.0.0.1:9/archive", purposes: [summary], delivery: meeting_end}
"""
T0 = "2026-11-27T09:00:00+00:00"


def _earnings21_meeting(path: Path) -> tuple[dict[str, Any], str]:
    """An Earnings-21 call and a named speaker of several turns (not the first) whose full name the others
    say most often."""
    best: tuple[int, dict[str, Any], str] | None = None
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            names = raw["meta"].get("speaker_names") or {}
            if not raw["meeting_id"].startswith("earnings21/") or len(names) < 3:
                continue
            first = raw["turns"][0]["speaker"]
            for label, name in names.items():
                if label == first or len(name.split()) < 2:
                    continue
                said = sum(t["text"].count(name) for t in raw["turns"] if t["speaker"] != label)
                spoke = sum(1 for t in raw["turns"] if t["speaker"] == label)
                if spoke >= 3 and said and (best is None or said > best[0]):
                    best = (said, raw, label)
    if best is None:
        pytest.skip("no Earnings-21 meeting names one of its speakers in another's words")
    return best[1], best[2]


def _corpus_events(raw: dict[str, Any], decliner: str) -> list[str]:
    names = raw["meta"]["speaker_names"]
    labels = list(dict.fromkeys(t["speaker"] for t in raw["turns"] if t["speaker"]))
    mid = raw["meeting_id"]
    base = {"meeting_id": mid, "at": T0}
    events: list[dict[str, Any]] = [{**base, "type": "meeting.started"}]
    for label in labels:
        pid = f"spk-{label}"
        events.append(
            {
                **base,
                "type": "participant.joined",
                "participant": {"id": pid, "name": names.get(label, label)},
            }
        )
        choice = "refused" if label == decliner else "given"
        events.append({**base, "type": "consent", "participant_id": pid, "purposes": ["summary"],
                       "decision": choice, "indicated_by": pid, "channel": "api"})  # fmt: skip
    for n, turn in enumerate(raw["turns"]):
        pid = f"spk-{turn['speaker']}" if turn["speaker"] else None
        events.append({**base, "type": "segment", "segment_id": f"t{n}", "participant_id": pid,
                       "text": turn["text"], "start": turn["start"], "end": turn["end"]})  # fmt: skip
    events.append({**base, "type": "meeting.ended"})
    return [json.dumps(e, ensure_ascii=False) for e in events]


@pytest.mark.corpus
async def test_replay_of_an_earnings_call_keeps_a_decliner_out() -> None:
    """Replaying a real Earnings-21 call with one named speaker declining: none of their turns' text and
    never their full name reaches any destination, while the others' words do."""
    raw, decliner = _earnings21_meeting(require_shared("corpus/meetings.jsonl.gz"))
    full_name = raw["meta"]["speaker_names"][decliner]
    policy = parse_policy(CORPUS_POLICY.encode(), "corpus.yaml")
    output = await replay(policy, _corpus_events(raw, decliner))
    bodies = [body(item, item.parts).decode() for item in output.items]
    assert bodies, "nothing was forwarded at all"
    assert all(f'"participant_id":"spk-{decliner}"' not in b for b in bodies)
    own_turns = [t["text"].strip() for t in raw["turns"] if t["speaker"] == decliner]
    distinctive = [t for t in own_turns if len(t) >= 40]
    folded = [fold(b)[0].casefold() for b in bodies]
    for text in distinctive:
        assert all(json.dumps(text, ensure_ascii=False)[1:-1] not in b for b in bodies), text[:60]
    assert all(fold(full_name)[0].casefold() not in b for b in folded), full_name
