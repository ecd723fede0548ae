"""The admin API through the real server: who may call it, and what each endpoint answers.

Every ``/admin/v1`` route found on the app's router is called without credentials, with the ingest token and
with a wrong token, and must refuse each with a 401 problem document; auditor tokens read but cannot reload.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway import audit
from gateway.app import create_app
from gateway.consent import ledger
from gateway.settings import Settings, SettingsError
from gateway.web.admin import PREFIX
from tests.web.harness import (
    INGEST_TOKEN,
    MEETING,
    PROBLEM_JSON,
    LiveGateway,
    consent,
    joined,
    segment,
    serving,
)

ADMIN = "test-admin-token"
AUDITOR = "test-auditor-token"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[LiveGateway]:
    """A gateway with one admin and one auditor token."""
    async with serving(
        tmp_path, admin_tokens=(SecretStr(ADMIN),), auditor_tokens=(SecretStr(AUDITOR),)
    ) as live:
        yield live


async def call(
    gw: LiveGateway, method: str, path: str, token: str | None = ADMIN, **kwargs: Any
) -> tuple[int, str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gw.http.request(method, gw.url + path, headers=headers, **kwargs) as resp:
        raw = await resp.read()
        is_json = resp.content_type in ("application/json", PROBLEM_JSON)
        return resp.status, resp.content_type, json.loads(raw) if is_json else raw.decode()


def admin_routes(gw: LiveGateway) -> list[tuple[str, str]]:
    """Every admin route on the router, with placeholders filled in."""
    routes = []
    for route in gw.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if path.startswith(PREFIX):
            filled = path.replace("{platform}", "generic").replace("{meeting_id}", MEETING)
            routes.append((route.method, filled.replace("{what}", "ledger")))
    return routes


async def meeting_with_consent(gw: LiveGateway) -> None:
    await gw.send(
        joined("p-ada", "Ada Lovelace"),
        joined("p-bob", "Bob"),
        consent("p-ada", "given", ("summary", "training")),
        consent("p-bob", "refused"),
        segment("s1", "p-ada", "Hello everyone."),
        segment("s2", "p-bob", "Hi."),
    )
    await gw.settle()


# --- authentication ------------------------------------------------------------------------------------


async def test_every_admin_route_refuses_missing_ingest_and_wrong_tokens(gw: LiveGateway) -> None:
    """No admin route answers without a token, with the ingest token, or with a made-up token: 401 each."""
    routes = admin_routes(gw)
    assert len(routes) >= 9
    for method, path in routes:
        for token in (None, INGEST_TOKEN, "not-a-token"):
            status, ctype, doc = await call(gw, method, path, token)
            assert (status, ctype) == (401, PROBLEM_JSON), (method, path, token)
            assert doc["status"] == 401
    assert await gw.ledger() == []


async def test_admin_routes_refuse_signed_webhook_requests_and_cookies(gw: LiveGateway) -> None:
    """A forged session cookie is no credential on the API; only bearer tokens are read there."""
    for method, path in admin_routes(gw):
        async with gw.http.request(method, gw.url + path, cookies={"cg_session": "forged"}) as resp:
            assert resp.status == 401, (method, path)


async def test_auditor_reads_but_cannot_reload_or_shadow(gw: LiveGateway) -> None:
    """An auditor token reads every GET route and gets 403 on the POST routes."""
    for method, path in admin_routes(gw):
        status, ctype, _ = await call(gw, method, path, AUDITOR, json={"paths": []})
        if method == "POST":
            assert (status, ctype) == (403, PROBLEM_JSON), path
        else:
            assert status in (200, 404), path  # 404: the meeting in the path is not live


POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


def test_admin_token_equal_to_ingest_token_refuses_to_start(tmp_path: Path) -> None:
    """Configuring the ingest token as an auditor token is a settings error at start."""
    settings = Settings(
        database=f"sqlite:///{tmp_path}/gw.db",
        policies=(POLICY,),
        ingest_token=SecretStr("same"),
        signing_secret=SecretStr("whsec_" + "A" * 44),
        auditor_tokens=(SecretStr("same"),),
    )
    with pytest.raises(SettingsError, match="ingest token"):
        create_app(settings)


async def test_request_id_is_echoed_or_created(gw: LiveGateway) -> None:
    """A sane X-Request-Id comes back unchanged; without one (or with a weird one) a fresh id is returned."""
    async with gw.http.get(f"{gw.url}/healthz", headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.headers["X-Request-Id"] == "abc-123"
    async with gw.http.get(f"{gw.url}/admin/v1/ledger", headers={"X-Request-Id": "bad id;<x>"}) as resp:
        assert resp.status == 401
        assert len(resp.headers["X-Request-Id"]) == 32


# --- meetings ------------------------------------------------------------------------------------------


async def test_meetings_list_and_consent_state_per_purpose(gw: LiveGateway) -> None:
    """Live meetings are listed; a meeting's participants show their consent state per policy purpose."""
    await meeting_with_consent(gw)
    status, _, doc = await call(gw, "GET", "/admin/v1/meetings")
    assert status == 200
    assert doc["meetings"] == [
        {"platform": "generic", "meeting_id": MEETING, "ended": False, "participants": 2, "present": 2,
         "held_segments": 0},
    ]  # fmt: skip
    status, _, doc = await call(gw, "GET", f"/admin/v1/meetings/generic/{MEETING}")
    assert status == 200
    people = {p["id"]: p for p in doc["participant_list"]}
    assert doc["purposes"] == ["summary", "training"]
    assert people["p-ada"]["consent"]["training"]["state"] == "given"
    assert people["p-bob"]["consent"]["summary"]["state"] == "refused"
    unknown = {"state": "unknown", "record_id": None, "expires_at": None}
    assert people["p-bob"]["consent"]["training"] == unknown
    assert "Ada" not in json.dumps(doc)  # ids, not names


