"""A fake Google Meet REST API (v2) with pagination, and the Pub/Sub push that announces its events.

A real aiohttp server on 127.0.0.1 answering, for its bearer token only (or any of ``tokens``: a set, or a
predicate such as ``FakeOAuth.valid``; 401 otherwise):
``GET /v2/conferenceRecords/{c}`` (``startTime``, and ``endTime`` once ``end()`` was called; 404 for a
conference it has no data of), and the lists ``GET /v2/conferenceRecords/{c}/participants``,
``.../participants/{p}/participantSessions``, ``.../transcripts`` and ``.../transcripts/{t}/entries``, each
paginated by ``pageSize`` / ``pageToken`` with ``nextPageToken`` (the page size is capped by ``max_page`` so
that tests see several pages). A participant has one open session from ``add_participant``; ``leave()``
ends their sessions (setting ``latestEndTime``), ``come_back()`` opens another. ``fail_with`` answers every
request with that status, ``fail_times`` only the next so many; ``not_json`` answers 200 with an HTML page.
``push()`` delivers a Workspace Events payload wrapped in a Pub/Sub push envelope (base64 ``message.data``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from tests.fakes.loopback import serve

TOKEN = "meet-test-token"


@dataclass
class FakeMeet:
    token: str = TOKEN
    tokens: Collection[str] | Callable[[str], bool] | None = None
    """Valid bearer tokens instead of ``token`` alone (a set, or a predicate asked on every request)."""
    participants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """conference id -> participant resources."""
    entries: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    """(conference id, transcript id) -> transcript entry resources."""
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """participant resource name -> its participant session resources."""
    ended: dict[str, str] = field(default_factory=dict)
    """conference id -> its record's ``endTime``."""
    max_page: int = 3
    fail_with: int | None = None
    fail_times: int = 0
    """Answer this many of the next requests with ``fail_with`` (or 503), then answer normally."""
    not_json: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}/v2"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/v2/conferenceRecords/{c}", self._record)
        app.router.add_get("/v2/conferenceRecords/{c}/participants", self._participants)
        app.router.add_get("/v2/conferenceRecords/{c}/participants/{p}/participantSessions", self._sessions)
        app.router.add_get("/v2/conferenceRecords/{c}/transcripts", self._transcripts)
        app.router.add_get("/v2/conferenceRecords/{c}/transcripts/{t}/entries", self._entries)
        self._runner, self._port = await serve(app)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    # --- data ---------------------------------------------------------------------------------------------

    def add_participant(self, conference: str, pid: str, name: str, kind: str = "signedinUser") -> str:
        resource = f"conferenceRecords/{conference}/participants/{pid}"
        user = {"displayName": name, **({"user": f"users/{pid}"} if kind == "signedinUser" else {})}
        self.participants.setdefault(conference, []).append(
            {"name": resource, kind: user, "earliestStartTime": "2026-11-27T09:00:00Z"}
        )
        self.come_back(resource, "2026-11-27T09:00:00Z")
        return resource

    def leave(self, participant: str, at: str) -> None:
        """The participant's open sessions end at ``at``, which becomes their ``latestEndTime``."""
        for session in self.sessions.get(participant, []):
            session.setdefault("endTime", at)
        self._resource(participant)["latestEndTime"] = at

    def come_back(self, participant: str, at: str) -> None:
        """A new session of the participant opens (``latestEndTime`` stays that of their last leaving)."""
        sessions = self.sessions.setdefault(participant, [])
        sessions.append({"name": f"{participant}/participantSessions/S{len(sessions)}", "startTime": at})

    def end(self, conference: str, at: str = "2026-11-27T10:00:00Z") -> None:
        """The conference ends: every session still open ends with it."""
        self.ended[conference] = at
        for person in self.participants.get(conference, []):
            if any("endTime" not in s for s in self.sessions.get(person["name"], [])):
                self.leave(person["name"], at)

    def _resource(self, participant: str) -> dict[str, Any]:
        conference = participant.split("/")[1]
        return next(p for p in self.participants[conference] if p["name"] == participant)

    def add_entry(
        self, conference: str, transcript: str, participant: str | None, text: str, second: int
    ) -> str:
        entries = self.entries.setdefault((conference, transcript), [])
        name = f"conferenceRecords/{conference}/transcripts/{transcript}/entries/e{len(entries):05d}"
        entry = {
            "name": name,
            "text": text,
            "languageCode": "en-US",
            "startTime": f"2026-11-27T09:{second // 60 % 60:02d}:{second % 60:02d}Z",
            "endTime": f"2026-11-27T09:{second // 60 % 60:02d}:{second % 60:02d}.900Z",
        }
        if participant is not None:
            entry["participant"] = participant
        entries.append(entry)
        return name

    # --- the API ------------------------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        if not self._authorized(request.headers.get("Authorization")):
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        if self.fail_times > 0 or (self.fail_with is not None):
            self.fail_times = max(0, self.fail_times - 1)
            status = self.fail_with or 503
            return web.json_response({"error": {"code": status}}, status=status)
        if self.not_json:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        return None

    def _authorized(self, auth: str | None) -> bool:
        token = auth.removeprefix("Bearer ") if auth and auth.startswith("Bearer ") else None
        if token is None or self.tokens is None:
            return token is not None and token == self.token
        return self.tokens(token) if callable(self.tokens) else token in self.tokens

    def _page(self, request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        size = min(int(request.query.get("pageSize", "100")), self.max_page)
        start = int(request.query.get("pageToken", "0") or 0)
        doc: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            doc["nextPageToken"] = str(start + size)
        return web.json_response(doc)

    async def _record(self, request: web.Request) -> web.Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        c = request.match_info["c"]
        if c not in self.participants and c not in {conf for conf, _ in self.entries}:
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        doc = {"name": f"conferenceRecords/{c}", "startTime": "2026-11-27T09:00:00Z"}
        return web.json_response({**doc, **({"endTime": self.ended[c]} if c in self.ended else {})})

    async def _sessions(self, request: web.Request) -> web.Response:
        participant = f"conferenceRecords/{request.match_info['c']}/participants/{request.match_info['p']}"
        return self._page(request, "participantSessions", self.sessions.get(participant, []))

    async def _participants(self, request: web.Request) -> web.Response:
        return self._page(request, "participants", self.participants.get(request.match_info["c"], []))

    async def _transcripts(self, request: web.Request) -> web.Response:
        c = request.match_info["c"]
        names = sorted({t for conf, t in self.entries if conf == c})
        items = [{"name": f"conferenceRecords/{c}/transcripts/{t}", "state": "FILE_GENERATED"} for t in names]
        return self._page(request, "transcripts", items)

    async def _entries(self, request: web.Request) -> web.Response:
        key = (request.match_info["c"], request.match_info["t"])
        return self._page(request, "transcriptEntries", self.entries.get(key, []))

    # --- Pub/Sub push to the gateway ----------------------------------------------------------------------

    @staticmethod
    def envelope(
        data: dict[str, Any], event_type: str = "google.workspace.meet.transcript.v2.fileGenerated"
    ) -> dict[str, Any]:
        return {
            "message": {
                "attributes": {"ce-type": event_type, "ce-source": "//workspaceevents.googleapis.com"},
                "data": base64.b64encode(json.dumps(data).encode()).decode(),
                "messageId": "2070443601311540",
                "publishTime": "2026-11-27T10:00:00.000Z",
            },
            "subscription": "projects/p/subscriptions/meet-events",
        }

    @staticmethod
    async def push(http: aiohttp.ClientSession, url: str, token: str | None, doc: Any) -> tuple[int, Any]:
        params = {"token": token} if token is not None else {}
        async with http.post(url, params=params, json=doc) as resp:
            return resp.status, await resp.json(content_type=None)
