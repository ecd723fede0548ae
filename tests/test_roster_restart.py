"""A restart does not forget who is in a meeting.

On SQLite the roster used to live in memory only (the stored roster, ``gateway.roster_log``, was for several
replicas on PostgreSQL): after a restart a consenting speaker's words were scrubbed against an empty roster,
so the name of someone who had joined before the restart and never consented went out as said, and an
all-party meeting forwarded while that person was still there. Platforms do not send joins again. The
roster is now stored (sealed) on every store and read back when a meeting is first seen. The real app on
loopback, on the backend under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from gateway.consent import standing
from gateway.consent.standing import StandingSubmitted
from gateway.model import ConsentChoice
from gateway.policy.load import parse_policy
from gateway.sealing import new_key_spec
from gateway.store import open_store
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    INGEST_TOKEN,
    MEETING,
    SIGNING_SECRET,
    Dest,
    LiveGateway,
    consent,
    event,
    joined,
    now_iso,
    policy_yaml,
    segment,
    serving_policy,
    wait_for,
)

ADA, BO = "p-ada", "p-bo"
DEST = "summariser"


async def test_names_and_presence_from_before_a_restart_still_count(tmp_path: Path) -> None:
    async with FakeAIService(SIGNING_SECRET) as fake:
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        for mode in ("per_speaker", "all_party"):
            text = policy_yaml({DEST: fake.url}, (Dest(DEST),), mode=mode)
            m = f"m-{mode}"
            async with serving_policy(
                tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys
            ) as gw:
                await gw.send(joined(ADA, "Ada Lovelace", m), consent(ADA, "given", meeting=m),
                              joined(BO, "Bo Nakamura", m))  # fmt: skip
            # a new process: nothing of the meeting in memory, and no platform sends its joins again
            async with serving_policy(
                tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys
            ) as gw:
                await gw.send(segment("a1", ADA, "Over to Bo Nakamura.", m))
                await gw.settle()

        def said(meeting: str) -> list[str]:
            return [p["text"] for r in fake.accepted() for p in r.segment_payloads()
                    if p.get("meeting_id") == meeting]  # fmt: skip

        # per speaker: Ada's words go, with Bo's name (Bo never consented) scrubbed
        assert said("m-per_speaker") == ["Over to [participant 2]."]
        # all parties: Bo is still there after the restart, so nothing of Ada's may go
        assert said("m-all_party") == []


async def post_standing(gw: LiveGateway, body: dict[str, object]) -> int:
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    async with gw.http.post(f"{gw.url}/v1/standing-consents", json=body, headers=headers) as resp:
        return resp.status


ADA_VERIFIED = {"id": ADA, "name": "Ada Lovelace", "email": "ada@example.org", "email_verified": True}
"""Ada's join, her e-mail vouched for by the platform: it can carry a standing consent."""


def standing_policy(url: str) -> str:
    return policy_yaml({DEST: url}, (Dest(DEST),)).replace(
        "pending:",
        "consent:\n  channels: [api, chat, consent_page, standing]\n"
        "  standing: {allowed: true, max_days: 90}\npending:",
    )


def standing_body(decision: str) -> dict[str, object]:
    """Ada's own standing choice for ``summary``, as the platform posts it."""
    return {"platform": "generic", "email": "ada@example.org", "purposes": ["summary"],
            "decision": decision, "indicated_by": "ada@example.org", "at": now_iso()}  # fmt: skip


