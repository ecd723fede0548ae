"""Receipts and links over HTTP, and the wiring of the consent page, receipts and notices.

A link's ``receipt.json``, the receipt public key, and the integration's
``GET /v1/meetings/{meeting_id}/participants/{participant_id}/consent-link``. Receipt JSON is scoped by
the same signed link as the page (a bad link answers 403 problem+json); the link API uses the ingest
credentials, like ``/v1/events``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from gateway.consent.links import ConsentLinks, LinkSigner
from gateway.consent.receipts import ReceiptSigner
from gateway.notifier import Notifier
from gateway.runtime import wall_clock
from gateway.settings import Settings, SettingsError
from gateway.web import consent_page
from gateway.web.consent_page import Refused, entries_of, link_of
from gateway.web.keys import AUTH, LINKS, NOTIFIER, RECEIPTS, SETTINGS
from gateway.web.problems import Problem

log = structlog.get_logger("gateway.consent_api")


async def receipt_json(request: web.Request) -> web.Response:
    """The latest receipt in the link's scope, or ``?record=`` one of them."""
    try:
        link = link_of(request)
    except Refused:
        raise Problem(403, "link-refused", "This link cannot be used") from None
    entries = await entries_of(request, link.scope)
    wanted = request.query.get("record")
    chosen = [e for e in entries if wanted is None or e.record.record_id == wanted]
    if not chosen:
        raise Problem(404, "no-receipt", "No consent record in this link's scope", detail="record")
    settings = request.app[SETTINGS]
    issuer = settings.links_base if settings.public_url else str(request.url.origin())
    receipt = request.app[RECEIPTS].issue(chosen[-1], wall_clock(), issuer)
    return web.json_response(receipt, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def receipt_key(request: web.Request) -> web.Response:
    """The public key that verifies receipts, as a JWK set."""
    return web.json_response(request.app[RECEIPTS].jwks(), headers={"Cache-Control": "max-age=300"})


async def consent_link(request: web.Request) -> web.Response:
    """``GET /v1/meetings/{meeting_id}/participants/{participant_id}/consent-link`` (ingest credentials)."""
    request.app[AUTH].accepted(await request.app[AUTH].check(request.headers, b""))
    meeting_id, participant_id = request.match_info["meeting_id"], request.match_info["participant_id"]
    platform = request.query.get("platform")
    notices = request.app[NOTIFIER].latest_links(meeting_id, participant_id, wall_clock(), platform)
    if not notices:
        raise Problem(
            404, "no-consent-link", "No current consent link for this participant", detail="participant_id"
        )
    if len(notices) > 1:  # the same ids on two platforms are two people: never hand out the wrong link
        raise Problem(409, "ambiguous-participant", "These ids name a participant on several platforms",
                      detail="platform")  # fmt: skip
    (notice,) = notices
    data = dict(notice.data)
    if request.app[SETTINGS].public_url is None:
        # without a configured public URL, links are relative to where the integration reached us
        data["url"] = f"{request.url.origin()}{data['path']}"
    return web.json_response(
        {"platform": notice.platform, "meeting_id": meeting_id, "participant_id": participant_id, **data},
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/consent/{token}", consent_page.show)
    app.router.add_post("/consent/{token}", consent_page.submit)
    app.router.add_get("/consent/{token}/receipt.json", receipt_json)
    app.router.add_get("/.well-known/consent-gateway/receipt-key", receipt_key)
    app.router.add_get("/v1/meetings/{meeting_id}/participants/{participant_id}/consent-link", consent_link)


def setup(app: web.Application, settings: Settings) -> None:
    """Links, receipts, the notifier and the routes above; ``create_app`` calls this before delivery."""
    link_secret = settings.link_secret.get_secret_value() if settings.link_secret else None
    receipt_key = settings.receipt_key.get_secret_value() if settings.receipt_key else None
    if link_secret is None or receipt_key is None:
        # serve fills both from secrets.json; an app built without them (tests, the demo) gets keys that
        # last as long as the process: its links and receipt key change on restart, nothing else
        log.info("consent_page.ephemeral_keys")
    signer = LinkSigner(link_secret or secrets.token_urlsafe(32))
    app[LINKS] = ConsentLinks(signer, settings.links_base)
    app[RECEIPTS] = (
        ReceiptSigner.from_b64(receipt_key) if receipt_key else ReceiptSigner(secrets.token_bytes(32))
    )
    outbound = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    if settings.notify_url is not None and outbound is None:
        raise SettingsError("notify_url: needs signing_secret to sign notices")
    app[NOTIFIER] = Notifier(settings.notify_url, outbound or "")
    app.cleanup_ctx.append(_notices)
    add_routes(app)


async def _notices(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        await app[NOTIFIER].start(session)
        yield
        await app[NOTIFIER].drain(timeout=2.0)
        await app[NOTIFIER].close()
