"""A catalogue of malformed and hostile inputs against the live gateway's ingest, each with its outcome.

Every case runs against a real gateway on loopback (real store, one stream destination served by a
``FakeAIService``) and checks two things: the answer the contract in docs/api.md promises (status code,
``application/problem+json`` naming the field), and that nothing of a refused request was stored or
forwarded (ledger, decision log and destination unchanged). Each case is also a figure of
docs/reliability.md (section "bad inputs": observed outcome, and what was expected).

The bodies refused here are ones that would write a ledger row, a decision and a delivery if accepted, so
"nothing changed" is a real check. Tests/web/test_ingest.py holds the contract itself; this catalogue adds
the hostile cases and reports every outcome in one table.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.zoom import meeting_event, signed
from tests.platforms.zoom_support import SECRET as ZOOM_SECRET
from tests.platforms.zoom_support import UUID, ZoomRig, zoom_gateway
from tests.reliability.figures import record
from tests.web.harness import (
    INGEST_TOKEN,
    MEETING,
    PROBLEM_JSON,
    LiveGateway,
    Reply,
    consent,
    event,
    joined,
    segment,
    serving,
    signed_headers,
    wait_for,
)

SECTION = "bad inputs"
pytestmark = pytest.mark.reliability
BEARER = {"Authorization": f"Bearer {INGEST_TOKEN}"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    """A gateway with one stream destination; unknown speakers are dropped at once (no pending window)."""
    async with serving(tmp_path) as live:
        yield live


@dataclass(frozen=True)
class Snapshot:
    ledger: int
    decisions: int
    received: int


async def snapshot(gw: LiveGateway) -> Snapshot:
    await gw.settle()
    return Snapshot(len(await gw.ledger()), len(await gw.decisions()), len(gw.fake.received))


def consenting(sid: str = "s1", text: str = "Hello everyone.") -> list[dict[str, Any]]:
    """Events that, accepted, record a consent, decide a segment and forward it."""
    return [joined("p-ada", "Ada Lovelace"), consent("p-ada", "given"), segment(sid, "p-ada", text)]


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def outcome(reply: Reply) -> str:
    """``400 invalid-event (field)``-style summary of a reply: status, problem kind, detail's field."""
    if reply.content_type != PROBLEM_JSON or not isinstance(reply.doc, dict):
        results = reply.doc.get("results", []) if isinstance(reply.doc, dict) else []
        statuses = sorted({r["status"] for r in results})
        return f"{reply.status} {'/'.join(statuses) or reply.content_type}"
    kind = str(reply.doc.get("type", "")).rsplit("/", 1)[-1]
    detail = str(reply.doc.get("detail", "")).split(":")[0]
    return f"{reply.status} {kind} ({detail})" if detail else f"{reply.status} {kind}"


async def judged(
    gw: LiveGateway, case: str, reply: Reply, status: int, field: str, before: Snapshot | None = None
) -> list[str]:
    """Record the case; return what is wrong with it (empty: ``reply`` is the problem ``status`` naming
    ``field``, and nothing was stored or forwarded since ``before``)."""
    after = await snapshot(gw)
    unchanged = after == (before or Snapshot(0, 0, 0))
    record(
        SECTION,
        case,
        f"{outcome(reply)}; {'nothing stored' if unchanged else 'STORED'}",
        f"{status} naming {field}; nothing stored",
    )
    doc = reply.doc if isinstance(reply.doc, dict) else {}
    right = (
        reply.status == status
        and reply.content_type == PROBLEM_JSON
        and doc.get("status") == status
        and str(doc.get("detail", "")).split(":")[0] == field
    )
    return [f"{case}: {outcome(reply)}"] * (not right) + [f"{case}: stored {before} -> {after}"] * (
        not unchanged
    )


async def refused(
    gw: LiveGateway, case: str, reply: Reply, status: int, field: str, before: Snapshot | None = None
) -> None:
    """Assert ``reply`` is the problem ``status`` naming ``field`` and nothing changed; record the case."""
    assert await judged(gw, case, reply, status, field, before) == []


# --- malformed and invalid bodies --------------------------------------------------------------------

_PREFIX = b'{"events": ['


def _deep_in_field(depth: int) -> bytes:
    one = segment("s1", "p-ada", "x")
    head, _, tail = json.dumps(one).partition('"x"')
    return (head + "[" * depth + "]" * depth + tail).encode()


