"""Consent channels through the real server: the integration API's rules, standing consent, chat commands,
withdrawal and asking again after a policy reload. Real aiohttp app on loopback, real SQLite, fake AI
services; notices the gateway hands on are collected beside the app's own notifier."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Action, ConsentChoice, RecordOutcome
from gateway.notify import Notice
from gateway.reload import POLICIES
from gateway.web.keys import GATEWAY
from tests.web.harness import (
    INGEST_TOKEN,
    PROBLEM_JSON,
    Dest,
    LiveGateway,
    chat,
    consent,
    event,
    joined,
    now_iso,
    segment,
    serving,
    signed_headers,
    wait_for,
)

TWO = (Dest("summariser", ("summary",)), Dest("trainer", ("summary", "training")))


class Watched:
    """A live gateway plus every notice it handed on (also passed to the app's own notifier)."""

    def __init__(self, live: LiveGateway) -> None:
        self.live = live
        self.notices: list[Notice] = []
        gateway = live.app[GATEWAY]
        forward = gateway.notify

        def notify(notice: Notice) -> None:
            self.notices.append(notice)
            forward(notice)

        gateway.notify = notify

    def reload(self, old: str, new: str) -> None:
        """Edit the served policy file and reload it the way SIGHUP or the admin API does."""
        text = self.live.policy_path.read_text()
        assert old in text
        self.live.policy_path.write_text(text.replace(old, new, 1))
        outcome = self.live.app[POLICIES].reload(self.live.app[GATEWAY])
        assert outcome.ok, outcome.errors

    def received(self, dest: str = "summariser") -> list[str]:
        fake = self.live.fakes[dest]
        return [p["segment_id"] for r in fake.received if r.ok for p in r.segment_payloads()]

    def of(self, pid: str, kind: str) -> list[Notice]:
        return [n for n in self.notices if n.participant_id == pid and n.kind == kind]


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    """One stream destination for summary; unknown speakers dropped at once."""
    async with serving(tmp_path) as live:
        yield Watched(live)


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Watched]:
    """Two stream destinations (summary; summary+training) and a 30 s pending window."""
    async with serving(tmp_path, TWO, window=30) as live:
        yield Watched(live)


# --- who indicated it -----------------------------------------------------------------------------------


async def test_the_ledger_names_the_bearer_credential(watched: Watched) -> None:
    """A consent posted with the ingest token records `api:bearer` as evidence, keeping the body's own."""
    body = {**consent("p1", "given"), "evidence": "ticket-7"}
    await watched.live.send(joined("p1", "Ada"), body)
    (entry,) = await watched.live.ledger()
    assert entry.record.evidence == "api:bearer;ticket-7"
    assert entry.record.indicated_by == "p1"


async def test_the_ledger_names_the_signed_delivery(watched: Watched) -> None:
    """A consent delivered with a Standard Webhooks signature records the delivery id as the caller."""
    raw = json.dumps(consent("p1", "given")).encode()
    reply = await watched.live.post_raw(raw, signed_headers(raw, "msg_42"), auth=False)
    assert reply.status == 200
    (entry,) = await watched.live.ledger()
    assert entry.record.evidence == "api:webhook:msg_42"


async def test_the_ledger_names_the_caller_on_the_stream_too(watched: Watched) -> None:
    """A consent sent over the WebSocket stream records the credential that opened the stream."""
    live = watched.live
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    async with live.http.ws_connect(f"{live.url}/v1/stream", headers=headers) as ws:
        await ws.send_json(consent("p1", "given"))
        reply = await ws.receive_json()
    assert reply["results"][0]["status"] == "accepted"
    (entry,) = await live.ledger()
    assert entry.record.evidence == "api:bearer"


async def test_a_host_cannot_consent_for_someone_else(watched: Watched) -> None:
    """Consent indicated by a host credential for another participant: 403, recorded as rejected, and
    nothing of that participant is forwarded."""
    live = watched.live
    await live.send(joined("p-host", "Hal"), joined("p-dee", "Dee"))
    reply = await live.post(consent("p-dee", "given", by="p-host"))
    assert reply.status == 403 and reply.content_type == PROBLEM_JSON
    assert reply.doc["detail"] == "indicated_by_other"
    (entry,) = await live.ledger()
    assert entry.record.record_id == reply.doc["record_id"]
    assert (entry.record.outcome, entry.record.indicated_by) == (RecordOutcome.REJECTED, "p-host")
    assert entry.record.evidence == "api:bearer"
    await live.send(segment("s1", "p-dee", "I never agreed"))
    await live.settle()
    assert watched.received() == []


async def test_a_delegation_the_policy_allows_is_accepted_and_named(watched: Watched) -> None:
    """With a `guardian` delegation in the reloaded policy, a guardian's consent is accepted and names it."""
    live = watched.live
    watched.reload("pending:", "consent:\n  delegations: [{name: guardian, channels: [api]}]\npending:")
    await live.send(joined("p-kid", "Kim"))
    body = {**consent("p-kid", "given", by="p-parent"), "delegation": "guardian"}
    await live.send(body, segment("s1", "p-kid", "hello"))
    await live.settle()
    (entry,) = await live.ledger()
    assert (entry.record.delegation, entry.record.outcome) == ("guardian", RecordOutcome.ACCEPTED)
    assert watched.received() == ["s1"]


