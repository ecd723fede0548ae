"""The bad-input contract of ``POST /v1/events`` and ``GET /v1/stream``, through the real server.

Every refused request (401, 409, 400, 413) must leave no ledger row, no decision and nothing delivered, so
the bodies refused here are ones that *would* write all three if accepted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from gateway.model import RecordOutcome
from gateway.sealing import new_key_spec
from gateway.web.keys import AUTH
from gateway.web.replays import Replays
from tests.web.harness import (
    INGEST_TOKEN,
    MEETING,
    PROBLEM_JSON,
    LiveGateway,
    consent,
    event,
    joined,
    now_iso,
    segment,
    serving,
    signed_headers,
)


def consenting_batch(sid: str = "s1") -> dict[str, Any]:
    """A batch that, accepted, records a consent, decides a segment and forwards it."""
    return {"events": [joined("p-ada", "Ada Lovelace"), consent("p-ada", "given"),
                       segment(sid, "p-ada", "Hello everyone.")]}  # fmt: skip


def body_of(doc: Any) -> bytes:
    return json.dumps(doc).encode()


async def assert_nothing_stored(gw: LiveGateway) -> None:
    await gw.settle()
    assert await gw.ledger() == []
    assert await gw.decisions() == []
    assert gw.fake.received == []


def assert_problem(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.content_type == PROBLEM_JSON
    assert reply.doc["status"] == status
    return reply.doc  # type: ignore[no-any-return]


# --- authentication ------------------------------------------------------------------------------------


async def test_missing_credentials_is_401(gateway: LiveGateway) -> None:
    """A request with neither a bearer token nor a signature is refused with 401 and stores nothing."""
    reply = await gateway.post_raw(body_of(consenting_batch()), auth=False)
    assert assert_problem(reply, 401)["detail"] == "missing_credentials"
    await assert_nothing_stored(gateway)


async def test_wrong_bearer_is_401(gateway: LiveGateway) -> None:
    """A wrong bearer token is refused with 401 and stores nothing."""
    reply = await gateway.post_raw(body_of(consenting_batch()), {"Authorization": "Bearer nope"})
    assert assert_problem(reply, 401)["detail"] == "bad_token"
    await assert_nothing_stored(gateway)


async def test_bad_signature_is_401(gateway: LiveGateway) -> None:
    """A Standard Webhooks signature over different bytes is refused with 401 and stores nothing."""
    body = body_of(consenting_batch())
    headers = signed_headers(body + b" ", "msg-1")
    reply = await gateway.post_raw(body, headers, auth=False)
    assert assert_problem(reply, 401)["detail"] == "bad_signature"
    await assert_nothing_stored(gateway)


async def test_signature_with_another_secret_is_401(gateway: LiveGateway) -> None:
    """A signature made with a secret the gateway does not hold is refused with 401."""
    body = body_of(consenting_batch())
    other = "whsec_" + "A" * 43 + "="
    reply = await gateway.post_raw(body, signed_headers(body, "msg-1", secret=other), auth=False)
    assert assert_problem(reply, 401)["detail"] == "bad_signature"
    await assert_nothing_stored(gateway)


async def test_stale_signature_is_401(gateway: LiveGateway) -> None:
    """A correctly signed delivery whose timestamp is ten minutes old is refused with 401."""
    body = body_of(consenting_batch())
    headers = signed_headers(body, "msg-1", timestamp=int(time.time()) - 600)
    reply = await gateway.post_raw(body, headers, auth=False)
    assert assert_problem(reply, 401)["detail"] == "stale_timestamp"
    await assert_nothing_stored(gateway)


async def test_valid_signature_is_accepted(gateway: LiveGateway) -> None:
    """A delivery signed with the configured webhook secret is accepted without a bearer token."""
    body = body_of(consenting_batch())
    reply = await gateway.post_raw(body, signed_headers(body, "msg-1"), auth=False)
    assert reply.status == 200
    assert [r["status"] for r in reply.doc["results"]] == ["accepted"] * 3
    await gateway.settle()
    assert len(await gateway.ledger()) == 1
    assert [p["segment_id"] for p in gateway.fake.segments()] == ["s1"]


async def test_replayed_webhook_id_is_409(gateway: LiveGateway) -> None:
    """A second delivery with an accepted webhook-id is refused with 409 and changes nothing."""
    first = body_of(consenting_batch("s1"))
    assert (await gateway.post_raw(first, signed_headers(first, "msg-1"), auth=False)).status == 200
    await gateway.settle()
    ledger, decisions, received = (
        await gateway.ledger(),
        await gateway.decisions(),
        len(gateway.fake.received),
    )
    again = body_of(consenting_batch("s2"))
    reply = await gateway.post_raw(again, signed_headers(again, "msg-1"), auth=False)
    assert_problem(reply, 409)
    await gateway.settle()
    assert await gateway.ledger() == ledger
    assert await gateway.decisions() == decisions
    assert len(gateway.fake.received) == received


async def test_a_replay_with_a_legacy_signature_and_a_new_webhook_id_is_still_409(
    gateway: LiveGateway,
) -> None:
    """A captured delivery signed with the legacy ``svix-*`` headers, sent again with a ``webhook-id`` of
    the sender's choosing beside them (the signature does not cover it): the replay check keys on the id
    the signature covers, so it is refused. Accepted, a captured consent could undo a later withdrawal."""
    first = body_of(consenting_batch("s1"))
    legacy = {
        name.replace("webhook-", "svix-"): value for name, value in signed_headers(first, "msg-1").items()
    }
    assert (await gateway.post_raw(first, legacy, auth=False)).status == 200
    for n in range(2):
        reply = await gateway.post_raw(first, {**legacy, "webhook-id": f"fresh-{n}"}, auth=False)
        assert_problem(reply, 409)


async def test_a_captured_consent_replayed_after_a_restart_is_still_409(tmp_path: Path) -> None:
    """Ada consents (msg-1), then withdraws (msg-2). The gateway restarts, and someone who captured msg-1
    sends it again within its signature window: the id is claimed in the store, not only in the memory the
    restart lost, so it is refused, and Ada stays withdrawn."""
    given = body_of({"events": [joined("p-ada", "Ada Lovelace"), consent("p-ada", "given")]})
    withdrawn = body_of(consent("p-ada", "withdrawn"))
    captured = signed_headers(given, "msg-1")
    keys = (SecretStr(new_key_spec()),)  # the roster sealed before the restart is read after it
    async with serving(tmp_path, outbox_keys=keys) as before:
        assert (await before.post_raw(given, captured, auth=False)).status == 200
        assert (
            await before.post_raw(withdrawn, signed_headers(withdrawn, "msg-2"), auth=False)
        ).status == 200
        ledger = await before.ledger()
    async with serving(tmp_path, database=before.database, outbox_keys=keys) as after:
        assert_problem(await after.post_raw(given, captured, auth=False), 409)
        await after.settle()
        assert await after.ledger() == ledger
        assert [e.record.choice.value for e in ledger] == ["given", "withdrawn"]


async def test_a_consent_redelivered_after_the_withdrawal_that_followed_it_is_refused(
    gateway: LiveGateway,
) -> None:
    """The sender redelivers Ada's consent, re-signed under its id, long after she withdrew (past the
    replay window: a platform's retry hours later). It carries the time she consented, before her
    withdrawal, so it is recorded as rejected (``superseded``) and her words stay dropped."""
    given = body_of({"events": [joined("p-ada", "Ada Lovelace"), consent("p-ada", "given")]})
    assert (await gateway.post_raw(given, signed_headers(given, "msg-1"), auth=False)).status == 200
    assert (await gateway.post({**consent("p-ada", "withdrawn"), "at": now_iso()})).status == 200
    gateway.app[AUTH].replays = Replays("events", 0.0)  # the claim on the first delivery has run out
    reply = await gateway.post_raw(given, signed_headers(given, "msg-1"), auth=False)
    assert reply.status == 200
    assert [r.get("reason") for r in reply.doc["results"]] == [None, "superseded"]
    await gateway.send(segment("s1", "p-ada", "After the withdrawal."))
    await gateway.settle()
    assert gateway.fake.segments() == []
    assert [(e.record.choice.value, e.record.reason) for e in await gateway.ledger()] == [
        ("given", None), ("withdrawn", None), ("given", "superseded")]  # fmt: skip


async def test_signed_delivery_refused_for_bad_input_is_not_a_replay_on_retry(gateway: LiveGateway) -> None:
    """A signed delivery that was not accepted (400) is answered the same on a retry, not with 409."""
    body = b"{not json"
    headers = signed_headers(body, "msg-1")
    assert_problem(await gateway.post_raw(body, headers, auth=False), 400)
    assert_problem(await gateway.post_raw(body, headers, auth=False), 400)


# --- malformed and invalid bodies ---------------------------------------------------------------------


async def test_malformed_json_is_400(gateway: LiveGateway) -> None:
    """A body that is not JSON gets a 400 problem naming the body, and stores nothing."""
    reply = await gateway.post_raw(b'{"events": [')
    doc = assert_problem(reply, 400)
    assert doc["type"].endswith("/malformed-json")
    assert doc["detail"] == "body"
    await assert_nothing_stored(gateway)


async def test_json_nested_too_deep_is_400_not_500(gateway: LiveGateway) -> None:
    """JSON nested deeper than the decoder can follow is malformed input (400), not an internal error."""
    reply = await gateway.post_raw(b'{"events": ' + b"[" * 200_000)
    assert assert_problem(reply, 400)["detail"] == "body"
    await assert_nothing_stored(gateway)


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


INVALID = {
    "missing meeting_id": (_without(segment("s1", "p-ada", "Hi."), "meeting_id"), "meeting_id"),
    "participant.id missing": (
        event("participant.joined", participant={"name": "Ada Lovelace"}), "participant.id"),
    "batch events[2].text wrong type": (
        {"events": [joined("p-ada", "Ada Lovelace"), consent("p-ada", "given"),
                    {**segment("s1", "p-ada", ""), "text": 42}]},
        "events[2].text"),
    "naive datetime": ({**segment("s1", "p-ada", "Hi."), "at": "2026-11-27T08:00:00"}, "at"),
    # parse, then overflow once converted to UTC or given an expiry: refused before anything is applied
    "a time before year 1 in UTC, after a join": (
        {"events": [joined("p-ada", "Ada Lovelace"),
                    {**consent("p-ada", "given"), "at": "0001-01-01T00:00:00+01:00"}]},
        "events[1].at"),
    "a time at the end of the calendar": (
        {**segment("s1", "p-ada", "Hi."), "at": "9999-12-31T23:00:00+00:00"}, "at"),
    "unknown field": ({**segment("s1", "p-ada", "Hi."), "speaker_name": "Ada"}, "speaker_name"),
    "consent purposes not a list": ({**consent("p-ada", "given"), "purposes": "summary"}, "purposes"),
    "unknown consent decision": ({**consent("p-ada", "given"), "decision": "maybe"}, "decision"),
    # the gateway records these itself: a caller claiming one would pass a page-only policy on its word
    "consent claiming the page": ({**consent("p-ada", "given"), "channel": "consent_page"}, "channel"),
    "consent claiming standing consent": ({**consent("p-ada", "given"), "channel": "standing"}, "channel"),
    # where standing records live: one written here would skip the standing API's checks and expiry
    "consent into the standing ledger": (
        {**consent("email:ada@example.org", "given"), "meeting_id": "*standing*"}, "meeting_id"),
    "batch join into the standing ledger": (
        {"events": [joined("p-ada", "Ada Lovelace"), {**joined("p-bo", "Bo"), "meeting_id": "*standing*"}]},
        "events[1].meeting_id"),
    "batch member not an object": ({"events": [consent("p-ada", "given"), "segment"]}, "events[1]"),
    "type missing": (_without(segment("s1", "p-ada", "Hi."), "type"), "type"),
    "empty batch": ({"events": []}, "events"),
    "top level not an object": ([segment("s1", "p-ada", "Hi.")], "body"),
}  # fmt: skip


@pytest.mark.parametrize(("doc", "field"), INVALID.values(), ids=INVALID.keys())
async def test_schema_violation_is_400_naming_the_field(gateway: LiveGateway, doc: Any, field: str) -> None:
    """A schema violation gets a 400 problem+json whose detail names the field, and stores nothing."""
    doc = assert_problem(await gateway.post_raw(body_of(doc)), 400)
    assert doc["detail"].split(":")[0] == field
    if "errors" in doc:
        assert doc["errors"][0]["field"] == field
    await assert_nothing_stored(gateway)


async def test_problem_does_not_echo_the_invalid_value(gateway: LiveGateway) -> None:
    """The 400 names the field but never repeats the offending value (it could be transcript text)."""
    doc = {**segment("s1", "p-ada", "Hi."), "start": "SECRET-WORDS"}
    reply = await gateway.post_raw(body_of(doc))
    assert_problem(reply, 400)
    assert "SECRET-WORDS" not in json.dumps(reply.doc)


async def test_batch_with_one_invalid_event_changes_nothing(gateway: LiveGateway) -> None:
    """A batch whose last event is invalid applies none of its valid events."""
    batch = consenting_batch()
    batch["events"].append(_without(segment("s2", "p-ada", "More."), "segment_id"))
    doc = assert_problem(await gateway.post_raw(body_of(batch)), 400)
    assert doc["errors"][0]["field"] == "events[3].segment_id"
    await assert_nothing_stored(gateway)
    # the same participant's next segment finds no consent: nothing of the refused batch took effect
    await gateway.send(segment("s3", "p-ada", "After the refused batch."))
    await gateway.settle()
    assert gateway.fake.received == []


async def test_body_over_the_limit_is_413(small_body_gateway: LiveGateway) -> None:
    """A body over ``max_body_bytes`` is refused with a 413 problem and stores nothing."""
    batch = consenting_batch()
    batch["events"][2]["text"] = "words " * 300
    body = body_of(batch)
    assert len(body) > 1024
    reply = await small_body_gateway.post_raw(body)
    assert_problem(reply, 413)
    await assert_nothing_stored(small_body_gateway)


async def test_unknown_type_is_acknowledged_and_ignored(gateway: LiveGateway) -> None:
    """An event of an unknown type is answered 200 with status ignored and stores nothing."""
    reply = await gateway.post({"type": "recording.started", "meeting_id": MEETING, "whatever": [1, 2]})
    assert reply.status == 200
    assert reply.doc == {"results": [{"status": "ignored", "reason": "unknown_type"}]}
    await assert_nothing_stored(gateway)


async def test_unknown_type_inside_a_batch_is_ignored_and_the_rest_applied(gateway: LiveGateway) -> None:
    """In a batch, an unknown type is ignored in place while the known events are applied."""
    batch = consenting_batch()
    batch["events"].insert(1, {"type": "transcript.partial", "anything": True})
    reply = await gateway.post_raw(body_of(batch))
    assert reply.status == 200
    assert [r["status"] for r in reply.doc["results"]] == ["accepted", "ignored", "accepted", "accepted"]
    await gateway.settle()
    assert [p["segment_id"] for p in gateway.fake.segments()] == ["s1"]


# --- consent on someone else's behalf -----------------------------------------------------------------


async def test_consent_indicated_by_someone_else_is_403_recorded_and_changes_nothing(
    gateway: LiveGateway,
) -> None:
    """A host's consent for a guest is refused with 403, recorded as rejected, and forwards nothing."""
    await gateway.send(joined("p-host", "Hal Host"), joined("p-dee", "Dee Guest"))
    reply = await gateway.post(consent("p-dee", "given", by="p-host"))
    doc = assert_problem(reply, 403)
    assert doc["detail"] == "indicated_by_other"
    (entry,) = await gateway.ledger()
    assert entry.record.record_id == doc["record_id"]
    assert entry.record.outcome is RecordOutcome.REJECTED
    assert (entry.record.subject, entry.record.indicated_by) == ("p-dee", "p-host")
    await gateway.send(segment("s1", "p-dee", "I never agreed to this."))
    await gateway.settle()
    assert gateway.fake.received == []
    (decision,) = await gateway.decisions()
    assert (decision.segment_id, str(decision.action)) == ("s1", "drop")