async def test_unknown_meeting_is_404(gw: LiveGateway) -> None:
    """A meeting that is not live is a 404 problem naming it."""
    status, ctype, doc = await call(gw, "GET", "/admin/v1/meetings/generic/nope")
    assert (status, ctype) == (404, PROBLEM_JSON)
    assert doc["detail"] == "generic/nope"


# --- ledger and decisions ------------------------------------------------------------------------------


async def test_ledger_query_filters(gw: LiveGateway) -> None:
    """The ledger filters by meeting, participant, purpose and time range."""
    await meeting_with_consent(gw)

    async def subjects(**params: str) -> list[str]:
        status, _, doc = await call(gw, "GET", "/admin/v1/ledger", params=params)
        assert status == 200, doc
        return [e["record"]["subject"] for e in doc["entries"]]

    assert await subjects() == ["p-ada", "p-bob"]
    assert await subjects(meeting_id=MEETING, participant_id="p-bob") == ["p-bob"]
    assert await subjects(purpose="training") == ["p-ada"]
    assert await subjects(meeting_id="other") == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await subjects(since=later) == []
    assert await subjects(until=later) == ["p-ada", "p-bob"]
    _, _, doc = await call(gw, "GET", "/admin/v1/ledger", params={"limit": "1"})
    assert (len(doc["entries"]), doc["truncated"]) == (1, True)


async def test_bad_query_is_400_naming_the_parameter(gw: LiveGateway) -> None:
    """An unparseable time, a naive time, a bad action or an unknown parameter is a 400 naming it."""
    cases = [
        ("/admin/v1/ledger", {"since": "yesterday"}, "since"),
        ("/admin/v1/ledger", {"until": "2026-01-01T00:00:00"}, "until"),
        ("/admin/v1/decisions", {"action": "explode"}, "action"),
        ("/admin/v1/ledger", {"action": "drop"}, "action: unknown parameter"),
        ("/admin/v1/decisions", {"limit": "0"}, "limit"),
        ("/admin/v1/ledger/verify", {"head": "x"}, "head: unknown parameter"),
        ("/admin/v1/export/ledger", {"format": "xml"}, "format"),
    ]
    for path, params, named in cases:
        status, ctype, doc = await call(gw, "GET", path, params=params)
        assert (status, ctype) == (400, PROBLEM_JSON), (path, params)
        assert doc["detail"].startswith(named), doc