def _with_raw_text(raw: bytes) -> bytes:
    """A consenting batch whose segment text is ``raw`` spliced into the JSON bytes as they are."""
    body = batch(*consenting(text="PLACEHOLDER"))
    return body.replace(b"PLACEHOLDER", raw)


MALFORMED: dict[str, tuple[bytes, str, str]] = {
    "malformed JSON (truncated)": (batch(*consenting())[:-3], "malformed-json", "body"),
    "not JSON at all": (b"segment s1 p-ada hello", "malformed-json", "body"),
    "empty body": (b"", "malformed-json", "body"),
    "deeply nested JSON (200,000 brackets)": (_PREFIX + b"[" * 200_000, "malformed-json", "body"),
    "deeply nested JSON inside a field (5,000 levels)": (_deep_in_field(5000), "malformed-json", "body"),
    "invalid UTF-8 in text": (_with_raw_text(b"caf\xe9 \xff\xfe"), "malformed-json", "body"),
    "raw NUL byte inside a string": (_with_raw_text(b"a\x00b"), "malformed-json", "body"),
    "wrong type (text is a number)": (
        batch(*consenting()[:2], {**segment("s1", "p-ada", ""), "text": 42}),
        "invalid-event",
        "events[2].text",
    ),
    "wrong type (participant is a string)": (
        json.dumps(event("participant.joined", participant="p-ada")).encode(),
        "invalid-event",
        "participant",
    ),
    "missing field (segment_id)": (
        batch(*consenting()[:2], {k: v for k, v in segment("s1", "p-ada", "x").items() if k != "segment_id"}),
        "invalid-event",
        "events[2].segment_id",
    ),
    "missing type": (
        json.dumps({"meeting_id": MEETING, "at": "2026-11-27T09:00:00Z"}).encode(),
        "invalid-event",
        "type",
    ),
    "unknown field": (
        json.dumps({**segment("s1", "p-ada", "x"), "speaker": "Ada"}).encode(),
        "invalid-event",
        "speaker",
    ),
    "naive timestamp": (
        json.dumps({**segment("s1", "p-ada", "x"), "at": "2026-11-27T09:00:00"}).encode(),
        "invalid-event",
        "at",
    ),
    "NaN as a number (start)": (
        json.dumps({**segment("s1", "p-ada", "x"), "start": float("nan")}).encode(),
        "invalid-event",
        "start",
    ),
    "meeting id over 256 characters": (
        json.dumps(segment("s1", "p-ada", "x", "m" * 300)).encode(),
        "invalid-event",
        "meeting_id",
    ),
    "empty participant id": (
        json.dumps(joined("", "Ada Lovelace")).encode(),
        "invalid-event",
        "participant.id",
    ),
    "batch of 1,001 events (over the limit)": (
        batch(*[segment(f"s{n}", "p-ada", "x") for n in range(1001)]),
        "invalid-event",
        "events",
    ),
    "empty batch": (batch(), "invalid-event", "events"),
    "batch member not an object": (
        json.dumps({"events": [consent("p-ada", "given"), 7]}).encode(),
        "invalid-event",
        "events[1]",
    ),
    "top level is a list": (json.dumps(consenting()).encode(), "invalid-event", "body"),
    "top level is a string": (b'"segment"', "invalid-event", "body"),
}


async def test_malformed_bodies_are_400_naming_the_field_and_store_nothing(gw: LiveGateway) -> None:
    """Each malformed or invalid body gets a 400 problem of its kind naming the field; nothing is stored or
    forwarded (one gateway for all the cases: each is judged against the state before it)."""
    wrong = []
    for case, (body, kind, field) in MALFORMED.items():
        before = await snapshot(gw)
        reply = await gw.post_raw(body)
        wrong += await judged(gw, case, reply, 400, field, before)
        if reply.status == 400 and not str(reply.doc.get("type", "")).endswith("/" + kind):
            wrong.append(f"{case}: problem type {reply.doc.get('type')}")
    assert wrong == []


async def test_unknown_event_type_is_acknowledged_and_ignored(gw: LiveGateway) -> None:
    """An unknown event type is answered 200 ``ignored`` (platforms retry otherwise) and stores nothing."""
    reply = await gw.post_raw(json.dumps(event("recording.started", whatever=[1, 2])).encode())
    after = await snapshot(gw)
    record(
        SECTION,
        "unknown event type",
        f"{outcome(reply)}; {after == Snapshot(0, 0, 0) and 'nothing stored'}",
        "200 ignored; nothing stored",
    )
    assert (reply.status, reply.doc) == (200, {"results": [{"status": "ignored", "reason": "unknown_type"}]})
    assert after == Snapshot(0, 0, 0)


