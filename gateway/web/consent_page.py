"""The participant's consent page: ``/consent/{token}`` (receipts and the link API: ``consent_api``).

``GET`` shows, in the policy's languages, each purpose's notice and version, which destinations receive
it, the participant's current choice, and a Yes/No pair per purpose with neither selected (never a
pre-ticked box; "No" looks exactly like "Yes"). ``POST`` records one ledger record per changed group
through ``Gateway.handle`` with channel ``consent_page``, the participant as ``indicated_by`` and the form's
submission id as evidence, then redirects back (post/redirect/get) to show the receipt.

CSRF: the page has no cookies and no ambient authority; the only credential is the unguessable signed
token in the URL, which a cross-site attacker cannot know, so a forged cross-site POST fails like any
request without the token. On top: each render carries a signed form state (render time, submission id,
notice versions shown) that must come back intact and fresh, which also makes a resubmitted form
idempotent; ``form-action 'self'`` and ``frame-ancestors 'none'`` (no clickjacking of a consent button);
``Referrer-Policy: no-referrer`` so the token does not leak to other sites.

Any bad, expired or foreign token answers the same 403 page, without saying which check failed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup

from gateway import engine
from gateway.consent.changes import plan, withdraw_all
from gateway.consent.links import LinkScope
from gateway.events import ConsentSubmitted
from gateway.meeting import MeetingState, with_records
from gateway.model import ConsentState, Purpose, RecordOutcome
from gateway.policy.compiled import Policy
from gateway.runtime import wall_clock
from gateway.store.base import LedgerEntry, StorageError
from gateway.web.consent_text import LANGUAGE_NAMES, TEXT, negotiate, words
from gateway.web.keys import GATEWAY, LINKS, RECEIPTS, STORE

log = structlog.get_logger("gateway.consent_page")
CHANNEL = engine.CONSENT_PAGE
FORM_MAX_AGE = timedelta(hours=12)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_CSS = _ENV.loader.get_source(_ENV, "consent/_style.html")[0] if _ENV.loader else ""
_CSS_MARKUP = Markup(_CSS)  # noqa: S704 -- our packaged stylesheet, not input
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_STATE_TEXT = {
    ConsentState.UNKNOWN: "state_unknown",
    ConsentState.GIVEN: "state_given",
    ConsentState.REFUSED: "state_refused",
    ConsentState.WITHDRAWN: "state_withdrawn",
    ConsentState.EXPIRED: "state_expired",
}


class Refused(Exception):
    """The link cannot be used (bad, expired, foreign, or its meeting has no policy accepting the page)."""


@dataclass(frozen=True, slots=True)
class _Link:
    token: str
    scope: LinkScope
    policy: Policy
    """The policy governing the meeting; when none does, the one that last did (else the first loaded),
    for its words only: the page then offers nothing but "Withdraw all" (``governed``)."""
    lang: str
    governed: bool = True


Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html_errors(handler: Page) -> Page:
    """Errors as HTML pages: a refused link is 403, storage trouble 503, anything else 500 (type logged)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused:
            return _render_refused(request, 403, "refused_title", "refused_text")
        except StorageError:
            log.error("storage.unavailable", path="/consent")
            return _render_refused(request, 503, "error_title", "error_text")
        except web.HTTPException:
            raise
        except Exception as exc:
            log.error("consent_page.error", error=type(exc).__name__)
            return _render_refused(request, 500, "error_title", "error_text")

    return wrapped


def _render_refused(request: web.Request, status: int, title: str, text: str) -> web.Response:
    lang = negotiate(None, request.headers.get("Accept-Language"), list(TEXT))
    t = words(lang)
    body = _ENV.get_template("consent/refused.html").render(
        lang=lang, t=t, css=_CSS_MARKUP, heading=t[title], text=t[text]
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=HEADERS)