async def test_decision_query_filters(gw: LiveGateway) -> None:
    """Decisions filter by action, participant, purpose (through destinations) and time; no text leaks."""
    await meeting_with_consent(gw)

    async def segments(**params: str) -> list[str]:
        status, _, doc = await call(gw, "GET", "/admin/v1/decisions", params=params)
        assert status == 200, doc
        assert "Hello" not in json.dumps(doc)
        return [d["segment_id"] for d in doc["decisions"]]

    assert await segments() == ["s1", "s2"]
    assert await segments(action="forward") == ["s1"]
    assert await segments(action="drop", participant_id="p-bob") == ["s2"]
    assert await segments(purpose="summary") == ["s1", "s2"]
    assert await segments(purpose="training") == []  # no destination serves it
    assert await segments(shadow="true") == []
    assert await segments(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []


async def test_verify_reports_head_and_checks_an_anchor(gw: LiveGateway) -> None:
    """Verification answers ok with the count and head; a wrong expected head is reported, not ok."""
    await meeting_with_consent(gw)
    status, _, doc = await call(gw, "GET", "/admin/v1/ledger/verify")
    assert (status, doc["ok"], doc["count"], doc["anchored"]) == (200, True, 2, False)
    head = doc["head_hash"]
    _, _, doc = await call(gw, "GET", "/admin/v1/ledger/verify", params={"expect_head": head})
    assert (doc["ok"], doc["anchored"]) == (True, True)
    _, _, doc = await call(gw, "GET", "/admin/v1/ledger/verify", params={"expect_head": "f" * 64})
    assert doc["ok"] is False
    assert doc["problems"] == [{"seq": 2, "code": "head_mismatch"}]
    # a head kept at an earlier audit is still in a chain that grew since: no problem
    await gw.send(consent("p-ada", "withdrawn"))
    _, _, doc = await call(gw, "GET", "/admin/v1/ledger/verify", params={"expect_head": head})
    assert (doc["ok"], doc["count"]) == (True, 3)


async def test_exports_stream_verifiable_jsonl_and_csv(gw: LiveGateway) -> None:
    """The JSON-lines ledger export re-verifies offline; CSV exports have headers; decisions carry no text."""
    await meeting_with_consent(gw)
    async with gw.http.get(
        f"{gw.url}/admin/v1/export/ledger", headers={"Authorization": f"Bearer {AUDITOR}"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Disposition"] == 'attachment; filename="ledger.jsonl"'
        text = await resp.text()
    report = ledger.verify_rows(audit.rows_from_jsonl(text.splitlines()))
    assert (report.ok, report.count) == (True, 2)
    status, ctype, body = await call(gw, "GET", "/admin/v1/export/ledger", params={"format": "csv"})
    assert (status, ctype) == (200, "text/csv")
    assert body.splitlines()[0].startswith("seq,prev_hash,hash,record_id")
    status, _, body = await call(gw, "GET", "/admin/v1/export/decisions", params={"format": "jsonl"})
    assert status == 200 and len(body.splitlines()) == 2 and "Hello" not in body
    status, ctype, _ = await call(gw, "GET", "/admin/v1/export/secrets")
    assert (status, ctype) == (404, PROBLEM_JSON)


# --- policy --------------------------------------------------------------------------------------------


async def test_policy_status_reload_and_refused_reload(gw: LiveGateway) -> None:
    """Status names file and revision; a good reload swaps the revision; a broken one is a 422 naming
    file:line:key and keeps the old revision."""
    status, _, doc = await call(gw, "GET", "/admin/v1/policy")
    assert status == 200
    (loaded,) = doc["policies"]
    assert loaded["file"] == str(gw.policy_path)
    old = loaded["revision"]
    gw.policy_path.write_text(gw.policy_path.read_text() + "# a comment changes the revision\n")
    status, _, doc = await call(gw, "POST", "/admin/v1/policy/reload")
    assert status == 200 and doc["ok"] is True
    new = doc["policies"][0]["revision"]
    assert new != old
    gw.policy_path.write_text(gw.policy_path.read_text().replace("mode: per_speaker", "mode: sometimes"))
    status, ctype, doc = await call(gw, "POST", "/admin/v1/policy/reload")
    assert (status, ctype) == (422, PROBLEM_JSON)
    assert doc["detail"].startswith(f"{gw.policy_path}:2:")
    assert "mode" in doc["detail"]
    assert doc["policies"][0]["revision"] == new
    _, _, doc = await call(gw, "GET", "/admin/v1/policy")
    assert doc["policies"][0]["revision"] == new
    assert doc["last_reload"]["ok"] is False


async def test_a_reload_with_a_parameter_it_does_not_take_changes_nothing(gw: LiveGateway) -> None:
    """``?dry_run=true`` (or a body) is not something reload knows: 400 naming it, and no reload, rather
    than a real reload the operator did not ask for."""
    _, _, doc = await call(gw, "GET", "/admin/v1/policy")
    old = doc["policies"][0]["revision"]
    gw.policy_path.write_text(gw.policy_path.read_text() + "# changed on disk, not yet reloaded\n")
    status, ctype, doc = await call(gw, "POST", "/admin/v1/policy/reload?dry_run=true")
    assert (status, ctype) == (400, PROBLEM_JSON) and doc["detail"].startswith("dry_run")
    status, _, doc = await call(gw, "POST", "/admin/v1/policy/reload", json={"dry_run": True})
    assert status == 400 and doc["detail"].startswith("body")
    _, _, doc = await call(gw, "GET", "/admin/v1/policy")
    assert doc["policies"][0]["revision"] == old


async def test_shadow_body_is_validated(gw: LiveGateway) -> None:
    """A shadow request without ``paths``, or naming a missing file, changes nothing and says why."""
    status, ctype, doc = await call(gw, "POST", "/admin/v1/policy/shadow", json={"path": "x"})
    assert (status, ctype) == (400, PROBLEM_JSON)
    status, _, doc = await call(gw, "POST", "/admin/v1/policy/shadow", json={"paths": ["/nonexistent.yaml"]})
    assert status == 422 and "cannot read" in doc["detail"]
    status, _, doc = await call(
        gw, "POST", "/admin/v1/policy/shadow", json={"paths": ["policies/a\x00.yaml"]}
    )
    assert status == 422 and "cannot read" in doc["detail"]  # no file can have that path: not a 500
    _, _, doc = await call(gw, "GET", "/admin/v1/policy")
    assert doc["shadow"] == []


async def test_admin_api_is_described_in_openapi() -> None:
    """Every admin route appears in the OpenAPI document with its method."""
    from gateway.openapi import build
    from gateway.web.admin import ROUTES

    paths = build()["paths"]
    for method, path, _, _ in ROUTES:
        assert method.lower() in paths[PREFIX + path], path


async def test_credentials_that_are_not_utf_8_are_refused_not_a_500(gw: LiveGateway) -> None:
    """An Authorization header with bytes that are not UTF-8 is a wrong credential like any other: 401."""
    host, port = gw.url.removeprefix("http://").split(":")
    for path in ("/admin/v1/ledger", "/dashboard/", "/v1/meetings/m/participants/p/consent-link"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                     b"Connection: close\r\n\r\n")  # fmt: skip
        await writer.drain()
        status = (await reader.readline()).decode()
        writer.close()
        await writer.wait_closed()
        assert status.split()[1] == "401", (path, status)