# --- oversized bodies --------------------------------------------------------------------------------


def _oversized(size: int) -> bytes:
    events = consenting(text="word " * (size // 5))
    return batch(*events)


async def test_body_over_the_limit_is_413(gw: LiveGateway) -> None:
    """A body over ``max_body_bytes`` (1 MiB here) is refused with 413 and stores nothing."""
    body = io.BytesIO(_oversized(1024 * 1024 + 4096))  # aiohttp warns about large raw bytes
    headers = {**BEARER, "Content-Type": "application/json"}
    async with gw.http.post(f"{gw.url}/v1/events", data=body, headers=headers) as resp:
        reply = Reply(resp.status, resp.content_type, json.loads(await resp.read()))
    after = await snapshot(gw)
    record(
        SECTION,
        "oversized body (1 MiB + 4 KiB, Content-Length)",
        f"{outcome(reply)}; {'nothing stored' if after == Snapshot(0, 0, 0) else 'STORED'}",
        "413; nothing stored",
    )
    assert reply.status == 413
    assert reply.content_type == PROBLEM_JSON
    assert after == Snapshot(0, 0, 0)


async def test_chunked_body_over_the_limit_is_413(gw: LiveGateway) -> None:
    """A body over the limit sent chunked (no Content-Length) is refused with 413 too."""
    body = _oversized(1024 * 1024 + 4096)

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(body), 64 * 1024):
            yield body[at : at + 64 * 1024]

    headers = {**BEARER, "Content-Type": "application/json"}
    try:
        async with gw.http.post(f"{gw.url}/v1/events", data=chunks(), headers=headers) as resp:
            status, kind = resp.status, resp.content_type
    except aiohttp.ClientError as exc:  # the server may close the connection before reading it all
        status, kind = 0, type(exc).__name__
    after = await snapshot(gw)
    record(
        SECTION,
        "oversized body, chunked (no Content-Length)",
        f"{status} {kind}; {'nothing stored' if after == Snapshot(0, 0, 0) else 'STORED'}",
        "413; nothing stored",
    )
    assert status == 413
    assert after == Snapshot(0, 0, 0)


# --- hostile but well-formed content -----------------------------------------------------------------


async def test_nul_and_lone_surrogate_in_text_are_refused_or_delivered_never_an_error(
    gw: LiveGateway,
) -> None:
    """Escaped NUL (``\\u0000``) and a lone surrogate in a consented segment: accepted and forwarded, or a
    400; never a 500, and a refused one stores nothing."""
    observed = []
    for n, (case, text) in enumerate(
        (("escaped NUL (\\u0000) in text", "a\u0000b"), ("lone surrogate (\\ud800) in text", "a\ud800b"))
    ):
        before = await snapshot(gw)
        reply = await gw.post_raw(batch(*consenting(f"s{n}", text)))
        after = await snapshot(gw)
        stored = "nothing stored" if after.received == before.received else "forwarded"
        record(SECTION, case, f"{outcome(reply)}; {stored}", "200 and forwarded, or 400 storing nothing")
        observed.append((reply.status, stored))
    for status, stored in observed:
        assert (status, stored) in {(200, "forwarded"), (400, "nothing stored")}


async def test_duplicate_keys_attribute_the_segment_to_one_participant_consistently(gw: LiveGateway) -> None:
    """A segment naming ``participant_id`` twice (decliner first, consenter last, and the reverse) is
    attributed as a JSON decoder reads it (the last key wins), or refused: a decliner's words never leave."""
    await gw.send(
        joined("p-ada", "Ada Lovelace"),
        joined("p-dee", "Dee Decliner"),
        consent("p-ada", "given"),
        consent("p-dee", "refused"),
    )
    base = json.dumps(segment("s1", "p-ada", "dup"))
    decliner_last = base.replace(
        '"participant_id": "p-ada"', '"participant_id": "p-ada", "participant_id": "p-dee"'
    )
    decliner_first = base.replace(
        '"participant_id": "p-ada"', '"participant_id": "p-dee", "participant_id": "p-ada"'
    )
    first = await gw.post_raw(decliner_last.encode())
    second = await gw.post_raw(decliner_first.replace('"s1"', '"s2"').encode())
    await gw.settle()
    got = {p["segment_id"]: p["participant_id"] for p in gw.fake.segments()}
    record(
        SECTION,
        "duplicate JSON keys (participant_id twice)",
        f"{first.status}/{second.status}; delivered {sorted(got.items())}",
        "last key wins (s1 dropped as the decliner's, s2 forwarded as the consenter's) or 400",
    )
    assert "s1" not in got
    assert got.get("s2") in {"p-ada", None}


async def test_huge_batch_of_1000_events_is_applied_whole_and_delivered_once(gw: LiveGateway) -> None:
    """A batch at the limit (1,000 events) is applied in order: every segment decided, every consented one
    delivered once, none of the decliner's."""
    speakers = [
        joined("p-ada", "Ada Lovelace"),
        joined("p-dee", "Dee Decliner"),
        consent("p-ada", "given"),
        consent("p-dee", "refused"),
    ]
    # one segment in ten is the consenting speaker's: every one is decided, the default run stays short
    said = [segment(f"s{n}", "p-ada" if n % 10 == 0 else "p-dee", f"line {n}") for n in range(996)]
    reply = await gw.post_raw(batch(*speakers, *said))
    after = await snapshot(gw)
    arrived = sorted(p["segment_id"] for p in gw.fake.segments())
    expected = sorted(f"s{n}" for n in range(0, 996, 10))
    record(
        SECTION,
        "huge batch (1,000 events, 996 segments of which 100 consented)",
        f"{outcome(reply)}; {after.decisions} decisions; {len(arrived)} delivered once; "
        f"{len(set(arrived) - set(expected))} of the decliner's delivered",
        "200; every segment decided; the 100 consented delivered once; none of the decliner's",
    )
    assert reply.status == 200
    assert after.decisions == 996
    assert arrived == expected


# --- authentication ----------------------------------------------------------------------------------

BAD_AUTH = {
    "no credentials": {},
    "wrong bearer token": {"Authorization": "Bearer not-the-token"},
    "bearer token prefix only": {"Authorization": f"Bearer {INGEST_TOKEN[:-1]}"},
    "bearer token plus a character": {"Authorization": f"Bearer {INGEST_TOKEN}x"},
    "empty bearer": {"Authorization": "Bearer "},
    "token as Basic auth": {"Authorization": f"Basic {INGEST_TOKEN}"},
    "webhook-signature with no webhook-id/timestamp": {"webhook-signature": "v1,AAAA"},
}


async def test_bad_credentials_are_401_and_store_nothing(gw: LiveGateway) -> None:
    """Every malformed or wrong credential is refused with 401 before the body is looked at."""
    reasons = {"missing_credentials", "bad_token", "bad_signature", "missing_headers", "bad_timestamp"}
    wrong = []
    for case, headers in BAD_AUTH.items():
        reply = await gw.post_raw(batch(*consenting()), headers, auth=False)
        detail = str(reply.doc.get("detail", "")) if isinstance(reply.doc, dict) else ""
        wrong += await judged(gw, case, reply, 401, detail if detail in reasons else "one of " + str(reasons))
    assert wrong == []


async def test_the_bearer_scheme_is_case_insensitive(gw: LiveGateway) -> None:
    """Auth scheme names are case-insensitive (RFC 9110): `bearer` and `BEARER` work as `Bearer`."""
    wrong = []
    for n, scheme in enumerate(("bearer", "BEARER")):
        reply = await gw.post_raw(
            batch(*consenting(f"c{n}")), {"Authorization": f"{scheme} {INGEST_TOKEN}"}, auth=False
        )
        record(SECTION, f"{scheme} scheme (case-insensitive)", outcome(reply), "200; accepted")
        if reply.status != 200:
            wrong.append(f"{scheme}: {outcome(reply)}")
    assert wrong == []


SKEW = {
    "stale webhook timestamp (10 min old)": (-600, 401),
    "future webhook timestamp (clock skew +10 min)": (600, 401),
    "webhook timestamp 2 min ahead (inside the 5 min tolerance)": (120, 200),
}


async def test_signature_timestamps_outside_the_window_are_refused(gw: LiveGateway) -> None:
    """A correctly signed delivery more than 5 minutes off the gateway's clock either way is a 401 that
    stores nothing; 2 minutes ahead is inside the tolerance and accepted."""
    wrong = []
    for n, (case, (offset, status)) in enumerate(SKEW.items()):
        body = batch(*consenting(f"s{n}"))
        stamp = int(time.time()) + offset
        before = await snapshot(gw)
        reply = await gw.post_raw(body, signed_headers(body, f"msg-{n}", timestamp=stamp), auth=False)
        if status == 401:
            wrong += await judged(gw, case, reply, 401, "stale_timestamp", before)
            continue
        await gw.settle()
        record(SECTION, case, outcome(reply), "200; accepted")
        if reply.status != 200 or f"s{n}" not in {p["segment_id"] for p in gw.fake.segments()}:
            wrong.append(f"{case}: {outcome(reply)}")
    assert wrong == []


async def test_replayed_webhook_delivery_is_409_and_changes_nothing(gw: LiveGateway) -> None:
    """The same signed delivery again (same webhook-id, body and signature) is a 409 and changes nothing."""
    body = batch(*consenting())
    headers = signed_headers(body, "msg-replay")
    first = await gw.post_raw(body, headers, auth=False)
    assert first.status == 200
    before = await snapshot(gw)
    again = await gw.post_raw(body, headers, auth=False)
    await refused(
        gw, "signature replay (same webhook-id and signature)", again, 409, "webhook-id seen before", before
    )


async def test_replayed_body_under_a_new_webhook_id_delivers_each_segment_once(gw: LiveGateway) -> None:
    """A body re-signed under a fresh webhook-id is a new delivery: accepted, but its segment (same id) is
    not forwarded a second time."""
    body = batch(*consenting())
    assert (await gw.post_raw(body, signed_headers(body, "msg-a"), auth=False)).status == 200
    again = await gw.post_raw(body, signed_headers(body, "msg-b"), auth=False)
    await gw.settle()
    keys = {r.key for r in gw.fake.received if r.ok}
    record(
        SECTION,
        "same body re-signed under a new webhook-id",
        f"{outcome(again)}; segment delivered under {len(keys)} idempotency key(s)",
        "200; the segment delivered once (one idempotency key)",
    )
    assert again.status == 200
    assert len(keys) == 1


# --- consent on someone else's behalf ----------------------------------------------------------------


async def test_consent_indicated_by_someone_else_is_403_and_forwards_nothing(gw: LiveGateway) -> None:
    """A host's consent for a guest is refused (403, recorded as rejected); the guest's words stay put."""
    await gw.send(joined("p-host", "Hal Host"), joined("p-dee", "Dee Guest"))
    reply = await gw.post(consent("p-dee", "given", by="p-host"))
    await gw.send(segment("s1", "p-dee", "I never agreed."))
    after = await snapshot(gw)
    record(
        SECTION,
        "consent indicated_by someone else",
        f"{outcome(reply)}; {after.received} delivered",
        "403 consent-refused (indicated_by_other), recorded as rejected; nothing delivered",
    )
    assert reply.status == 403
    assert reply.doc["detail"] == "indicated_by_other"
    assert after.received == 0


async def test_consent_stamped_in_the_future_is_still_ended_by_a_withdrawal_now(gw: LiveGateway) -> None:
    """Clock skew in events: a consent whose ``at`` is a year ahead is refused as it arrives
    (``future_time``: it could never be superseded); sent again after a withdrawal stamped now, it is
    refused again, and the participant's next segment is not forwarded."""
    future = {**consent("p-ada", "given"), "at": (datetime.now(UTC) + timedelta(days=365)).isoformat()}
    await gw.send(joined("p-ada", "Ada Lovelace"))
    refused = [(await gw.post(future)).status]
    await gw.send(consent("p-ada", "withdrawn"))
    refused.append((await gw.post(future)).status)
    await gw.send(segment("s1", "p-ada", "After I withdrew."))
    after = await snapshot(gw)
    record(
        SECTION,
        "consent stamped a year ahead, sent before and after a withdrawal now",
        f"refused {refused}, {after.received} delivered",
        "refused (future_time); nothing delivered after the withdrawal",
    )
    assert refused == [403, 403]
    assert after.received == 0


# --- Unicode confusables in names --------------------------------------------------------------------

CYRILLIC_A = "\u0430"  # looks like the Latin a
ZWSP = "\u200b"


def fullwidth(text: str) -> str:
    """ASCII letters as their fullwidth forms (A -> U+FF21), spaces kept."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in text)


CONFUSABLES = {
    # case: (decliner's display name, how a consenting speaker writes it)
    "confusable control: the same spelling": ("Vladimir Ostrowski", "Vladimir Ostrowski"),
    "confusable: decliner named with a Cyrillic a, spoken in Latin": (
        f"Vl{CYRILLIC_A}dimir Ostrowski",
        "Vladimir Ostrowski",
    ),
    "confusable: decliner named in Latin, spoken with a Cyrillic a": (
        "Vladimir Ostrowski",
        f"Vl{CYRILLIC_A}dimir Ostrowski",
    ),
    "confusable: fullwidth letters in the spoken name": (
        "Vladimir Ostrowski",
        fullwidth("Vladimir Ostrowski"),
    ),
    "confusable: zero-width space inside the spoken name": (
        "Vladimir Ostrowski",
        f"Vladi{ZWSP}mir Ostro{ZWSP}wski",
    ),
    "confusable: decomposed (NFD) accents in the spoken name": (
        "Si\u00e2n Gwenllian",
        unicodedata.normalize("NFD", "Si\u00e2n Gwenllian"),
    ),
    "confusable: name without its accents": ("Si\u00e2n Gwenllian", "Sian Gwenllian"),
}


def _name_survived(delivered: str, written: str) -> str:
    parts = written.split()
    left = [p for p in parts if p in delivered]
    return "scrubbed" if not left else f"survived ({len(left)} of {len(parts)} parts)"


async def test_confusable_spellings_of_a_decliners_name(gw: LiveGateway) -> None:
    """A consenting speaker mentions a decliner whose name is spelled with look-alike characters (one
    meeting per case): the consenting words arrive, the decliner's do not, and the name is scrubbed (the
    look-alike folding in gateway/names/folding.py; before it, all four look-alike cases survived)."""
    survived = []
    for n, (case, (display, written)) in enumerate(CONFUSABLES.items()):
        mid = f"m-confusable-{n}"
        await gw.send(
            joined("p-ada", "Ada Lovelace", mid),
            joined("p-dee", display, mid),
            consent("p-ada", "given", meeting=mid),
            consent("p-dee", "refused", meeting=mid),
        )
        await gw.send(
            segment("s1", "p-ada", f"Thanks {written}, over to you.", mid), segment("s2", "p-dee", "No.", mid)
        )
        await gw.settle()
        (only,) = [p for p in gw.fake.segments() if p["meeting_id"] == mid]
        result = _name_survived(str(only["text"]), written)
        record(SECTION, case, result, "scrubbed")
        assert only["segment_id"] == "s1"
        if result != "scrubbed":
            survived.append(f"{case}: {result}")
    assert survived == []


# --- the WebSocket stream ----------------------------------------------------------------------------


async def test_stream_bad_messages_get_problems_and_change_nothing(gw: LiveGateway) -> None:
    """Over ``/v1/stream``: malformed, invalid, binary and nested messages each get a 400 problem, the
    socket stays usable, and nothing of theirs is stored."""
    observed: dict[str, Any] = {}
    async with gw.http.ws_connect(f"{gw.url}/v1/stream", headers=BEARER) as ws:
        messages: tuple[tuple[str, str | bytes], ...] = (
            ("stream: malformed JSON", '{"events": ['),
            ("stream: wrong type", json.dumps({**segment("s1", "p-ada", ""), "text": 1})),
            ("stream: binary frame", b"\x00\x01"),
            ("stream: 200,000 nested brackets", "[" * 200_000),
            ("stream: invalid batch", json.dumps({"events": "all"})),
        )
        for case, message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
            error = (await ws.receive_json()).get("error", {})
            observed[case] = error.get("status")
            record(
                SECTION,
                case,
                f"{error.get('status')} {str(error.get('type', '')).rsplit('/', 1)[-1]}",
                "400 problem on the socket; socket stays open; nothing stored",
            )
        await ws.send_json({"events": consenting()})
        reply = await ws.receive_json()
    after = await snapshot(gw)
    assert set(observed.values()) == {400}
    assert [r["status"] for r in reply["results"]] == ["accepted"] * 3
    assert (after.ledger, after.received) == (1, 1)


async def test_stream_message_over_the_limit_closes_the_socket_and_stores_nothing(tmp_path: Path) -> None:
    """A WebSocket message over ``max_body_bytes`` closes the socket (1009) and stores nothing."""
    async with serving(tmp_path, max_body_bytes=4096) as gw:
        async with gw.http.ws_connect(f"{gw.url}/v1/stream", headers=BEARER) as ws:
            await ws.send_str(json.dumps({"events": consenting(text="word " * 2000)}))
            msg = await ws.receive()
        after = await snapshot(gw)
        record(
            SECTION,
            "stream: message over the size limit",
            f"{msg.type.name} {ws.close_code}; "
            f"{'nothing stored' if after == Snapshot(0, 0, 0) else 'STORED'}",
            "socket closed (1009 message too big); nothing stored",
        )
        assert msg.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING}
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        assert after == Snapshot(0, 0, 0)


async def test_stream_upgrade_without_credentials_is_401(gw: LiveGateway) -> None:
    """The WebSocket upgrade without a token is refused with 401."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.http.ws_connect(f"{gw.url}/v1/stream")
    record(SECTION, "stream: upgrade without credentials", info.value.status, "401")
    assert info.value.status == 401


