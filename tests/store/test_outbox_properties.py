"""Properties of the outbox on both backends, against a model (invariants 4 and 7 at the storage layer).

Any interleaving of writes, consents, withdrawals (with their same-transaction purge), deliveries and claims
leaves exactly the model's content pending: every part still queued is one whose participant had not
withdrawn it for that destination (4), and every part written and neither delivered nor withdrawn is still
there to be claimed (7). The latest-consent view answers like the model's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model import ConsentChoice
from gateway.store import outbox
from gateway.store.base import Store
from gateway.store.outbox import Finished, Lease, OutboxItem, Purge, SealedPart
from tests.strategies import consent_record

PEOPLE = ("p1", "p2", "p3")
DESTINATIONS = {"sum": ("summary",), "train": ("training",), "both": ("summary", "training")}
_examples = itertools.count()

writes = st.tuples(
    st.just("write"),
    st.sampled_from(sorted(DESTINATIONS)),
    st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=3, unique=True),
)
consents = st.tuples(
    st.just("consent"),
    st.sampled_from(PEOPLE),
    st.sampled_from([("summary",), ("training",), ("summary", "training")]),
    st.sampled_from([ConsentChoice.GIVEN, ConsentChoice.WITHDRAWN, ConsentChoice.REFUSED]),
)
deliveries = st.tuples(st.just("deliver"), st.integers(0, 30))
programs = st.lists(st.one_of(writes, writes, consents, deliveries), max_size=25)


@dataclass
class Model:
    pending: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    """item key -> (destination, participants still queued)"""
    order: list[str] = field(default_factory=list)
    choice: dict[tuple[str, str], ConsentChoice] = field(default_factory=dict)


async def _run(store: Store, program: list[tuple[object, ...]]) -> None:
    meeting = f"prop-{next(_examples)}"
    model = Model()
    for n, op in enumerate(program):
        match op:
            case ("write", str(dest), list(people)):
                key = f"{meeting}-k{n}"
                parts = tuple(SealedPart(p, f"s{n}-{p}", "d", f"{key}:{p}".encode()) for p in people)
                item = OutboxItem(key, meeting, dest, "transcript", DESTINATIONS[dest], 1.0, 9e9, parts)
                await store.append_decisions([], [item], Lease("w", 0.0))
                model.pending[key] = (dest, set(people))
                model.order.append(key)
            case ("consent", str(who), tuple(purposes), ConsentChoice() as choice):
                record = consent_record(
                    record_id=f"{meeting}-r{n}",
                    meeting_id=meeting,
                    subject=who,
                    purposes=purposes,
                    choice=choice,
                )
                hit = tuple(d for d, ps in DESTINATIONS.items() if set(ps) & set(purposes))
                restricting = choice is not ConsentChoice.GIVEN
                await store.append_consent(record, Purge(meeting, who, hit) if restricting else None)
                for purpose in purposes:
                    model.choice[(who, purpose)] = choice
                if restricting:
                    for key, (dest, people) in list(model.pending.items()):
                        if dest in hit:
                            people.discard(who)
                            if not people:
                                del model.pending[key]
            case ("deliver", int(pick)) if model.pending:
                key = sorted(model.pending)[pick % len(model.pending)]
                sent = tuple(f"s{key.rsplit('k', 1)[1]}-{p}" for p in sorted(model.pending[key][1]))
                await store.finish_outbox([Finished(key, outbox.DELIVERED, None, 1, 200, sent, 2.0)])
                del model.pending[key]

    claimed = [
        c
        for c in await store.claim_outbox(Lease("c", 0.0), now=float("inf"), limit=1000)
        if c.meeting_id == meeting
    ]
    assert [c.key for c in claimed] == [k for k in model.order if k in model.pending]
    for item in claimed:
        assert {p.participant_id for p in item.parts} == model.pending[item.key][1]
    for who in PEOPLE:
        for purposes in (("summary",), ("training",)):
            expected = model.choice.get((who, purposes[0]), ConsentChoice.GIVEN) is not ConsentChoice.GIVEN
            assert (who in await store.blocked(meeting, [who], purposes)) == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=programs)
async def test_outbox_holds_exactly_what_is_consented_and_undelivered(
    store: Store, program: list[tuple[object, ...]]
) -> None:
    await _run(store, program)
