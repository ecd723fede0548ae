"""The auditors' dashboard: server-rendered pages over the admin API's data, usable without JavaScript.

Pages: an overview (ledger verification, live meetings, participant search, export buttons), a meeting's
timeline (joins and leaves, consent records with channel and time, decisions as counts with reasons and rule
ids) and a participant's records across meetings. Never transcript text, never display names: ids, states,
codes and counts.

Credentials: the admin API's tokens. Either ``Authorization: Bearer`` on every request (scripts, proxies) or
the login form, which trades a token for an opaque random session id in an ``HttpOnly; SameSite=Strict``
cookie (``Secure`` over HTTPS). Sessions live in memory and end after 8 hours, at logout, or at restart.
SameSite=Strict keeps the cookie off cross-site requests, which is the CSRF defence for the two POST forms
(login, logout); every other page is a GET that changes nothing.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from gateway import audit
from gateway.events import MeetingEvent, ParticipantJoined, ParticipantLeft
from gateway.model import ConsentRecord, Decision
from gateway.runtime import Gateway
from gateway.runtime import Result as EventResult
from gateway.store.base import LedgerEntry
from gateway.web.admin import ADMIN_AUTH, SESSION_COOKIE, find_meeting, meeting_detail, stream_export
from gateway.web.keys import GATEWAY, STORE
from gateway.web.problems import Handler, Problem

BASE = "/dashboard"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "dashboard"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_MAX_MEETINGS = 1000
_MAX_ROSTER = 500


# --- who joined and left (the ledger and decision log do not record it) ---------------------------------


@dataclass(frozen=True, slots=True)
class RosterChange:
    at: datetime
    participant_id: str
    change: str
    """``joined`` or ``left``."""


class Roster:
    """A ``runtime.Observer`` keeping recent joins and leaves per meeting, bounded, in memory only: it
    covers what this process saw since it started, which the timeline says."""

    def __init__(self) -> None:
        self._changes: dict[str, deque[RosterChange]] = {}

    def on_event(self, platform: str, event: MeetingEvent, result: EventResult) -> None:
        if result.status != "accepted" or not isinstance(event, ParticipantJoined | ParticipantLeft):
            return
        change = "joined" if isinstance(event, ParticipantJoined) else "left"
        if event.meeting_id not in self._changes and len(self._changes) >= _MAX_MEETINGS:
            del self._changes[next(iter(self._changes))]  # the oldest meeting goes first
        lane = self._changes.setdefault(event.meeting_id, deque(maxlen=_MAX_ROSTER))
        lane.append(RosterChange(event.at, event.participant_id, change))

    def on_decisions(self, decisions: Sequence[Decision]) -> None:
        pass

    def on_consent(self, record: ConsentRecord) -> None:
        pass

    def changes(self, meeting_id: str) -> list[RosterChange]:
        return list(self._changes.get(meeting_id, ()))


ROSTER = web.AppKey("dashboard_roster", Roster)
TEMPLATE_ENV = web.AppKey("dashboard_templates", jinja2.Environment)


# --- timeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One timeline line: a roster change, a consent record, or a run of like decisions."""

    at: datetime
    until: datetime | None
    kind: str
    participant: str
    what: str
    detail: str
    count: int = 1


def decision_rows(decisions: Iterable[Decision]) -> list[Row]:
    """Each run of consecutive decisions about one participant's words becomes one row per destination,
    action, reasons and rules, with a count: what happened, and why, without a line per segment."""
    rows = []
    for pid, run in itertools.groupby(decisions, key=lambda d: d.participant_id):
        groups: dict[tuple[Any, ...], list[Decision]] = {}
        for d in run:
            groups.setdefault((d.destination, d.action, d.reasons, d.rule_ids, d.shadow), []).append(d)
        for (dest, action, reasons, rules, shadow), items in groups.items():
            what = f"{'shadow ' if shadow else ''}{action.value} → {dest}"
            detail = f"reasons: {', '.join(reasons) or '—'}; rules: {', '.join(rules) or '—'}"
            who = pid or "(unattributed)"
            rows.append(Row(items[0].at, items[-1].at, "decision", who, what, detail, len(items)))
    return rows


def consent_row(entry: LedgerEntry) -> Row:
    r = entry.record
    what = f"{r.choice.value} ({r.outcome.value}) for {', '.join(r.purposes)}"
    detail = f"channel {r.channel}; indicated by {r.indicated_by}; record {r.record_id}; seq {entry.seq}"
    if r.reason:
        detail += f"; reason {r.reason}"
    return Row(r.at, None, "consent", r.subject, what, detail)


def timeline(changes: Iterable[RosterChange], entries: Iterable[LedgerEntry], decisions: list[Decision]
             ) -> list[Row]:  # fmt: skip
    rows = [Row(c.at, None, "roster", c.participant_id, c.change, "") for c in changes]
    rows += [consent_row(e) for e in entries]
    rows += decision_rows(decisions)
    return sorted(rows, key=lambda row: row.at)


def decision_counts(decisions: Iterable[Decision]) -> list[tuple[str, str, str, str, int]]:
    counts = Counter(
        (d.destination, ("shadow " if d.shadow else "") + d.action.value, ", ".join(d.reasons),
         ", ".join(d.rule_ids))
        for d in decisions
    )  # fmt: skip
    return [(*key, n) for key, n in sorted(counts.items())]


