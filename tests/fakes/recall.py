"""A fake Recall.ai: builds real-time event payloads as Recall documents them and delivers them to a gateway.

Recall is the client here (it posts webhooks to us and connects to our WebSocket endpoint), so the fake is a
sender: every webhook is signed with Standard Webhooks headers (``webhook-*``, or ``svix-*`` for older
accounts) computed by the ``standardwebhooks`` reference package, not by our own ``gateway.signing``; the
WebSocket upgrade is signed the same way over an empty body, as Recall does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from gateway import signing

BOT = "bot-7f3c"
RECORDING = "rec-91ab"


def _refs(bot: str | None, recording: str) -> dict[str, Any]:
    refs: dict[str, Any] = {
        "realtime_endpoint": {"id": "rte-1", "metadata": {}},
        "recording": {"id": recording, "metadata": {}},
    }
    if bot is not None:
        refs["bot"] = {"id": bot, "metadata": {}}
    return refs


def participant(pid: int, name: str | None, email: str | None = None) -> dict[str, Any]:
    return {"id": pid, "name": name, "is_host": False, "platform": "zoom", "extra_data": {}, "email": email}


def participant_event(
    kind: str,
    who: dict[str, Any],
    *,
    relative: float = 0.0,
    chat: str | None = None,
    to: str = "everyone",
    bot: str | None = BOT,
    recording: str = RECORDING,
) -> dict[str, Any]:
    """A ``participant_events.<kind>`` payload (``chat`` fills ``data.data.data`` for chat messages, sent
    ``to`` everyone or ``only_bot``)."""
    data = {
        "participant": who,
        "timestamp": {"absolute": datetime.now(UTC).isoformat(), "relative": relative},
        "data": {"text": chat, "to": to} if chat is not None else None,
    }
    return {
        "event": f"participant_events.{kind}",
        "data": {"data": data, "participant_events": {"id": "pe-1", "metadata": {}}, **_refs(bot, recording)},
    }


def transcript_data(
    who: dict[str, Any] | None,
    words: Sequence[str],
    *,
    start: float = 0.0,
    step: float = 0.3,
    bot: str | None = BOT,
    recording: str = RECORDING,
    event: str = "transcript.data",
) -> dict[str, Any]:
    """One utterance as ``transcript.data``: each word with relative start and end timestamps."""
    items = [
        {
            "text": word,
            "start_timestamp": {"relative": round(start + i * step, 3), "absolute": None},
            "end_timestamp": {"relative": round(start + (i + 1) * step, 3), "absolute": None},
        }
        for i, word in enumerate(words)
    ]
    data = {"words": items, "participant": who}
    return {
        "event": event,
        "data": {"data": data, "transcript": {"id": "tr-1", "metadata": {}}, **_refs(bot, recording)},
    }


def bot_status(code: str, bot: str = BOT) -> dict[str, Any]:
    """A bot status webhook (``bot.<code>``), as Recall's Svix sends it."""
    status = {"code": code, "sub_code": None, "updated_at": datetime.now(UTC).isoformat()}
    return {"event": f"bot.{code}", "data": {"data": status, "bot": {"id": bot, "metadata": {}}}}


def signed(secret: str, body: bytes, *, msg_id: str | None = None, timestamp: int | None = None,
           legacy: bool = False) -> dict[str, str]:  # fmt: skip
    """Standard Webhooks headers for ``body``, computed by the reference package."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    try:
        signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    except UnicodeDecodeError:  # the reference package signs text only; fuzzed bodies are any bytes
        signature = signing.sign(secret, msg_id, ts, body)
    prefix = "svix" if legacy else "webhook"
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(ts), f"{prefix}-signature": signature}


@dataclass
class Delivery:
    status: int
    doc: Any


@dataclass
class RecallSender:
    """Delivers events to a gateway's Recall endpoints the way Recall does."""

    base_url: str
    secret: str
    http: aiohttp.ClientSession
    sent: list[str] = field(default_factory=list)
    """The ``webhook-id`` of every delivery."""

    async def post(self, doc: Any, *, body: bytes | None = None, legacy: bool = False,
                   msg_id: str | None = None, timestamp: int | None = None) -> Delivery:  # fmt: skip
        raw = body if body is not None else json.dumps(doc).encode()
        headers = {**signed(self.secret, raw, msg_id=msg_id, timestamp=timestamp, legacy=legacy),
                   "Content-Type": "application/json"}  # fmt: skip
        self.sent.append(headers.get("webhook-id") or headers["svix-id"])
        return await self.post_raw(raw, headers)

    async def post_raw(self, body: bytes, headers: dict[str, str]) -> Delivery:
        async with self.http.post(
            f"{self.base_url}/platforms/recall/webhook", data=body, headers=headers
        ) as r:
            raw = await r.read()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = raw
            return Delivery(r.status, doc)

    async def connect(self, *, secret: str | None = None) -> aiohttp.ClientWebSocketResponse:
        """The WebSocket Recall opens to us, its upgrade request signed over an empty body."""
        headers = signed(secret or self.secret, b"")
        return await self.http.ws_connect(f"{self.base_url}/platforms/recall/ws", headers=headers)