def link_of(request: web.Request) -> _Link:
    token = request.match_info["token"]
    checked = request.app[LINKS].signer.verify(token, wall_clock())
    if checked.scope is None:
        log.info("consent_page.link_refused", reason=str(checked.refusal))
        raise Refused
    scope = checked.scope
    gateway = request.app[GATEWAY]
    policy = gateway.policies.for_meeting(scope.platform, scope.meeting_id)
    # Every channel can also withdraw: a policy reloaded without this channel still shows the page (a "No"
    # is recorded; a "Yes" is recorded as rejected, channel_not_allowed, and the page says so), and a
    # meeting no policy covers any more (a reload narrowed applies_to) shows it to withdraw everything,
    # recorded all the same, so that nothing flows when a later policy covers the meeting again.
    governed = policy is not None
    if policy is None:
        policy = gateway.last_policy(scope.platform, scope.meeting_id) or next(
            iter(gateway.policies.policies), None
        )
    if policy is None:
        log.info("consent_page.link_refused", reason="no_policy_loaded")
        raise Refused
    lang = negotiate(request.query.get("lang"), request.headers.get("Accept-Language"), policy.spec.languages)
    return _Link(token, scope, policy, lang, governed)


async def entries_of(request: web.Request, scope: LinkScope) -> list[LedgerEntry]:
    """The participant's ledger entries in this meeting, in chain order."""
    entries = await request.app[STORE].ledger_entries(
        meeting_id=scope.meeting_id, participant_id=scope.participant_id
    )
    return [
        e for e in entries if e.record.platform == scope.platform and e.record.subject == scope.participant_id
    ]


def _consents(scope: LinkScope, entries: Sequence[LedgerEntry]) -> MeetingState:
    return with_records(MeetingState(scope.platform, scope.meeting_id), (e.record for e in entries))


# --- GET ------------------------------------------------------------------------------------------


@_html_errors
async def show(request: web.Request) -> web.StreamResponse:
    link = link_of(request)
    entries = await entries_of(request, link.scope)
    saved = request.query.get("saved")
    messages = _saved_messages(link, entries, saved) if saved else []
    return await _render(request, link, entries, messages, saved=saved)


def _uncovered(link: _Link) -> list[dict[str, Any]]:
    return [] if link.governed else [{"text": words(link.lang)["uncovered"], "problem": True}]


def _saved_messages(link: _Link, entries: Sequence[LedgerEntry], saved: str) -> list[dict[str, Any]]:
    t = words(link.lang)
    ours = [e.record for e in entries if e.record.evidence == saved]
    rejected = [r for r in ours if r.outcome is RecordOutcome.REJECTED]
    out = [{"text": t["saved"], "problem": False}] if len(rejected) < len(ours) else []
    for reason in dict.fromkeys(r.reason for r in rejected):
        out.append({"text": t.get(f"rejected_{reason}", t["rejected_other"]), "problem": True})
    return out


async def _render(
    request: web.Request,
    link: _Link,
    entries: Sequence[LedgerEntry],
    messages: list[dict[str, Any]],
    *,
    saved: str | None = None,
    status: int = 200,
) -> web.Response:
    now = wall_clock()
    t = words(link.lang)
    consents = _consents(link.scope, entries)
    by_id = {e.record.record_id: e for e in entries}
    purposes = [_purpose_view(link, p, consents, by_id, now) for p in link.policy.purposes]
    shown = {p: spec.notice_version for p, spec in link.policy.purposes.items()}
    form_state = json.dumps([int(now.timestamp()), uuid.uuid4().hex, shown], separators=(",", ":"))
    base = f"/consent/{link.token}"
    receipts = [e for e in entries if saved and e.record.evidence == saved]
    body = _ENV.get_template("consent/page.html").render(
        lang=link.lang,
        t=t,
        css=_CSS_MARKUP,
        languages=[(code, LANGUAGE_NAMES.get(code, code)) for code in link.policy.spec.languages],
        name=_name(request, link.scope),
        messages=[*_uncovered(link), *messages],
        withdraw_only=not link.governed,
        purposes=purposes,
        action=f"{base}?lang={link.lang}",
        form_state=form_state,
        form_mac=request.app[LINKS].signer.form_mac(link.token, form_state),
        receipts=[_receipt_view(request, link, e, base) for e in receipts],
        history=[_history_view(link, e, base) for e in reversed(entries)],
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=HEADERS)


def _name(request: web.Request, scope: LinkScope) -> str | None:
    state = request.app[GATEWAY].meeting(scope.platform, scope.meeting_id)
    person = state.participants.get(scope.participant_id) if state is not None else None
    return person.name if person is not None else None


