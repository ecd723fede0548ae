"""``delivery: batched`` through the real server: segments decided one by one, sent several to a request.

DESIGN.md asks that a policy can say how content is delivered: streamed per segment, batched, or at meeting
end. A batched destination's segments are decided exactly as a streamed one's (each against consent as it
stands when it is said, names scrubbed, written to the outbox before the event is acknowledged); delivery then
groups the queued ones. The real app on loopback, on the backend under test, with a fake AI service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.store import outbox as stored
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    MEETING,
    SIGNING_SECRET,
    Dest,
    LiveGateway,
    consent,
    event,
    joined,
    policy_yaml,
    segment,
    serving_policy,
    wait_for,
)

ADA, BO, CY = "p-ada", "p-bo", "p-cy"
DEST = "notes"


def batches(fake: FakeAIService) -> list[list[dict[str, Any]]]:
    """The segments of each batch the destination accepted, in arrival order."""
    return [r.segment_payloads() for r in fake.accepted() if r.body.get("type") == "batch"]


async def some_batches(fake: FakeAIService, count: int) -> list[list[dict[str, Any]]]:
    async def arrived() -> bool:
        return len(batches(fake)) >= count

    await wait_for(arrived, f"{count} batch(es)")
    return batches(fake)


async def segment_rows(gw: LiveGateway) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for who in (ADA, BO, CY):
        for r in await gw.store.outbox_parts(meeting_id=MEETING, participant_id=who):
            found[str(r["segment_id"])] = (who, r["state"], r["sealed"])
    return found


async def test_a_batch_carries_consented_scrubbed_segments_and_nothing_of_a_withdrawal(
    tmp_path: Path,
) -> None:
    """Ada consents and names Cy, who refused; Bo consents, speaks, then withdraws while his segment waits
    for its batch. The meeting's end sends the batch: Ada's words with Cy's name scrubbed, and Bo's too,
    since he withdrew before they left; nothing of Bo's or Cy's own; every segment was in the outbox
    (sealed) while it waited."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="batched", batch_seconds=600),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(
                joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"),
                consent(BO, "given"), joined(CY, "Cy Okafor"), consent(CY, "refused"),
                segment("a1", ADA, "Cy, could you share the figures?"), segment("b1", BO, "Bo speaking."),
                segment("c1", CY, "Cy declines to be recorded."), segment("a2", ADA, "Thanks, Bo."),
            )  # fmt: skip
            assert await segment_rows(gw) == {
                "a1": (ADA, "queued", True),
                "b1": (BO, "queued", True),
                "a2": (ADA, "queued", True),
            }  # c1 was never forwarded, so never stored
            assert fake.received == []  # waiting for company: the window is ten minutes
            await gw.send(consent(BO, "withdrawn"))
            assert (await segment_rows(gw))["b1"] == (BO, "withdrawn", False)
            await gw.send(event("meeting.ended"))
            [batch] = await some_batches(fake, 1)
        assert [p["segment_id"] for p in batch] == ["a1", "a2"]
        assert batch[0]["text"] == "[participant 3], could you share the figures?"
        # Bo consented when it was said, but had withdrawn when it left: scrubbed then (invariant 9)
        assert batch[1]["text"] == "Thanks, [participant 2]."
        assert {p["participant_id"] for p in batch} == {ADA}
        request = fake.accepted()[0]
        assert {p["idempotency_key"] for p in batch}.isdisjoint({request.key})  # each part keeps its own
        assert len(fake.received) == 1


async def test_a_full_batch_goes_at_once_and_each_segment_is_recorded_sent(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml(
            {DEST: fake.url}, (Dest(DEST, delivery="batched", batch_seconds=600, batch_max=3),)
        )
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"))
            await gw.send(*(segment(f"a{n}", ADA, f"Point {n}.") for n in range(4)))
            [batch] = await some_batches(fake, 1)
            assert [p["segment_id"] for p in batch] == ["a0", "a1", "a2"]

            async def recorded() -> bool:
                rows = await segment_rows(gw)
                return [rows[f"a{n}"][1] for n in range(3)] == ["sent"] * 3

            await wait_for(recorded, "the batch's segments recorded as sent")
            assert (await segment_rows(gw))["a3"] == (ADA, "queued", True)  # waits for the next batch
            report = {r["key"]: r for r in await gw.store.outbox_report() if r["kind"] == "segment"}
            keys = {p["idempotency_key"] for p in batch}
            assert {report[k]["status"] for k in keys} == {stored.DELIVERED}


async def test_a_deletion_request_lists_the_keys_each_batched_segment_carried(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        dest = Dest(DEST, delivery="batched", batch_seconds=0, erasure=True)
        text = policy_yaml({DEST: fake.url}, (dest,))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"))
            await gw.send(consent(BO, "given"), segment("a1", ADA, "Ada."), segment("b1", BO, "Bo."))

            async def both() -> bool:
                return sorted(p["segment_id"] for b in batches(fake) for p in b) == ["a1", "b1"]

            await wait_for(both, "both segments")
            bo_keys = {p["idempotency_key"] for b in batches(fake) for p in b if p["participant_id"] == BO}
            await gw.send(consent(BO, "withdrawn"))

            def erasures() -> list[dict[str, Any]]:
                return [r.body for r in fake.accepted() if r.body.get("type") == "erasure"]

            async def requested() -> bool:
                return bool(erasures())

            await wait_for(requested, "the deletion request")
            [request] = erasures()
            assert request["segment_ids"] == ["b1"]
            assert set(request["idempotency_keys"]) == bo_keys


async def test_shutdown_sends_what_waits_for_a_batch(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="batched", batch_seconds=600),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), segment("a1", ADA, "Said."))
            assert fake.received == []
        # the drain on shutdown did not wait out the window
        assert [[p["segment_id"] for p in b] for b in batches(fake)] == [["a1"]]