# --- auth and rendering ---------------------------------------------------------------------------------


def _authorised(request: web.Request) -> bool:
    """True for a valid token or session; 401 for a bad bearer token; False when the caller must log in."""
    auth = request.app[ADMIN_AUTH]
    if request.headers.get("Authorization", "").startswith("Bearer "):
        auth.role(request)  # raises 401 for a wrong token
        return True
    session = request.cookies.get(SESSION_COOKIE)
    return session is not None and auth.role_of_session(session) is not None


def _page(handler: Handler) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        if not _authorised(request):
            raise web.HTTPSeeOther(f"{BASE}/login")
        response = await handler(request)
        if not response.prepared:
            response.headers.update(_HEADERS)
        return response

    page.__name__ = handler.__name__
    return page


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    html = request.app[TEMPLATE_ENV].get_template(template).render(base=BASE, **context)
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers.update(_HEADERS)
    return response


def url_component(value: object) -> str:
    """Percent-encode every reserved character, ``/`` included, for an id placed in a URL path or query.

    Jinja's ``urlencode`` leaves ``/`` alone, and ids are not ours to choose: Zoom's meeting UUIDs are
    base64 and often hold ``/``, which would split the path and send the link to a 404.
    """
    return quote(str(value), safe="")


def _short(value: str | None) -> str:
    return (value or "")[:12]


def _time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- pages ---------------------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    session = request.app[ADMIN_AUTH].login(token) if isinstance(token, str) and token else None
    if session is None:
        return render(request, "login.html", status=401, error="That token is not an admin or auditor token.")
    response = web.HTTPSeeOther(f"{BASE}/")
    response.set_cookie(
        SESSION_COOKIE, session, httponly=True, samesite="Strict", secure=request.secure, path=BASE,
    )  # fmt: skip
    raise response


async def logout(request: web.Request) -> web.Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        request.app[ADMIN_AUTH].logout(session)
    response = web.HTTPSeeOther(f"{BASE}/login")
    response.del_cookie(SESSION_COOKIE, path=BASE)
    raise response


async def overview(request: web.Request) -> web.Response:
    report = await audit.verify_store(request.app[STORE])
    meetings = sorted(request.app[GATEWAY].meetings(), key=lambda s: (s.platform, s.meeting_id))
    return render(request, "overview.html", report=report, meetings=meetings, short=_short)


async def meeting_page(request: web.Request) -> web.Response:
    meeting_id = request.match_info["meeting_id"]
    gateway: Gateway = request.app[GATEWAY]
    live = [
        meeting_detail(gateway, find_meeting(gateway, s.platform, s.meeting_id), datetime.now(UTC))
        for s in gateway.meetings()
        if s.meeting_id == meeting_id
    ]
    store = request.app[STORE]
    entries = await store.ledger_entries(meeting_id=meeting_id)
    decisions = await store.decision_records(meeting_id=meeting_id)
    if not live and not entries and not decisions:
        raise Problem(404, "not-found", "Nothing is known about this meeting", detail=meeting_id)
    rows = timeline(request.app[ROSTER].changes(meeting_id), entries, decisions)
    return render(
        request, "meeting.html", meeting_id=meeting_id, live=live, rows=rows, fmt=_time,
        counts=decision_counts(decisions), total=len(decisions),
    )  # fmt: skip


async def participant_page(request: web.Request) -> web.Response:
    pid = request.query.get("participant_id", "").strip()
    entries: list[LedgerEntry] = []
    counts: list[tuple[str, str, int]] = []
    if pid:
        entries = await request.app[STORE].ledger_entries(participant_id=pid)
        decisions = await request.app[STORE].decision_records(participant_id=pid)
        tally = Counter((d.meeting_id, ("shadow " if d.shadow else "") + d.action.value) for d in decisions)
        counts = [(*key, n) for key, n in sorted(tally.items())]
    return render(request, "participant.html", pid=pid, entries=entries, counts=counts, fmt=_time)


async def export(request: web.Request) -> web.StreamResponse:
    what, fmt = request.match_info["what"], request.match_info["fmt"]
    if what not in ("ledger", "decisions") or fmt not in ("jsonl", "csv"):
        raise Problem(404, "not-found", "Unknown export", detail=f"{what}.{fmt}")
    return await stream_export(request, what, fmt)


async def stylesheet(_: web.Request) -> web.Response:
    css = (TEMPLATES / "dashboard.css").read_text()
    return web.Response(text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


def setup(app: web.Application) -> None:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["url_component"] = url_component
    app[TEMPLATE_ENV] = env
    app[ROSTER] = Roster()
    r = app.router
    r.add_get(f"{BASE}/login", login_form)
    r.add_post(f"{BASE}/login", login)
    r.add_post(f"{BASE}/logout", logout)
    r.add_get(f"{BASE}/dashboard.css", stylesheet)
    r.add_get(f"{BASE}/", _page(overview))
    r.add_get(f"{BASE}/meetings/{{meeting_id}}", _page(meeting_page))
    r.add_get(f"{BASE}/participants", _page(participant_page))
    r.add_get(f"{BASE}/export/{{what:[a-z]+}}.{{fmt:[a-z]+}}", _page(export))
    app.on_startup.append(_observe)


async def _observe(app: web.Application) -> None:
    # runs after cleanup_ctx has built the Gateway (aiohttp starts cleanup contexts first)
    app[GATEWAY].observers.append(app[ROSTER])
