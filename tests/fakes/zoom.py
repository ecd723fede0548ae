"""A fake Zoom: signs webhooks the way Zoom does and serves recorded-transcript VTT files on loopback.

It computes ``x-zm-signature`` from the published formula itself (it does not import the gateway's code),
so the adapter is checked against an independent implementation. Transcripts are served at
``/rec/download/{name}`` only to a request bearing the file's download token; ``fail_next`` makes the next
downloads answer 503, to exercise retries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web


def zoom_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), b"v0:%s:%s" % (timestamp.encode(), body), hashlib.sha256)
    return "v0=" + digest.hexdigest()


def signed(doc: Any, secret: str, *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers Zoom would send for ``doc``."""
    body = json.dumps(doc, ensure_ascii=False).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "content-type": "application/json; charset=utf-8",
        "user-agent": "Zoom Marketplace/1.0a",
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": zoom_signature(secret, stamp, body),
    }
    return body, headers


@dataclass(frozen=True)
class Delivery:
    status: int
    content_type: str
    doc: Any


@dataclass
class _File:
    text: str
    token: str


@dataclass
class FakeZoom:
    """``async with FakeZoom() as zoom``: a loopback server; ``zoom.url`` is its base URL."""

    files: dict[str, _File] = field(default_factory=dict)
    downloads: list[tuple[str, int]] = field(default_factory=list)
    """(file name, status answered) for every download request, in order."""
    fail_next: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None
    _http: aiohttp.ClientSession | None = None

    def add_transcript(self, name: str, vtt: str, token: str) -> str:
        """Serve ``vtt`` to holders of ``token``; returns its download URL."""
        self.files[name] = _File(vtt, token)
        return f"{self.url}/rec/download/{name}"

    async def deliver(
        self, gateway_url: str, doc: Any, secret: str, *, timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Delivery:  # fmt: skip
        """POST ``doc`` to the gateway's Zoom webhook, signed with ``secret``."""
        body, sent = signed(doc, secret, timestamp=timestamp)
        return await self.post_raw(gateway_url, body, {**sent, **(headers or {})})

    async def post_raw(self, gateway_url: str, body: bytes, headers: Mapping[str, str]) -> Delivery:
        assert self._http is not None
        async with self._http.post(f"{gateway_url}/platforms/zoom/webhook", data=body, headers=headers) as r:
            raw = await r.read()
            return Delivery(r.status, r.content_type, json.loads(raw) if raw else None)

    async def _download(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        file = self.files.get(name)
        status = 200
        if self.fail_next > 0:
            self.fail_next -= 1
            status = 503
        elif file is None:
            status = 404
        elif not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {file.token}"):
            status = 401
        self.downloads.append((name, status))
        if status != 200 or file is None:
            return web.Response(status=status)
        return web.Response(text=file.text, content_type="text/vtt")

    async def __aenter__(self) -> FakeZoom:
        app = web.Application()
        app.router.add_get("/rec/download/{name}", self._download)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()


# --- payload builders in Zoom's documented shapes ----------------------------------------------------------


def meeting_event(event: str, uuid: str, *, meeting_id: int | str = 86431910364, ts: int | None = None,
                  **obj: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "event": event,
        "event_ts": ts if ts is not None else int(time.time() * 1000),
        "payload": {"account_id": "acct-1", "object": {"uuid": uuid, "id": meeting_id, **obj}},
    }


def participant_event(event: str, uuid: str, user_id: str, name: str, *, email: str | None = None,
                      account_id: str = "", ts: int | None = None) -> dict[str, Any]:  # fmt: skip
    person: dict[str, Any] = {"user_id": user_id, "user_name": name, "id": account_id}
    if email is not None:
        person["email"] = email
    return meeting_event(event, uuid, ts=ts, participant=person)


def chat_event(uuid: str, sender: str | int, message_id: str, text: str, *, flat: bool = False,
               recipient_type: str | None = "everyone", ts: int | None = None, name: str | None = None,
               email: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A chat message; ``name`` and ``email`` are the sender's as Zoom tells them (left out when None: the
    roster's name stands)."""
    message: dict[str, Any] = {
        "sender_session_id": sender,
        "message_id": message_id,
        "message_content": text,
    }
    if name is not None:
        message["sender_name"] = name
    if email is not None:
        message["sender_email"] = email
    if recipient_type is not None:
        message["recipient_type"] = recipient_type
    if flat:
        return meeting_event("meeting.chat_message_sent", uuid, ts=ts, **message)
    return meeting_event("meeting.chat_message_sent", uuid, ts=ts, chat_message=message)


def transcript_completed(uuid: str, url: str, token: str, *, ts: int | None = None) -> dict[str, Any]:
    doc = meeting_event(
        "recording.transcript_completed",
        uuid,
        ts=ts,
        start_time="2026-11-27T08:00:00Z",
        recording_files=[
            {"id": "f-cc", "file_type": "CC", "download_url": url + "-cc", "status": "completed"},
            {
                "id": "f-tr",
                "file_type": "TRANSCRIPT",
                "download_url": url,
                "status": "completed",
                "recording_start": "2026-11-27T08:00:05Z",
            },
        ],
    )
    doc["download_token"] = token
    return doc
