"""A live gateway for consent-page tests: a bilingual policy, two destinations, an optional notice receiver.

Like ``tests.web.harness.serving`` (whose ``LiveGateway`` it yields), but the policy offers English and
French and the settings can name a ``notify_url``, so the page, its languages and the notifier are tested
through the real app on loopback.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import database_for
from tests.fakes.ai_service import FakeAIService
from tests.web.harness import INGEST_TOKEN, SIGNING_SECRET, LiveGateway, event, joined, until_fresh

POLICY = """\
policy: consent-page-test
languages: [en, fr]
purposes:
  summary:
    description: Meeting summaries for the participants.
    notice: If you agree, what you say is sent to the summary service.
    notice_version: summary-3
    translations:
      fr:
        description: Résumés de réunion pour les participants.
        notice: Si vous acceptez, ce que vous dites est envoyé au service de résumé.
  training:
    description: Improving the vendor's AI models.
    notice: If you agree, a transcript of what you say is kept to train models.
    notice_version: training-1
    translations:
      fr:
        description: Amélioration des modèles d'IA du fournisseur.
        notice: Si vous acceptez, une transcription de vos propos est conservée pour entraîner des modèles.
consent:
  link_ttl_hours: 2
pending:
  window_seconds: 0
destinations:
  - id: summariser
    url: {summariser}
    purposes: [summary]
  - id: trainer
    url: {trainer}
    purposes: [summary, training]
"""


@asynccontextmanager
async def consent_serving(tmp: Path, *, notify_url: str | None = None) -> AsyncIterator[LiveGateway]:
    async with AsyncExitStack() as stack:
        fakes = {
            d: await stack.enter_async_context(FakeAIService(SIGNING_SECRET))
            for d in ("summariser", "trainer")
        }
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY.format(**{d: f.url for d, f in fakes.items()}))
        database = await database_for(tmp)
        settings = Settings(
            port=0,
            database=database,
            secrets_file=tmp / "secrets.json",  # a server database has no directory of its own
            policies=(policy,),
            ingest_token=SecretStr(INGEST_TOKEN),
            signing_secret=SecretStr(SIGNING_SECRET),
            link_secret=SecretStr("a link secret for the tests, 32+"),
            notify_url=notify_url,
            tick_seconds=0.05,
        )
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await until_fresh(app)
        yield LiveGateway(app, f"http://127.0.0.1:{port}", http, fakes, policy, database)


async def start_meeting(live: LiveGateway, *people: tuple[str, str]) -> None:
    await live.send(event("meeting.started"), *(joined(pid, name) for pid, name in people))


async def link_of(live: LiveGateway, pid: str, meeting: str = "m-weekly") -> dict[str, Any]:
    """The participant's consent link, as the integration API gives it."""
    url = f"{live.url}/v1/meetings/{meeting}/participants/{pid}/consent-link"
    async with live.http.get(url, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}) as resp:
        assert resp.status == 200, resp.status
        doc: dict[str, Any] = await resp.json()
        return doc


def form_fields(page: str) -> dict[str, str]:
    """The hidden fields of the rendered consent form."""
    found = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    return {k: html.unescape(v) for k, v in found.items()}
