"""``consent-gateway demo``: a short meeting through a live gateway to a local stand-in AI service.

Four people meet. Priya and Sam opt in for summaries (Sam on his personal consent page, as a browser would:
the page's GET and its form POST); Tomás declines and is named by the others; Wen opts in, then withdraws
midway. Everything runs for real on 127.0.0.1: the gateway app with a throw-away SQLite
file, and a small receiver that checks the gateway's signatures and keeps what it is sent. The output puts
what was said beside what the AI service received, then the consent ledger's verification.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import shutil
import tempfile
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway import audit, signing
from gateway.app import create_app
from gateway.settings import Settings
from gateway.web.keys import DISPATCHER, STORE

MEETING = "demo-weekly-sync"
PAGE_USER = "p-sam"
"""Who consents on their personal consent page rather than through the integration API."""
PEOPLE = {"p-priya": "Priya Raman", "p-tomas": "Tomás Ortega", "p-wen": "Wen Li", "p-sam": "Sam Okafor"}
# (participant, text) for speech; ("consent", participant, decision) for consent changes
SCRIPT: list[tuple[str, ...]] = [
    ("consent", "p-priya", "given"),
    ("consent", "p-sam", "given"),
    ("consent", "p-tomas", "refused"),
    ("consent", "p-wen", "given"),
    ("p-priya", "Morning all. Tomas sent the launch numbers last night, thanks for that."),
    ("p-tomas", "Churn is at 4.2 percent, but please keep that between us for now."),
    ("p-sam", "Thanks Tomás. Wen, can you check the pricing page before Friday?"),
    ("p-wen", "Sure, I'll look at it today and flag anything odd."),
    ("consent", "p-wen", "withdrawn"),
    ("p-wen", "Actually, I'd rather the AI didn't keep anything I say from here on."),
    ("p-priya", "No problem. Sam and Ortega, let's sync on the rollout plan on Friday."),
    ("p-sam", "Works for me. I'll send Tomas's numbers to finance."),
]
DEMO_POLICY = """\
policy: demo
purposes:
  summary:
    description: Meeting summaries for the participants.
    notice: If you agree, what you say is sent to the summary service.
    notice_version: demo-1
pending:
  window_seconds: 5
destinations:
  - id: summariser
    url: {url}
    purposes: [summary]
    delivery: stream
"""


class Receiver:
    """The stand-in AI service: verifies the signature, keeps each segment it is sent."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.segments: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = int(datetime.now(UTC).timestamp())
        if not signing.verify([self.secret], request.headers, raw, now).ok:
            return web.Response(status=401)
        body = json.loads(raw)
        self.segments[body["segment_id"]] = body
        return web.Response(status=202)


async def run_demo(out: TextIO, width: int | None = None) -> int:
    width = width or max(80, min(shutil.get_terminal_size((120, 24)).columns, 160))
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secret)
    with tempfile.TemporaryDirectory(prefix="consent-gateway-demo-") as tmp:
        async with _serving(web.Application(), receiver) as ai_url:
            policy = Path(tmp) / "demo.yaml"
            policy.write_text(DEMO_POLICY.format(url=f"{ai_url}/segments"))
            token = secrets.token_urlsafe(16)
            settings = Settings(
                port=0,
                database=f"sqlite:///{tmp}/demo.db",
                policies=(policy,),
                ingest_token=SecretStr(token),
                signing_secret=SecretStr(secret),
            )
            app = create_app(settings)
            async with _serving(app, None) as gw_url:
                said = await _play(gw_url, token, app)
                report = await audit.verify_store(app[STORE])
        _print(out, said, receiver, width)
        out.write("\n" + audit.format_report(report) + "\n")
    return 0


@asynccontextmanager
async def _serving(app: web.Application, receiver: Receiver | None) -> AsyncIterator[str]:
    if receiver is not None:
        app.router.add_post("/segments", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _play(url: str, token: str, app: web.Application) -> list[tuple[str, str, str]]:
    """Send the meeting; returns (segment id, speaker, text or consent note) in order."""
    said: list[tuple[str, str, str]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await _post(http, url, {"type": "meeting.started", "title": "Weekly sync"})
        for pid, name in PEOPLE.items():
            await _post(http, url, {"type": "participant.joined", "participant": {"id": pid, "name": name}})
        for n, line in enumerate(SCRIPT, 1):
            if line[0] == "consent" and line[1] == PAGE_USER:
                await _consent_on_page(http, url, line[1])
                said.append(("", PEOPLE[line[1]], "(given consent for summary, on their consent page)"))
                continue
            if line[0] == "consent":
                _, pid, decision = line
                await _post(
                    http,
                    url,
                    {
                        "type": "consent",
                        "participant_id": pid,
                        "purposes": ["summary"],
                        "decision": decision,
                        "indicated_by": pid,
                        "channel": "api",
                    },
                )
                said.append(("", PEOPLE[pid], f"({decision} consent for summary)"))
                continue
            pid, text = line
            await _post(
                http, url, {"type": "segment", "segment_id": f"s{n}", "participant_id": pid, "text": text}
            )
            await app[DISPATCHER].drain(timeout=5.0)  # keep the printout in step with the meeting
            said.append((f"s{n}", PEOPLE[pid], text))
        await _post(http, url, {"type": "meeting.ended"})
    return said


async def _consent_on_page(http: aiohttp.ClientSession, url: str, pid: str) -> None:
    """What a participant's browser does: open the link the gateway sent, tick Yes, submit the form."""
    api = f"{url}/v1/meetings/{MEETING}/participants/{pid}/consent-link"
    async with http.get(api) as resp:
        link = (await resp.json())["url"]
    async with aiohttp.ClientSession() as browser:  # no gateway credentials: the link is the credential
        async with browser.get(link) as resp:
            page = await resp.text()
        form = {
            k: html.unescape(v) for k, v in re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page)
        }
        form |= {"purpose.summary": "yes", "action": "save"}
        async with browser.post(link, data=form) as resp:
            if resp.status != 200 or "Your choices were saved." not in await resp.text():
                raise RuntimeError(f"the consent page answered {resp.status}")


async def _post(http: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
    event = {"meeting_id": MEETING, "at": datetime.now(UTC).isoformat(), **event}
    async with http.post(f"{url}/v1/events", json=event) as resp:
        if resp.status != 200:
            raise RuntimeError(f"gateway answered {resp.status} to a {event['type']} event")


def _print(out: TextIO, said: list[tuple[str, str, str]], receiver: Receiver, width: int) -> None:
    col = (width - 3) // 2
    out.write(f"{'WHAT WAS SAID':<{col}} | WHAT THE AI SERVICE RECEIVED\n{'-' * col}-+-{'-' * col}\n")
    for seg_id, speaker, text in said:
        got = receiver.segments.get(seg_id)
        right = f"{got['speaker']}: {got['text']}" if got else ("" if not seg_id else "(nothing)")
        left = f"{speaker}: {text}"
        lines_l = textwrap.wrap(left, col) or [""]
        lines_r = textwrap.wrap(right, col) or [""]
        for i in range(max(len(lines_l), len(lines_r))):
            a = lines_l[i] if i < len(lines_l) else ""
            b = lines_r[i] if i < len(lines_r) else ""
            out.write(f"{a:<{col}} | {b}\n")
    out.write(
        f"\n{len(receiver.segments)} of {sum(1 for s in said if s[0])} utterances reached the AI service.\n"
    )
