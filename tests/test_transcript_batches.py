"""Parts kept for meeting-end transcripts are durable: in the outbox from the moment they are decided.

A ``meeting_end`` destination receives the whole transcript once, when the meeting ends; until then its
consented parts used to live only in the meeting's memory, so a restart (a crash, or a deploy's drain)
lost every consented word of the meeting for that destination (invariant 7). Each such part is now an
outbox item of kind ``batched``, written with the decision that allowed it: never delivered on its own,
purged on withdrawal like any queued part, dropped as ``expired`` past the destination's retention, and
merged into the transcript item by the replica that ends the meeting. The real app on loopback, on the
backend under test; the two-replica case is in ``tests/test_replicas.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gateway.delivery.durable import Outbox
from gateway.sealing import Keyring, new_key_spec
from gateway.store import outbox as stored
from tests.conftest import database_for
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

ADA, BO = "p-ada", "p-bo"
DEST = "summariser"


def transcripts(fake: FakeAIService) -> list[list[dict[str, Any]]]:
    """The segments of each transcript the destination accepted."""
    return [
        r.segment_payloads()
        for r in fake.accepted()
        if isinstance(r.body, dict) and r.body.get("type") == "transcript"
    ]


async def one_transcript(fake: FakeAIService) -> list[dict[str, Any]]:
    async def arrived() -> bool:
        return bool(transcripts(fake))

    await wait_for(arrived, "the meeting-end transcript")
    [transcript] = transcripts(fake)
    return transcript


async def batched_rows(gw: LiveGateway) -> list[dict[str, object]]:
    return [row for row in await gw.store.outbox_report() if row["kind"] == stored.BATCHED]


async def test_consented_parts_for_a_meeting_end_transcript_survive_a_restart(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),))
        url = await database_for(tmp_path)
        keys = (SecretStr(new_key_spec()),)  # the outbox keys outlive the process, as `serve` keeps them
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            await gw.send(
                joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"),
                segment("s1", ADA, "Before the restart, over to Bo."), segment("s2", BO, "Not consented."),
            )  # fmt: skip
            rows = await batched_rows(gw)
            assert [(r["status"], r["sealed_parts"]) for r in rows] == [("pending", 1)]  # s1, sealed
            summary = await gw.store.outbox_summary()  # `outbox status`: waiting for the end, not delivery
            assert [(r["status"], r["items"], r["sealed_parts"]) for r in summary] == [("batched", 1, 1)]
        # the process is gone, and with it the meeting's memory
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            await gw.send(segment("s3", ADA, "After the restart."), event("meeting.ended"))
            transcript = await one_transcript(fake)
            assert [p["segment_id"] for p in transcript] == ["s1", "s3"]
            assert transcript[0]["text"] == "Before the restart, over to [participant 2]."
            # never delivered one by one (recovery does not claim them); merged into the transcript item
            assert len(fake.accepted()) == 1
            rows = await batched_rows(gw)
            assert [(r["status"], r["reason"], r["sealed_parts"]) for r in rows] == [
                ("merged", "meeting_ended", 0),
                ("merged", "meeting_ended", 0),
            ]


async def test_a_withdrawal_purges_the_stored_parts_of_a_meeting_end_transcript(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(
                joined(ADA, "Ada Lovelace"), consent(ADA, "given"), joined(BO, "Bo Nakamura"),
                consent(BO, "given"), segment("a1", ADA, "Ada's first."), segment("b1", BO, "Bo's first."),
                consent(ADA, "withdrawn"),
            )  # fmt: skip
            parts = await gw.store.outbox_parts(meeting_id=MEETING, participant_id=ADA)
            assert [(p["segment_id"], p["state"], p["sealed"]) for p in parts] == [("a1", "withdrawn", False)]
            await gw.send(event("meeting.ended"))
            transcript = await one_transcript(fake)
            assert [p["segment_id"] for p in transcript] == ["b1"]


async def test_stored_parts_of_a_meeting_that_never_ends_expire_with_the_destinations_retention(
    tmp_path: Path,
) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), segment("a1", ADA, "Said."))
            now = Outbox(gw.store, Keyring.generate())
            assert await now.expire_batched() == 0  # within retention
            later = Outbox(gw.store, Keyring.generate(), clock=lambda: 4_000_000_000.0)  # in 2096
            assert await later.expire_batched() == 1
            rows = await batched_rows(gw)
            assert [(r["status"], r["reason"], r["sealed_parts"]) for r in rows] == [
                ("dropped", "expired", 0)
            ]
            await gw.send(event("meeting.ended"))
        assert transcripts(fake) == []  # what expired is not sent


async def test_a_meeting_id_used_again_after_its_end_gets_a_transcript_of_its_own(tmp_path: Path) -> None:
    """A caller may reuse a meeting id (a standing meeting room): the second end's transcript is a new item,
    stored and sent under a key of its own, not taken for a resend of the first (which a destination that
    deduplicates by key would drop)."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), segment("a1", ADA, "First."))
            await gw.send(event("meeting.ended"))
            assert [p["segment_id"] for p in await one_transcript(fake)] == ["a1"]
            await gw.send(event("meeting.started"), segment("a2", ADA, "Second."), event("meeting.ended"))

            async def second() -> bool:
                return len(transcripts(fake)) == 2

            await wait_for(second, "the second transcript")
            first, again = [r for r in fake.accepted() if r.body.get("type") == "transcript"]
            assert [p["segment_id"] for p in again.segment_payloads()] == ["a2"]
            assert again.key != first.key
            items = [r for r in await gw.store.outbox_report() if r["kind"] == "transcript"]
            assert sorted(r["key"] for r in items) == sorted([first.key, again.key])
            assert {r["status"] for r in items} == {stored.DELIVERED}
            await gw.send(event("meeting.ended"))  # a platform resending the end: nothing new to send
            assert len(transcripts(fake)) == 2


async def test_words_released_by_a_consent_after_the_end_get_a_transcript_of_their_own(
    tmp_path: Path,
) -> None:
    """Ada speaks before deciding (held), the meeting ends, and she consents within the pending window: her
    words missed the meeting-end transcript, so the meeting is ended again for them shortly after, and
    they arrive in a transcript of their own instead of waiting in the outbox until they expire."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),), window=60)
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), segment("a1", ADA, "Before deciding."))
            await gw.send(event("meeting.ended"))
            assert transcripts(fake) == []  # nothing consented at the end
            await gw.send(consent(ADA, "given"))
            assert [p["segment_id"] for p in await one_transcript(fake)] == ["a1"]
            assert {r["status"] for r in await batched_rows(gw)} == {"merged"}


async def test_a_segment_arriving_after_the_end_is_sent_in_a_transcript_of_its_own(tmp_path: Path) -> None:
    """A late segment of a consenting speaker (a platform's delivery delayed past the end) goes too."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        text = policy_yaml({DEST: fake.url}, (Dest(DEST, delivery="meeting_end"),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}) as gw:
            await gw.send(joined(ADA, "Ada Lovelace"), consent(ADA, "given"), segment("a1", ADA, "In time."))
            await gw.send(event("meeting.ended"))
            assert [p["segment_id"] for p in await one_transcript(fake)] == ["a1"]
            await gw.send(segment("a2", ADA, "Late."), segment("a3", ADA, "Later."))

            async def second() -> bool:
                return len(transcripts(fake)) == 2

            await wait_for(second, "the late transcript")
            assert [[p["segment_id"] for p in t] for t in transcripts(fake)] == [["a1"], ["a2", "a3"]]