async def test_a_delegation_through_a_channel_it_does_not_cover_is_refused(watched: Watched) -> None:
    """A guardian delegation limited to the consent page does not let an API call consent for the child."""
    live = watched.live
    watched.reload(
        "pending:",
        "consent:\n  delegations: [{name: guardian, channels: [consent_page]}]\npending:",
    )
    await live.send(joined("p-kid", "Kim"))
    reply = await live.post({**consent("p-kid", "given", by="p-parent"), "delegation": "guardian"})
    assert reply.status == 403
    await live.send(segment("s1", "p-kid", "hello"))
    await live.settle()
    assert watched.received() == []


# --- withdrawal -----------------------------------------------------------------------------------------


async def test_withdrawal_purges_held_segments_and_stops_everything_after(two: Watched) -> None:
    """Held words of the withdrawer are purged at once and never released; later words go nowhere."""
    live = two.live
    await live.send(joined("p1", "Ada"), consent("p1", "given"), segment("s1", "p1", "first"))

    async def summarised() -> bool:
        return two.received() == ["s1"]

    await wait_for(summarised, "s1 at the summariser")
    await live.send(consent("p1", "withdrawn"))
    await live.send(consent("p1", "given", ["training"]), segment("s2", "p1", "second"))
    await live.settle()
    decisions = [(d.segment_id, d.destination, d.action, d.reasons) for d in await live.decisions()]
    assert ("s1", "trainer", Action.DROP, ("purged_consent_changed",)) in decisions
    assert two.received("summariser") == ["s1"]
    assert two.received("trainer") == []


# --- chat commands --------------------------------------------------------------------------------------


async def test_a_chat_command_through_the_api(watched: Watched) -> None:
    """`chat.message` `/consent summary` records the sender's consent, is never forwarded, gets a reply."""
    live = watched.live
    await live.send(joined("p1", "Ada"))
    (result,) = await live.send(chat("c1", "p1", "/consent summary"))
    assert result["status"] == "accepted" and result["reason"] == "consent_command"
    await live.send(chat("c2", "p1", "yes"), segment("s1", "p1", "hello"))
    await live.settle()
    assert watched.received() == ["c2", "s1"]
    (entry,) = await live.ledger()
    assert (entry.record.channel, entry.record.evidence) == ("chat", "chat:c1")
    (reply,) = watched.of("p1", "chat_reply")
    assert reply.data["in_reply_to"] == "c1"


# --- asking again ---------------------------------------------------------------------------------------


async def test_a_destination_whose_purposes_grew_stops_and_asks(watched: Watched) -> None:
    """After a reload adds a purpose to a destination, consent to the old purposes no longer covers it, and
    present participants are asked about the new purpose."""
    live = watched.live
    await live.send(joined("p1", "Ada"), joined("p2", "Bob"), consent("p1", "given"))
    await live.send(consent("p2", "given", ["summary", "training"]), segment("s1", "p1", "before"))
    # delivered before the reload: delivery asks the live policy, so s1 still queued then would be held back
    await live.settle()
    watched.reload("purposes: [summary]", "purposes: [summary, training]")
    await live.send(segment("s2", "p1", "after"), segment("s3", "p2", "covered"))
    await live.settle()
    assert watched.received() == ["s1", "s3"]
    (ask,) = [n for n in watched.of("p1", "consent_request") if n.data.get("reason") == "new_purpose"]
    assert ask.data["new_purposes"] == ["training"]
    assert not [n for n in watched.of("p2", "consent_request") if n.data.get("reason") == "new_purpose"]
    await live.send(consent("p1", "given", ["training"]), segment("s4", "p1", "now covered"))
    await live.settle()
    assert watched.received() == ["s1", "s3", "s4"]


async def test_a_reload_asks_without_waiting_for_the_next_event(watched: Watched) -> None:
    """Present participants are asked about a newly needed purpose even if the meeting stays silent."""
    await watched.live.send(joined("p1", "Ada"), consent("p1", "given"))
    watched.reload("purposes: [summary]", "purposes: [summary, training]")

    async def asked() -> bool:
        return any(n.data.get("reason") == "new_purpose" for n in watched.of("p1", "consent_request"))

    await wait_for(asked, "a new_purpose consent request to p1")


async def test_a_late_joiner_is_asked_and_not_assumed(watched: Watched) -> None:
    """Someone joining after everyone else consented gets their own request, and their words wait for it."""
    live = watched.live
    await live.send(joined("p1", "Ada"), consent("p1", "given"), segment("s1", "p1", "early"))
    await live.send(joined("p9", "Late"), segment("s2", "p9", "late words"))
    await live.settle()
    assert watched.received() == ["s1"]
    assert len(watched.of("p9", "consent_request")) == 1
    assert [e.record.subject for e in await live.ledger()] == ["p1"]


# --- standing consent -----------------------------------------------------------------------------------


