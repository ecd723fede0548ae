"""The admin API under ``/admin/v1``: live meetings, ledger and decision-log queries, verification, export,
policy status, reload and shadow candidates.

Its own credentials: admin tokens (read and write) and auditor tokens (read only), from settings; the ingest
token is never one of them (``create_app`` refuses an overlap) and is refused here like any unknown token.
Every route is registered through ``_route`` with the role it needs, so none can be added without a check.
Answers carry ids, states, codes and rule ids, never transcript text; participant display names are left
out on purpose (ids are what the ledger proves).
"""

from __future__ import annotations

import hmac
import io
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway import audit
from gateway.consent import ledger
from gateway.decision_log import decision_to_dict
from gateway.meeting import MeetingState
from gateway.model import Action, Decision
from gateway.reload import POLICIES
from gateway.runtime import Gateway
from gateway.store.base import LedgerEntry
from gateway.web.keys import GATEWAY, STORE
from gateway.web.problems import Problem, field_path

log = structlog.get_logger("gateway.admin")
Role = Literal["admin", "auditor"]
PREFIX = "/admin/v1"
SESSION_COOKIE = "cg_session"
_SESSION_SECONDS = 8 * 3600


# --- who may call -------------------------------------------------------------------------------------


@dataclass
class _Session:
    role: Role
    expires: float


