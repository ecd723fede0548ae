"""A restart does not forget who is in a meeting.

On SQLite the roster used to live in memory only (the stored roster, ``gateway.roster_log``, was for several
replicas on PostgreSQL): after a restart a consenting speaker's words were scrubbed against an empty roster,
so the name of someone who had joined before the restart and never consented went out as said, and an
all-party meeting forwarded while that person was still there. Platforms do not send joins again. The
roster is now stored (sealed) on every store and read back when a meeting is first seen. The real app on
loopback, on the backend under test.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from gateway.sealing import new_key_spec
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import (
    SIGNING_SECRET,
    Dest,
    consent,
    joined,
    policy_yaml,
    segment,
    serving_policy,
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