# --- slow clients ------------------------------------------------------------------------------------


async def test_slow_clients_do_not_stop_the_server_answering_others(gw: LiveGateway) -> None:
    """Clients that send their headers, or their body, a few bytes at a time (and never finish) leave the
    server answering everyone else; their half-sent requests store nothing."""
    host, port = gw.url.removeprefix("http://").split(":")
    body = batch(*consenting("slow"))
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {INGEST_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writers = []
    for partial in (head[:40], head + body[:20]):  # stuck in the headers; stuck in the body
        for _ in range(20):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(partial)
            await writer.drain()
            writers.append(writer)
    try:
        for n in range(5):
            reply = await gw.post_raw(batch(*consenting(f"s{n}")))
            assert reply.status == 200
        await wait_for(_received(gw, 5), "the other clients' segments to be delivered")
    finally:
        for writer in writers:
            writer.close()
    delivered = sorted(p["segment_id"] for p in gw.fake.segments())
    record(
        SECTION,
        "slow clients (40 connections stuck mid-headers / mid-body)",
        f"other clients answered 200; {len(delivered)} of 5 of their segments delivered; "
        f"{'slow segment stored' if 'slow' in delivered else 'nothing of the slow ones stored'}",
        "others served; nothing of the unfinished requests stored",
    )
    assert delivered == [f"s{n}" for n in range(5)]


def _received(gw: LiveGateway, n: int) -> Any:
    async def check() -> bool:
        return len(gw.fake.segments()) >= n

    return check


# --- Zoom webhooks -----------------------------------------------------------------------------------


@pytest.fixture
async def zoom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ZoomRig]:
    async with zoom_gateway(tmp_path, monkeypatch) as rig:
        yield rig


