"""The dashboard over HTTP (no browser): who may see it, what a meeting's timeline holds, and what it never
shows (transcript text, display names)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import escape, unescape
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from gateway.web.dashboard import Row, decision_rows
from tests.conftest import tamper
from tests.web.harness import INGEST_TOKEN, MEETING, LiveGateway, consent, event, joined, segment, serving

AUDITOR = "dash-auditor-token"
ADMIN = "dash-admin-token"
SECRET_WORDS = "Quarterly numbers are terrible"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with serving(
        tmp_path, admin_tokens=(SecretStr(ADMIN),), auditor_tokens=(SecretStr(AUDITOR),)
    ) as live:
        yield live


async def meeting(gw: LiveGateway) -> None:
    await gw.send(
        joined("p-ada", "Ada Lovelace"),
        joined("p-bob", "Bob Marley"),
        consent("p-ada", "given", ("summary", "training")),
        segment("s1", "p-ada", SECRET_WORDS),
        segment("s2", "p-ada", SECRET_WORDS + " again"),
        segment("s3", "p-bob", "Bob says " + SECRET_WORDS),
        event("participant.left", MEETING, participant_id="p-bob"),
    )
    await gw.settle()


async def get(
    gw: LiveGateway, path: str, token: str | None = AUDITOR
) -> tuple[int, str, aiohttp.ClientResponse]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gw.http.get(gw.url + path, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp


async def test_pages_need_a_login_and_refuse_the_ingest_token(gw: LiveGateway) -> None:
    """Without credentials every page redirects to the login form; the ingest or a wrong token is a 401."""
    for path in ("/dashboard/", f"/dashboard/meetings/{MEETING}", "/dashboard/participants",
                 "/dashboard/export/ledger.jsonl"):  # fmt: skip
        status, _, resp = await get(gw, path, None)
        assert (status, resp.headers["Location"]) == (303, "/dashboard/login"), path
        for token in (INGEST_TOKEN, "wrong"):
            status, _, _ = await get(gw, path, token)
            assert status == 401, (path, token)


async def test_login_sets_a_strict_httponly_session_cookie(gw: LiveGateway) -> None:
    """A good token logs in with an HttpOnly, SameSite=Strict cookie; a bad one is a 401 form; after logout
    the old session id opens nothing."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        login = f"{gw.url}/dashboard/login"
        async with browser.post(login, data={"token": "nope"}, allow_redirects=False) as r:
            assert r.status == 401
            assert "not an admin or auditor token" in await r.text()
        async with browser.post(login, data={"token": AUDITOR}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
            session = r.cookies["cg_session"].value
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
        async with browser.get(f"{gw.url}/dashboard/", allow_redirects=False) as r:
            assert r.status == 200
        async with browser.post(f"{gw.url}/dashboard/logout", allow_redirects=False) as r:
            assert r.status == 303
    async with gw.http.get(
        f"{gw.url}/dashboard/", cookies={"cg_session": session}, allow_redirects=False
    ) as r:
        assert r.status == 303


async def test_timeline_shows_roster_consent_and_decision_counts_never_text(gw: LiveGateway) -> None:
    """A meeting's page lists joins and leaves, the consent record with channel, and decisions as counts
    with reasons and rule ids; no transcript text and no display name appears."""
    await meeting(gw)
    status, html, resp = await get(gw, f"/dashboard/meetings/{MEETING}")
    assert status == 200
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    for expected in ("joined", "left", "given (accepted) for summary, training", "channel api",
                     "forward → summariser", "drop → summariser", "consent_unknown",
                     "destinations.summariser.purposes"):  # fmt: skip
        assert expected in html, expected
    for private in ("Quarterly", "terrible", "Ada Lovelace", "Bob Marley"):
        assert private not in html


async def test_overview_and_participant_search(gw: LiveGateway) -> None:
    """The overview shows verification and live meetings; a search lists the participant's records."""
    await meeting(gw)
    status, html, _ = await get(gw, "/dashboard/")
    assert status == 200 and "Verified: 1 entries" in html and MEETING in html
    status, html, _ = await get(gw, "/dashboard/participants?participant_id=p-ada")
    assert status == 200 and "given" in html and MEETING in html
    status, html, _ = await get(gw, "/dashboard/participants?participant_id=p-nobody")
    assert "Nothing is recorded" in html
    status, _, _ = await get(gw, "/dashboard/meetings/never-held")
    assert status == 404


async def test_links_reach_meetings_whose_ids_hold_slash_plus_and_equals(gw: LiveGateway) -> None:
    """Links to a meeting whose id holds ``/``, ``+`` and ``=`` (a Zoom meeting UUID) open it, on any page."""
    zoom_uuid, pid = "aDYl/hsHRtCd4ii1uC2+hA==", "p/ada+1="
    await gw.send(
        event("meeting.started", zoom_uuid),
        joined(pid, "Ada", zoom_uuid),
        consent(pid, "given", meeting=zoom_uuid),
        segment("s1", pid, "hello", zoom_uuid),
    )
    await gw.settle()
    _, overview, _ = await get(gw, "/dashboard/")
    (meeting_href,) = _links(overview, "/dashboard/meetings/")
    status, page, _ = await get(gw, meeting_href)
    assert status == 200 and f"Meeting <code>{escape(zoom_uuid)}</code>" in page
    (participant_href,) = _links(page, "/dashboard/participants?")
    status, page, _ = await get(gw, participant_href)
    assert status == 200 and f"<code>{escape(pid)}</code>" in page
    hrefs = _links(page, "/dashboard/meetings/")
    assert hrefs == [meeting_href, meeting_href]  # the consent record and the decision counts
    for href in hrefs:
        status, _, _ = await get(gw, href)
        assert status == 200, href


def _links(page: str, prefix: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="([^"]*)"', page) if h.startswith(prefix)]


async def test_overview_reports_a_tampered_ledger(gw: LiveGateway) -> None:
    """An entry edited in the database (triggers out of the way, as an attacker would) shows as FAILED."""
    await meeting(gw)
    await tamper(gw.database, "UPDATE ledger SET record_json = replace(record_json, 'given', 'refused')")
    status, html, _ = await get(gw, "/dashboard/")
    assert status == 200 and "Verification FAILED" in html and "hash_mismatch" in html


async def test_exports_download_with_a_session(gw: LiveGateway) -> None:
    """Export buttons download the ledger and decision log in both formats."""
    await meeting(gw)
    for name in ("ledger.jsonl", "ledger.csv", "decisions.jsonl", "decisions.csv"):
        status, body, resp = await get(gw, f"/dashboard/export/{name}")
        assert status == 200 and resp.headers["Content-Disposition"].endswith(f'"{name}"')
        assert "Quarterly" not in body
    status, _, _ = await get(gw, "/dashboard/export/secrets.txt")
    assert status == 404


def test_like_decisions_collapse_into_counted_rows() -> None:
    """A run of decisions about one participant is one counted row per destination, action and reasons."""
    from datetime import UTC, datetime

    from gateway.model import Action, Decision

    at = datetime(2026, 1, 1, tzinfo=UTC)

    def d(i: int, action: Action) -> Decision:
        return Decision(
            f"d{i}", "m", f"s{i}", "dest", action, at, "rev", ("r",), ("rule",), participant_id="p"
        )

    rows = decision_rows(
        [d(1, Action.FORWARD), d(2, Action.FORWARD), d(3, Action.DROP), d(4, Action.FORWARD)]
    )
    assert [(r.what, r.count) for r in rows] == [
        ("forward → dest", 3),
        ("drop → dest", 1),
    ]
    assert all(isinstance(r, Row) for r in rows)
