"""A fake Zoom RTMS: a signaling and a media WebSocket server on loopback, speaking the documented messages.

The signaling server checks the handshake signature (computed here from the published formula, not with the
gateway's code), answers msg_type 2 with the media server's URL and records what the client sends
(subscription 5, ready 7, keep-alive answers 13). The media server checks msg_type 3 asks for transcripts
(media_type 8) and answers msg_type 4. Tests then push frames (``send_media``, ``send_signaling``), ask for
keep-alives, drop the connection, or end the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def rtms_signature(client_id: str, client_secret: str, meeting_uuid: str, stream_id: str) -> str:
    message = f"{client_id},{meeting_uuid},{stream_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass
class FakeRtms:
    client_id: str
    client_secret: str
    signaling: list[dict[str, Any]] = field(default_factory=list)
    """Every message the gateway sent on signaling sockets, in order."""
    media: list[dict[str, Any]] = field(default_factory=list)
    handshakes: int = 0
    """Signaling handshakes with a valid signature."""
    refused: int = 0
    open_signaling: set[ServerConnection] = field(default_factory=set)
    open_media: set[ServerConnection] = field(default_factory=set)
    url: str = ""
    media_url: str = ""
    _servers: list[Server] = field(default_factory=list)

    def _signed(self, msg: dict[str, Any]) -> bool:
        expected = rtms_signature(
            self.client_id, self.client_secret, str(msg.get("meeting_uuid")), str(msg.get("rtms_stream_id"))
        )
        return hmac.compare_digest(str(msg.get("signature", "")), expected)

    async def _signaling(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        self.signaling.append(hello)
        if hello.get("msg_type") != 1 or not self._signed(hello):
            self.refused += 1
            await ws.send(json.dumps({"msg_type": 2, "status_code": 3}))
            return
        self.handshakes += 1
        reply = {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": {"all": self.media_url}}}
        await ws.send(json.dumps(reply))
        self.open_signaling.add(ws)
        try:
            async for raw in ws:
                self.signaling.append(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.open_signaling.discard(ws)

    async def _media(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        self.media.append(hello)
        ok = hello.get("msg_type") == 3 and hello.get("media_type") == 8 and self._signed(hello)
        await ws.send(json.dumps({"msg_type": 4, "status_code": 0 if ok else 3}))
        if not ok:
            return
        self.open_media.add(ws)
        try:
            async for raw in ws:
                self.media.append(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.open_media.discard(ws)

    def ready_count(self) -> int:
        """How many times the gateway said it is ready (msg_type 7)."""
        return sum(1 for m in self.signaling if m.get("msg_type") == 7)

    async def send_media(self, message: dict[str, Any]) -> None:
        for ws in list(self.open_media):
            await ws.send(json.dumps(message))

    async def send_signaling(self, message: dict[str, Any]) -> None:
        for ws in list(self.open_signaling):
            await ws.send(json.dumps(message))

    async def drop(self) -> None:
        """Close every open connection, as a network failure would."""
        for ws in [*self.open_signaling, *self.open_media]:
            await ws.close(code=1011)

    async def __aenter__(self) -> FakeRtms:
        for handler in (self._signaling, self._media):
            self._servers.append(await serve(handler, "127.0.0.1", 0))
        ports = [next(iter(s.sockets)).getsockname()[1] for s in self._servers]
        self.url, self.media_url = (f"ws://127.0.0.1:{p}" for p in ports)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self._servers:
            server.close()
        await asyncio.gather(*(s.wait_closed() for s in self._servers))


def transcript_frame(user_id: int, name: str, text: str, sentence_id: int, ts: int) -> dict[str, Any]:
    """A meeting transcript frame (msg_type 17) in Zoom's documented shape."""
    content = {
        "user_id": user_id,
        "user_name": name,
        "data": text,
        "timestamp": ts,
        "start_time": ts - 1500,
        "end_time": ts,
        "sentence_id": sentence_id,
        "attribute": 1,
        "language": 9,
    }
    return {"msg_type": 17, "content": content}