async def test_consent_for_someone_else_inside_a_batch_is_a_rejected_result(gateway: LiveGateway) -> None:
    """In a batch the same refusal is reported per event (status rejected) and still recorded."""
    reply = await gateway.post(joined("p-dee", "Dee Guest"), consent("p-dee", "given", by="p-host"))
    assert reply.status == 200
    result = reply.doc["results"][1]
    assert (result["status"], result["reason"]) == ("rejected", "indicated_by_other")
    (entry,) = await gateway.ledger()
    assert entry.record.outcome is RecordOutcome.REJECTED


# --- WebSocket ----------------------------------------------------------------------------------------


async def test_stream_requires_credentials(gateway: LiveGateway, http: aiohttp.ClientSession) -> None:
    """The WebSocket upgrade without a token is refused with 401."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{gateway.url}/v1/stream")
    assert info.value.status == 401


async def test_stream_with_wrong_token_is_refused(gateway: LiveGateway, http: aiohttp.ClientSession) -> None:
    """The WebSocket upgrade with a wrong bearer token is refused with 401."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{gateway.url}/v1/stream", headers={"Authorization": "Bearer nope"})
    assert info.value.status == 401


async def test_stream_answers_results_and_survives_bad_messages(
    gateway: LiveGateway, http: aiohttp.ClientSession
) -> None:
    """Over the stream a valid event gets results, a malformed one an error, and the socket stays usable."""
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    async with http.ws_connect(f"{gateway.url}/v1/stream", headers=headers) as ws:
        await ws.send_json(joined("p-ada", "Ada Lovelace"))
        assert await ws.receive_json() == {"results": [{"status": "accepted"}]}
        await ws.send_str("{not json")
        error = (await ws.receive_json())["error"]
        assert (error["status"], error["detail"]) == (400, "body")
        await ws.send_json({**segment("s0", "p-ada", "x"), "text": 7})
        error = (await ws.receive_json())["error"]
        assert (error["status"], error["errors"][0]["field"]) == (400, "text")
        await ws.send_str("[" * 200_000)
        assert (await ws.receive_json())["error"]["detail"] == "body"
        await ws.send_bytes(b"\x00binary")
        assert (await ws.receive_json())["error"]["status"] == 400
        await ws.send_json({"events": [consent("p-ada", "given"), segment("s1", "p-ada", "Hello.")]})
        reply = await ws.receive_json()
        assert [r["status"] for r in reply["results"]] == ["accepted", "accepted"]
    await gateway.settle()
    assert [p["segment_id"] for p in gateway.fake.segments()] == ["s1"]
    assert len(await gateway.ledger()) == 1


# --- health -------------------------------------------------------------------------------------------


async def test_health_and_readiness_answer(gateway: LiveGateway, http: aiohttp.ClientSession) -> None:
    """``/healthz`` answers ok and ``/readyz`` reports storage, policy and workers ready, unauthenticated."""
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200
        checks = {"storage": "ok", "policy": "ok", "workers": "ok"}
        if gateway.database.startswith("postgresql"):
            checks["consent_view"] = "ok"  # replicas on PostgreSQL also confirm their consent view
        assert await resp.json() == {"ready": True, "checks": checks}


async def test_readiness_fails_when_storage_is_gone(
    gateway: LiveGateway, http: aiohttp.ClientSession
) -> None:
    """With storage closed, ``/readyz`` answers 503 naming storage as unavailable."""
    await gateway.store.close()
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["checks"]["storage"] == "unavailable"
