"""The generic event API: ``POST /v1/events`` and the WebSocket ``GET /v1/stream``.

Order matters: authenticate on the raw bytes, then parse, then validate the whole request, and only then
apply its events one by one. A request with one invalid event changes nothing. Unknown event types are
acknowledged and ignored.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from gateway.consent import standing
from gateway.events import ConsentSubmitted
from gateway.runtime import Gateway, Result
from gateway.store.base import StorageError
from gateway.web.keys import AUTH, GATEWAY, MAX_BODY
from gateway.web.problems import Problem, field_path, invalid
from gateway.wire import EVENT_ADAPTER, ConsentIn, EventIn, is_known, to_event

log = structlog.get_logger("gateway.ingest")
PLATFORM = "generic"
MAX_EVENTS = 1000
_ACCEPTED = Result("accepted")
_ACCEPTED_BODY = json.dumps({"results": [{"status": "accepted"}]})
"""The answer to nearly every request (one event, accepted), serialised once."""


async def post_events(request: web.Request) -> web.Response:
    body = await request.read()
    auth = request.app[AUTH]
    caller = await auth.check(request.headers, body)
    try:
        batch, single = parse_batch(body)
        results = await apply(request.app[GATEWAY], batch, caller)
    except BaseException:
        auth.release(caller)  # not accepted, so the platform's retry of this delivery is not a replay
        raise
    auth.accepted(caller)
    if single and results[0].status == "rejected":
        raise Problem(
            403,
            "consent-refused",
            "Consent request refused",
            detail=results[0].reason,
            record_id=results[0].record_id,
        )
    if single and results[0] == _ACCEPTED:
        return web.Response(
            text=_ACCEPTED_BODY, content_type="application/json"
        )  # as json_response writes it
    return web.json_response({"results": [_result_json(r) for r in results]})


def parse_batch(body: bytes) -> tuple[list[EventIn | None], bool]:
    """Validated events in order (None for an unknown type, ignored), and whether it was a single event."""
    event = _one_valid_event(body)
    events, single = parse_general(body) if event is None else (list[EventIn | None]([event]), True)
    for index, found in enumerate(events):
        if found is not None and found.meeting_id == standing.STANDING_MEETING:
            # where the standing-consent API keeps its records: one written here would skip its checks
            # (verified e-mail, max_days) and be read back as standing consent
            at = field_path(("meeting_id",) if single else ("events", index, "meeting_id"))
            raise Problem(
                400, "invalid-event", "Invalid event", detail=f"{at}: reserved for standing consent"
            )
        if isinstance(found, ConsentIn) and found.channel in GATEWAY_CHANNELS:
            # The consent page and standing consent are recorded by the gateway itself: a caller claiming
            # one would pass a policy that accepts consent only there, on its own word.
            at = field_path(("channel",) if single else ("events", index, "channel"))
            raise Problem(
                400, "invalid-event", "Invalid event", detail=f"{at}: recorded by the gateway itself"
            )
    return events, single


GATEWAY_CHANNELS = frozenset({"consent_page", standing.CHANNEL})
"""Consent channels only the gateway records (its consent page, its standing-consent API), which an API
caller cannot claim. ``chat`` stays a caller's to relay (the threat model trusts relayed chat consent
where a policy lists it); a policy that wants the participant to act directly restricts to the page."""


def parse_general(body: bytes) -> tuple[list[EventIn | None], bool]:
    """``parse_batch`` for every body, valid or not: decode, then look at the shape, then validate."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting too deep to decode
        raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
    if isinstance(doc, dict) and "events" in doc and "type" not in doc:
        raw = doc["events"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_EVENTS:
            raise Problem(
                400,
                "invalid-event",
                "Invalid batch",
                detail=f"events: expected a list of 1 to {MAX_EVENTS} events",
            )
        return [_validate(e, ("events", i)) for i, e in enumerate(raw)], False
    return [_validate(doc, ())], True


def _one_valid_event(body: bytes) -> EventIn | None:
    """The common request, one valid event of a known type, validated straight from the bytes.

    pydantic-core's own JSON parser skips the Python dict that ``json.loads`` builds (the two are equal
    for every body this accepts; tests/web/test_ingest_parse.py holds them equal). Anything else returns
    None, and ``parse_general`` alone decides what the request gets: batches, unknown types and every
    error, so refusals keep their exact problem documents.
    """
    try:
        return EVENT_ADAPTER.validate_json(body)
    except ValidationError:
        return None


def _validate(raw: Any, at: tuple[str | int, ...]) -> EventIn | None:
    if not isinstance(raw, dict):
        raise Problem(
            400, "invalid-event", "Invalid event", detail=f"{field_path(at) or 'body'}: expected an object"
        )
    if not isinstance(raw.get("type"), str):
        raise Problem(
            400, "invalid-event", "Invalid event", detail=f"{field_path((*at, 'type'))}: required string"
        )
    if not is_known(raw):
        return None
    try:
        return EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise invalid(exc, at, tag=raw["type"]) from None


async def apply(gateway: Gateway, batch: list[EventIn | None], caller: str | None = None) -> list[Result]:
    results: list[Result] = []
    for wire in batch:
        if wire is None:
            results.append(Result("ignored", "unknown_type"))
            continue
        platform = wire.platform if isinstance(wire, ConsentIn) else PLATFORM
        event = to_event(wire, platform)
        if caller is not None and isinstance(event, ConsentSubmitted):
            event = replace(event, evidence=caller_evidence(caller, event.evidence))
        results.append(await gateway.handle(platform, event))
    return results


def caller_evidence(caller: str, evidence: str | None) -> str:
    """The record's evidence names the credential that asserted the consent, then the body's own evidence."""
    return f"api:{caller}" if evidence is None else f"api:{caller};{evidence}"


def _result_json(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.status}
    if result.reason:
        out["reason"] = result.reason
    if result.record_id:
        out["record_id"] = result.record_id
    return out


async def stream(request: web.Request) -> web.WebSocketResponse:
    """One JSON event (or ``{"events": [...]}``) per text message; each gets a results or problem reply."""
    caller = await request.app[AUTH].check(request.headers, b"")
    ws = web.WebSocketResponse(max_msg_size=request.app[MAX_BODY], heartbeat=30)
    await ws.prepare(request)
    request.app[AUTH].accepted(caller)
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            await ws.send_json({"error": Problem(400, "invalid-event", "Send JSON text messages").document()})
            continue
        await ws.send_json(await _stream_message(request.app[GATEWAY], msg.data.encode(), caller))
    return ws


async def _stream_message(gateway: Gateway, data: bytes, caller: str | None = None) -> dict[str, Any]:
    try:
        batch, _ = parse_batch(data)
        results = await apply(gateway, batch, caller)
    except Problem as exc:
        return {"error": exc.document()}
    except StorageError:
        log.error("storage.unavailable", path="/v1/stream")
        return {
            "error": Problem(
                503, "storage-unavailable", "Storage unavailable; nothing was forwarded"
            ).document()
        }
    return {"results": [_result_json(r) for r in results]}
