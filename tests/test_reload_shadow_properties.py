"""Shadow mode as a property: over random meetings, a candidate policy evaluated beside the active one never
changes what is emitted or the real decision log; everything it adds is marked ``shadow`` and differs.

Each example runs the same random meeting (the generator of tests/test_invariants.py) through two
``runtime.Gateway`` instances on real SQLite stores, one with a stricter candidate in shadow and one
without, and compares them.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from gateway.decision_log import decision_to_dict
from gateway.engine import Emit
from gateway.model import Decision
from gateway.runtime import Gateway, PolicySet
from gateway.shadow import Shadow
from gateway.store import open_store
from gateway.store.outbox import Lease, OutboxItem
from tests.conftest import fresh_database
from tests.test_invariants import POLICY_YAML, Restart, _events, _policy, meetings

# The candidate: the streaming destination also needs training consent, and nothing is held.
CANDIDATE = POLICY_YAML.replace("window_seconds: 30", "window_seconds: 0").replace(
    'id: live, url: "http://127.0.0.1:9/x", purposes: [summary]',
    'id: live, url: "http://127.0.0.1:9/x", purposes: [summary, training]',
)


@dataclass
class ListSink:
    emits: list[Emit] = field(default_factory=list)

    def stage(self, emits: Sequence[Emit]) -> tuple[Sequence[OutboxItem], Lease | None]:
        return (), None  # no outbox: what is submitted is observed directly

    def submit(self, emit: Emit) -> None:
        self.emits.append(emit)

    def purge(self, meeting_id: str, participant_id: str) -> None:
        return None

    def pending(self, meeting_id: str) -> bool:
        return False

    async def batched(self, meeting_id: str) -> None:
        return None  # no outbox: the meeting state's own parts are the transcript

    def ended(self, meeting_id: str) -> None:
        return None  # nothing waits for a batch here


async def run(program: list[tuple[Any, ...]], shadow: bool) -> tuple[list[Emit], list[Decision]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database(Path(tmp)) as url:
            store = open_store(url)
            await store.open()
            sink = ListSink()
            counter = iter(range(10**9))
            gateway = Gateway(PolicySet([_policy()]), store, sink, new_id=lambda: f"r{next(counter)}")
            if shadow:
                gateway.shadow = Shadow([_policy(CANDIDATE)])
            for event in _events(program):
                if isinstance(event, Restart):
                    continue  # one process throughout: restarts are test_invariants' concern
                await gateway.handle("generic", event, now=event.at)
                await gateway.tick(event.at)
            decisions = await store.decision_records()
            await store.close()
    return sink.emits, decisions


def test_candidate_differs_from_the_active_policy() -> None:
    """The candidate used below is a different, valid policy."""
    assert _policy(CANDIDATE).revision != _policy().revision
    assert _policy(CANDIDATE).destination("live").purposes == ("summary", "training")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meetings)
def test_shadow_never_changes_emissions_or_real_decisions(program: list[Any]) -> None:
    """With or without a shadow candidate, the same emissions leave and the same real decisions are
    logged; every added record is a shadow decision that differs from the real one for its segment."""
    plain_emits, plain = asyncio.run(run(program, shadow=False))
    shadow_emits, with_shadow = asyncio.run(run(program, shadow=True))
    assert shadow_emits == plain_emits
    real = [decision_to_dict(d) for d in with_shadow if not d.shadow]
    assert real == [decision_to_dict(d) for d in plain]
    by_key: dict[tuple[str, str], Decision] = {}
    for d in plain:  # the decision made when the segment arrived (a hold may be decided again later)
        by_key.setdefault((d.segment_id, d.destination), d)
    for d in (d for d in with_shadow if d.shadow):
        assert d.decision_id.startswith("shadow-")
        active = by_key.get((d.segment_id, d.destination))
        assert active is None or (active.action, active.redactions) != (d.action, d.redactions)