def standing_body(decision: str, **over: Any) -> dict[str, Any]:
    return {
        "platform": "generic",
        "email": "ada@example.org",
        "purposes": ["summary"],
        "decision": decision,
        "indicated_by": "ada@example.org",
        "at": now_iso(),
        **over,
    }


async def post_standing(live: LiveGateway, body: Any, *, auth: bool = True) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"} if auth else {}
    data = json.dumps(body).encode()
    async with live.http.post(f"{live.url}/v1/standing-consents", data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def allow_standing(watched: Watched) -> None:
    watched.reload(
        "pending:",
        "consent:\n  channels: [api, chat, consent_page, standing]\n"
        "  standing: {allowed: true, max_days: 90}\npending:",
    )


async def test_standing_consent_is_refused_where_the_policy_does_not_allow_it(watched: Watched) -> None:
    """Under the default channels, a standing consent is recorded as rejected and answered 403."""
    status, doc = await post_standing(watched.live, standing_body("given"))
    assert (status, doc["detail"]) == (403, "channel_not_allowed")
    (entry,) = await watched.live.ledger()
    assert entry.record.outcome is RecordOutcome.REJECTED and entry.record.evidence == "api:bearer"


async def test_standing_consent_across_meetings_until_withdrawn(watched: Watched) -> None:
    """A standing consent lets a verified joiner's words flow in any meeting; withdrawing it stops them at
    once in the meeting they are in."""
    live = watched.live
    allow_standing(watched)
    status, doc = await post_standing(live, standing_body("given"))
    assert status == 200 and doc["status"] == "accepted"
    verified = {"id": "p-ada", "name": "Ada", "email": "ADA@example.org", "email_verified": True}
    await live.send(event("participant.joined", "m-a", participant=verified))
    await live.send(segment("s1", "p-ada", "one", meeting="m-a"))
    unverified = {**verified, "id": "p-ada-2", "email_verified": False}
    await live.send(event("participant.joined", "m-b", participant=unverified))
    await live.send(segment("s2", "p-ada-2", "two", meeting="m-b"))
    status, _ = await post_standing(live, standing_body("withdrawn"))
    assert status == 200
    await live.send(segment("s3", "p-ada", "three", meeting="m-a"))
    await live.settle()
    assert watched.received() == ["s1"]
    meeting_a = [e.record for e in await live.store.ledger_entries(meeting_id="m-a")]
    assert [(r.channel, r.choice) for r in meeting_a] == [
        ("standing", ConsentChoice.GIVEN),
        ("standing", ConsentChoice.WITHDRAWN),
    ]
    assert meeting_a[0].evidence == f"standing:{doc['record_id']}"


async def test_a_standing_withdrawal_is_recorded_where_no_policy_covers_standing_consent(
    watched: Watched,
) -> None:
    """A reload narrows ``applies_to`` to the team's meetings, so no policy covers standing consent any more:
    a withdrawal is recorded all the same (a consent to give is not), it withdraws in the meeting Ada is
    in at once, and her earlier standing consent derives nothing in a team meeting she joins after."""
    live = watched.live
    allow_standing(watched)
    assert (await post_standing(live, standing_body("given")))[0] == 200
    ada = {"id": "p-ada", "name": "Ada", "email": "ada@example.org", "email_verified": True}
    await live.send(event("participant.joined", "team-1", participant=ada))
    await live.send(segment("s1", "p-ada", "one", meeting="team-1"))
    await live.settle()
    watched.reload("pending:", "applies_to: {meetings: ['team-*']}\npending:")
    status, doc = await post_standing(live, standing_body("withdrawn"))
    assert (status, doc["status"]) == (200, "accepted")
    status, doc = await post_standing(live, standing_body("given"))
    assert (status, doc["type"].rsplit("/", 1)[-1]) == (409, "no-policy")  # nothing to check a yes against
    await live.send(segment("s2", "p-ada", "two", meeting="team-1"))
    await live.send(event("participant.joined", "team-2", participant=ada))
    await live.send(segment("s3", "p-ada", "three", meeting="team-2"))
    await live.settle()
    assert watched.received() == ["s1"]
    standing_records = [e.record for e in await live.store.ledger_entries(meeting_id="*standing*")]
    assert [(r.choice, r.outcome, r.policy_revision) for r in standing_records][-1] == (
        ConsentChoice.WITHDRAWN,
        RecordOutcome.ACCEPTED,
        "none",
    )


async def test_standing_consent_bad_input_changes_nothing(watched: Watched) -> None:
    """A body missing a field is 400 naming it; no credentials is 401; neither records anything."""
    body = standing_body("given")
    del body["email"]
    status, doc = await post_standing(watched.live, body)
    assert status == 400 and doc["errors"][0]["field"] == "email"
    # a time whose expiry would overflow the calendar is refused at the door, not a 500 later
    status, doc = await post_standing(
        watched.live, {**standing_body("given"), "at": "9999-12-01T00:00:00+00:00"}
    )
    assert status == 400 and doc["errors"][0]["field"] == "at"
    status, _ = await post_standing(watched.live, standing_body("given"), auth=False)
    assert status == 401
    assert await watched.live.ledger() == []