def _purpose_view(
    link: _Link, purpose: Purpose, consents: MeetingState, by_id: Mapping[str, LedgerEntry], now: datetime
) -> dict[str, Any]:
    spec = link.policy.purposes[purpose]
    text = spec.translations.get(link.lang, spec)
    entry = consents.consent(link.scope.participant_id, purpose)
    current = words(link.lang)[_STATE_TEXT[entry.at(now)]]
    since = by_id.get(entry.record_id)
    if since is not None:
        current += f" ({words(link.lang)['since']} {_when(since.record.at)})"
    return {
        "id": purpose,
        "description": text.description,
        "notice": text.notice,
        "notice_version": spec.notice_version,
        "destinations": [d.id for d in link.policy.destinations if purpose in d.purposes],
        "current": current,
    }


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _choice_text(link: _Link, entry: LedgerEntry) -> str:
    t = words(link.lang)
    if entry.record.outcome is RecordOutcome.REJECTED:
        return t["choice_rejected"]
    return t[f"choice_{entry.record.choice.value}"]


def _history_view(link: _Link, entry: LedgerEntry, base: str) -> dict[str, Any]:
    return {
        "at": _when(entry.record.at),
        "purposes": ", ".join(entry.record.purposes),
        "choice_text": _choice_text(link, entry),
        "record_id": entry.record.record_id,
        "href": f"{base}/receipt.json?record={entry.record.record_id}",
    }


def _receipt_view(request: web.Request, link: _Link, entry: LedgerEntry, base: str) -> dict[str, Any]:
    return {
        **_history_view(link, entry, base),
        "seq": entry.seq,
        "entry_hash": entry.hash,
        "key_id": request.app[RECEIPTS].key_id,
    }


# --- POST -----------------------------------------------------------------------------------------


@_html_errors
async def submit(request: web.Request) -> web.StreamResponse:
    link = link_of(request)
    form = await request.post()
    entries = await entries_of(request, link.scope)
    t = words(link.lang)
    parsed = _form_state(request, link, form)
    if parsed is None:
        return await _render(request, link, entries, [{"text": t["form_stale"], "problem": True}], status=400)
    submission, shown = parsed
    if any(e.record.evidence == submission for e in entries):  # the same form sent twice
        raise _saved(link, submission)
    now = wall_clock()
    consents = _consents(link.scope, entries)
    values = {p: form.get(f"purpose.{p}") for p in link.policy.purposes if p in shown}
    if any(v not in (None, "yes", "no") for v in values.values()):
        return await _render(request, link, entries, [{"text": t["form_stale"], "problem": True}], status=400)
    if form.get("action") == "withdraw_all":
        groups = withdraw_all(consents, link.scope.participant_id, shown, now)
        empty = "nothing_to_withdraw"
    elif not link.governed:  # nothing to check a "Yes" against: only withdrawing is offered
        return await _render(request, link, entries, [], status=400)
    else:
        choices = {p: v == "yes" for p, v in values.items() if isinstance(v, str)}
        groups = plan(consents, link.scope.participant_id, choices, shown, now)
        empty = "nothing_changed" if choices else "nothing_chosen"
    if not groups:
        return await _render(request, link, entries, [{"text": t[empty], "problem": False}])
    for choice, purposes, version in groups:
        event = ConsentSubmitted(
            platform=link.scope.platform,
            meeting_id=link.scope.meeting_id,
            participant_id=link.scope.participant_id,
            purposes=purposes,
            choice=choice,
            indicated_by=link.scope.participant_id,
            channel=CHANNEL,
            at=now,
            notice_version=version,
            evidence=submission,
        )
        await request.app[GATEWAY].handle(link.scope.platform, event, now)
    raise _saved(link, submission)


def _saved(link: _Link, submission: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/consent/{link.token}?lang={link.lang}&saved={submission}", headers=HEADERS)


def _form_state(
    request: web.Request, link: _Link, form: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    """The submission id and notice versions the page put in the form, if it came back intact and fresh."""
    state, mac = form.get("state"), form.get("mac")
    if not isinstance(state, str) or not isinstance(mac, str):
        return None
    if not request.app[LINKS].signer.form_ok(link.token, state, mac):
        return None
    issued, submission, shown = json.loads(state)
    if not 0 <= wall_clock().timestamp() - issued <= FORM_MAX_AGE.total_seconds():
        return None
    return str(submission), {str(p): str(v) for p, v in shown.items()}
