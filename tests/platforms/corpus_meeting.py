"""One real meeting from ../shared/corpus, as the generic API would carry it, and what the gateway forwards.

The adapters' corpus tests replay the same meeting through a platform's wire format and compare what the
destinations receive with what ``gateway.replay`` forwards for the generic-API version. Forwarded content is
compared as (speaker label, kind, text) triples: ids and timings are platform-specific by design. Turn text is
whitespace-normalised first, because word-based formats (Recall's ``words``) and VTT cues cannot carry
runs of spaces.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.delivery.items import body
from gateway.policy.load import parse_policy
from gateway.replay import replay
from tests.conftest import require_shared
from tests.web.harness import Dest, policy_yaml

MEETING_ID = "qmsum/product/ES2002a"
DECLINER = "Marketing"
T0 = "2026-11-27T09:00:00+00:00"
Content = Counter[tuple[str | None, str, str]]


@dataclass(frozen=True)
class Meeting:
    labels: tuple[str, ...]
    """Speakers in order of first turn: the join order everywhere."""
    turns: tuple[tuple[str, str], ...]
    """(speaker label or "" when the source has none, normalised non-empty text)."""

    def consenting(self) -> list[str]:
        return [label for label in self.labels if label != DECLINER]


def load() -> Meeting:
    path = require_shared("corpus/meetings.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        raw = next(json.loads(line) for line in fh if json.loads(line)["meeting_id"] == MEETING_ID)
    turns = tuple((t["speaker"], " ".join(t["text"].split())) for t in raw["turns"] if t["text"].split())
    labels = tuple(dict.fromkeys(label for label, _ in turns if label))
    assert DECLINER in labels
    return Meeting(labels, turns)


def policy_text() -> str:
    return policy_yaml({"summariser": "http://127.0.0.1:9/segments"}, [Dest("summariser")])


def generic_events(meeting: Meeting) -> list[str]:
    base = {"meeting_id": "generic-meeting", "at": T0}
    events: list[dict[str, Any]] = [{**base, "type": "meeting.started"}]
    for label in meeting.labels:
        pid = f"spk-{label}"
        events.append({**base, "type": "participant.joined", "participant": {"id": pid, "name": label}})
        choice = "refused" if label == DECLINER else "given"
        events.append({**base, "type": "consent", "participant_id": pid, "purposes": ["summary"],
                       "decision": choice, "indicated_by": pid, "channel": "api"})  # fmt: skip
    for n, (label, text) in enumerate(meeting.turns):
        pid = f"spk-{label}" if label else None
        events.append({**base, "type": "segment", "segment_id": f"t{n}", "participant_id": pid, "text": text})
    return [json.dumps(e, ensure_ascii=False) for e in events]


async def generic_content(meeting: Meeting) -> Content:
    """What the generic API's version of the meeting forwards (``gateway.replay``)."""
    policy = parse_policy(policy_text().encode(), "corpus.yaml")
    output = await replay(policy, generic_events(meeting))
    payloads: list[dict[str, Any]] = []
    for item in output.items:
        doc = json.loads(body(item, item.parts))
        payloads += [doc] if doc.get("type") == "segment" else doc.get("segments", [])
    return content(payloads, lambda pid: pid.removeprefix("spk-"))


def content(payloads: Iterable[Mapping[str, Any]], label_of: Callable[[str], str | None]) -> Content:
    return Counter((label_of(p["participant_id"]), p["kind"], p["text"]) for p in payloads)