async def test_a_standing_withdrawal_after_a_restart_reaches_the_meetings_the_identity_is_in(
    tmp_path: Path,
) -> None:
    """Ada's words flow in a meeting through her standing consent (her e-mail verified on joining). After a
    restart she withdraws it: the new process must know she is in that meeting, or her words keep
    flowing there after the withdrawal was acknowledged."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        text = standing_policy(fake.url)

        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            assert await post_standing(gw, standing_body("given")) == 200
            await gw.send(
                event("participant.joined", participant=ADA_VERIFIED), segment("s1", ADA, "Before.")
            )
            await gw.settle()
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            assert await post_standing(gw, standing_body("withdrawn")) == 200
            await gw.send(segment("s2", ADA, "After the withdrawal."))
            await gw.settle()
            records = [e.record for e in await gw.store.ledger_entries(meeting_id=MEETING)]
        assert [p["segment_id"] for p in fake.segments()] == ["s1"]
        assert [(r.channel, r.choice) for r in records] == [
            ("standing", ConsentChoice.GIVEN),
            ("standing", ConsentChoice.WITHDRAWN),
        ]


async def test_a_standing_withdrawal_recorded_while_nobody_held_the_meeting_applies_when_it_is_read_back(
    tmp_path: Path,
) -> None:
    """The process records Ada's standing withdrawal, then dies before applying it to her meetings (or, on
    PostgreSQL, no replica held her meeting then). The withdrawal is in the ledger; her meeting still says
    given. Read back after the restart, the meeting must apply it before deciding anything, or her words
    flow after a withdrawal the ledger holds (invariant 4)."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        text = standing_policy(fake.url)
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            assert await post_standing(gw, standing_body("given")) == 200
            await gw.send(
                event("participant.joined", participant=ADA_VERIFIED), segment("s1", ADA, "Before.")
            )
            await gw.settle()
        # what the dying process left: the standing withdrawal committed, not yet applied to the meeting
        withdrawal = StandingSubmitted(
            "generic", "ada@example.org", ("summary",), ConsentChoice.WITHDRAWN, "ada@example.org",
            datetime.now(UTC),
        )  # fmt: skip
        store = open_store(url)
        await store.open()
        try:
            policy = parse_policy(text.encode(), "policy.yaml")
            await store.append_consent(standing.evaluate(withdrawal, policy, "standing-withdrawal"))
        finally:
            await store.close()
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            await gw.send(segment("s2", ADA, "After the withdrawal."))
            await gw.settle()
            records = [e.record for e in await gw.store.ledger_entries(meeting_id=MEETING)]
        assert [p["segment_id"] for p in fake.segments()] == ["s1"]
        assert [(r.channel, r.choice, r.evidence) for r in records] == [
            ("standing", ConsentChoice.GIVEN, records[0].evidence),
            ("standing", ConsentChoice.WITHDRAWN, "standing:standing-withdrawal"),
        ]


async def test_words_recovered_after_a_restart_are_scrubbed_against_consent_as_it_then_stands(
    tmp_path: Path,
) -> None:
    """Ada names Wen while Wen consents; the destination is down, so her words wait in the outbox as
    decided (Wen's name in them). Wen withdraws; the process stops. The next process reads the words back
    and may send them before it has loaded the meeting at start: it must hold the meeting first and scrub
    Wen's name, as the process that decided them would have."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        text = policy_yaml({DEST: fake.url}, (Dest(DEST),))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:
            fake.fail_next(1, 503, retry_after=600)
            await gw.send(joined(ADA, "Ada Lovelace"), joined(BO, "Bo Nakamura"))
            await gw.send(consent(ADA, "given"), consent(BO, "given"))
            await gw.send(segment("s1", ADA, "I checked it with Bo Nakamura."))

            async def refused() -> bool:
                return len(fake.received) == 1

            await wait_for(refused, "the refused first attempt")
            await gw.send(consent(BO, "withdrawn"))
        async with serving_policy(tmp_path, text, fakes={DEST: fake}, database=url, outbox_keys=keys) as gw:

            async def arrived() -> bool:
                return bool(fake.accepted())

            await wait_for(arrived, "the recovered segment")
        assert [p["text"] for p in fake.segments()] == ["I checked it with [participant 2]."]


async def test_queued_content_of_a_meeting_no_policy_covers_after_a_restart_is_not_sent(
    tmp_path: Path,
) -> None:
    """Ada's segment is queued while the destination is down. The operator narrows the policy's
    ``applies_to`` so it no longer covers the meeting, and restarts: nothing of the meeting may leave now
    (as after a live reload), and it does not, though the stored consent still says given. Her withdrawal,
    which no policy governs, is recorded all the same (every channel can withdraw)."""
    async with FakeAIService(SIGNING_SECRET) as fake:
        keys = (SecretStr(new_key_spec()),)
        url = await database_for(tmp_path)
        base = policy_yaml({DEST: fake.url}, (Dest(DEST),))
        covering = base.replace("mode: per_speaker", "mode: per_speaker\napplies_to: {meetings: ['m-*']}")
        narrowed = base.replace("mode: per_speaker", "mode: per_speaker\napplies_to: {meetings: ['team-*']}")
        assert covering != base and MEETING.startswith("m-")
        fake.fail_next(1000, 503)
        async with serving_policy(
            tmp_path, covering, fakes={DEST: fake}, database=url, outbox_keys=keys
        ) as gw:
            await gw.send(
                joined(ADA, "Ada Lovelace"), consent(ADA, "given"), segment("s1", ADA, "Ada's words.")
            )

            async def tried() -> bool:
                return len(fake.received) >= 1

            await wait_for(tried, "a first (failed) attempt")
        fake.recover()
        async with serving_policy(
            tmp_path, narrowed, fakes={DEST: fake}, database=url, outbox_keys=keys
        ) as gw:
            [withdrawal] = await gw.send(consent(ADA, "withdrawn"))
            assert withdrawal["status"] == "accepted"

            async def dropped() -> bool:
                return [r["status"] for r in await gw.store.outbox_report()] == ["dropped"]

            await wait_for(dropped, "the queued item to be dropped")
        assert fake.accepted() == []