async def test_zoom_webhook_replays_and_clock_skew(zoom: ZoomRig) -> None:
    """Zoom: the same signed bytes again are acknowledged as a duplicate and applied once; a timestamp
    more than 300 s behind or ahead is a 401 that stores nothing."""
    doc = meeting_event("meeting.started", UUID, ts=1795852800123)
    body, headers = signed(doc, ZOOM_SECRET)
    first = await zoom.zoom.post_raw(zoom.gw.url, body, headers)
    again = await zoom.zoom.post_raw(zoom.gw.url, body, headers)
    record(
        SECTION,
        "Zoom: same signed delivery again (replay)",
        f"{first.status} then {again.status} {again.doc.get('status')}",
        "200 accepted, then 200 duplicate (not applied again)",
    )
    assert (first.doc, again.doc) == ({"status": "accepted"}, {"status": "duplicate"})
    for case, offset in (
        ("Zoom: stale timestamp (-10 min)", -600),
        ("Zoom: future timestamp (+10 min)", 600),
    ):
        other = meeting_event("meeting.started", UUID + "x", ts=1795852800124)
        reply = await zoom.send(other, timestamp=int(time.time()) + offset)
        record(
            SECTION, case, f"{reply.status} {reply.doc.get('detail')}", "401 stale_timestamp; nothing stored"
        )
        assert (reply.status, reply.doc["detail"]) == (401, "stale_timestamp")
    assert await zoom.gw.ledger() == []
    assert await zoom.gw.decisions() == []


