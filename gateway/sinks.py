"""Where the shell sends emissions: the delivery dispatcher when serving, a list when replaying.

Both turn an ``Emit`` into the same delivery ``Item``, so what a replay writes is byte for byte the body a
destination would receive.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.delivery.items import Item, Part
from gateway.engine import Emit
from gateway.store.outbox import Lease, OutboxItem


def to_item(emit: Emit) -> Item:
    parts = tuple(Part(emit.meeting_id, p.participant_id, p.segment_id, p.payload) for p in emit.parts)
    return Item(emit.destination, emit.idempotency_key, emit.meeting_id, emit.kind, parts)


class CollectSink:
    """Keeps every emission in order (replay, policy tests). Nothing is queued, so purge has nothing to do."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def stage(self, emits: Sequence[Emit]) -> tuple[Sequence[OutboxItem], Lease | None]:
        return (), None

    def submit(self, emit: Emit) -> None:
        self.items.append(to_item(emit))

    def purge(self, meeting_id: str, participant_id: str) -> None:
        return None

    def pending(self, meeting_id: str) -> bool:
        return False

    async def batched(self, meeting_id: str) -> None:
        return None  # no outbox: the meeting state's own parts are the transcript

    def ended(self, meeting_id: str) -> None:
        return None  # a replay sends each segment as decided: batching is delivery's

    async def claim_held(self, *, everything: bool) -> list[Item]:
        return []  # nothing is stored: a replay's holds live and end in its one run

    async def delivered(
        self, meeting_id: str, participant_id: str, destination: str
    ) -> list[tuple[str, str]]:
        return []  # nothing is really delivered: a replay has nobody to ask for deletion