class AdminAuth:
    """Admin and auditor bearer tokens, and the dashboard's login sessions (opaque random cookie ids)."""

    def __init__(
        self, admin: Sequence[str], auditor: Sequence[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tokens: list[tuple[bytes, Role]] = [(t.encode(), "admin") for t in admin if t]
        self._tokens += [(t.encode(), "auditor") for t in auditor if t]
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def role_of_token(self, token: str) -> Role | None:
        given = token.encode("utf-8", "surrogatepass")  # any header: a wrong one is refused, not a 500
        found: Role | None = None
        for known, role in self._tokens:  # compare with all, in constant time each
            if hmac.compare_digest(given, known) and found != "admin":
                found = role
        return found

    def login(self, token: str) -> str | None:
        role = self.role_of_token(token)
        if role is None:
            return None
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(role, self._clock() + _SESSION_SECONDS)
        return session_id

    def logout(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def role_of_session(self, session_id: str) -> Role | None:
        session = self._sessions.get(session_id)
        if session is None or session.expires < self._clock():
            self._sessions.pop(session_id, None)
            return None
        return session.role

    def role(self, request: web.Request, *, cookie: bool = False) -> Role:
        """The caller's role from ``Authorization: Bearer`` (or, for the dashboard, the session cookie);
        401 otherwise."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            role = self.role_of_token(auth.removeprefix("Bearer ").strip())
            return role or _refuse("bad_token")
        if cookie and SESSION_COOKIE in request.cookies:
            return self.role_of_session(request.cookies[SESSION_COOKIE]) or _refuse("expired_session")
        return _refuse("missing_credentials")


def _refuse(reason: str) -> Role:
    log.warning("admin.unauthenticated", reason=reason)
    raise Problem(401, "unauthenticated", "Missing or invalid admin credentials", detail=reason)


ADMIN_AUTH = web.AppKey("admin_auth", AdminAuth)


def require(request: web.Request, need: Role, *, cookie: bool = False) -> Role:
    role = request.app[ADMIN_AUTH].role(request, cookie=cookie)
    if need == "admin" and role != "admin":
        log.warning("admin.forbidden", path=request.path)
        raise Problem(403, "forbidden", "This needs an admin token", detail="auditor tokens are read-only")
    return role


# --- queries -------------------------------------------------------------------------------------------


class Query(BaseModel):
    """Filters shared by the ledger and decision-log queries; every one optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meeting_id: str | None = None
    participant_id: str | None = None
    purpose: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    action: Action | None = None
    destination: str | None = None
    shadow: bool | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1000
    offset: Annotated[int, Field(ge=0)] = 0


def parse_query(request: web.Request, allowed: frozenset[str]) -> Query:
    params = dict(request.query)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Problem(400, "invalid-query", "Invalid query", detail=f"{unknown[0]}: unknown parameter")
    try:
        return Query.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Problem(
            400, "invalid-query", "Invalid query", detail=f"{field_path(err['loc'])}: {err['msg']}"
        ) from None


def _in_time(at: datetime, query: Query) -> bool:
    return (query.since is None or at >= query.since) and (query.until is None or at < query.until)


def ledger_matches(entry: LedgerEntry, query: Query) -> bool:
    record = entry.record
    return (query.purpose is None or query.purpose in record.purposes) and _in_time(record.at, query)


def decision_matches(decision: Decision, query: Query, destinations: frozenset[str] | None) -> bool:
    return (
        (query.action is None or decision.action is query.action)
        and (query.destination is None or decision.destination == query.destination)
        and (query.shadow is None or decision.shadow is query.shadow)
        and (destinations is None or decision.destination in destinations)
        and _in_time(decision.at, query)
    )


def purpose_destinations(gateway: Gateway, purpose: str | None) -> frozenset[str] | None:
    """Destinations that serve ``purpose`` in the loaded policies (decisions are per destination)."""
    if purpose is None:
        return None
    return frozenset(d.id for p in gateway.policies.policies for d in p.destinations if purpose in d.purposes)


async def query_ledger(request: web.Request, query: Query) -> list[LedgerEntry]:
    entries = await request.app[STORE].ledger_entries(
        meeting_id=query.meeting_id, participant_id=query.participant_id
    )
    return [e for e in entries if ledger_matches(e, query)]


async def query_decisions(request: web.Request, query: Query) -> list[Decision]:
    decisions = await request.app[STORE].decision_records(
        meeting_id=query.meeting_id, participant_id=query.participant_id
    )
    dests = purpose_destinations(request.app[GATEWAY], query.purpose)
    return [d for d in decisions if decision_matches(d, query, dests)]


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "record": ledger.record_to_dict(entry.record),
    }


def _page(items: list[Any], query: Query) -> tuple[list[Any], bool]:
    page = items[query.offset : query.offset + query.limit]
    return page, query.offset + len(page) < len(items)


# --- meetings ------------------------------------------------------------------------------------------


def meeting_summary(state: MeetingState) -> dict[str, Any]:
    return {
        "platform": state.platform,
        "meeting_id": state.meeting_id,
        "ended": state.ended,
        "participants": len(state.participants),
        "present": len(state.present_ids()),
        "held_segments": len({h.segment.segment_id for h in state.held}),
    }


def meeting_detail(gateway: Gateway, state: MeetingState, now: datetime) -> dict[str, Any]:
    policy = gateway.policies.for_meeting(state.platform, state.meeting_id)
    purposes = sorted(policy.purposes) if policy else sorted({p for _, p in state.consents})
    participants = []
    for pid, person in sorted(state.participants.items(), key=lambda kv: kv[1].ordinal):
        consent = {}
        for purpose in purposes:
            entry = state.consent(pid, purpose)
            consent[purpose] = {
                "state": entry.at(now).value,
                "record_id": entry.record_id or None,
                "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
            }
        participants.append(
            {"id": pid, "ordinal": person.ordinal, "present": person.present, "consent": consent}
        )
    return {
        **meeting_summary(state),
        "jurisdiction": state.jurisdiction,
        "policy_revision": policy.revision if policy else None,
        "purposes": purposes,
        "participant_list": participants,
    }


def find_meeting(gateway: Gateway, platform: str, meeting_id: str) -> MeetingState:
    state = gateway.meeting(platform, meeting_id)
    if state is None:
        raise Problem(404, "not-found", "No live meeting with this id", detail=f"{platform}/{meeting_id}")
    return state


# --- handlers ------------------------------------------------------------------------------------------

_FILTERS = frozenset({"meeting_id", "participant_id", "purpose", "since", "until", "limit", "offset"})
_DECISION_FILTERS = _FILTERS | {"action", "destination", "shadow"}


async def list_meetings(request: web.Request) -> web.Response:
    states = sorted(request.app[GATEWAY].meetings(), key=lambda s: (s.platform, s.meeting_id))
    return web.json_response({"meetings": [meeting_summary(s) for s in states]})


async def get_meeting(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    state = find_meeting(gateway, request.match_info["platform"], request.match_info["meeting_id"])
    return web.json_response(meeting_detail(gateway, state, datetime.now().astimezone()))


async def get_ledger(request: web.Request) -> web.Response:
    query = parse_query(request, _FILTERS)
    page, more = _page(await query_ledger(request, query), query)
    return web.json_response({"entries": [entry_json(e) for e in page], "truncated": more})


async def get_decisions(request: web.Request) -> web.Response:
    query = parse_query(request, _DECISION_FILTERS)
    page, more = _page(await query_decisions(request, query), query)
    return web.json_response({"decisions": [decision_to_dict(d) for d in page], "truncated": more})


async def verify_ledger(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"expect_head"})
    if unknown:
        raise Problem(400, "invalid-query", "Invalid query", detail=f"{unknown[0]}: unknown parameter")
    report = await audit.verify_store(request.app[STORE], request.query.get("expect_head") or None)
    return web.json_response(report_json(report))


def report_json(report: ledger.VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "count": report.count,
        "head_hash": report.head_hash,
        "anchored": report.anchored,
        "problems": [{"seq": seq, "code": code} for seq, code in report.problems],
    }


EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


async def export(request: web.Request) -> web.StreamResponse:
    what = request.match_info["what"]
    fmt = request.query.get("format", "jsonl")
    if what not in ("ledger", "decisions"):
        raise Problem(404, "not-found", "Unknown log", detail="what: use ledger or decisions")
    if fmt not in EXPORT_TYPES:
        raise Problem(400, "invalid-query", "Invalid query", detail="format: use jsonl or csv")
    return await stream_export(request, what, fmt)


async def stream_export(request: web.Request, what: str, fmt: str) -> web.StreamResponse:
    """The export written by ``audit.export``, sent in chunks as an attachment."""
    buffer = io.StringIO()
    await audit.export(request.app[STORE], fmt=fmt, out=buffer, what=what)  # type: ignore[arg-type]
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{EXPORT_TYPES[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{what}.{fmt}"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    data = buffer.getvalue().encode()
    for start in range(0, len(data), 64 * 1024):
        await response.write(data[start : start + 64 * 1024])
    await response.write_eof()
    return response


async def policy_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[POLICIES].status(request.app[GATEWAY]))


async def policy_reload(request: web.Request) -> web.Response:
    # it takes nothing: a parameter it does not know (a "dry_run" it would ignore) must not reload for real
    if request.query:
        raise Problem(
            400, "invalid-query", "Invalid query", detail=f"{sorted(request.query)[0]}: unknown parameter"
        )
    if (await request.read()).strip():
        raise Problem(400, "invalid-body", "Invalid body", detail="body: the reload takes no body")
    outcome = request.app[POLICIES].reload(request.app[GATEWAY])
    if not outcome.ok:
        raise Problem(
            422, "policy-invalid", "Reload refused; the old policies keep serving",
            detail=outcome.errors[0], **outcome.document(),
        )  # fmt: skip
    return web.json_response(outcome.document())


class ShadowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: Annotated[list[Path], Field(max_length=16)]


async def policy_shadow(request: web.Request) -> web.Response:
    try:
        body = ShadowBody.model_validate_json(await request.read())
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Problem(
            400, "invalid-body", "Invalid body", detail=f"{field_path(err['loc']) or 'body'}: {err['msg']}"
        ) from None
    outcome = request.app[POLICIES].set_shadow(request.app[GATEWAY], body.paths)
    if not outcome.ok:
        raise Problem(
            422, "policy-invalid", "Shadow policy refused", detail=outcome.errors[0], **outcome.document()
        )
    return web.json_response(outcome.document())


# --- routing -------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler, need: Role) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        require(request, need)
        return await handler(request)

    guarded.__name__ = handler.__name__
    return guarded


ROUTES: tuple[tuple[str, str, Handler, Role], ...] = (
    ("GET", "/meetings", list_meetings, "auditor"),
    ("GET", "/meetings/{platform}/{meeting_id}", get_meeting, "auditor"),
    ("GET", "/ledger", get_ledger, "auditor"),
    ("GET", "/ledger/verify", verify_ledger, "auditor"),
    ("GET", "/decisions", get_decisions, "auditor"),
    ("GET", "/export/{what}", export, "auditor"),
    ("GET", "/policy", policy_status, "auditor"),
    ("POST", "/policy/reload", policy_reload, "admin"),
    ("POST", "/policy/shadow", policy_shadow, "admin"),
)
"""Every admin route with the least role it needs; ``auditor`` admits admin tokens too."""


def setup(app: web.Application, auth: AdminAuth) -> None:
    app[ADMIN_AUTH] = auth
    for method, path, handler, need in ROUTES:
        app.router.add_route(method, PREFIX + path, _guarded(handler, need))