# --- identity games ----------------------------------------------------------------------------------


async def test_consent_in_one_meeting_does_not_carry_to_another(gw: LiveGateway) -> None:
    """A participant id that consented in one meeting speaks in another meeting: nothing is forwarded."""
    await gw.send(joined("p-ada", "Ada Lovelace"), consent("p-ada", "given"))
    await gw.send(joined("p-ada", "Ada Lovelace", "m-other"), segment("s1", "p-ada", "Elsewhere.", "m-other"))
    after = await snapshot(gw)
    record(
        SECTION,
        "consent of one meeting used in another",
        f"{after.received} delivered",
        "nothing delivered (consent is per meeting)",
    )
    assert after.received == 0


async def test_decliner_renamed_to_a_consenters_name_is_still_a_decliner(gw: LiveGateway) -> None:
    """A decliner who renames themselves to a consenting participant's display name stays a decliner:
    identity is the participant id, never the name."""
    await gw.send(
        joined("p-ada", "Ada Lovelace"),
        joined("p-dee", "Dee Decliner"),
        consent("p-ada", "given"),
        consent("p-dee", "refused"),
    )
    await gw.send(
        event("participant.renamed", participant_id="p-dee", name="Ada Lovelace"),
        segment("s1", "p-dee", "Pretending."),
        segment("s2", "p-ada", "Real."),
    )
    await gw.settle()
    got = sorted(p["segment_id"] for p in gw.fake.segments())
    record(
        SECTION,
        "decliner renamed to a consenter's display name",
        f"delivered {got}",
        "only the consenter's segment (s2)",
    )
    assert got == ["s2"]


async def test_a_segment_id_reused_by_a_decliner_is_not_forwarded(gw: LiveGateway) -> None:
    """The consenter's segment ``s1`` is delivered; a decliner's segment reusing id ``s1`` (in the same
    batch or later) is never forwarded, and the consenter's is delivered once."""
    await gw.send(
        joined("p-ada", "Ada Lovelace"),
        joined("p-dee", "Dee Decliner"),
        consent("p-ada", "given"),
        consent("p-dee", "refused"),
    )
    reply = await gw.post_raw(batch(segment("s1", "p-ada", "Mine."), segment("s1", "p-dee", "Not mine.")))
    await gw.send(segment("s1", "p-dee", "Again."))
    await gw.settle()
    got = [(p["segment_id"], p["participant_id"]) for p in gw.fake.segments()]
    record(
        SECTION,
        "segment id reused by a decliner",
        f"{outcome(reply)}; delivered {got}",
        "the consenter's s1 once; nothing of the decliner's",
    )
    assert got == [("s1", "p-ada")]


async def test_text_at_and_over_the_field_limit(gw: LiveGateway) -> None:
    """A segment text of exactly 100,000 characters is accepted and delivered; one more is a 400 naming
    ``text`` that stores nothing."""
    await gw.send(*consenting("s0")[:2])
    before = await snapshot(gw)
    over = await gw.post_raw(json.dumps(segment("s2", "p-ada", "x" * 100_001)).encode())
    await refused(gw, "segment text of 100,001 characters", over, 400, "text", before)
    at = await gw.post_raw(json.dumps(segment("s1", "p-ada", "x" * 100_000)).encode())
    await gw.settle()
    record(
        SECTION,
        "segment text of 100,000 characters (the limit)",
        f"{outcome(at)}; {len(gw.fake.segments())} delivered",
        "200; delivered",
    )
    assert at.status == 200
    assert [p["segment_id"] for p in gw.fake.segments()] == ["s1"]


async def test_consent_naming_a_purpose_in_another_case_is_rejected(gw: LiveGateway) -> None:
    """Consent to ``Summary`` (not the policy's ``summary``) is rejected as an unknown purpose and forwards
    nothing."""
    await gw.send(joined("p-ada", "Ada Lovelace"))
    reply = await gw.post(consent("p-ada", "given", ("Summary",)))
    await gw.send(segment("s1", "p-ada", "Hello."))
    after = await snapshot(gw)
    record(
        SECTION,
        "consent to a purpose in another case (Summary)",
        f"{outcome(reply)}; {after.received} delivered",
        "403 consent-refused (unknown_purpose); nothing delivered",
    )
    assert reply.status == 403
    assert reply.doc["detail"] == "unknown_purpose"
    assert after.received == 0
